//! The petition (信访事项) as submitted (DESIGN.md §5), and its validation: every refusal
//! names a code and the JSON path of the field; unknown fields are refused so a misspelt key
//! never silently drops what a petitioner said.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::error::{ApiError, ErrorCode};
use crate::ids::{DivisionCode, IdNumber, OrganId, Phone};
use crate::time::{to_cst, Instant};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// Headcount from which a petition is a group petition (集体访, Art. 20 ¶3 policy).
pub const GROUP_HEADCOUNT: u32 = 5;
/// How far a client clock may run ahead before `received_at` counts as in the future.
pub const CLOCK_SKEW_SECS: i64 = 120;

/// How the petition reached the organ (Art. 17 and local channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Letter,
    Visit,
    Online,
    Phone,
    /// The wire name is `hotline_12345` (DESIGN.md §5); events written before 2026-12-02 say
    /// `hotline12345` (serde's snake case of the name), still read.
    #[serde(rename = "hotline_12345", alias = "hotline12345")]
    Hotline12345,
    LeaderMailbox,
    LeaderReception,
}

impl Channel {
    /// Every channel, in wire order.
    pub const ALL: [Channel; 7] = [
        Self::Letter,
        Self::Visit,
        Self::Online,
        Self::Phone,
        Self::Hotline12345,
        Self::LeaderMailbox,
        Self::LeaderReception,
    ];

    /// The wire name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Letter => "letter",
            Self::Visit => "visit",
            Self::Online => "online",
            Self::Phone => "phone",
            Self::Hotline12345 => "hotline_12345",
            Self::LeaderMailbox => "leader_mailbox",
            Self::LeaderReception => "leader_reception",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod channel_tests {
    use super::Channel;

    #[test]
    fn every_channel_is_written_by_its_wire_name_and_old_events_still_read() {
        for c in Channel::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str(), "{c:?}");
            assert_eq!(serde_json::from_value::<Channel>(c.as_str().into()).unwrap(), c);
        }
        assert_eq!(serde_json::from_value::<Channel>("hotline12345".into()).unwrap(), Channel::Hotline12345);
    }
}

/// The three classes of Arts. 29–31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 建议意见
    Suggestion,
    /// 检举控告
    ComplaintReport,
    /// 申诉求决
    AppealRequest,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suggestion => "suggestion",
            Self::ComplaintReport => "complaint_report",
            Self::AppealRequest => "appeal_request",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Suggestion, Self::ComplaintReport, Self::AppealRequest].into_iter().find(|k| k.as_str() == s)
    }
}

/// 信访人 — one petitioner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Petitioner {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_number: Option<IdNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Where the matter arose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub division: DivisionCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A validated petition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Petition {
    pub channel: Channel,
    pub received_at: Instant,
    pub petitioners: Vec<Petitioner>,
    pub headcount: u32,
    pub location: Location,
    pub category: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respondent_organ_id: Option<OrganId>,
    pub title: String,
    pub content: String,
}

/// A petition as submitted: the petition plus the client's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub petition: Petition,
    pub idempotency_key: Option<String>,
}

impl Petition {
    /// 集体访: headcount of 5 or more.
    pub fn is_group(&self) -> bool {
        self.headcount >= GROUP_HEADCOUNT
    }
}

const FIELDS: &[&str] = &[
    "channel",
    "received_at",
    "petitioners",
    "headcount",
    "location",
    "category",
    "kind",
    "respondent_organ_id",
    "title",
    "content",
    "idempotency_key",
];
const PETITIONER_FIELDS: &[&str] = &["name", "id_number", "phone", "address"];
const LOCATION_FIELDS: &[&str] = &["division", "address"];

/// Parses a request body into JSON, mapping every failure to a wire error.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::general(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::general(ErrorCode::InvalidJson, format!("the body is not valid JSON (UTF-8): {e}")))
}

/// Validates a submitted petition against the node's configuration at time `now`.
pub fn validate(value: &Value, settings: &Settings, now: Instant) -> Result<Submission, ApiError> {
    let obj = Obj::root(value)?;
    obj.only(FIELDS)?;
    let channel = obj.enumeration(
        "channel",
        Channel::parse,
        "letter, visit, online, phone, hotline_12345, leader_mailbox, leader_reception",
    )?;
    let received_at = match obj.opt_str("received_at", 64)? {
        None => now,
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s).map_err(|_| {
                obj.invalid("received_at", "must be an RFC 3339 time with offset, e.g. 2026-11-27T09:30:00+08:00")
            })?;
            if t > now + chrono::Duration::seconds(CLOCK_SKEW_SECS) {
                return Err(ApiError::field(
                    ErrorCode::FutureReceivedAt,
                    "received_at",
                    "received_at lies in the future",
                ));
            }
            if t.timestamp() < 946_684_800 {
                return Err(obj.invalid("received_at", "must not be before 2000-01-01"));
            }
            to_cst(t)
        }
    };
    let list = obj.array("petitioners", 1, 100)?;
    let mut petitioners = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let p = obj.child(item, &format!("petitioners[{i}]"))?;
        p.only(PETITIONER_FIELDS)?;
        petitioners.push(Petitioner {
            name: p.req_str("name", 50)?.to_string(),
            id_number: p.opt_parse("id_number", IdNumber::parse)?,
            phone: p.opt_parse("phone", Phone::parse)?,
            address: p.opt_str("address", 200)?.map(str::to_string),
        });
    }
    let headcount = match obj.get("headcount") {
        None => petitioners.len() as u32,
        Some(v) => {
            v.as_u64()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| obj.invalid("headcount", "must be a whole number from 1 to 100000"))? as u32
        }
    };
    let location = {
        let v = obj.get("location").ok_or_else(|| obj.missing("location"))?;
        let l = obj.child(v, "location")?;
        l.only(LOCATION_FIELDS)?;
        let division = l.req_parse("division", DivisionCode::parse)?;
        if settings.whereabouts(&division).is_none() {
            return Err(ApiError::field(
                ErrorCode::UnknownDivision,
                "location.division",
                format!("division {division} is neither this node's area nor a peer's"),
            ));
        }
        Location { division, address: l.opt_str("address", 200)?.map(str::to_string) }
    };
    let category = obj.req_str("category", 64)?;
    if !settings.has_category(category) {
        return Err(ApiError::field(
            ErrorCode::UnknownCategory,
            "category",
            format!("category {category:?} is not in this node's list"),
        ));
    }
    let kind = obj.enumeration("kind", Kind::parse, "suggestion, complaint_report, appeal_request")?;
    let respondent_organ_id = obj.opt_parse("respondent_organ_id", OrganId::parse)?;
    let title = obj.req_str("title", 200)?.to_string();
    let content = obj.req_str("content", MAX_CONTENT_CHARS)?.to_string();
    let idempotency_key = obj.opt_str("idempotency_key", 128)?.map(str::to_string);
    Ok(Submission {
        petition: Petition {
            channel,
            received_at,
            petitioners,
            headcount,
            location,
            category: category.to_string(),
            kind,
            respondent_organ_id,
            title,
            content,
        },
        idempotency_key,
    })
}

/// A JSON object being validated, with its path for error messages.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    /// The request body, which must be an object.
    pub fn root(v: &'a Value) -> Result<Self, ApiError> {
        match v {
            Value::Object(map) => Ok(Self { map, path: String::new() }),
            _ => Err(ApiError::general(ErrorCode::InvalidJson, "the body must be a JSON object")),
        }
    }

    fn child(&self, v: &'a Value, path: &str) -> Result<Obj<'a>, ApiError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            _ => Err(ApiError::field(ErrorCode::InvalidField, path, "must be an object")),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An `invalid_field` error for `key`.
    pub fn invalid(&self, key: &str, msg: impl Into<String>) -> ApiError {
        ApiError::field(ErrorCode::InvalidField, self.path(key), msg)
    }

    /// A `missing_field` error for `key`.
    pub fn missing(&self, key: &str) -> ApiError {
        ApiError::field(ErrorCode::MissingField, self.path(key), format!("{} is required", self.path(key)))
    }

    /// Refuses keys outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.invalid(k, format!("unknown field {k:?}; allowed: {}", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    /// The value of `key`; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string of at most `max` characters.
    pub fn opt_str(&self, key: &str, max: usize) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    Err(self.invalid(key, format!("must be at most {max} characters")))
                } else if s.contains('\0') {
                    Err(self.invalid(key, "must not contain NUL characters"))
                } else {
                    Ok(Some(s.as_str()))
                }
            }
            Some(_) => Err(self.invalid(key, "must be a string")),
        }
    }

    /// A required, non-blank string of at most `max` characters.
    pub fn req_str(&self, key: &str, max: usize) -> Result<&'a str, ApiError> {
        match self.opt_str(key, max)? {
            None => Err(self.missing(key)),
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be blank")),
            Some(s) => Ok(s),
        }
    }

    /// An optional string parsed by a newtype parser.
    pub fn opt_parse<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, crate::ids::ParseError>,
    ) -> Result<Option<T>, ApiError> {
        match self.opt_str(key, 200)? {
            None => Ok(None),
            Some(s) => parse(s).map(Some).map_err(|e| self.invalid(key, e.0)),
        }
    }

    /// A required string parsed by a newtype parser.
    pub fn req_parse<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, crate::ids::ParseError>,
    ) -> Result<T, ApiError> {
        self.opt_parse(key, parse)?.ok_or_else(|| self.missing(key))
    }

    /// A required string from a closed list.
    pub fn enumeration<T>(&self, key: &str, parse: impl Fn(&str) -> Option<T>, allowed: &str) -> Result<T, ApiError> {
        let s = self.opt_str(key, 64)?.ok_or_else(|| self.missing(key))?;
        parse(s).ok_or_else(|| self.invalid(key, format!("{s:?} is not one of: {allowed}")))
    }

    /// A required object.
    pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, ApiError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        self.child(v, &self.path(key))
    }

    /// A required array with `min..=max` items.
    pub fn array(&self, key: &str, min: usize, max: usize) -> Result<&'a Vec<Value>, ApiError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Array(items)) if items.len() < min => {
                Err(self.invalid(key, format!("must have at least {min} item(s)")))
            }
            Some(Value::Array(items)) if items.len() > max => {
                Err(self.invalid(key, format!("must have at most {max} items")))
            }
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.invalid(key, "must be an array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::NODE;
    use crate::time::cst;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::from_toml(NODE).unwrap()
    }

    fn now() -> Instant {
        cst().with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
    }

    fn good() -> Value {
        json!({
            "channel": "online",
            "petitioners": [{"name": "张三", "id_number": "11010519491231002X", "phone": "13812345678", "address": "滨湖区"}],
            "headcount": 1,
            "location": {"division": "320211", "address": "蠡湖街道"},
            "category": "urban_construction",
            "kind": "appeal_request",
            "title": "电梯故障",
            "content": "小区电梯停运两个月。"
        })
    }

    fn refusal(v: Value) -> (ErrorCode, Option<String>) {
        let e = validate(&v, &settings(), now()).unwrap_err();
        assert!(!e.message.is_empty());
        (e.code, e.field)
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    #[test]
    fn a_good_petition_passes_with_defaults() {
        let s = validate(&good(), &settings(), now()).unwrap();
        assert_eq!(s.petition.received_at, now());
        assert_eq!(s.petition.channel, Channel::Online);
        assert!(!s.petition.is_group());
        let mut v = good();
        v.as_object_mut().unwrap().remove("headcount");
        assert_eq!(validate(&v, &settings(), now()).unwrap().petition.headcount, 1);
    }

    #[test]
    fn each_refusal_names_code_and_field() {
        use ErrorCode::*;
        let mut no_content = good();
        no_content.as_object_mut().unwrap().remove("content");
        let cases: Vec<(Value, ErrorCode, Option<&str>)> = vec![
            (no_content, MissingField, Some("content")),
            (with("content", json!(null)), MissingField, Some("content")),
            (with("content", json!("   ")), InvalidField, Some("content")),
            (with("content", json!("访".repeat(10_001))), InvalidField, Some("content")),
            (with("content", json!(42)), InvalidField, Some("content")),
            (with("kind", json!("rumour")), InvalidField, Some("kind")),
            (with("channel", json!("pigeon")), InvalidField, Some("channel")),
            (with("channel", json!(["online"])), InvalidField, Some("channel")),
            (with("headcount", json!(0)), InvalidField, Some("headcount")),
            (with("headcount", json!(1.5)), InvalidField, Some("headcount")),
            (with("headcount", json!("3")), InvalidField, Some("headcount")),
            (with("petitioners", json!([])), InvalidField, Some("petitioners")),
            (with("petitioners", json!({})), InvalidField, Some("petitioners")),
            (with("petitioners", json!(["张三"])), InvalidField, Some("petitioners[0]")),
            (
                with("petitioners", json!([{"name": "李四", "phone": "12345"}])),
                InvalidField,
                Some("petitioners[0].phone"),
            ),
            (
                with("petitioners", json!([{"name": "李四", "id_number": "110105194912310021"}])),
                InvalidField,
                Some("petitioners[0].id_number"),
            ),
            (with("petitioners", json!([{"name": "李四", "nmae": "x"}])), InvalidField, Some("petitioners[0].nmae")),
            (
                with("petitioners", json!([{"id_number": "11010519491231002X"}])),
                MissingField,
                Some("petitioners[0].name"),
            ),
            (with("location", json!({"division": "990101"})), UnknownDivision, Some("location.division")),
            (with("location", json!({"division": "99"})), InvalidField, Some("location.division")),
            (with("location", json!({})), MissingField, Some("location.division")),
            (with("category", json!("astrology")), UnknownCategory, Some("category")),
            (with("received_at", json!("2026-11-29T10:00:00+08:00")), FutureReceivedAt, Some("received_at")),
            (with("received_at", json!("yesterday")), InvalidField, Some("received_at")),
            (with("received_at", json!("1999-12-31T10:00:00+08:00")), InvalidField, Some("received_at")),
            (with("respondent_organ_id", json!("a b")), InvalidField, Some("respondent_organ_id")),
            (with("contnet", json!("typo")), InvalidField, Some("contnet")),
            (json!([1, 2]), InvalidJson, None),
            (json!("text"), InvalidJson, None),
        ];
        for (v, code, field) in cases {
            assert_eq!(refusal(v.clone()), (code, field.map(str::to_string)), "{v}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"{not json").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse_body(b"\xff\xfe{}").unwrap_err().code, ErrorCode::InvalidJson);
        let deep = "[".repeat(10_000);
        assert_eq!(parse_body(deep.as_bytes()).unwrap_err().code, ErrorCode::InvalidJson);
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_body(&huge).unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn received_at_is_kept_in_cst() {
        let v = with("received_at", json!("2026-11-27T01:00:00Z"));
        let p = validate(&v, &settings(), now()).unwrap().petition;
        assert_eq!(crate::time::rfc3339(p.received_at), "2026-11-27T09:00:00+08:00");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("channel".to_string()),
                        Just("petitioners".to_string()),
                        Just("location".to_string()),
                        "[a-z_]{1,10}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_gets_a_petition_or_a_4xx_error(v in arb_json()) {
            match validate(&v, &settings(), now()) {
                Ok(_) => {}
                Err(e) => prop_assert!((400..500).contains(&e.code.http_status())),
            }
        }

        #[test]
        fn replacing_any_top_level_field_never_panics(key in prop::sample::select(FIELDS.to_vec()), v in arb_json()) {
            let mut p = good();
            p[key] = v;
            let _ = validate(&p, &settings(), now());
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_body(&bytes);
        }
    }
}
