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
                use std::io::Write;
                let line = serde_json::to_string(notice).expect("serializes");
                let path = self.file.clone();
                tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                    writeln!(f, "{line}")?;
                    f.sync_data()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("file sink: {e}"))
            }
            other => Err(format!("no channel {other}")),
        }
    }
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
