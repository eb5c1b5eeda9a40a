//! Access control (DESIGN.md §11), pure: who the caller is, and what each role may do with a
//! case — decided here, once, for every transport. Credentials are checked by
//! [`Credentials::authenticate`] (SHA-256 of a bearer token, argon2id of a password); the
//! services only pass on the `Authorization` header and the case they loaded.
//!
//! The refusals: no or bad credentials `unauthorized`; a case outside the caller's scope
//! `not_found` (so case ids cannot be probed); a role that may not do this `forbidden`.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::event::{Actor, ActorKind};
use crate::ids::OrganId;
use crate::petition::Channel;

/// A staff role (DESIGN.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An organ's staff (承办单位): the cases routed to its organ, nothing else.
    Organ,
    /// The petition bureau (信访局): everything on its node's cases.
    Bureau,
    /// The city's joint-meeting office (联席会议办公室): escalations and directives.
    Office,
    /// Reads, never acts.
    Auditor,
    /// A system that submits on one channel (the 12345 hotline, say).
    Integration,
}

impl Role {
    pub const ALL: [Role; 5] = [Self::Organ, Self::Bureau, Self::Office, Self::Auditor, Self::Integration];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Organ => "organ",
            Self::Bureau => "bureau",
            Self::Office => "office",
            Self::Auditor => "auditor",
            Self::Integration => "integration",
        }
    }

    /// The role's name for pages.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Organ => "承办单位",
            Self::Bureau => "信访局",
            Self::Office => "联席办",
            Self::Auditor => "监督",
            Self::Integration => "接口",
        }
    }
}

/// A signed-in user or the holder of a token: the name on record and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The login or token name from the node file; the actor on record.
    pub name: String,
    /// The display name (users), else the name.
    pub display: String,
    pub roles: Vec<Role>,
    /// The organ an `organ` credential acts for.
    pub organ_id: Option<OrganId>,
    /// The channel an `integration` credential submits on.
    pub channel: Option<Channel>,
}

impl Identity {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The staff actor this identity records when it acts as itself.
    pub fn as_staff(&self) -> Actor {
        Actor { kind: ActorKind::Staff, id: self.name.clone() }
    }
}

/// Who is asking: nobody in particular, or a staff identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Public,
    Staff(Identity),
}

impl Caller {
    /// The identity, or `unauthorized`: a staff operation without credentials.
    pub fn staff(&self) -> Result<&Identity, ApiError> {
        match self {
            Caller::Staff(i) => Ok(i),
            Caller::Public => Err(unauthorized("this needs staff credentials (Authorization: Bearer …)")),
        }
    }

    /// For logs: the identity's name, or `public`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Staff(i) => &i.name,
            Caller::Public => "public",
        }
    }
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::general(ErrorCode::Unauthorized, message)
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::general(ErrorCode::Forbidden, message)
}

/// The refusal for a case the caller may not see: the same as for a case that does not exist.
pub fn out_of_scope(case_id: &str) -> ApiError {
    ApiError::general(ErrorCode::NotFound, format!("no case {case_id} at this node"))
}

/// A token from the node file: its name, roles and the SHA-256 of the secret.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub identity: Identity,
    pub sha256: [u8; 32],
}

/// A user from the node file: login, roles and the argon2id hash of the password.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub identity: Identity,
    pub password_hash: String,
}

/// Every credential a node accepts.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub tokens: Vec<TokenEntry>,
    pub users: Vec<UserEntry>,
}

impl Credentials {
    /// The caller an `Authorization` header value names: none → public; `Bearer <token>` of a
    /// known token → its identity; anything else → `unauthorized` (a bad credential is never
    /// taken for the public).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Caller::Public);
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
        self.token(token).map(|i| Caller::Staff(i.clone())).ok_or_else(|| unauthorized("unknown or revoked token"))
    }

    /// The identity of a bearer token, compared by its SHA-256 in constant time.
    pub fn token(&self, token: &str) -> Option<&Identity> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // look at every entry, so the time does not tell which one matched
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.sha256, &digest) {
                found = Some(&t.identity);
            }
        }
        found
    }

    /// The identity of a login and password (argon2id); `None` for an unknown login or a
    /// wrong password alike. An unknown login still costs one hash, so the time does not tell.
    pub fn login(&self, login: &str, password: &str) -> Option<&Identity> {
        let user = self.users.iter().find(|u| u.identity.name == login);
        let hash = user.map(|u| u.password_hash.as_str()).unwrap_or_else(|| dummy_hash());
        let ok = PasswordHash::new(hash)
            .ok()
            .is_some_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        user.filter(|_| ok).map(|u| &u.identity)
    }

    /// The identity of a user by login, for a session that names it (a user removed from the
    /// node file loses its sessions).
    pub fn user(&self, login: &str) -> Option<&Identity> {
        self.users.iter().find(|u| u.identity.name == login).map(|u| &u.identity)
    }
}

/// An argon2id hash of no one's password, verified against when the login is unknown.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&ulid::Ulid::new().to_string()))
}

/// The argon2id hash (PHC string, the `argon2` crate's defaults) of a password.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with its defaults").to_string()
}

/// The hex SHA-256 of a bearer token, as the node file keeps it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How much of a petitioner's personal data a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Names, ID numbers, phones and addresses as registered (the read is audited).
    Full,
    /// ID numbers, phones and names masked.
    Masked,
}

/// Masks, in place, every petitioner's name, ID number, phone and address found in a case's
/// JSON (events, snapshots of transferred cases nested in them): for [`Sight::Masked`].
pub fn mask_personal_data(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(people)) = map.get_mut("petitioners") {
                for p in people.iter_mut().filter_map(Value::as_object_mut) {
                    mask_field(p, "name", crate::notice::mask_name);
                    mask_field(p, "id_number", mask_id_number);
                    mask_field(p, "phone", crate::notice::mask_phone);
                    mask_field(p, "address", |_| "***".into());
                }
            }
            for v in map.values_mut() {
                mask_personal_data(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_personal_data),
        _ => {}
    }
}

fn mask_field(p: &mut serde_json::Map<String, serde_json::Value>, key: &str, mask: impl Fn(&str) -> String) {
    if let Some(serde_json::Value::String(s)) = p.get_mut(key) {
        *s = mask(s);
    }
}

/// `320***********12X`-style: the first 3 and last 2 characters of an ID number.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 6 {
        return "*".repeat(chars.len());
    }
    let (head, tail): (String, String) = (chars[..3].iter().collect(), chars[chars.len() - 2..].iter().collect());
    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
}

/// May `caller` submit a petition on `channel`? The public: online only; `bureau`: any
/// channel; `integration`: the channel its token names.
pub fn may_submit(caller: &Caller, channel: Channel) -> Result<(), ApiError> {
    match caller {
        Caller::Public if channel == Channel::Online => Ok(()),
        Caller::Public => Err(unauthorized("only online petitions are accepted without staff credentials")),
        Caller::Staff(i) if i.has(Role::Bureau) => Ok(()),
        Caller::Staff(i) if i.has(Role::Integration) => match i.channel {
            Some(c) if c == channel => Ok(()),
            _ => Err(forbidden(format!("{} submits on its own channel only", i.name))),
        },
        Caller::Staff(i) => Err(forbidden(format!("{} may not register petitions", i.name))),
    }
}

/// May `caller` read a case that is with `organ` (its current organ, if any)? And how much
/// of the petitioner does it see?
pub fn may_read(caller: &Caller, case_id: &str, organ: Option<&OrganId>) -> Result<Sight, ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Bureau) {
        return Ok(Sight::Full);
    }
    if i.has(Role::Organ) && i.organ_id.is_some() && i.organ_id.as_ref() == organ {
        return Ok(Sight::Full);
    }
    if i.has(Role::Auditor) {
        return Ok(Sight::Masked);
    }
    if i.has(Role::Organ) {
        return Err(out_of_scope(case_id));
    }
    Err(forbidden(format!("{} may not read cases", i.name)))
}

/// Who an action is on record as: the actor, and the staff who recorded it for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnRecord {
    pub actor: Actor,
    pub recorded_by: Option<Actor>,
}

/// May `caller` take `action` on a case that is with `organ`, as `requested` (the body's
/// `actor`, if any)? `by_petitioner`: the action is the petitioner's (evaluate, review …);
/// `query_code_ok`: the body carried the case's query code.
///
/// - the public: the petitioner's own actions, with the query code;
/// - `organ`: its organ's cases, as its organ (another actor is `forbidden`);
/// - `bureau`: anything, as itself or on behalf of the actor named (paper and phone work);
/// - others: `forbidden` (an organ's case it cannot see: `not_found`).
pub fn may_act(
    caller: &Caller,
    case_id: &str,
    organ: Option<&OrganId>,
    by_petitioner: bool,
    requested: Option<&Actor>,
    query_code_ok: bool,
) -> Result<OnRecord, ApiError> {
    let i = match caller {
        Caller::Public => {
            if !by_petitioner {
                return Err(unauthorized("this action needs staff credentials (Authorization: Bearer …)"));
            }
            if !query_code_ok {
                return Err(out_of_scope(case_id));
            }
            return match requested {
                Some(a) if a.kind != ActorKind::Petitioner => {
                    Err(forbidden("without staff credentials one acts only as the petitioner"))
                }
                Some(a) => Ok(OnRecord { actor: a.clone(), recorded_by: None }),
                None => Ok(OnRecord {
                    actor: Actor { kind: ActorKind::Petitioner, id: "petitioner".into() },
                    recorded_by: None,
                }),
            };
        }
        Caller::Staff(i) => i,
    };
    if i.has(Role::Bureau) {
        return Ok(match requested {
            Some(a) if *a != i.as_staff() => OnRecord { actor: a.clone(), recorded_by: Some(i.as_staff()) },
            _ => OnRecord { actor: i.as_staff(), recorded_by: None },
        });
    }
    if i.has(Role::Organ) {
        let Some(own) = i.organ_id.as_ref() else {
            return Err(forbidden(format!("{} has the organ role but no organ_id", i.name)));
        };
        if organ != Some(own) {
            return Err(out_of_scope(case_id));
        }
        if by_petitioner {
            return Err(forbidden("an organ does not act for the petitioner"));
        }
        return match requested {
            Some(a) if a.kind != ActorKind::Organ || a.id != own.as_str() => {
                Err(forbidden(format!("{} acts only as organ {own}", i.name)))
            }
            _ => Ok(OnRecord { actor: Actor { kind: ActorKind::Organ, id: own.to_string() }, recorded_by: None }),
        };
    }
    if i.has(Role::Auditor) {
        return Err(forbidden(format!("{} reads only", i.name)));
    }
    Err(forbidden(format!("{} may not act on cases", i.name)))
}

/// Which cases a worklist shows a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Every case of the node (`bureau`, `auditor`).
    Node,
    /// The cases with one organ (`organ`).
    Organ(OrganId),
}

/// May `caller` list cases, and which? `bureau` and `auditor` the node's, an `organ` its own;
/// others `forbidden`.
pub fn list_scope(caller: &Caller) -> Result<ListScope, ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Bureau) || i.has(Role::Auditor) {
        return Ok(ListScope::Node);
    }
    match (&i.organ_id, i.has(Role::Organ)) {
        (Some(o), true) => Ok(ListScope::Organ(o.clone())),
        _ => Err(forbidden(format!("{} may not list cases", i.name))),
    }
}

/// May `caller` see the node's overview (`bureau`, `auditor`)?
pub fn may_overview(caller: &Caller) -> Result<(), ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Bureau) || i.has(Role::Auditor) {
        Ok(())
    } else {
        Err(forbidden(format!("{} may not see the node's overview", i.name)))
    }
}

/// May `caller` keep the node's agenda — publish reception days, record receptions, open
/// campaigns and mark their cases (`bureau`)?
pub fn may_keep_agenda(caller: &Caller) -> Result<(), ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Bureau) {
        Ok(())
    } else {
        Err(forbidden(format!("{} may not keep the reception schedule or campaigns", i.name)))
    }
}

/// May `caller` read the agenda's staff side — the bookings of a slot, a campaign's progress
/// (`bureau`, `auditor`, and the city's `office`)?
pub fn may_read_agenda(caller: &Caller) -> Result<(), ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Bureau) || i.has(Role::Auditor) || i.has(Role::Office) {
        Ok(())
    } else {
        Err(forbidden(format!("{} may not read the reception bookings or campaigns", i.name)))
    }
}

/// May `caller` read the escalation inbox, and how much of the petitioners in the case
/// snapshots? The `office` in full (the read is audited), `auditor`s masked.
pub fn may_read_escalations(caller: &Caller) -> Result<Sight, ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Office) {
        Ok(Sight::Full)
    } else if i.has(Role::Auditor) {
        Ok(Sight::Masked)
    } else {
        Err(forbidden(format!("{} may not read the escalation inbox", i.name)))
    }
}

/// May `caller` acknowledge escalations and issue directives (`office`)?
pub fn may_direct(caller: &Caller) -> Result<(), ApiError> {
    let i = caller.staff()?;
    if i.has(Role::Office) {
        Ok(())
    } else {
        Err(forbidden(format!("{} may not acknowledge escalations or issue directives", i.name)))
    }
}

#[cfg(test)]
mod tests;
