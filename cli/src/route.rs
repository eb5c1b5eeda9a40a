//! `xinfang route explain --config FILE --petition FILE`: which organ a petition would go to
//! and why, by the routing service's own code — for operators writing rules.

use std::path::Path;
use std::process::ExitCode;

use xinfang_shared::config::Settings;
use xinfang_shared::petition;
use xinfang_shared::routing::{Decision, History, Router};
use xinfang_shared::time::{Clock, SystemClock};

/// Prints the decision for one petition file.
pub fn explain(config: &Path, petition_file: &Path) -> ExitCode {
    let settings = match Settings::load(Some(config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xinfang route explain: {e}");
            return ExitCode::from(2);
        }
    };
    let body = match std::fs::read(petition_file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("xinfang route explain: --petition {}: {e}", petition_file.display());
            return ExitCode::from(2);
        }
    };
    let submission =
        match petition::parse_body(&body).and_then(|v| petition::validate(&v, &settings, SystemClock.now())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "xinfang route explain: the petition would be refused: {} at {}: {}",
                    e.code.as_str(),
                    e.field.as_deref().unwrap_or("-"),
                    e.message
                );
                return ExitCode::from(1);
            }
        };
    let decision = Router::new(&settings).route(&submission.petition, &History::default());
    let out = match decision {
        Decision::Assign { organ_id, organ_name, level, mode, assigned_days, rule_id, reason, .. } => {
            serde_json::json!({
                "result": "routed", "organ_id": organ_id, "organ_name": organ_name, "level": level,
                "mode": mode, "assigned_days": assigned_days, "rule_id": rule_id, "reason": reason,
            })
        }
        Decision::Forward { to_node, reason, .. } => {
            serde_json::json!({"result": "forwarded", "to_node": to_node, "reason": reason})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    ExitCode::SUCCESS
}
