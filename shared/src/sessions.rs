//! Staff sessions (DESIGN.md §11), plumbing: server-side records in the JetStream KV bucket
//! `XF_SESSIONS_<node>`, so any replica of the pages (and intake and escalation, which the
//! pages call on the signed-in user's behalf) sees the same sessions, and a restart signs
//! no one out.
//!
//! The web service keeps them through tower-sessions ([`SessionKv`] is its store). A record
//! holds the user's login and when they signed in; the idle timeout is the record's expiry
//! (renewed by use), the absolute one the sign-in time, and the bucket's `max_age` drops what
//! is left behind. The pages pass the session to the APIs as `Authorization: Session <id>`;
//! [`SessionKv::login_of`] turns it back into a login, which the node file's users map to an
//! identity — so a user removed from the node file loses every session at once.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// The session data key holding the signed-in user's login.
pub const LOGIN: &str = "login";
/// The session data key holding when they signed in (Unix seconds).
pub const SINCE: &str = "since";

/// How long opening the bucket waits out a JetStream that cannot place it yet.
const PATIENCE: Duration = Duration::from_secs(60);

/// The cookie's name: `__Host-` only over TLS, where a browser accepts it.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-xf_session"
    } else {
        "xf_session"
    }
}

/// The session store of one node.
#[derive(Clone, Debug)]
pub struct SessionKv {
    kv: kv::Store,
    /// The absolute lifetime of a session, from sign-in.
    max: Duration,
}

impl SessionKv {
    /// Opens (or creates) the node's session bucket; entries vanish `max` after their last
    /// write. Waits up to a minute while JetStream cannot place it (a clustered hub forming:
    /// the pages may be the first of a node's services to ask).
    pub async fn open(js: &jetstream::Context, node: &str, replicas: usize, max: Duration) -> Result<Self, String> {
        let config = kv::Config {
            num_replicas: replicas,
            bucket: format!("XF_SESSIONS_{node}"),
            description: "staff sessions of the pages: session id → login, sign-in time, expiry".into(),
            history: 1,
            max_age: max,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match js.create_or_update_key_value(config.clone()).await {
                Ok(kv) => return Ok(Self { kv, max }),
                Err(e) if started.elapsed() < PATIENCE => {
                    tracing::info!(error = %e, "session bucket not ready; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(format!("session bucket: {e}")),
            }
        }
    }

    /// The login of a live session, or `None` (unknown, idle too long, or older than the
    /// absolute lifetime). `Err` only when the store cannot be read.
    pub async fn login_of(&self, session_id: &str) -> Result<Option<String>, String> {
        let Ok(id) = session_id.parse::<Id>() else { return Ok(None) };
        let Some(record) = self.load(&id).await.map_err(|e| e.to_string())? else { return Ok(None) };
        Ok(live_login(&record, self.max, time::OffsetDateTime::now_utc()))
    }

    /// Ends a session at once (sign-out).
    pub async fn end(&self, session_id: &str) -> Result<(), String> {
        self.kv.purge(session_id).await.map_err(|e| e.to_string())
    }
}

/// The login a record names if it is still live at `now`: not past its (idle) expiry, and
/// signed in less than `max` ago.
pub fn live_login(record: &Record, max: Duration, now: time::OffsetDateTime) -> Option<String> {
    if record.expiry_date <= now {
        return None;
    }
    let since = record.data.get(SINCE)?.as_i64()?;
    if !within_lifetime(since, max, now) {
        return None;
    }
    record.data.get(LOGIN)?.as_str().map(str::to_string)
}

/// Whether a session signed in at `since` (Unix seconds) is younger than `max` at `now`.
pub fn within_lifetime(since: i64, max: Duration, now: time::OffsetDateTime) -> bool {
    now.unix_timestamp() - since < max.as_secs() as i64
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for SessionKv {
    /// A new record under an id no other session has (a colliding id is drawn again).
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let bytes = serde_json::to_vec(&*record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
            match self.kv.create(record.id.to_string(), bytes.into()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        self.kv.put(record.id.to_string(), bytes.into()).await.map(|_| ()).map_err(backend)
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(bytes) = self.kv.get(session_id.to_string()).await.map_err(backend)? else { return Ok(None) };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok((record.expiry_date > time::OffsetDateTime::now_utc()).then_some(record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.kv.purge(session_id.to_string()).await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(since: i64, expires_in: i64, now: time::OffsetDateTime) -> Record {
        let mut data = std::collections::HashMap::new();
        data.insert(LOGIN.to_string(), serde_json::json!("wangli"));
        data.insert(SINCE.to_string(), serde_json::json!(since));
        Record { id: Id::default(), data, expiry_date: now + time::Duration::seconds(expires_in) }
    }

    #[test]
    fn a_session_ends_when_idle_or_too_old() {
        let now = time::OffsetDateTime::now_utc();
        let t = now.unix_timestamp();
        let max = Duration::from_secs(3600);
        assert_eq!(live_login(&record(t - 60, 600, now), max, now).as_deref(), Some("wangli"));
        assert_eq!(live_login(&record(t - 60, -1, now), max, now), None, "idle past its expiry");
        assert_eq!(live_login(&record(t - 3600, 600, now), max, now), None, "signed in too long ago");
        let mut no_login = record(t, 600, now);
        no_login.data.remove(LOGIN);
        assert_eq!(live_login(&no_login, max, now), None);
    }
}
