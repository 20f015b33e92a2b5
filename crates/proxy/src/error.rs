//! The one error type at the HTTP boundary, rendered in OpenAI's error shape
//! (`{"error":{"message","type","param","code"}}`) so SDKs raise their usual exceptions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A request the proxy answers itself with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is larger than `max_body_bytes`.
    #[error("request body is larger than the proxy's limit of {limit} bytes (max_body_bytes)")]
    BodyTooLarge { limit: u64 },
    /// A header the proxy understands has a bad value, or names an unknown strategy.
    #[error("{message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    /// The request path would leave the upstream's base path (dot segments, encoded
    /// separators).
    #[error("{0}")]
    BadPath(String),
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The upstream could not be reached (connect, DNS, TLS, reset before a response).
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream did not answer within `upstream_timeout`.
    #[error("upstream did not respond within {0:?} (upstream_timeout)")]
    UpstreamTimeout(std::time::Duration),
    /// Admin endpoint without the right token.
    #[error("admin endpoints need `Authorization: Bearer <admin token>`")]
    AdminUnauthorized,
    /// The server is shutting down.
    #[error("the proxy is shutting down; retry on another replica")]
    ShuttingDown,
    /// A limit on what all clients together may hold is reached: refused at once, to
    /// be retried after `Retry-After`.
    #[error("the proxy is at its limit of {0}; retry shortly")]
    Overloaded(Overload),
    /// The body arrived slower than `limits.body_read_timeout` plus
    /// `limits.body_min_rate` allow.
    #[error("the request body arrived too slowly (limits.body_read_timeout, limits.body_min_rate)")]
    BodyTimeout,
}

/// Which shared limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// `limits.max_connections`.
    Connections,
    /// `limits.max_requests_in_flight`.
    Requests,
    /// `limits.max_body_bytes_in_flight`.
    BodyBytes,
}

impl Overload {
    /// The `reason` label of `prefixcache_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overload::Connections => "connections",
            Overload::Requests => "requests",
            Overload::BodyBytes => "body_bytes",
        }
    }
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::Connections => "open connections (limits.max_connections)",
            Overload::Requests => "requests in flight (limits.max_requests_in_flight)",
            Overload::BodyBytes => "request-body bytes in flight (limits.max_body_bytes_in_flight)",
        })
    }
}

/// Seconds a refused client is told to wait (`Retry-After`): overload from a burst
/// clears within a second or so, and the SDKs add their own backoff on top.
pub const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::BadHeader { .. }
            | ApiError::BadPath(_)
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ShuttingDown | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// OpenAI's `error.type`.
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::BodyTooLarge { .. }
            | ApiError::BadHeader { .. }
            | ApiError::BadPath(_)
            | ApiError::BodyRead(_)
            | ApiError::BodyTimeout => "invalid_request_error",
            ApiError::AdminUnauthorized => "authentication_error",
            ApiError::UpstreamUnreachable(_)
            | ApiError::UpstreamTimeout(_)
            | ApiError::ShuttingDown
            | ApiError::Overloaded(_) => "proxy_error",
        }
    }

    /// OpenAI's `error.param`: the offending field or header, when there is one.
    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadHeader { header, .. } => Some(header),
            _ => None,
        }
    }

    /// Short label for logs and metrics; also OpenAI's `error.code`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BadHeader { .. } => "bad_header",
            ApiError::BadPath(_) => "bad_path",
            ApiError::BodyRead(_) => "body_read",
            ApiError::UpstreamUnreachable(_) => "upstream_unreachable",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::AdminUnauthorized => "admin_unauthorized",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::BodyTimeout => "body_timeout",
        }
    }

    /// The body of the error response: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> String {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.metric_label(),
            }
        })
        .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.body()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            ApiError::Overloaded(_) | ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            // The rest of a too-slow body is not read: the connection cannot be reused.
            ApiError::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}
