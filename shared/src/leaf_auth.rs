//! Leaf-link credentials (DESIGN.md §10): each child authenticates to its parent's leaf
//! listener as `leaf_<code>` with a secret of its own; the parent keeps only bcrypt hashes of
//! them (`nats.leaf_users`, a TOML table `<child code> = "<hash>"`), the child its secret
//! (`nats.leaf_credentials`, a file with the secret on one line). Secrets are generated here,
//! written with mode 0600, never committed. What each child may publish and receive on its
//! link is the parent's nats-server configuration (`xinfang up` writes it).
//!
//! Does file I/O ([`issue`], [`read_secret`], [`read_users`]); the rest is pure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};

use crate::ids::NodeCode;
use crate::{links, runtime};

/// What a child's leaf user may send into its parent and receive from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The least a child needs on its link (TOPOLOGY.md): the parent's `XF_ROUTES` sourcing the
/// child's outbox (requests into the child's own JetStream domain only; the outbox's messages
/// up under [`links::delivery_up`]), the child's inbox sourcing `XF_ROUTES` (consumers on
/// `XF_ROUTES` and nothing else of the parent's JetStream; the messages down under
/// [`links::delivery_down`]), flow control and JetStream's answers, the link probes, and the
/// answers to each side's own requests ([`crate::runtime::inbox_prefix`]). Nothing under
/// `xf.>`: a child cannot write the parent's ledger, its outbox or anyone's inbox, and never
/// receives another child's traffic.
pub fn permissions(parent: &NodeCode, parent_domain: &str, child: &NodeCode, child_domain: &str) -> Permissions {
    let api = format!("$JS.{parent_domain}.API");
    let routes = links::ROUTES;
    Permissions {
        publish: vec![
            format!("{api}.INFO"),
            format!("{api}.STREAM.INFO.{routes}"),
            format!("{api}.CONSUMER.CREATE.{routes}"),
            format!("{api}.CONSUMER.CREATE.{routes}.>"),
            format!("{api}.CONSUMER.DELETE.{routes}.>"),
            format!("{}.>", links::delivery_up(child)),
            "$JS.FC.>".into(),
            "$JSC.R.>".into(),
            format!("{}.>", runtime::inbox_prefix(parent)),
        ],
        subscribe: vec![
            format!("$JS.{child_domain}.API.>"),
            format!("{}.>", links::delivery_down(child)),
            "$JS.FC.>".into(),
            "$JSC.R.>".into(),
            format!("{}.>", runtime::inbox_prefix(child)),
        ],
    }
}

/// bcrypt's work factor for the hashes on the parent (checked once per leaf connect).
const COST: u32 = 10;

/// The user a child's leaf link authenticates as.
pub fn user(child: &NodeCode) -> String {
    format!("leaf_{child}")
}

/// A new secret: 40 letters and digits (safe inside a URL's user information).
pub fn new_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// The bcrypt hash of a secret, as nats-server checks it.
pub fn hash(secret: &str) -> Result<String, String> {
    bcrypt::hash(secret, COST).map_err(|e| format!("hashing a leaf secret: {e}"))
}

/// The secret in a child's `nats.leaf_credentials` file.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("nats.leaf_credentials {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("nats.leaf_credentials {}: expected one line of letters and digits", path.display()));
    }
    Ok(secret)
}

/// The children's hashes in a parent's `nats.leaf_users` file, by child code.
pub fn read_users(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("nats.leaf_users {}: {e}", path.display()))?;
    let users: BTreeMap<String, String> =
        toml::from_str(&text).map_err(|e| format!("nats.leaf_users {}: {e}", path.display()))?;
    for (code, hash) in &users {
        if NodeCode::parse(code).is_err() || !hash.starts_with("$2") {
            return Err(format!("nats.leaf_users {}: {code:?} needs a node code and a bcrypt hash", path.display()));
        }
    }
    Ok(users)
}

/// What [`issue`] wrote: the parent's users file and each child's secret file.
#[derive(Debug, Clone)]
pub struct Issued {
    pub users: PathBuf,
    pub secrets: BTreeMap<String, PathBuf>,
}

/// Writes into `dir` a secret file per child (`<code>.secret`, kept when it exists, so links
/// keep working when this is run again) and the parent's `leaf-users.toml` with their hashes.
pub fn issue(dir: &Path, children: &[NodeCode]) -> Result<Issued, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut users = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for child in children {
        let (path, secret) = secret_file(dir, child)?;
        users.insert(child.to_string(), hash(&secret)?);
        secrets.insert(child.to_string(), path);
    }
    let path = dir.join("leaf-users.toml");
    let mut text = String::from("# leaf users of this parent node: child code = bcrypt hash of its secret\n");
    text += &toml::to_string(&users).map_err(|e| e.to_string())?;
    write_private(&path, &text)?;
    Ok(Issued { users: absolute(&path), secrets })
}

/// A child's secret file in `dir` (`<code>.secret`): read when it exists, else made. Returns
/// its absolute path and the secret.
pub fn secret_file(dir: &Path, child: &NodeCode) -> Result<(PathBuf, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{child}.secret"));
    let secret = match read_secret(&path) {
        Ok(s) => s,
        Err(_) => {
            let s = new_secret();
            write_private(&path, &format!("{s}\n"))?;
            s
        }
    };
    Ok((absolute(&path), secret))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Writes a file only its owner can read (secrets, and a config that holds one).
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_secrets_verify_against_the_parents_hashes_and_survive_a_second_run() {
        let dir = tempfile::tempdir().unwrap();
        let children = [NodeCode::parse("320211").unwrap(), NodeCode::parse("320213").unwrap()];
        let first = issue(dir.path(), &children).unwrap();
        let users = read_users(&first.users).unwrap();
        let secret = read_secret(&first.secrets["320211"]).unwrap();
        assert!(bcrypt::verify(&secret, &users["320211"]).unwrap());
        assert!(!bcrypt::verify(&secret, &users["320213"]).unwrap(), "each child has its own secret");
        let again = issue(dir.path(), &children).unwrap();
        assert_eq!(read_secret(&again.secrets["320211"]).unwrap(), secret, "kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.secrets["320211"]).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner reads a secret");
    }

    #[test]
    fn a_users_file_without_hashes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.toml");
        std::fs::write(&path, "320211 = \"plain\"\n").unwrap();
        assert!(read_users(&path).unwrap_err().contains("bcrypt"));
    }
}
