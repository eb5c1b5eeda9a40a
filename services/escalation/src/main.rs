//! `xinfang-escalation --config FILE`: config → telemetry → run until SIGTERM.

fn main() -> std::process::ExitCode {
    xinfang_shared::runtime::service_main("escalation", |settings, _config, shutdown| {
        xinfang_escalation::run(settings, shutdown)
    })
}
