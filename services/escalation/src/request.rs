//! Parsing the office's requests (JSON over HTTP and NATS, or an HTML form) into checked
//! values; every refusal names its field, with a message in Chinese for the office's staff.

use serde_json::Value;
use xinfang_shared::calendar::{Calendar, Period};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::time::{end_of_day, to_cst, Instant};

use crate::inbox::DirectiveRequest;

/// Longest directive text, in characters.
pub const MAX_TEXT: usize = 2000;

fn text<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(ApiError::field(ErrorCode::InvalidField, key, format!("{key} 应为字符串"))),
    }
}

/// Who is acting (`by`), defaulting to the office.
pub fn by(v: &Value) -> Result<String, ApiError> {
    let by = text(v, "by")?.unwrap_or("joint-office");
    if by.chars().count() > 64 {
        return Err(ApiError::field(ErrorCode::InvalidField, "by", "经办人不超过 64 个字符"));
    }
    Ok(by.to_string())
}

/// A directive: `text`, and its due as `due_at` (RFC 3339), `due_date` (YYYY-MM-DD, the end of
/// that day) or `due_days` (calendar days from now, 1–90, by the regulation's day counting).
pub fn directive(v: &Value, cal: &Calendar, now: Instant) -> Result<DirectiveRequest, ApiError> {
    if !v.is_object() {
        return Err(ApiError::general(ErrorCode::InvalidJson, "请求体应为 JSON 对象"));
    }
    let body = text(v, "text")?.ok_or_else(|| ApiError::field(ErrorCode::MissingField, "text", "请填写督办意见"))?;
    if body.chars().count() > MAX_TEXT {
        return Err(ApiError::field(ErrorCode::InvalidField, "text", format!("督办意见不超过 {MAX_TEXT} 个字符")));
    }
    let due_at = if let Some(s) = text(v, "due_at")? {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(to_cst)
            .map_err(|_| ApiError::field(ErrorCode::InvalidField, "due_at", "办结期限应为带时区的 RFC 3339 时间"))?
    } else if let Some(s) = text(v, "due_date")? {
        let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| ApiError::field(ErrorCode::InvalidField, "due_date", "办结期限应为 YYYY-MM-DD 格式的日期"))?;
        end_of_day(day)
    } else if let Some(n) = v.get("due_days").filter(|x| !x.is_null() && x.as_str() != Some("")) {
        let days = n
            .as_u64()
            .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|d| (1..=90).contains(d))
            .ok_or_else(|| ApiError::field(ErrorCode::InvalidField, "due_days", "期限天数应为 1–90 的整数"))?;
        cal.due(now, Period::Days(days as u32)).at
    } else {
        return Err(ApiError::field(
            ErrorCode::MissingField,
            "due_at",
            "请填写办结期限（due_at、due_date 或 due_days）",
        ));
    };
    if due_at <= now {
        return Err(ApiError::field(ErrorCode::InvalidField, "due_at", "办结期限须晚于当前时间"));
    }
    Ok(DirectiveRequest { text: body.to_string(), due_at, by: by(v)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;
    use xinfang_shared::time::cst;

    fn now() -> Instant {
        cst().with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
    }

    #[test]
    fn due_in_three_forms() {
        let cal = Calendar::shipped();
        let end = cst().with_ymd_and_hms(2026, 12, 7, 23, 59, 59).unwrap();
        for v in [
            json!({"text": "请限期办结", "due_date": "2026-12-07"}),
            json!({"text": "请限期办结", "due_days": 10}),
            json!({"text": "请限期办结", "due_days": "10"}),
            json!({"text": "请限期办结", "due_at": "2026-12-07T23:59:59+08:00"}),
        ] {
            let d = directive(&v, &cal, now()).unwrap();
            assert_eq!(d.due_at, end, "{v}");
            assert_eq!(d.by, "joint-office");
        }
    }

    #[test]
    fn refusals_name_their_field() {
        let cal = Calendar::shipped();
        for (v, field) in [
            (json!({"due_days": 3}), "text"),
            (json!({"text": "  ", "due_days": 3}), "text"),
            (json!({"text": "x"}), "due_at"),
            (json!({"text": "x", "due_days": 0}), "due_days"),
            (json!({"text": "x", "due_days": "soon"}), "due_days"),
            (json!({"text": "x", "due_date": "2026-13-01"}), "due_date"),
            (json!({"text": "x", "due_date": "2026-11-01"}), "due_at"),
            (json!({"text": 5, "due_days": 3}), "text"),
            (json!({"text": "x", "due_days": 3, "by": "y".repeat(65)}), "by"),
            (json!({"text": "长".repeat(MAX_TEXT + 1), "due_days": 3}), "text"),
        ] {
            let e = directive(&v, &cal, now()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {e}");
        }
        assert_eq!(directive(&json!([1]), &cal, now()).unwrap_err().code, ErrorCode::InvalidJson);
    }
}
