//! `xinfang-intake --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("intake", |settings, _config, shutdown| {
        xinfang_intake::run(settings, shutdown)
    })
}
