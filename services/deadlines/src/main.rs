//! `xinfang-deadlines --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("deadlines", |settings, _config, shutdown| {
        xinfang_deadlines::run(settings, shutdown)
    })
}
