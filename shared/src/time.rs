//! Time as the regulation counts it: China Standard Time (UTC+8, no daylight saving), and a
//! clock passed in wherever time matters so tests can fix it.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

/// An instant with its UTC offset, as written in events (RFC 3339).
pub type Instant = DateTime<FixedOffset>;

/// Asia/Shanghai: UTC+8 all year.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// `t` in China Standard Time.
pub fn to_cst(t: Instant) -> Instant {
    t.with_timezone(&cst())
}

/// The last second of `day` in China Standard Time (a period's end, "24:00").
pub fn end_of_day(day: NaiveDate) -> Instant {
    cst()
        .from_local_datetime(&day.and_hms_opt(23, 59, 59).expect("valid time"))
        .single()
        .expect("fixed offsets are unambiguous")
}

/// Formats an instant as RFC 3339 with whole seconds and its offset.
pub fn rfc3339(t: Instant) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Reads an instant from its wire form through chrono's RFC 3339 parser (several times faster
/// than the general one serde uses), falling back to the general one for any other form it
/// accepted before: `#[serde(deserialize_with = "crate::time::read_instant")]`.
pub fn read_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
    struct Rfc3339;
    impl serde::de::Visitor<'_> for Rfc3339 {
        type Value = Instant;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 instant")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Instant, E> {
            DateTime::parse_from_rfc3339(s).or_else(|_| s.parse::<Instant>()).map_err(E::custom)
        }
    }
    d.deserialize_str(Rfc3339)
}

/// Now, in China Standard Time (the system clock).
pub fn now_cst() -> Instant {
    Utc::now().with_timezone(&cst())
}

/// Source of "now".
pub trait Clock: Send + Sync + 'static {
    /// The current instant in China Standard Time.
    fn now(&self) -> Instant;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Utc::now().with_timezone(&cst())
    }
}

/// A clock stopped at one instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Instant);

impl Clock for FixedClock {
    fn now(&self) -> Instant {
        self.0
    }
}
