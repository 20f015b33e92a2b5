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
}

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
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `error.type`.
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::BodyTooLarge { .. }
            | ApiError::BadHeader { .. }
            | ApiError::BadPath(_)
            | ApiError::BodyRead(_) => "invalid_request_error",
            ApiError::AdminUnauthorized => "authentication_error",
            ApiError::UpstreamUnreachable(_)
            | ApiError::UpstreamTimeout(_)
            | ApiError::ShuttingDown => "proxy_error",
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
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.metric_label(),
            }
        });
        let mut resp = (self.status(), body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
