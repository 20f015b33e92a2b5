//! Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), with the
//! status and headers the real API sends, including the error-model responses
//! (`mock-error-429` and friends).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `type`: `invalid_request_error`, `server_error`, `requests`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Extra headers (`retry-after` and rate-limit headers on a 429).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The API's answer to a body that is not JSON.
    pub fn malformed_json() -> ApiError {
        ApiError::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON. If you have trouble figuring out how to fix \
             this, please contact us through our help center at help.openai.com.)",
        )
    }

    pub fn missing(param: &str) -> ApiError {
        ApiError::invalid(format!("Missing required parameter: '{param}'."))
            .param(param)
            .code("missing_required_parameter")
    }

    pub fn invalid_type(param: &str, expected: &str) -> ApiError {
        ApiError::invalid(format!("Invalid type for '{param}': expected {expected}."))
            .param(param)
            .code("invalid_type")
    }

    /// The catch-all's answer: the real API says which method and path it did not know.
    pub fn unknown_url(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub fn model_not_found(model: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model '{model}' does not exist"),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn no_api_key() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), \
             or as the password field (with blank username) if you're accessing the API from \
             your browser and are prompted for a username and password. You can obtain an \
             API key from https://platform.openai.com/account/api-keys.",
        )
    }

    pub fn invalid_api_key(key: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                redact(key)
            ),
        )
        .code("invalid_api_key")
    }

    /// The answer of a `mock-error-NNN` model: status NNN in the shape the API uses for it.
    pub fn for_status(status: StatusCode, model: &str) -> ApiError {
        match status.as_u16() {
            429 => {
                let mut e = ApiError::new(
                    status,
                    "requests",
                    format!(
                        "Rate limit reached for {model} in organization org-mock on requests \
                         per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s. \
                         Visit https://platform.openai.com/account/rate-limits to learn more."
                    ),
                )
                .code("rate_limit_exceeded");
                e.headers = vec![
                    ("retry-after", "1".into()),
                    ("x-ratelimit-limit-requests", "3".into()),
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "1s".into()),
                    ("x-ratelimit-limit-tokens", "30000000".into()),
                    ("x-ratelimit-remaining-tokens", "29999000".into()),
                    ("x-ratelimit-reset-tokens", "2ms".into()),
                ];
                e
            }
            500 => ApiError::new(
                status,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            ),
            502..=504 => ApiError::new(
                status,
                "server_error",
                "The server is overloaded or not ready yet.",
            ),
            401 => ApiError::invalid_api_key("sk-mock-error-401"),
            403 => ApiError::new(
                status,
                "invalid_request_error",
                format!("You are not allowed to use the model {model}."),
            )
            .code("unsupported_country_region_territory"),
            404 => ApiError::model_not_found(model),
            s if s >= 500 => {
                ApiError::new(status, "server_error", format!("Mock server error {s}."))
            }
            s => ApiError::invalid(format!("Mock client error {s} for model {model}."))
                .param("model"),
        }
        .with_status(status)
    }

    fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let b = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_vec(&b).unwrap_or_default()
    }
}

/// `sk-abc...wxyz` → `sk-abc*****wxyz`, as the API shows keys in its messages.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}*****{tail}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(*name, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_openais() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::missing("messages").body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {
                "message": "Missing required parameter: 'messages'.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "missing_required_parameter"
            }})
        );
        let e = ApiError::for_status(StatusCode::TOO_MANY_REQUESTS, "gpt-4o");
        assert_eq!(e.code, Some("rate_limit_exceeded"));
        assert!(e.headers.iter().any(|(k, _)| *k == "retry-after"));
        assert_eq!(redact("sk-invalid-0123456789"), "sk-inval*****6789");
    }
}
