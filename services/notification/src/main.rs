//! `xinfang-notification --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("notification", |settings, _config, shutdown| {
        xinfang_notification::run(settings, shutdown)
    })
}
