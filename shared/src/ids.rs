//! Newtypes that parse: an invalid one cannot exist past the boundary.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Why a value was refused by a newtype's parser; the caller adds the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The date of eight digits `YYYYMMDD` (every event names its case: a format-string parse
/// here was a measurable part of reading a ledger).
fn date_of(digits: &str) -> Option<NaiveDate> {
    let number = |r: std::ops::Range<usize>| digits.get(r)?.parse::<u32>().ok();
    NaiveDate::from_ymd_opt(i32::try_from(number(0..4)?).ok()?, number(4..6)?, number(6..8)?)
}

/// A node code: the 6-digit GB/T 2260 code of a jurisdiction (区/县/市).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeCode(String);
string_newtype!(NodeCode);

impl NodeCode {
    /// Parses a 6-digit code.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == 6 && all_digits(s) {
            Ok(Self(s.to_string()))
        } else {
            err("a node code is the 6-digit GB/T 2260 code")
        }
    }
}

/// 行政区划代码 — a GB/T 2260 division code: 6 digits (county), or 9/12 for street level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DivisionCode(String);
string_newtype!(DivisionCode);

impl DivisionCode {
    /// Parses a 6-, 9- or 12-digit code.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if matches!(s.len(), 6 | 9 | 12) && all_digits(s) {
            Ok(Self(s.to_string()))
        } else {
            err("a division code has 6, 9 or 12 digits (GB/T 2260)")
        }
    }

    /// True when this division lies inside `prefix` (a code or code prefix).
    pub fn is_within(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix)
    }
}

/// 公民身份号码 — an 18-character resident ID number with a valid GB 11643 check character.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdNumber(String);
string_newtype!(IdNumber);

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

impl IdNumber {
    /// Parses an ID number: 17 digits, a valid birth date and the ISO 7064 MOD 11-2 check
    /// character (`x` is accepted and stored as `X`).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim().to_ascii_uppercase();
        let bytes = s.as_bytes();
        if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
            return err("an ID number has 17 digits and a check character");
        }
        let birth = &s[6..14];
        if NaiveDate::parse_from_str(birth, "%Y%m%d").is_err() || &s[6..8] < "18" {
            return err("the ID number's birth date is not a real date");
        }
        if bytes[17] != Self::check_char(&s[..17]) {
            return err("the ID number's check character does not match (GB 11643)");
        }
        Ok(Self(s))
    }

    /// The check character for the first 17 digits.
    pub fn check_char(body: &str) -> u8 {
        let sum: u32 = body.bytes().zip(ID_WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
        ID_CHECK[(sum % 11) as usize]
    }

    /// The number with all but the first 3 and last 2 characters hidden, for logs and notices.
    pub fn masked(&self) -> String {
        format!("{}*************{}", &self.0[..3], &self.0[16..])
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

/// A phone number: a mainland mobile number (11 digits, `1[3-9]…`) or a landline with
/// area code (`0510-12345678`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);
string_newtype!(Phone);

impl Phone {
    /// Parses a mobile or landline number; spaces and dashes inside a mobile number are refused.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        let mobile = b.len() == 11 && all_digits(s) && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]);
        let landline = match s.split_once('-') {
            Some((area, local)) => {
                area.starts_with('0')
                    && (3..=4).contains(&area.len())
                    && all_digits(area)
                    && (7..=8).contains(&local.len())
                    && all_digits(local)
            }
            None => false,
        };
        if mobile || landline {
            Ok(Self(s.to_string()))
        } else {
            err("a phone number is an 11-digit mobile number or a landline like 0510-12345678")
        }
    }

    /// The number with its middle hidden (138****5678).
    pub fn masked(&self) -> String {
        let n = self.0.len();
        format!("{}****{}", &self.0[..3], &self.0[n - 4..])
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

/// An organ (机关、单位) id from the node file, e.g. `320211-zjj`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrganId(String);
string_newtype!(OrganId);

impl OrganId {
    /// Parses an id of 1–64 characters from `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Ok(Self(s.to_string()))
        } else {
            err("an organ id has 1–64 characters from A–Z, a–z, 0–9, '-' and '_'")
        }
    }
}

/// A case id: `<node>-<yyyymmdd>-<6-digit sequence>`, unique city-wide and kept when the
/// case moves to another node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId(String);
string_newtype!(CaseId);

impl CaseId {
    /// Parses `NNNNNN-YYYYMMDD-SSSSSS`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = s.split('-').collect();
        let ok = parts.len() == 3
            && parts[0].len() == 6
            && parts[1].len() == 8
            && parts[2].len() == 6
            && parts.iter().all(|p| all_digits(p))
            && date_of(parts[1]).is_some();
        if ok {
            Ok(Self(s.to_string()))
        } else {
            err("a case id looks like 320211-20261127-000042")
        }
    }

    /// Builds the id of the `seq`-th case registered by `node` on `date` (local date).
    pub fn new(node: &NodeCode, date: NaiveDate, seq: u32) -> Self {
        Self(format!("{}-{}-{:06}", node, date.format("%Y%m%d"), seq))
    }

    /// The node that registered the case.
    pub fn origin_node(&self) -> &str {
        &self.0[..6]
    }

    /// Which of `n` shares the case falls in, 1 to `n`: the same in every process and every
    /// build (FNV-1a of the id), so several processes of a service can split the cases.
    pub fn share(&self, n: u32) -> u32 {
        let hash =
            self.0.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % u64::from(n.max(1))) as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_check(body: &str) -> String {
        format!("{body}{}", IdNumber::check_char(body) as char)
    }

    #[test]
    fn id_number_checksum() {
        // the worked example of GB 11643 (ISO 7064 MOD 11-2)
        assert!(IdNumber::parse("11010519491231002X").is_ok());
        assert!(IdNumber::parse("11010519491231002x").is_ok());
        assert!(IdNumber::parse("110105194912310021").is_err());
        assert!(IdNumber::parse("11010519491331002X").is_err(), "month 13");
        assert!(IdNumber::parse("1101051949123100").is_err());
        assert!(IdNumber::parse("11010519491231002Y").is_err());
        assert!(IdNumber::parse("１１0105194912310021").is_err(), "full-width digits");
    }

    #[test]
    fn masks_hide_the_middle() {
        let id = IdNumber::parse("11010519491231002X").unwrap();
        assert_eq!(id.masked(), "110*************2X");
        assert!(!format!("{id:?}").contains("1949"));
        assert_eq!(Phone::parse("13812345678").unwrap().masked(), "138****5678");
    }

    #[test]
    fn phones() {
        for ok in ["13812345678", "19900001111", "0510-85123456", "010-1234567"] {
            assert!(Phone::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["12345", "12812345678", "1381234567", "138123456789", "0510 85123456", "510-85123456", ""] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn case_ids() {
        let id = CaseId::parse("320211-20261127-000042").unwrap();
        assert_eq!(id.origin_node(), "320211");
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(CaseId::new(&NodeCode::parse("320211").unwrap(), d, 42), id);
        // shares: stable, and every share gets cases
        assert_eq!(id.share(1), 1);
        // fixed values: processes of different builds must agree on a case's share
        assert_eq!((id.share(2), id.share(3), id.share(7)), (2, 1, 2));
        let mut counts = [0; 3];
        for seq in 0..300 {
            let c = CaseId::new(&NodeCode::parse("320211").unwrap(), d, seq);
            counts[c.share(3) as usize - 1] += 1;
        }
        assert!(counts.iter().all(|n| *n > 50), "{counts:?}");
        for bad in [
            "320211-20261327-000042",
            "320211-20261127-42",
            "320211-20260230-000042",
            "x",
            "320211.20261127.000042",
            "",
        ] {
            assert!(CaseId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn divisions_and_organs() {
        assert!(DivisionCode::parse("320211").is_ok());
        assert!(DivisionCode::parse("320211001").is_ok());
        assert!(DivisionCode::parse("320211001001").is_ok());
        assert!(DivisionCode::parse("32021").is_err());
        assert!(DivisionCode::parse("3202110").is_err());
        assert!(DivisionCode::parse("32021a").is_err());
        assert!(OrganId::parse("320211-zjj").is_ok());
        assert!(OrganId::parse("a.b").is_err());
        assert!(OrganId::parse("").is_err());
    }

    proptest! {
        #[test]
        fn every_valid_body_gets_exactly_one_check_char(body in "[1-6][0-9]{5}(19[0-9]{2}|20[01][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}") {
            let good = with_check(&body);
            prop_assert!(IdNumber::parse(&good).is_ok());
            for c in "0123456789X".chars() {
                let other = format!("{body}{c}");
                prop_assert_eq!(IdNumber::parse(&other).is_ok(), other == good);
            }
        }

        #[test]
        fn a_single_digit_change_is_caught(body in "[1-6][0-9]{5}19[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}", pos in 0usize..17, delta in 1u8..10) {
            let good = with_check(&body);
            let mut bytes = good.clone().into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            // MOD 11-2 detects every single-digit substitution
            prop_assert!(IdNumber::parse(&changed).is_err());
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = IdNumber::parse(&s);
            let _ = Phone::parse(&s);
            let _ = CaseId::parse(&s);
            let _ = DivisionCode::parse(&s);
            let _ = OrganId::parse(&s);
            let _ = NodeCode::parse(&s);
        }
    }
}
