//! The wire error (DESIGN.md §5): a code callers can act on, the JSON path of the field,
//! and a message a clerk can read.

use serde::{Deserialize, Serialize};

/// Error codes of the intake contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    MissingField,
    InvalidField,
    PayloadTooLarge,
    UnknownDivision,
    UnknownCategory,
    FutureReceivedAt,
    NotFound,
    InvalidTransition,
    Conflict,
    Unauthorized,
    Forbidden,
    RateLimited,
    Unavailable,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 14] = [
        Self::InvalidJson,
        Self::MissingField,
        Self::InvalidField,
        Self::PayloadTooLarge,
        Self::UnknownDivision,
        Self::UnknownCategory,
        Self::FutureReceivedAt,
        Self::NotFound,
        Self::InvalidTransition,
        Self::Conflict,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::Unavailable,
    ];

    /// The HTTP status this code maps to.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::MissingField
            | Self::InvalidField
            | Self::UnknownDivision
            | Self::UnknownCategory
            | Self::FutureReceivedAt => 400,
            Self::PayloadTooLarge => 413,
            Self::NotFound => 404,
            Self::InvalidTransition | Self::Conflict => 409,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
        }
    }

    /// The code as it appears on the wire, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnknownDivision => "unknown_division",
            Self::UnknownCategory => "unknown_category",
            Self::FutureReceivedAt => "future_received_at",
            Self::NotFound => "not_found",
            Self::InvalidTransition => "invalid_transition",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

/// `{"code","field","message"}` — the body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?} at {field:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    /// JSON path of the offending field, e.g. `petitioners[0].id_number`.
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    /// An error about one field.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: Some(field.into()), message: message.into() }
    }

    /// An error about the request as a whole.
    pub fn general(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, field: None, message: message.into() }
    }

    /// `{"ok": false, "error": {…}}`.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({"ok": false, "error": self})
    }
}
