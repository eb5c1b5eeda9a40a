//! Leaders' reception days (领导接访日) and appointments (约访), pure (DOMAIN.md "Leaders'
//! receptions", DESIGN.md §14): a published slot — the leader, the time, the place, the
//! topics, the seats — and the rules a booking meets. The schedule is kept in the node's
//! agenda stream ([`crate::agenda`]); a booked or received case records it in its own events.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::ids::NodeCode;
use crate::petition::Obj;
use crate::time::{rfc3339, to_cst, Instant};

/// The most seats one slot offers.
pub const MAX_CAPACITY: u32 = 500;

/// The most topics one slot lists.
pub const MAX_TOPICS: usize = 20;

/// A named leader (领导): who receives, who takes charge of a case (包案).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leader {
    pub name: String,
    /// The post (职务), e.g. 区长.
    #[serde(default)]
    pub title: String,
}

impl Leader {
    /// `{name, title}` at `key` of `obj`.
    pub fn parse(obj: &Obj, key: &str) -> Result<Self, ApiError> {
        let o = obj.req_obj(key)?;
        o.only(&["name", "title"])?;
        Ok(Self { name: o.req_str("name", 32)?.trim().to_string(), title: o.req_str("title", 64)?.trim().to_string() })
    }

    /// How pages and notices name the leader: 张明（区长）.
    pub fn label(&self) -> String {
        if self.title.is_empty() {
            self.name.clone()
        } else {
            format!("{}（{}）", self.name, self.title)
        }
    }
}

/// A published reception slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reception {
    pub reception_id: String,
    pub node: NodeCode,
    pub leader: Leader,
    pub starts_at: Instant,
    pub ends_at: Instant,
    pub place: String,
    #[serde(default)]
    pub topics: Vec<String>,
    pub capacity: u32,
}

fn time(obj: &Obj, key: &str) -> Result<Instant, ApiError> {
    let s = obj.req_str(key, 64)?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(to_cst)
        .map_err(|_| obj.invalid(key, "must be an RFC 3339 time with offset, e.g. 2026-12-10T09:00:00+08:00"))
}

/// The id of a slot: the same leader at the same start in the same place is the same slot,
/// so a bureau that posts its schedule twice publishes it once.
pub fn reception_id(node: &NodeCode, leader: &Leader, starts_at: Instant, place: &str) -> String {
    let mut h = Sha256::new();
    for part in [node.as_str(), &leader.name, &rfc3339(starts_at), place] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    format!("R{}-{}", starts_at.format("%Y%m%d"), &hex::encode(digest)[..8])
}

/// Parses `POST /v1/receptions` at time `now`: the slot must lie ahead and end after it starts.
pub fn parse(body: &Value, node: &NodeCode, now: Instant) -> Result<Reception, ApiError> {
    let obj = Obj::root(body)?;
    obj.only(&["leader", "starts_at", "ends_at", "place", "topics", "capacity"])?;
    let leader = Leader::parse(&obj, "leader")?;
    let starts_at = time(&obj, "starts_at")?;
    let ends_at = time(&obj, "ends_at")?;
    if starts_at <= now {
        return Err(obj.invalid("starts_at", "a reception is published ahead of its day"));
    }
    if ends_at <= starts_at {
        return Err(obj.invalid("ends_at", "must be after starts_at"));
    }
    if ends_at - starts_at > chrono::Duration::hours(12) {
        return Err(obj.invalid("ends_at", "a slot lasts at most 12 hours"));
    }
    let place = obj.req_str("place", 200)?.trim().to_string();
    let topics = match obj.get("topics") {
        None => Vec::new(),
        Some(_) => {
            let items = obj.array("topics", 0, MAX_TOPICS)?;
            let mut topics = Vec::new();
            for (i, t) in items.iter().enumerate() {
                match t.as_str().map(str::trim) {
                    Some(s) if !s.is_empty() && s.chars().count() <= 50 => topics.push(s.to_string()),
                    _ => return Err(obj.invalid(&format!("topics[{i}]"), "must be a topic of 1–50 characters")),
                }
            }
            topics
        }
    };
    let capacity = obj
        .get("capacity")
        .ok_or_else(|| obj.missing("capacity"))?
        .as_u64()
        .filter(|c| (1..=u64::from(MAX_CAPACITY)).contains(c))
        .ok_or_else(|| obj.invalid("capacity", format!("must be a whole number from 1 to {MAX_CAPACITY}")))?
        as u32;
    Ok(Reception {
        reception_id: reception_id(node, &leader, starts_at, &place),
        node: node.clone(),
        leader,
        starts_at,
        ends_at,
        place,
        topics,
        capacity,
    })
}

/// The seat a new booking takes (1-based), or why there is none: the slot has begun, or is
/// full. Both refusals name the field `reception`.
pub fn next_seat(r: &Reception, booked: u32, now: Instant) -> Result<u32, ApiError> {
    if now >= r.starts_at {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "reception",
            format!("接访场次 {} 已开始或已结束，不能再预约", r.reception_id),
        ));
    }
    if booked >= r.capacity {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "reception",
            format!("接访场次 {} 已约满（{} 个名额）", r.reception_id, r.capacity),
        ));
    }
    Ok(booked + 1)
}

/// The id of the appointment that holds `seat` of a slot.
pub fn appointment_id(reception_id: &str, seat: u32) -> String {
    format!("{reception_id}-{seat:03}")
}

/// The slot's public line (`GET /v1/receptions`): no one's personal data, the seats left.
pub fn public_view(r: &Reception, booked: u32) -> Value {
    serde_json::json!({
        "reception_id": r.reception_id,
        "leader": r.leader,
        "starts_at": rfc3339(r.starts_at),
        "ends_at": rfc3339(r.ends_at),
        "place": r.place,
        "topics": r.topics,
        "capacity": r.capacity,
        "seats_left": r.capacity.saturating_sub(booked),
    })
}

/// A year's reception figures at a node (the seed's "129 leaders received 1,010 batches").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Slots published.
    pub slots: u64,
    /// Leaders with at least one slot.
    pub leaders: u64,
    /// Appointments booked, and of them: received, absent, not yet recorded.
    pub booked: u64,
    pub attended: u64,
    pub absent: u64,
    pub pending: u64,
}

/// The figures of `slots`, each with the record of each of its bookings (`Some(attended)`,
/// `None` while not recorded).
pub fn figures<'a>(slots: impl IntoIterator<Item = (&'a Reception, &'a [Option<bool>])>) -> Figures {
    let mut f = Figures::default();
    let mut leaders = std::collections::BTreeSet::new();
    for (r, records) in slots {
        f.slots += 1;
        leaders.insert(&r.leader.name);
        for record in records {
            f.booked += 1;
            match record {
                Some(true) => f.attended += 1,
                Some(false) => f.absent += 1,
                None => f.pending += 1,
            }
        }
    }
    f.leaders = leaders.len() as u64;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::cst;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> Instant {
        cst().with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
    }

    fn node() -> NodeCode {
        NodeCode::parse("320211").unwrap()
    }

    fn body() -> Value {
        json!({"leader": {"name": "张明", "title": "区长"}, "starts_at": "2026-12-10T09:00:00+08:00",
               "ends_at": "2026-12-10T11:30:00+08:00", "place": "区信访接待中心", "topics": ["城建"], "capacity": 2})
    }

    #[test]
    fn a_slot_is_parsed_with_a_stable_id() {
        let r = parse(&body(), &node(), now()).unwrap();
        assert_eq!(r.capacity, 2);
        assert!(r.reception_id.starts_with("R20261210-"), "{}", r.reception_id);
        assert_eq!(parse(&body(), &node(), now()).unwrap().reception_id, r.reception_id, "same slot, same id");
        assert_eq!(r.leader.label(), "张明（区长）");
    }

    #[test]
    fn bad_slots_name_their_field() {
        let field = |patch: Value| {
            let mut b = body();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse(&b, &node(), now()).unwrap_err().field.unwrap()
        };
        assert_eq!(field(json!({"starts_at": "2026-12-01T09:00:00+08:00"})), "starts_at");
        assert_eq!(field(json!({"ends_at": "2026-12-10T08:00:00+08:00"})), "ends_at");
        assert_eq!(field(json!({"capacity": 0})), "capacity");
        assert_eq!(field(json!({"leader": {"name": ""}})), "leader.name");
        assert_eq!(field(json!({"topics": [""]})), "topics[0]");
        assert_eq!(field(json!({"place": " "})), "place");
    }

    #[test]
    fn a_booking_needs_a_free_seat_before_the_start() {
        let r = parse(&body(), &node(), now()).unwrap();
        assert_eq!(next_seat(&r, 0, now()).unwrap(), 1);
        assert_eq!(next_seat(&r, 1, now()).unwrap(), 2);
        let full = next_seat(&r, 2, now()).unwrap_err();
        assert_eq!((full.code, full.field.as_deref()), (ErrorCode::InvalidField, Some("reception")));
        let late = next_seat(&r, 0, r.starts_at).unwrap_err();
        assert_eq!(late.field.as_deref(), Some("reception"));
        assert!(late.message.contains("已开始"), "{}", late.message);
        assert_eq!(appointment_id(&r.reception_id, 2), format!("{}-002", r.reception_id));
    }

    #[test]
    fn figures_count_slots_leaders_and_what_became_of_each_booking() {
        let a = parse(&body(), &node(), now()).unwrap();
        let mut b = a.clone();
        b.reception_id = "other".into();
        let (ra, rb) = (vec![Some(true), Some(false), None], vec![Some(true)]);
        let f = figures([(&a, ra.as_slice()), (&b, rb.as_slice())]);
        assert_eq!(f, Figures { slots: 2, leaders: 1, booked: 4, attended: 2, absent: 1, pending: 1 });
    }
}
