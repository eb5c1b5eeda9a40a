//! Process plumbing shared by every service: logging, the shutdown signal, the NATS connection.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::calendar::{Calendar, LiveCalendar};
use crate::config::{LogSection, Settings};

/// How often the holiday schedules under `calendar.path` are read again.
pub const CALENDAR_POLL: Duration = Duration::from_secs(5);

/// Logs to stderr, as text or JSON lines, filtered by `XF_LOG` or the config's level.
pub fn init_telemetry(log: &LogSection) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("XF_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

/// Set by `xinfang up` on its children: their stdin is a pipe from `up`, and its end (`up` is
/// gone, even by SIGKILL) stops them, so no service runs on as an orphan holding its port and
/// its sled lock.
pub const TETHER_ENV: &str = "XF_TETHERED";

/// How long a child whose parent is gone gets to stop cleanly before it exits anyway (its
/// writes are acknowledged only once durable, so exiting is safe).
pub const TETHER_GRACE: Duration = Duration::from_secs(3);

/// When [`TETHER_ENV`] is set: cancels `token` once stdin reaches its end, and exits the process
/// [`TETHER_GRACE`] later if it is still running.
pub fn stop_with_parent(token: CancellationToken) {
    if std::env::var_os(TETHER_ENV).is_none() {
        return;
    }
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        tracing::warn!("the parent process is gone (stdin closed); stopping");
        token.cancel();
        std::thread::sleep(TETHER_GRACE);
        std::process::exit(1);
    });
}

/// Keeps `live` equal to the holiday schedules under `settings.calendar.path` until `shutdown`
/// (DOMAIN.md: operators load next year's schedule each November), re-reading them every
/// [`CALENDAR_POLL`]. (The deadlines service has its own watch: it also recomputes
/// provisional dues.)
pub async fn follow_calendar(settings: Settings, live: LiveCalendar, shutdown: CancellationToken) {
    if settings.calendar.path.is_none() {
        return;
    }
    let mut refused = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CALENDAR_POLL) => {}
        }
        refresh_calendar(&settings, &live, &mut refused);
    }
}

/// Reads the holiday schedules `settings` names into `live` if they changed.
pub fn refresh_calendar(settings: &Settings, live: &LiveCalendar, refused: &mut Option<String>) {
    if let Some(calendar) = read_calendar(settings, refused) {
        let years: Vec<i32> = calendar.years().collect();
        if live.replace(calendar) {
            tracing::info!(?years, "holiday calendar loaded");
        }
    }
}

/// Reads the holiday schedules `settings` names. A file that does not load gives `None` (the
/// calendar in force stays) and is logged once: `refused` remembers the last refusal.
pub fn read_calendar(settings: &Settings, refused: &mut Option<String>) -> Option<Calendar> {
    match settings.calendar() {
        Ok(calendar) => {
            *refused = None;
            Some(calendar)
        }
        Err(e) => {
            if refused.as_deref() != Some(&e.to_string()) {
                tracing::warn!(error = %e, "calendar change refused; the calendar in force stays");
                *refused = Some(e.to_string());
            }
            None
        }
    }
}

/// Connects to NATS, retrying the first connection and reconnecting forever.
pub async fn connect_nats(settings: &Settings, service: &str) -> Result<async_nats::Client, String> {
    let nats = &settings.nats;
    let node = settings.node_code();
    if nats.url.is_empty() {
        return Err("nats.url is empty (run the service through `xinfang up`, or set XF__NATS__URL)".into());
    }
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("xinfang-{service}-{node}"))
        // replies to this node's requests come back under its own prefix, so a leaf link can be
        // let through the answers meant for it and no others (DESIGN.md §10)
        .custom_inbox_prefix(inbox_prefix(&node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(creds) = &nats.credentials {
        options = options.credentials_file(creds).await.map_err(|e| format!("nats.credentials: {e}"))?;
    }
    if nats.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &nats.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    options.connect(&nats.url).await.map_err(|e| format!("nats.url {}: {e}", nats.url))
}

/// The prefix of the reply subjects of a node's NATS connections: `_INBOX_<code>`.
pub fn inbox_prefix(node: &crate::ids::NodeCode) -> String {
    format!("_INBOX_{node}")
}

/// Binds a TCP listener, naming the config key on failure.
pub async fn bind(addr: &str, key: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("{key} {addr}: {e}"))
}

/// The `--config PATH` (or `--config=PATH`) argument of a service.
pub fn config_arg() -> Option<std::path::PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(std::path::PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(std::path::PathBuf::from(p));
        }
    }
    None
}

/// The whole `main` of a service binary: `--config` → settings (a bad config: one line on
/// stderr, exit 2) → telemetry → `run(settings, config path, shutdown)` until SIGTERM/SIGINT.
pub fn service_main<F, Fut>(service: &str, run: F) -> std::process::ExitCode
where
    F: FnOnce(crate::config::Settings, Option<std::path::PathBuf>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = config_arg();
    let settings = match crate::config::Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xinfang-{service}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        init_telemetry(&settings.log);
        let shutdown = shutdown_on_signals();
        stop_with_parent(shutdown.clone());
        match run(settings, config, shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{service} stopped");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// The node secret ([`crate::keyring`]): `auth.secret_file`, else `node.key` in the service's
/// store directory; created (mode 0600, one random secret) when absent. The services of a node
/// (and the nodes of `up --city`) start at once, so a new file is written whole beside its
/// place and linked into it: a reader sees no file or the whole one, and the first link wins.
pub fn node_secret(settings: &Settings) -> Result<crate::keyring::KeyRing, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = settings.auth.secret_file.clone().unwrap_or_else(|| settings.store.path.join("node.key"));
    let shown = path.display().to_string();
    let bad = |e: std::io::Error| format!("auth.secret_file {shown}: {e}");
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(bad)?;
        }
        let tmp = path.with_extension(format!("new.{}.{}", std::process::id(), ulid::Ulid::new()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(bad)?;
        let text = crate::keyring::KeyRing::new_file_text(rand::random());
        let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => tracing::info!(path = %shown, "created the node secret"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {} // another service was first
            Err(e) => return Err(bad(e)),
        }
    }
    let text = std::fs::read_to_string(&path).map_err(bad)?;
    crate::keyring::KeyRing::from_text(&text).map_err(|e| format!("auth.secret_file {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_starting_at_once_all_get_the_one_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::from_toml(crate::config::tests::NODE).unwrap();
        settings.auth.secret_file = Some(dir.path().join("keys").join("node.key"));
        let ids: Vec<String> = std::thread::scope(|s| {
            let started: Vec<_> = (0..8).map(|_| s.spawn(|| node_secret(&settings).unwrap())).collect();
            started.into_iter().map(|t| t.join().unwrap().current_id().to_string()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("keys")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
        assert_eq!(node_secret(&settings).unwrap().current_id(), ids[0], "the file is kept");
    }
}
