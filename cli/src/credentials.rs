//! `xinfang user add` and `xinfang token add` (DESIGN.md §11): make a credential and print the
//! node-file lines to paste. The secret itself is never written to a file: a password is read
//! from standard input and kept only as its argon2id hash; a token is shown once, on standard
//! error, and kept only as its SHA-256.

use std::io::BufRead;
use std::process::ExitCode;

use rand::Rng;
use xinfang_shared::access::{hash_password, token_sha256, Role};

/// A new bearer token: `xf_` and 40 random characters.
pub fn new_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("xf_{body}")
}

/// The roles of `--roles`, checked against the organ and channel they need.
fn roles(list: &[String], organ_id: &Option<String>, channel: &Option<String>) -> Result<Vec<Role>, String> {
    let mut out = Vec::new();
    for r in list.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        let role = Role::ALL
            .into_iter()
            .find(|x| x.as_str() == r)
            .ok_or_else(|| format!("unknown role {r:?} (organ, bureau, office, auditor, integration)"))?;
        out.push(role);
    }
    if out.is_empty() {
        return Err("--roles: at least one role".into());
    }
    if out.contains(&Role::Organ) && organ_id.is_none() {
        return Err("the organ role needs --organ-id".into());
    }
    if out.contains(&Role::Integration) && channel.is_none() {
        return Err("the integration role needs --channel".into());
    }
    Ok(out)
}

fn toml_list(roles: &[Role]) -> String {
    let items: Vec<String> = roles.iter().map(|r| format!("\"{}\"", r.as_str())).collect();
    format!("[{}]", items.join(", "))
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `xinfang token add`: a new token, shown once on standard error; its node-file entry on
/// standard output.
pub fn token_add(name: &str, list: &[String], organ_id: Option<String>, channel: Option<String>) -> ExitCode {
    let roles = match roles(list, &organ_id, &channel) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if roles.contains(&Role::Integration) {
        if let Some(c) = &channel {
            if xinfang_shared::petition::Channel::parse(c).is_none() {
                return fail(&format!("unknown channel {c:?}"));
            }
        }
    }
    let token = new_token();
    eprintln!("the token (give it to its holder now; it is kept nowhere): {token}");
    println!("[[auth.tokens]]");
    println!("name = {}", quoted(name));
    println!("roles = {}", toml_list(&roles));
    if let Some(o) = organ_id {
        println!("organ_id = {}", quoted(&o));
    }
    if let Some(c) = channel {
        println!("channel = {}", quoted(&c));
    }
    println!("sha256 = \"{}\"", token_sha256(&token));
    ExitCode::SUCCESS
}

/// `xinfang user add`: the password from the first line of standard input (at least 10
/// characters), its argon2id hash in the node-file entry on standard output.
pub fn user_add(login: &str, name: &str, list: &[String], organ_id: Option<String>) -> ExitCode {
    let roles = match roles(list, &organ_id, &None) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if roles.contains(&Role::Integration) {
        return fail("integration is a role for tokens (xinfang token add), not users");
    }
    eprintln!("password for {login} (one line on standard input):");
    let mut password = String::new();
    if std::io::stdin().lock().read_line(&mut password).is_err() {
        return fail("could not read the password from standard input");
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 10 {
        return fail("the password must be at least 10 characters");
    }
    println!("[[auth.users]]");
    println!("login = {}", quoted(login));
    println!("name = {}", quoted(name));
    println!("roles = {}", toml_list(&roles));
    if let Some(o) = organ_id {
        println!("organ_id = {}", quoted(&o));
    }
    println!("password_hash = \"{}\"", hash_password(password));
    ExitCode::SUCCESS
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("xinfang: {msg}");
    ExitCode::from(2)
}
