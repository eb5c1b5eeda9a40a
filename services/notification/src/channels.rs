//! Delivery channels: a signed webhook (DESIGN.md §9), an HTTP SMS gateway, e-mail over SMTP,
//! and a file sink for development. Every channel carries the notice id as its idempotency
//! key (`Idempotency-Key`, the e-mail's `Message-ID`), so a re-send after a crash is
//! recognisable as the same notice.

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use xinfang_shared::config::NotificationSection;

/// The body of a notice on the wire (DESIGN.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub notice_id: String,
    pub case_id: String,
    pub cause_event_id: String,
    pub template: String,
    /// Where it goes: a phone number, an e-mail address, or `organ:<id>` / `petitioner`.
    pub recipient: String,
    pub text: String,
}

/// Channel names in `[notification.channels]`.
pub const NAMES: &[&str] = &["webhook", "sms", "email", "file"];

/// The channels of a node.
pub struct Channels {
    http: reqwest::Client,
    webhook_url: String,
    webhook_secret: String,
    sms_url: String,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, String)>,
    file: PathBuf,
    /// Recipient kind → channel name.
    by_kind: std::collections::BTreeMap<String, String>,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Channels {
    /// The channels `[notification]` configures; an unknown or unconfigured channel is refused.
    pub fn new(n: &NotificationSection, store: &std::path::Path) -> Result<Self, String> {
        let default = if n.webhook_url.is_empty() { "file" } else { "webhook" };
        let mut by_kind = std::collections::BTreeMap::new();
        for kind in ["petitioner", "organ"] {
            by_kind.insert(kind.to_string(), n.channels.get(kind).cloned().unwrap_or_else(|| default.to_string()));
        }
        if let Some(k) = n.channels.keys().find(|k| !by_kind.contains_key(k.as_str())) {
            return Err(format!("notification.channels.{k}: recipient kinds are petitioner and organ"));
        }
        for (kind, channel) in &by_kind {
            let missing = match channel.as_str() {
                "webhook" => n.webhook_url.is_empty().then_some("webhook_url"),
                "sms" => n.sms_url.is_empty().then_some("sms_url"),
                "email" => (n.smtp_host.is_empty() || n.smtp_from.is_empty()).then_some("smtp_host and smtp_from"),
                "file" => None,
                other => {
                    return Err(format!("notification.channels.{kind}: {other} is not one of {}", NAMES.join(", ")))
                }
            };
            if let Some(key) = missing {
                return Err(format!("notification.channels.{kind} = {channel:?} needs notification.{key}"));
            }
        }
        let smtp = if n.smtp_host.is_empty() {
            None
        } else {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&n.smtp_host)
                .port(n.smtp_port.unwrap_or(25))
                .timeout(Some(Duration::from_secs(10)))
                .build();
            Some((transport, n.smtp_from.clone()))
        };
        Ok(Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?,
            webhook_url: n.webhook_url.clone(),
            webhook_secret: n.webhook_secret.clone(),
            sms_url: n.sms_url.clone(),
            smtp,
            file: n.file_path.clone().unwrap_or_else(|| store.join("notices.jsonl")),
            by_kind,
        })
    }

    /// The channel for a recipient kind (`petitioner`, `organ`).
    pub fn for_kind(&self, kind: &str) -> &str {
        self.by_kind.get(kind).map(String::as_str).unwrap_or("file")
    }

    /// One delivery attempt.
    pub async fn send(&self, channel: &str, notice: &Notice) -> Result<(), String> {
        match channel {
            "webhook" => {
                let body = serde_json::to_vec(notice).expect("serializes");
                let r = self
                    .http
                    .post(&self.webhook_url)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", &notice.notice_id)
                    .header("X-Xf-Signature", signature(&self.webhook_secret, &body))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("webhook: {}", e.without_url()))?;
                ok_status(r.status())
            }
            "sms" => {
                let body =
                    serde_json::json!({"to": notice.recipient, "text": notice.text, "notice_id": notice.notice_id});
                let r = self
                    .http
                    .post(&self.sms_url)
                    .header("Idempotency-Key", &notice.notice_id)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("sms gateway: {}", e.without_url()))?;
                ok_status(r.status())
            }
            "email" => {
                let (transport, from) = self.smtp.as_ref().ok_or("no smtp_host")?;
                let message = Message::builder()
                    .from(from.parse().map_err(|e| format!("smtp_from: {e}"))?)
                    .to(notice.recipient.parse().map_err(|_| "not an e-mail address".to_string())?)
                    .subject(format!("信访事项通知（{}）", notice.case_id))
                    .message_id(Some(format!("<{}@xinfang>", notice.notice_id.replace([':', ' '], "."))))
                    .header(ContentType::TEXT_PLAIN)
                    .body(notice.text.clone())
                    .map_err(|e| e.to_string())?;
                transport.send(message).await.map(|_| ()).map_err(|e| format!("smtp: {e}"))
            }
            "file" => {
                let (path, notice) = (self.file.clone(), notice.clone());
                tokio::task::spawn_blocking(move || append_once(&path, &notice))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("file sink: {e}"))
            }
            other => Err(format!("no channel {other}")),
        }
    }
}

/// How far back the file sink looks for a notice it may already have written.
const FILE_SINK_LOOKBACK: u64 = 4 << 20;

/// Appends `notice` as one JSON line, unless the file's last [`FILE_SINK_LOOKBACK`] bytes
/// already hold its id: a crash between writing and recording re-sends the notice moments
/// later, and the file is the sink's only idempotency record. One `write` per line, so lines
/// of notices delivered at the same time never interleave.
fn append_once(path: &std::path::Path, notice: &Notice) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(FILE_SINK_LOOKBACK)))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let needle = format!("\"notice_id\":{}", serde_json::to_string(&notice.notice_id).expect("serializes"));
    if tail.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return Ok(());
    }
    let mut line = serde_json::to_vec(notice).expect("serializes");
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

fn ok_status(status: reqwest::StatusCode) -> Result<(), String> {
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn the_file_sink_writes_a_notice_once() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::new(&NotificationSection::default(), dir.path()).unwrap();
        let notice = |id: &str| Notice {
            notice_id: id.into(),
            case_id: "320211-20261127-000001".into(),
            cause_event_id: "ev-1".into(),
            template: "receipt".into(),
            recipient: "petitioner".into(),
            text: "您的信访事项已登记".into(),
        };
        for id in ["n-1", "n-2", "n-1", "n-10", "n-2"] {
            channels.send("file", &notice(id)).await.unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("notices.jsonl")).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["notice_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["n-1", "n-2", "n-10"]);
    }

    #[test]
    fn channels_must_be_configured() {
        let dir = std::path::Path::new("/tmp");
        let mut n = NotificationSection::default();
        assert_eq!(Channels::new(&n, dir).unwrap().for_kind("petitioner"), "file");
        n.channels.insert("petitioner".into(), "sms".into());
        assert!(Channels::new(&n, dir).err().unwrap().contains("sms_url"));
        n.channels.insert("petitioner".into(), "pigeon".into());
        assert!(Channels::new(&n, dir).err().unwrap().contains("pigeon"));
        n.channels.clear();
        n.channels.insert("mayor".into(), "file".into());
        assert!(Channels::new(&n, dir).err().unwrap().contains("mayor"));
    }
}
