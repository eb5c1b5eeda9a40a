//! `xinfang-intake --config FILE`: config → telemetry → run until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use xinfang_shared::config::Settings;
use xinfang_shared::runtime;

#[tokio::main]
async fn main() -> ExitCode {
    let config = config_arg();
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xinfang-intake: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_telemetry(&settings.log);
    let shutdown = runtime::shutdown_on_signals();
    match xinfang_intake::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "intake stopped");
            ExitCode::FAILURE
        }
    }
}

fn config_arg() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    None
}
