//! Anthropic's Messages API (`POST /v1/messages`) around the cache: what a request asks
//! for ([`request_flags`]), usage and completeness of a stored message
//! ([`json_summary`]), a stored stream assembled into the message ([`MessageAssembler`],
//! [`sse_to_json`]) and a message rendered as the stream ([`MessageEvents`],
//! [`json_to_sse`]), and the API's error body ([`ErrorType`], [`error_body`]).
//!
//! Pure functions on bytes, next to the OpenAI ones in [`crate::wire`]; the SSE framing
//! they build on is [`crate::sse`], which knows nothing of either provider. The wire
//! format, with its sources: `docs/wire/anthropic-messages.md`.

mod fields;
pub mod fuzzing;
mod render;
mod stream;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{JsonSummary, UsageIn, WireError};
use crate::sse;

pub use render::{MessageEvents, json_to_sse};
pub use stream::{EventKind, MessageAssembler};

/// The path of the cached Messages route.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// Token counting: forwarded, never cached (its answer is cheap and carries no content).
pub const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

/// What a Messages request asks for, read without building the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFlags {
    /// `"stream": true`.
    pub stream: bool,
    pub model: Option<String>,
    /// A top-level `cache_control` (automatic caching).
    pub automatic_cache: bool,
}

#[derive(Deserialize)]
struct FlagsIn {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    cache_control: Option<IgnoredAny>,
}

/// The flags of a Messages request body (a JSON object).
pub fn request_flags(body: &[u8]) -> Result<RequestFlags, WireError> {
    let f: FlagsIn = serde_json::from_slice(body)?;
    Ok(RequestFlags {
        stream: f.stream.unwrap_or(false),
        model: f.model,
        automatic_cache: f.cache_control.is_some(),
    })
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

/// Completeness, usage and model of a non-streamed Messages response, in one parse. A
/// message is complete, and worth storing, when it is `"type": "message"` with a
/// `content` array and a `stop_reason` (the API sets it on every finished message; an
/// error body has `"type": "error"`). A body that does not parse is incomplete with
/// nothing known.
pub fn json_summary(json: &[u8]) -> JsonSummary {
    let Ok(m) = serde_json::from_slice::<MessageIn>(json) else {
        return JsonSummary::default();
    };
    JsonSummary {
        complete: m.kind.as_deref() == Some("message")
            && m.content.is_some()
            && m.stop_reason.is_some(),
        usage: m.usage.map(UsageIn::normalize),
        model: m.model,
    }
}

/// Assembles a stored stream into the message (see [`MessageAssembler::into_json`]).
pub fn sse_to_json(sse: &[u8]) -> Result<Bytes, WireError> {
    let mut asm = MessageAssembler::new();
    for ev in sse::split_all(&Bytes::copy_from_slice(sse), false) {
        asm.push(&ev);
    }
    asm.into_json()
}

/// `error.type` of the Messages API (the SDK's `ErrorType`), with the status it comes
/// with (Anthropic's errors page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 400 (and other 4xx without their own type).
    InvalidRequest,
    /// 401.
    Authentication,
    /// 402.
    Billing,
    /// 403.
    Permission,
    /// 404.
    NotFound,
    /// 413: the request exceeds the maximum size (32 MB for Messages).
    RequestTooLarge,
    /// 429.
    RateLimit,
    /// 500.
    Api,
    /// 504.
    Timeout,
    /// 529: the API is overloaded for everyone.
    Overloaded,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Billing => "billing_error",
            ErrorType::Permission => "permission_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Api => "api_error",
            ErrorType::Timeout => "timeout_error",
            ErrorType::Overloaded => "overloaded_error",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorType::InvalidRequest => 400,
            ErrorType::Authentication => 401,
            ErrorType::Billing => 402,
            ErrorType::Permission => 403,
            ErrorType::NotFound => 404,
            ErrorType::RequestTooLarge => 413,
            ErrorType::RateLimit => 429,
            ErrorType::Api => 500,
            ErrorType::Timeout => 504,
            ErrorType::Overloaded => 529,
        }
    }

    /// The type that goes with an HTTP status: the API's own mapping, and for statuses
    /// it does not list, `invalid_request_error` for 4xx ("We may also use this error
    /// type for other 4XX status codes") and `api_error` for 5xx.
    pub fn for_status(status: u16) -> ErrorType {
        match status {
            401 => ErrorType::Authentication,
            402 => ErrorType::Billing,
            403 => ErrorType::Permission,
            404 => ErrorType::NotFound,
            413 => ErrorType::RequestTooLarge,
            429 => ErrorType::RateLimit,
            504 => ErrorType::Timeout,
            529 => ErrorType::Overloaded,
            s if (500..600).contains(&s) => ErrorType::Api,
            _ => ErrorType::InvalidRequest,
        }
    }
}

/// The Messages API's error body: `{"type":"error","error":{"type","message"},
/// "request_id"}` (`request_id` left out when `None`).
pub fn error_body(kind: ErrorType, message: &str, request_id: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 96);
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, message);
    out.push(b'}');
    if let Some(id) = request_id {
        out.extend_from_slice(b",\"request_id\":");
        let _ = serde_json::to_writer(&mut out, id);
    }
    out.push(b'}');
    Bytes::from(out)
}
