//! The audit trail (DESIGN.md §11): every staff read of a petitioner's personal data — who,
//! which case, when — appended to stream `XF_AUDIT_<node>` (`xf.<node>.audit.read`) before the
//! data is handed out. The stream stays on the node: nothing sources it, nothing deletes from it.

use crate::access::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::ids::{CaseId, NodeCode};
use crate::subjects;
use crate::time::{now_cst, rfc3339};
use async_nats::jetstream::{self, stream};
use serde_json::json;

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "audit stream unavailable");
    ApiError::general(ErrorCode::Unavailable, "the audit trail is unavailable; please retry")
}

pub struct Audit {
    js: jetstream::Context,
    subject: String,
}

impl Audit {
    /// Opens (creating if needed) the node's audit stream.
    pub async fn open(js: &jetstream::Context, node: &NodeCode, replicas: usize) -> Result<Self, String> {
        js.get_or_create_stream(stream::Config {
            name: subjects::audit_stream(node),
            description: Some(format!("staff reads of personal data at node {node}")),
            subjects: vec![subjects::audit(node, "*")],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("audit stream: {e}"))?;
        Ok(Self { js: js.clone(), subject: subjects::audit(node, "read") })
    }

    /// Records that `who` read the personal data of `case` through `what` (`case_view`,
    /// `escalation_view`); the read fails (`unavailable`) if the record cannot be kept.
    pub async fn read(&self, who: &Identity, case: &CaseId, what: &str) -> Result<(), ApiError> {
        let roles: Vec<&str> = who.roles.iter().map(|r| r.as_str()).collect();
        let record = json!({"at": rfc3339(now_cst()), "who": who.name, "roles": roles,
            "organ_id": who.organ_id, "case_id": case, "what": what});
        let ack = self.js.publish(self.subject.clone(), record.to_string().into()).await.map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        Ok(())
    }
}
