//! `xinfang-deadlines --config FILE`: config → telemetry → run until SIGTERM.

use std::process::ExitCode;

use xinfang_shared::config::Settings;
use xinfang_shared::runtime;

#[tokio::main]
async fn main() -> ExitCode {
    let config = runtime::config_arg();
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xinfang-deadlines: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_telemetry(&settings.log);
    let shutdown = runtime::shutdown_on_signals();
    match xinfang_deadlines::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "deadlines stopped");
            ExitCode::FAILURE
        }
    }
}
