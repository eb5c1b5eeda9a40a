//! The scan of the test suite's logs for personal data (issue 16): no resident ID number and
//! no mobile number may appear unmasked in any log line a service wrote. Every service the
//! harness starts logs at `info` into `target/test-logs/` ([`crate::service_log`]); the
//! acceptance suite's and the fault campaign's logs are put there by `scripts/test.sh`, and
//! `xinfang-log-scan` reads them all at the end of the run.

use xinfang_shared::ids::IdNumber;

/// What was found on a line: the kind, and the match masked (a report must not repeat it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub masked: String,
}

/// Runs of ASCII digits (with a trailing `X` for ID numbers) that stand alone: not part of a
/// longer word, hash or number.
fn tokens(line: &str) -> impl Iterator<Item = &str> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'X' || bytes[i] == b'x') && i - start == 17 {
                i += 1;
            }
            if i == bytes.len() || !bytes[i].is_ascii_alphanumeric() {
                out.push(&line[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out.into_iter()
}

fn mask(s: &str) -> String {
    let keep = 3.min(s.len());
    format!("{}{}", &s[..keep], "*".repeat(s.len() - keep))
}

/// Unmasked ID numbers (18 characters, valid GB 11643 check) and mobile numbers (11 digits,
/// `1[3-9]…`) on one line.
pub fn findings(line: &str) -> Vec<Finding> {
    tokens(line)
        .filter_map(|t| {
            let b = t.as_bytes();
            if t.len() == 18 && IdNumber::check_char(&t[..17]) == b[17].to_ascii_uppercase() {
                Some(Finding { kind: "id_number", masked: mask(t) })
            } else if t.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
                Some(Finding { kind: "phone", masked: mask(t) })
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasked_numbers_are_found_and_masked_ones_are_not() {
        let id = crate::id_number(5);
        let line = format!("{{\"phone\":\"13812345678\",\"id\":\"{id}\"}}");
        let kinds: Vec<_> = findings(&line).into_iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["phone", "id_number"]);
        assert!(findings("recipient=138****5678 id=320***********12X").is_empty());
        assert!(findings("case 320211-20261203-000001 seq=42 ulid=01HZX13812345678A").is_empty());
        assert!(findings("sha=a13812345678b 113812345678").is_empty(), "inside a word or a longer number");
        assert_eq!(findings("13812345678")[0].masked, "138********");
    }
}
