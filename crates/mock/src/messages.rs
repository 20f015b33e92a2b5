//! Anthropic's Messages API: `POST /v1/messages` (JSON and SSE) and
//! `POST /v1/messages/count_tokens`, with the API's headers, its error shape
//! (`{"type":"error","error":{"type","message"},"request_id"}`), the special models, and
//! the simulated prompt cache filling `cache_read_input_tokens`,
//! `cache_creation_input_tokens` and `cache_creation` by TTL.
//!
//! Generation reuses the OpenAI routes' model (`plan::generate`): the same deterministic
//! prose, the same tool rule, JSON tool input from each tool's `input_schema`. Streams are
//! the message rendered by `prefixcache_core::wire::anthropic` (the renderer the proxy
//! uses for a streamed hit of a JSON entry, checked against the SDK's accumulator).
//! Decisions and approximations: `docs/mock-upstream.md`, "Anthropic Messages".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use prefixcache_core::provider::anthropic::{CacheUse, MessagesPrompt, messages_prompt};
use prefixcache_core::tokenizer::Encoding;
use prefixcache_core::wire::anthropic::{ErrorType, error_body, json_to_sse};
use serde_json::{Map, Value, json};

use crate::generate;
use crate::plan::{self, Format, GenSpec, Special, Tool, ToolChoice, content_hash, rng_for};
use crate::rng::mix64;
use crate::server::Mock;
use crate::sse::{self, Pacing};
use crate::stats::InFlight;

/// The encoding the token estimate uses (Claude's tokenizer is not public).
const ENC: Encoding = Encoding::O200kBase;
/// Thinking tokens of an answer with thinking enabled (`enabled` takes at most its
/// `budget_tokens`), counted in `output_tokens` and the `max_tokens` budget.
const THINKING_TOKENS: u64 = 64;

/// An error answer in the Messages API's shape.
#[derive(Debug, Clone)]
pub(crate) struct MessagesError {
    kind: ErrorType,
    status: StatusCode,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl MessagesError {
    fn new(kind: ErrorType, message: impl Into<String>) -> MessagesError {
        MessagesError {
            kind,
            status: StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_REQUEST),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> MessagesError {
        MessagesError::new(ErrorType::InvalidRequest, message)
    }

    /// The answer of a `mock-error-NNN` model: status NNN with the type the API uses.
    fn for_status(status: StatusCode, model: &str) -> MessagesError {
        let kind = ErrorType::for_status(status.as_u16());
        let message = match kind {
            ErrorType::Overloaded => "Overloaded".to_string(),
            ErrorType::Api => "Internal server error".to_string(),
            ErrorType::RateLimit => format!(
                "This request would exceed the rate limit for your organization of 50 requests per minute for {model}. For details, refer to: https://docs.claude.com/en/api/rate-limits."
            ),
            ErrorType::Authentication => "invalid x-api-key".to_string(),
            ErrorType::NotFound => format!("model: {model}"),
            _ => format!("Mock error {} for model {model}.", status.as_u16()),
        };
        let mut e = MessagesError::new(kind, message);
        e.status = status;
        if kind == ErrorType::RateLimit {
            e.headers = vec![
                ("retry-after", "1".into()),
                ("anthropic-ratelimit-requests-limit", "50".into()),
                ("anthropic-ratelimit-requests-remaining", "0".into()),
            ];
        }
        e
    }
}

/// A prepared Messages answer: everything that follows from the body alone.
#[derive(Debug)]
struct MessagesPlan {
    model: String,
    special: Special,
    stream: bool,
    prompt: MessagesPrompt,
    /// Content blocks without their ids (filled per response), and the stop reason.
    thinking: Option<(String, String)>,
    text: Option<String>,
    /// Name and input of each tool call.
    tool_calls: Vec<(String, Value)>,
    stop_reason: &'static str,
    output_tokens: u64,
}

fn field_required(name: &str) -> MessagesError {
    MessagesError::invalid(format!("{name}: Field required"))
}

/// The body as a JSON object, with the API's complaint otherwise.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, MessagesError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(MessagesError::invalid("Input should be a valid dictionary")),
        Err(e) => Err(MessagesError::invalid(format!(
            "There was an error parsing the body: {e}"
        ))),
    }
}

fn model_of(body: &Map<String, Value>) -> Result<String, MessagesError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(field_required("model")),
        Some(_) => Err(MessagesError::invalid(
            "model: Input should be a valid string",
        )),
    }
}

fn messages_of(body: &Map<String, Value>) -> Result<&Vec<Value>, MessagesError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(field_required("messages")),
        Some(Value::Array(m)) => m,
        Some(_) => {
            return Err(MessagesError::invalid(
                "messages: Input should be a valid list",
            ));
        }
    };
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some(r) => {
                return Err(MessagesError::invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant' (got '{r}')"
                )));
            }
            None => return Err(field_required(&format!("messages.{i}.role"))),
        }
        match m.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, b) in blocks.iter().enumerate() {
                    if b.get("type").and_then(Value::as_str).is_none() {
                        return Err(field_required(&format!("messages.{i}.content.{j}.type")));
                    }
                }
            }
            None => return Err(field_required(&format!("messages.{i}.content"))),
            Some(_) => {
                return Err(MessagesError::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                )));
            }
        }
    }
    Ok(messages)
}

/// The prompt of a body, the API's cache_control rules applied.
fn prompt_of(
    body: &Map<String, Value>,
    model: &str,
    seed: u64,
) -> Result<MessagesPrompt, MessagesError> {
    if let Some(s) = body.get("system")
        && !matches!(s, Value::Null | Value::String(_) | Value::Array(_))
    {
        return Err(MessagesError::invalid(
            "system: Input should be a valid string or list",
        ));
    }
    messages_prompt(body, model, ENC, seed).map_err(|e| MessagesError::invalid(e.message))
}

/// Text of the last user message (for the tool rule), and whether the conversation ends
/// with a tool result.
fn last_user(messages: &[Value]) -> (String, bool) {
    let Some(m) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return (String::new(), false);
    };
    match &m["content"] {
        Value::String(s) => (s.clone(), false),
        Value::Array(blocks) => {
            let text = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let tool_result = blocks.iter().any(|b| b["type"] == "tool_result");
            (text, tool_result)
        }
        _ => (String::new(), false),
    }
}

fn tools_of(body: &Map<String, Value>) -> Result<Vec<Tool>, MessagesError> {
    let Some(tools) = body.get("tools").filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| MessagesError::invalid("tools: Input should be a valid list"))?;
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| field_required(&format!("tools.{i}.name")))?;
        // Server tools (web search, ...) carry a `type` and no schema: offered, never
        // called by the mock.
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "custom")
        {
            continue;
        }
        out.push(Tool {
            name: name.to_string(),
            parameters: t.get("input_schema").cloned(),
        });
    }
    Ok(out)
}

fn tool_choice_of(body: &Map<String, Value>) -> Result<(ToolChoice, bool), MessagesError> {
    let Some(tc) = body.get("tool_choice").filter(|t| !t.is_null()) else {
        return Ok((ToolChoice::Auto, true));
    };
    let parallel = !tc
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let choice = match tc.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Named(
            tc.get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| field_required("tool_choice.name"))?
                .to_string(),
        ),
        _ => {
            return Err(MessagesError::invalid(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
            ));
        }
    };
    Ok((choice, parallel))
}

/// `thinking`: `Some(budget)` when the model thinks (`enabled` with its budget, or
/// `adaptive`), checked as the API does.
fn thinking_of(body: &Map<String, Value>, max_tokens: u64) -> Result<Option<u64>, MessagesError> {
    let Some(t) = body.get("thinking").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    match t.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        Some("adaptive") => Ok(Some(THINKING_TOKENS)),
        Some("enabled") => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| field_required("thinking.enabled.budget_tokens"))?;
            if budget < 1024 {
                return Err(MessagesError::invalid(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                ));
            }
            if budget >= max_tokens {
                return Err(MessagesError::invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size",
                ));
            }
            Ok(Some(THINKING_TOKENS.min(budget)))
        }
        _ => Err(MessagesError::invalid(
            "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'",
        )),
    }
}

fn prepare(
    body: &[u8],
    seed: u64,
    output_tokens: std::ops::RangeInclusive<u32>,
) -> Result<MessagesPlan, MessagesError> {
    let map = parse_body(body)?;
    let model = model_of(&map)?;
    let special = Special::from_model(&model);
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(MessagesError::invalid(
                "stream: Input should be a valid boolean",
            ));
        }
    };
    let max_tokens = match map.get("max_tokens") {
        None | Some(Value::Null) => return Err(field_required("max_tokens")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(MessagesError::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
        },
    };
    let messages = messages_of(&map)?;
    let prompt = prompt_of(&map, &model, seed)?;
    let tools = tools_of(&map)?;
    let (choice, parallel) = tool_choice_of(&map)?;
    if let ToolChoice::Named(n) = &choice
        && !tools.iter().any(|t| &t.name == n)
    {
        return Err(MessagesError::invalid(format!(
            "tool_choice: Tool '{n}' not found in tools"
        )));
    }
    let thinking = thinking_of(&map, max_tokens)?;
    let (last_user_text, after_tool_result) = last_user(messages);
    let hash = content_hash(seed, "messages", &without_markers(&map));
    let spec = GenSpec {
        enc: ENC,
        tools: &tools,
        tool_choice: choice,
        parallel_tool_calls: parallel,
        after_tool_result,
        last_user_text: &last_user_text,
        format: &Format::Text,
        budget: Some(max_tokens),
        reasoning: thinking.unwrap_or(0),
        output_tokens,
        logprobs: None,
    };
    let mut rng = rng_for(&hash, 0);
    let g = plan::generate(&spec, rng.clone());
    let thinking_block = thinking.map(|_| {
        let text = generate::prose(&mut rng, g.reasoning_tokens.max(1)).text;
        let sig = blake3::hash(text.as_bytes());
        (text, base64_of(sig.as_bytes()))
    });
    let stop_reason = match g.finish {
        plan::Finish::Length => "max_tokens",
        plan::Finish::ToolCalls => "tool_use",
        plan::Finish::Stop => "end_turn",
    };
    let tool_calls = g
        .tool_calls
        .iter()
        .map(|c| {
            let input = serde_json::from_str(&c.arguments.text).unwrap_or_else(|_| json!({}));
            (c.name.clone(), input)
        })
        .collect();
    Ok(MessagesPlan {
        model,
        special,
        stream,
        prompt,
        thinking: thinking_block,
        text: g.text.map(|t| t.text),
        tool_calls,
        stop_reason,
        output_tokens: g.completion_tokens,
    })
}

/// The body without `cache_control` anywhere and without the fields that cannot change
/// what the model writes: the content hash of a request with markers equals the one
/// without (markers steer the cache, not the answer).
fn without_markers(body: &Map<String, Value>) -> Map<String, Value> {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| *k != "cache_control")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            v => v.clone(),
        }
    }
    body.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cache_control" | "stream" | "metadata"))
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The message object of one response.
fn render_message(p: &MessagesPlan, id: &str, cache: CacheUse, mock: &Mock) -> Bytes {
    let mut content = Vec::new();
    if let Some((thinking, signature)) = &p.thinking {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": signature}));
    }
    if let Some(text) = &p.text {
        content.push(json!({"type": "text", "text": text}));
    }
    for (name, input) in &p.tool_calls {
        // Tool use ids vary per response, like the API's.
        let id = format!("toolu_01{}", mock.next_id("", 22));
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": content,
        "stop_reason": p.stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": cache.input_tokens,
            "cache_creation_input_tokens": cache.written,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache.written_5m(),
                "ephemeral_1h_input_tokens": cache.written_1h,
            },
            "output_tokens": p.output_tokens,
            "service_tier": "standard",
        },
    });
    // serde_json's map sorts keys; the API writes them in this order.
    Bytes::from(ordered(&message))
}

/// `v` written with the message's fields in the API's order (the `json!` map is sorted).
fn ordered(v: &Value) -> Vec<u8> {
    const ORDER: [&str; 8] = [
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    ];
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    for (i, k) in ORDER.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, &v[*k]);
    }
    out.push(b'}');
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (the rate-limit reset headers' form).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Headers the API puts on every response: `request-id`, the organization, and the
/// rate-limit headers (limits, what remains, and when it resets, RFC 3339).
fn api_headers(resp: &mut Response, request_id: &str, content_type: &'static str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reset = rfc3339(now + 1);
    let h = resp.headers_mut();
    let mut set = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    };
    set("content-type", content_type);
    set("request-id", request_id);
    set("anthropic-organization-id", ORGANIZATION_ID);
    for (kind, limit, remaining) in [
        ("requests", "4000", "3999"),
        ("input-tokens", "2000000", "1999000"),
        ("output-tokens", "400000", "399000"),
        ("tokens", "2400000", "2398000"),
    ] {
        set(&format!("anthropic-ratelimit-{kind}-limit"), limit);
        set(&format!("anthropic-ratelimit-{kind}-remaining"), remaining);
        set(&format!("anthropic-ratelimit-{kind}-reset"), &reset);
    }
}

/// The organization every mock response names.
const ORGANIZATION_ID: &str = "6f1c2a5e-9d41-4b7e-8a10-6d6f636b0001";

impl MessagesError {
    fn into_response(self, request_id: &str) -> Response {
        let mut resp = Response::new(Body::from(error_body(
            self.kind,
            &self.message,
            Some(request_id),
        )));
        *resp.status_mut() = self.status;
        api_headers(&mut resp, request_id, "application/json");
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// The checks every Messages request meets before its body is read: the API key (when
/// the mock requires one) and `anthropic-version`.
fn check_headers(mock: &Mock, headers: &HeaderMap) -> Result<(), MessagesError> {
    if mock.config().require_auth {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|k| k.trim().to_string())
            })
            .filter(|k| !k.is_empty());
        match key {
            None => {
                return Err(MessagesError::new(
                    ErrorType::Authentication,
                    "x-api-key header is required",
                ));
            }
            Some(k) if k.starts_with("sk-invalid") => {
                return Err(MessagesError::new(
                    ErrorType::Authentication,
                    "invalid x-api-key",
                ));
            }
            Some(_) => {}
        }
    }
    match headers.get("anthropic-version").map(|v| v.to_str()) {
        None => Err(MessagesError::invalid(
            "anthropic-version: header is required",
        )),
        Some(Ok(v)) if is_date(v) => Ok(()),
        Some(v) => Err(MessagesError::invalid(format!(
            "anthropic-version: {:?} is not a valid version",
            v.unwrap_or("")
        ))),
    }
}

/// `YYYY-MM-DD`: the form of every API version.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// The cache scope of a request: Anthropic's cache is per organization; the mock takes
/// the API key (either header) for one.
fn scope_of(headers: &HeaderMap) -> u64 {
    let key = headers
        .get("x-api-key")
        .or_else(|| headers.get(header::AUTHORIZATION))
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let d = blake3::hash(&key);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    mix64(u64::from_le_bytes(b))
}

/// `POST /v1/messages`.
pub(crate) async fn answer(
    mock: &Arc<Mock>,
    headers: &HeaderMap,
    body: &Bytes,
    in_flight: InFlight,
) -> Response {
    let request_id = mock.request_id_anthropic();
    if let Err(e) = check_headers(mock, headers) {
        return e.into_response(&request_id);
    }
    let plan = match prepare(
        body,
        mock.config().seed,
        mock.config().output_tokens.clone(),
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(&request_id),
    };
    mock.count_model(&plan.model);
    match plan.special {
        Special::Error(status) => {
            return MessagesError::for_status(status, &plan.model).into_response(&request_id);
        }
        Special::Timeout => {
            mock.shutting_down().await;
            return MessagesError::new(ErrorType::Overloaded, "The mock is shutting down.")
                .into_response(&request_id);
        }
        Special::None | Special::CutStream => {}
    }
    let latency = mock.latency_for(headers);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let cache = mock.serve_anthropic(&plan.prompt, scope_of(headers));
    let id = format!("msg_01{}", mock.next_id("", 22));
    let message = render_message(&plan, &id, cache, mock);
    let cut = plan.special == Special::CutStream;
    if plan.stream {
        let events = json_to_sse(&message).unwrap_or_default();
        mock.count_stream();
        let cut_after = cut.then(|| (events.len() / 2).max(1));
        let delay = mock.chunk_delay_for(headers);
        let mut resp = Response::new(sse::body(
            events,
            Pacing {
                cut_after,
                ..Pacing::paced(delay)
            },
            in_flight,
        ));
        api_headers(&mut resp, &request_id, "text/event-stream; charset=utf-8");
        return resp;
    }
    let mut resp = if cut {
        let full = message.len();
        let mut r = Response::new(sse::body(
            vec![message.slice(..full / 2)],
            Pacing {
                cut_after: Some(1),
                ..Pacing::paced(Duration::ZERO)
            },
            in_flight,
        ));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
        r
    } else {
        drop(in_flight);
        Response::new(Body::from(message))
    };
    api_headers(&mut resp, &request_id, "application/json");
    resp
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the prompt's estimate with
/// nothing cached (the endpoint counts, it does not cache).
pub(crate) fn count_tokens(mock: &Mock, headers: &HeaderMap, body: &Bytes) -> Response {
    let request_id = mock.request_id_anthropic();
    let counted = check_headers(mock, headers).and_then(|()| {
        let map = parse_body(body)?;
        let model = model_of(&map)?;
        messages_of(&map)?;
        tools_of(&map)?;
        prompt_of(&map, &model, mock.config().seed)
    });
    match counted {
        Ok(p) => {
            let mut resp = Response::new(Body::from(format!("{{\"input_tokens\":{}}}", p.tokens)));
            api_headers(&mut resp, &request_id, "application/json");
            resp
        }
        Err(e) => e.into_response(&request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // Checked with `date -u -d @1796989095 +%FT%TZ`.
        assert_eq!(rfc3339(1_796_989_095), "2026-12-11T11:38:15Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn versions_are_dates() {
        assert!(is_date("2023-06-01") && is_date("2026-10-21"));
        assert!(!is_date("2023-6-01") && !is_date("latest") && !is_date("2023-06-01, 2023-06-01"));
    }
}
