//! Keyed hashes with the node secret (DESIGN.md §11), pure: what the ledger keeps instead of a
//! query code or a petitioner's ID number is an HMAC-SHA256 under the node's current secret,
//! written `h1.<key id>.<hex>`, so one who reads the ledger cannot try the 31^6 codes or the
//! ID numbers of a district offline. The secret file holds one secret per line, the current one
//! first; an older line still verifies the hashes made with it, so a secret is rotated by
//! adding a new first line without losing old cases. Hashes from before keyed hashing (bare
//! SHA-256 hex) still verify.
//!
//! What must be read back (a receipt's query code, kept for the receipt notice and for a
//! retried submission) is sealed instead: ChaCha20-Poly1305 under a key derived from the
//! current secret, written `s1.<key id>.<hex nonce and ciphertext>`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What a keyed hash is for: the same message hashes differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `case_id:CODE`.
    QueryCode,
    /// A resident ID number, for matching repeat petitions (重复信访).
    Petitioner,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::QueryCode => b"xf-query-code",
            Self::Petitioner => b"xf-petitioner",
        }
    }
}

/// One secret and its public id (the first 8 hex digits of a hash of it).
#[derive(Clone)]
struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The node's secrets, newest first.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "KeyRing({ids:?})")
    }
}

/// The shortest secret accepted (characters of a line).
pub const MIN_SECRET_LEN: usize = 32;

impl KeyRing {
    /// Reads a secret file's text: one secret per line, newest first; blank lines and `#`
    /// comments are skipped.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_SECRET_LEN {
                return Err(format!("line {}: a secret has at least {MIN_SECRET_LEN} characters", i + 1));
            }
            let id = hex::encode(&Sha256::digest([b"xf-key-id:", line.as_bytes()].concat())[..4]);
            keys.push(Key { id, secret: line.as_bytes().to_vec() });
        }
        if keys.is_empty() {
            return Err("no secret in the file".into());
        }
        Ok(Self { keys })
    }

    /// A new secret file's text: one random secret.
    pub fn new_file_text(random: [u8; 32]) -> String {
        format!("# xinfang node secret: newest first; keep older lines to verify old cases\n{}\n", hex::encode(random))
    }

    /// The id of the current secret.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    fn mac(key: &Key, purpose: Purpose, message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC takes any key length");
        mac.update(purpose.label());
        mac.update(&[0]);
        mac.update(message.as_bytes());
        format!("h1.{}.{}", key.id, hex::encode(mac.finalize().into_bytes()))
    }

    /// The keyed hash of `message` under the current secret.
    pub fn hash(&self, purpose: Purpose, message: &str) -> String {
        Self::mac(&self.keys[0], purpose, message)
    }

    fn seal_key(key: &Key) -> chacha20poly1305::Key {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC takes any key length");
        mac.update(b"xf-seal");
        mac.finalize().into_bytes()
    }

    /// `plaintext` sealed under the current secret with `nonce` (random, never reused).
    pub fn seal(&self, plaintext: &str, nonce: [u8; 12]) -> String {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let key = &self.keys[0];
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&Self::seal_key(key));
        let sealed = cipher.encrypt(&nonce.into(), plaintext.as_bytes()).expect("in-memory encryption");
        format!("s1.{}.{}{}", key.id, hex::encode(nonce), hex::encode(sealed))
    }

    /// The plaintext of a [`KeyRing::seal`]ed value, under whichever secret of the ring sealed
    /// it; `None` if no secret of the ring did, or it was altered.
    pub fn open(&self, sealed: &str) -> Option<String> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let (id, body) = sealed.strip_prefix("s1.")?.split_once('.')?;
        let key = self.keys.iter().find(|k| k.id == id)?;
        let bytes = hex::decode(body).ok().filter(|b| b.len() > 12)?;
        let (nonce, ciphertext) = bytes.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&Self::seal_key(key));
        let plain = cipher.decrypt(chacha20poly1305::Nonce::from_slice(nonce), ciphertext).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Every form `message` may have been stored in: under each secret, newest first, then
    /// the unkeyed SHA-256 of `legacy` (what was stored before keyed hashes).
    pub fn candidates(&self, purpose: Purpose, message: &str, legacy: &str) -> Vec<String> {
        let mut out: Vec<String> = self.keys.iter().map(|k| Self::mac(k, purpose, message)).collect();
        out.push(hex::encode(Sha256::digest(legacy.as_bytes())));
        out
    }

    /// Does `stored` hash `message` (under any secret of the ring, or as the unkeyed SHA-256
    /// of `legacy`)? Compared in constant time.
    pub fn verify(&self, purpose: Purpose, message: &str, legacy: &str, stored: &str) -> bool {
        let given = match stored.strip_prefix("h1.").and_then(|rest| rest.split_once('.')) {
            Some((id, _)) => match self.keys.iter().find(|k| k.id == id) {
                Some(key) => Self::mac(key, purpose, message),
                None => return false,
            },
            None => hex::encode(Sha256::digest(legacy.as_bytes())),
        };
        crate::access::constant_time_eq(given.as_bytes(), stored.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "0123456789abcdef0123456789abcdef-old";
    const NEW: &str = "fedcba9876543210fedcba9876543210-new";

    #[test]
    fn hashes_verify_under_every_secret_of_the_ring_and_not_elsewhere() {
        let old = KeyRing::from_text(OLD).unwrap();
        let stored = old.hash(Purpose::QueryCode, "C:ABC234");
        assert!(stored.starts_with(&format!("h1.{}.", old.current_id())));
        assert!(old.verify(Purpose::QueryCode, "C:ABC234", "", &stored));
        assert!(!old.verify(Purpose::QueryCode, "C:ABC235", "", &stored));
        assert!(!old.verify(Purpose::Petitioner, "C:ABC234", "", &stored), "purposes differ");
        // rotated: the new secret first, the old one kept
        let rotated = KeyRing::from_text(&format!("# rotated\n{NEW}\n\n{OLD}\n")).unwrap();
        assert_ne!(rotated.hash(Purpose::QueryCode, "C:ABC234"), stored);
        assert!(rotated.verify(Purpose::QueryCode, "C:ABC234", "", &stored));
        assert!(rotated.candidates(Purpose::QueryCode, "C:ABC234", "x").contains(&stored));
        // a ring without the old secret does not
        let other = KeyRing::from_text(NEW).unwrap();
        assert!(!other.verify(Purpose::QueryCode, "C:ABC234", "", &stored));
    }

    #[test]
    fn unkeyed_hashes_from_before_still_verify() {
        let ring = KeyRing::from_text(NEW).unwrap();
        let legacy = hex::encode(Sha256::digest(b"C:ABC234"));
        assert!(ring.verify(Purpose::QueryCode, "ignored", "C:ABC234", &legacy));
        assert!(!ring.verify(Purpose::QueryCode, "ignored", "C:ABC235", &legacy));
    }

    #[test]
    fn sealed_values_open_under_the_ring_that_sealed_them_only() {
        let old = KeyRing::from_text(OLD).unwrap();
        let sealed = old.seal("ABC234", [1; 12]);
        assert!(sealed.starts_with("s1.") && !sealed.contains("ABC234"));
        assert_eq!(old.open(&sealed).as_deref(), Some("ABC234"));
        let rotated = KeyRing::from_text(&format!("{NEW}\n{OLD}")).unwrap();
        assert_eq!(rotated.open(&sealed).as_deref(), Some("ABC234"), "an older secret still opens");
        assert_eq!(KeyRing::from_text(NEW).unwrap().open(&sealed), None);
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert_eq!(old.open(&altered), None);
        assert_eq!(old.open("ABC234"), None);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(KeyRing::from_text("# only a comment\n").is_err());
        assert!(KeyRing::from_text("short").is_err());
        assert!(KeyRing::from_text(&KeyRing::new_file_text([7; 32])).is_ok());
    }
}
