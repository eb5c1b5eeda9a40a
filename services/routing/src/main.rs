//! `xinfang-routing --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("routing", |settings, config, shutdown| {
        xinfang_routing::run(settings, config, shutdown)
    })
}
