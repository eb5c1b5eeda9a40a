//! `xinfang-web --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("web", |settings, _config, shutdown| xinfang_web::run(settings, shutdown))
}
