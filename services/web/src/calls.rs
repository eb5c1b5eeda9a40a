//! The pages' requests to the node's APIs over NATS (DESIGN.md §5, §11): intake's
//! `xf.N.api.case.*`, `petition.submit`, `node.overview` and escalation's
//! `xf.N.api.escalation.*`, each with the signed-in user's session as its `Authorization`.

use std::time::Duration;

use serde_json::Value;
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::ids::NodeCode;
use xinfang_shared::subjects;

/// How long a page waits for an API's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// On whose behalf a call is made.
#[derive(Debug, Clone, Copy)]
pub enum As<'a> {
    /// The public (no credentials): online submission, status, the petitioner's own actions.
    Public,
    /// A signed-in user, by session id.
    Session(&'a str),
}

pub struct Calls {
    client: async_nats::Client,
    node: NodeCode,
}

impl Calls {
    pub fn new(client: async_nats::Client, node: NodeCode) -> Self {
        Self { client, node }
    }

    /// Calls endpoint `endpoint` (`case.get`, `escalation.list`, …) with `body`; the answer
    /// when it says `ok`, else its error (an unreachable API is `unavailable`).
    pub async fn call(&self, who: As<'_>, endpoint: &str, body: &Value) -> Result<Value, ApiError> {
        let mut headers = async_nats::HeaderMap::new();
        if let As::Session(id) = who {
            headers.insert("Authorization", format!("Session {id}").as_str());
        }
        let subject = subjects::api(&self.node, endpoint);
        let payload = serde_json::to_vec(body).expect("serializes");
        let request = self.client.request_with_headers(subject, headers, payload.into());
        let message = match tokio::time::timeout(TIMEOUT, request).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(endpoint, error = %e, "API request failed");
                return Err(unavailable());
            }
            Err(_) => {
                tracing::warn!(endpoint, "API request timed out");
                return Err(unavailable());
            }
        };
        let answer: Value = serde_json::from_slice(&message.payload).map_err(|_| unavailable())?;
        if answer["ok"] == true {
            return Ok(answer);
        }
        Err(serde_json::from_value::<ApiError>(answer["error"].clone()).unwrap_or_else(|_| unavailable()))
    }
}

/// The refusal when the APIs cannot be reached (or answer nonsense).
pub fn unavailable() -> ApiError {
    ApiError::general(ErrorCode::Unavailable, "系统暂时无法处理，请稍后再试")
}
