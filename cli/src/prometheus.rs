//! A Prometheus beside the demo city (issue 17): when Debian's `prometheus` is installed,
//! `xinfang up --demo` starts one scraping every node (the target lists the nodes write into
//! [`targets_dir`]) with the project's recording and alert rules, so a new user opens its graph
//! page and watches the indicators move.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// The rule files of `deploy/prometheus/rules`, built in.
const RULES: &[(&str, &str)] = &[
    ("indicators.yml", include_str!("../../deploy/prometheus/rules/indicators.yml")),
    ("alerts.yml", include_str!("../../deploy/prometheus/rules/alerts.yml")),
];

/// Where the nodes of a city under `data` write their target lists (`<code>.json`), and where
/// the demo's Prometheus keeps its configuration, rules and storage.
pub fn targets_dir(data: &Path) -> PathBuf {
    data.join("prometheus")
}

/// The Prometheus binary: `PROMETHEUS` if set, else `prometheus` on the PATH.
fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("prometheus")).find(|p| p.is_file())
}

/// The configuration of a Prometheus scraping every target list in `dir` every 5 s.
pub fn config(dir: &Path) -> String {
    format!(
        "# written by `xinfang up --demo`\nglobal:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n  - {rules}/*.yml\nscrape_configs:\n  - job_name: xinfang\n    honor_labels: true\n    file_sd_configs:\n      - files:\n          - {dir}/*.json\n        refresh_interval: 5s\n",
        rules = dir.join("rules").display(),
        dir = dir.display(),
    )
}

/// Starts Prometheus for the city under `data` on a free port of 127.0.0.1, with its address;
/// why not when none is installed or it cannot start.
pub fn start(data: &Path) -> Result<(Child, String), String> {
    let binary = locate().ok_or("no prometheus on the PATH (Debian: apt-get install prometheus)")?;
    let dir = std::fs::canonicalize(targets_dir(data)).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("rules")).map_err(|e| e.to_string())?;
    for (name, text) in RULES {
        std::fs::write(dir.join("rules").join(name), text).map_err(|e| e.to_string())?;
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, self::config(&dir)).map_err(|e| e.to_string())?;
    let listen = format!("127.0.0.1:{}", crate::city::free_port()?);
    // under `xinfang tether`, so it stops with the city even if `up` is SIGKILLed
    let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
    let child = Command::new(exe)
        .arg("tether")
        .arg(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    Ok((child, format!("http://{listen}")))
}
