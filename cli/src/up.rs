//! `xinfang up`: one node as a process tree — nats-server (unless `nats.url` names a running
//! one) and each service as a child; one JSON ready line on stdout when all are ready; a
//! crashed child is restarted with backoff; SIGINT/SIGTERM stops everything and exits 0.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use xinfang_shared::config::Settings;
use xinfang_shared::runtime;
use xinfang_shared::CancellationToken;

use crate::nats_server;

/// The services of a node, in start order. Those not built yet are skipped.
pub const SERVICES: &[&str] = &["intake", "routing", "deadlines", "escalation", "notification", "web"];

/// The wait before restarting a service that died, doubled for each death in a row.
const RESTART_FIRST: Duration = Duration::from_millis(500);

/// How long a service must have run for its next death to count as the first in a row.
const RESTART_RESET: Duration = Duration::from_secs(10);

/// How long children get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Service {
    name: &'static str,
    binary: PathBuf,
    child: Option<Child>,
    /// Fixed after the first start, so a restarted service keeps its address.
    listen: String,
    started: Instant,
    failures: u32,
    /// The node secret (`auth.secret_file`, else `DATA/node.key`), the same for every service.
    secret_file: PathBuf,
}

/// `xinfang up`.
/// With `nats_only`, the node's nats-server alone (a member of a clustered hub).
pub async fn main(config: PathBuf, data: Option<PathBuf>, nats_only: bool) -> ExitCode {
    let settings = match Settings::load(Some(&config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xinfang up: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_telemetry(&settings.log);
    let shutdown = runtime::shutdown_on_signals();
    runtime::stop_with_parent(shutdown.clone());
    let node = settings.node.code.clone();
    let data = data.unwrap_or_else(|| PathBuf::from("data").join(&node));
    if let Err(e) = std::fs::create_dir_all(&data) {
        return fail(&format!("--data {}: {e}", data.display()));
    }
    let config = std::fs::canonicalize(&config).unwrap_or(config);
    let data = std::fs::canonicalize(&data).unwrap_or(data);

    let mut nats = None;
    let nats_url = if settings.nats.url.is_empty() {
        let binary = match nats_server::locate() {
            Ok(b) => b,
            Err(e) => return fail(&e),
        };
        match nats_server::start(&binary, &data.join("nats"), &settings).await {
            Ok(server) => {
                let url = server.url.clone();
                nats = Some((server, binary));
                url
            }
            Err(e) => return fail(&e),
        }
    } else {
        settings.nats.url.clone()
    };

    if nats_only && nats.is_none() {
        return fail("--nats-only: nats.url names another server; this node has none of its own to run");
    }
    let secret_file = settings.auth.secret_file.clone().unwrap_or_else(|| data.join("node.key"));
    let mut services: Vec<Service> = SERVICES
        .iter()
        .filter(|_| !nats_only)
        .filter_map(|name| {
            let binary = sibling(&format!("xinfang-{name}"))?;
            let listen = match *name {
                "intake" => settings.http.listen.clone(),
                "web" => settings.web.listen.clone(),
                _ => settings.metrics.listen.clone(),
            };
            let secret_file = secret_file.clone();
            Some(Service { name, binary, child: None, listen, started: Instant::now(), failures: 0, secret_file })
        })
        .collect();
    if services.is_empty() && !nats_only {
        return fail("no service binaries (xinfang-intake, …) next to this executable");
    }
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(&'static str, String)>();
    for s in &mut services {
        if let Err(e) = spawn(s, &config, &data, &nats_url, &ready_tx) {
            stop_all(&mut services, nats.as_mut().map(|(s, _)| s)).await;
            return fail(&e);
        }
    }
    let mut http = String::new();
    let mut waiting: Vec<&str> = services.iter().map(|s| s.name).collect();
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    while !waiting.is_empty() {
        tokio::select! {
            Some((name, addr)) = ready_rx.recv() => {
                waiting.retain(|w| *w != name);
                if let Some(s) = services.iter_mut().find(|s| s.name == name) {
                    s.listen = addr.trim_start_matches("http://").to_string();
                }
                if name == "intake" { http = addr; }
            }
            _ = &mut deadline => {
                stop_all(&mut services, nats.as_mut().map(|(s, _)| s)).await;
                return fail(&format!("services not ready within 120 s: {}", waiting.join(", ")));
            }
            _ = shutdown.cancelled() => {
                stop_all(&mut services, nats.as_mut().map(|(s, _)| s)).await;
                return ExitCode::SUCCESS;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let dead = services.iter_mut().find_map(|s| {
                    let status = s.child.as_mut()?.try_wait().ok()??;
                    Some(format!("{} exited with {status} before it was ready", s.name))
                });
                if let Some(why) = dead {
                    stop_all(&mut services, nats.as_mut().map(|(s, _)| s)).await;
                    return fail(&why);
                }
            }
        }
    }
    // `services`: each service's address (its /metrics; `web`: the pages, the office's at /escalations)
    let addresses: serde_json::Map<String, serde_json::Value> =
        services.iter().map(|s| (s.name.to_string(), format!("http://{}", s.listen).into())).collect();
    let targets = match settings.metrics.targets_file.as_str() {
        "" => targets_file(&data),
        file => PathBuf::from(file),
    };
    if let Err(e) = write_targets(&targets, &node, &services) {
        tracing::warn!(error = %e, "could not write the Prometheus target list");
    }
    println!(
        "{}",
        serde_json::json!({"ready": true, "node": node, "nats_url": nats_url, "http": http, "services": addresses})
    );
    tracing::info!(%node, %nats_url, %http, services = ?services.iter().map(|s| s.name).collect::<Vec<_>>(), "node ready");
    supervise(&mut services, &mut nats, &config, &data, &nats_url, &ready_tx, &shutdown).await;
    stop_all(&mut services, nats.as_mut().map(|(s, _)| s)).await;
    tracing::info!("node stopped");
    ExitCode::SUCCESS
}

/// Where `xinfang up` keeps the node's Prometheus target list (file_sd) unless
/// `metrics.targets_file` says otherwise; rewritten at each start.
pub fn targets_file(data: &Path) -> PathBuf {
    data.join("prometheus").join("targets.json")
}

/// Writes the target list at `path`: every service's `/metrics` address with `node` and
/// `service` labels, through a temporary file beside it (Prometheus re-reads it on change).
fn write_targets(path: &Path, node: &str, services: &[Service]) -> Result<(), String> {
    let list: Vec<serde_json::Value> = services
        .iter()
        .map(|s| serde_json::json!({"targets": [s.listen], "labels": {"node": node, "service": s.name}}))
        .collect();
    let dir = path.parent().ok_or("no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&list).expect("serializes") + "\n";
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("xinfang up: {msg}");
    ExitCode::FAILURE
}

/// A binary built next to this one (target/release/xinfang-intake beside xinfang).
fn sibling(name: &str) -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.parent()?.join(name);
    p.is_file().then_some(p)
}

fn spawn(
    s: &mut Service,
    config: &Path,
    data: &Path,
    nats_url: &str,
    ready: &mpsc::UnboundedSender<(&'static str, String)>,
) -> Result<(), String> {
    let listen_key = match s.name {
        "intake" => "XF__HTTP__LISTEN",
        "web" => "XF__WEB__LISTEN",
        _ => "XF__METRICS__LISTEN",
    };
    let mut child = Command::new(&s.binary)
        .arg("--config")
        .arg(config)
        .env("XF__NATS__URL", nats_url)
        .env("XF__STORE__PATH", data.join(s.name))
        .env(listen_key, &s.listen)
        .env("XF__AUTH__SECRET_FILE", &s.secret_file)
        // the pipe's end, when `up` is gone, stops the service (runtime::stop_with_parent)
        .env(runtime::TETHER_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", s.binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let name = s.name;
    let ready = ready.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v["ready"] == true => {
                    let _ = ready.send((name, v["http"].as_str().unwrap_or("").to_string()));
                }
                _ => eprintln!("[{name}] {line}"),
            }
        }
    });
    s.child = Some(child);
    s.started = Instant::now();
    Ok(())
}

async fn supervise(
    services: &mut [Service],
    nats: &mut Option<(nats_server::Server, PathBuf)>,
    config: &Path,
    data: &Path,
    nats_url: &str,
    ready: &mpsc::UnboundedSender<(&'static str, String)>,
    shutdown: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if let Some((server, binary)) = nats.as_mut() {
            if let Ok(Some(status)) = server.child.try_wait() {
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::error!(%status, "nats-server exited; restarting");
                if let Err(e) = server.restart(binary).await {
                    tracing::error!(error = %e, "could not restart nats-server");
                }
            }
        }
        for s in services.iter_mut() {
            let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) else {
                continue;
            };
            if shutdown.is_cancelled() {
                return;
            }
            // a service that ran a while before it died starts over at the shortest wait; one
            // that keeps dying at start waits twice as long each time, up to 30 s
            if s.started.elapsed() > RESTART_RESET {
                s.failures = 0;
            }
            s.failures += 1;
            let wait = (RESTART_FIRST * (1u32 << (s.failures - 1).min(6))).min(Duration::from_secs(30));
            tracing::error!(service = s.name, %status, restart_in = ?wait, "service exited; restarting");
            s.child = None;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = spawn(s, config, data, nats_url, ready) {
                tracing::error!(service = s.name, error = %e, "restart failed");
            }
        }
    }
}

/// SIGTERM to every service, SIGKILL after the grace period, then the same for nats-server.
async fn stop_all(services: &mut [Service], nats: Option<&mut nats_server::Server>) {
    let mut children: Vec<&mut Child> = services.iter_mut().filter_map(|s| s.child.as_mut()).collect();
    terminate(&mut children).await;
    if let Some(server) = nats {
        terminate(&mut [&mut server.child]).await;
    }
}

async fn terminate(children: &mut [&mut Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, c.wait()).await.is_err() {
            tracing::warn!("a child did not stop within the grace period; killing it");
            let _ = c.kill().await;
        }
    }
}
