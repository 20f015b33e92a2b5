//! A prepared answer: everything about a response that follows from the request body
//! alone (prompt tokens and prefix hashes, generated content, usage without the cached
//! part). Built once per distinct body and remembered, so repeated identical requests
//! cost a hash lookup; ids, timestamps and `cached_tokens` are filled per request.

use std::ops::RangeInclusive;

use axum::http::StatusCode;
use prefixcache_core::tokenizer::{Encoding, encoding_for_model};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::generate::{self, Pieces};
use crate::rng::{SplitMix64, alnum};
use crate::stats::MockRoute;

/// Behaviour selected by a special model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    /// `mock-error-NNN`: answer with status NNN in the API's error shape.
    Error(StatusCode),
    /// `mock-timeout`: never answer (until the client gives up or the mock shuts down).
    Timeout,
    /// `mock-cut-stream`: send part of the answer, then close the connection.
    CutStream,
}

impl Special {
    pub fn from_model(model: &str) -> Special {
        match model {
            "mock-timeout" => Special::Timeout,
            "mock-cut-stream" => Special::CutStream,
            m => m
                .strip_prefix("mock-error-")
                .and_then(|code| code.parse::<u16>().ok())
                .filter(|c| (400..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .map_or(Special::None, Special::Error),
        }
    }
}

/// The hash all generated content of one request derives from: the seed, the route and
/// the body's digest form (`core::key::request_digest_form`: sorted keys, one number
/// form, without the fields that cannot change what a model writes, `stream`, `user`,
/// `prompt_cache_key`, ...), so e.g. the streamed and the non-streamed form of one
/// request carry the same content, as the proxy's cache key assumes. (The digest is
/// coarser than the key, which also keeps member order and number spelling: requests
/// with different keys may get the same content, never the reverse.)
/// Cache breakpoints and `prompt_cache_options` are left out too: they steer the
/// provider's cache, not what the model writes.
pub fn content_hash(seed: u64, route: &str, body: &Map<String, Value>) -> blake3::Hash {
    let mock_route = match route {
        "chat" => MockRoute::ChatCompletions,
        "responses" => MockRoute::Responses,
        _ => MockRoute::Other,
    };
    let stripped = crate::cache_options::without_cache_markers(mock_route, body);
    let body = stripped.as_ref().unwrap_or(body);
    let mut h = blake3::Hasher::new_derive_key("prefixcache-mock 2025 content v1");
    h.update(&seed.to_le_bytes());
    h.update(route.as_bytes());
    h.update(&[0]);
    h.update(&prefixcache_core::key::request_digest_form(body));
    h.finalize()
}

/// A generator for one part (`what`) of the output, e.g. choice `i`.
pub fn rng_for(hash: &blake3::Hash, what: u64) -> SplitMix64 {
    let mut r = SplitMix64::from_hash(hash);
    for _ in 0..=(what % 3) {
        r.next_u64();
    }
    SplitMix64::new(r.next_u64() ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Parses a request body into a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid(
            "The request body must be a JSON object (it was valid JSON of another type).",
        )),
        Err(_) => Err(ApiError::malformed_json()),
    }
}

pub fn model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::invalid("you must provide a model parameter"))
        }
        Some(_) => Err(ApiError::invalid_type("model", "a string")),
    }
}

pub fn encoding(model: &str) -> Encoding {
    encoding_for_model(model).encoding
}

pub fn bool_field(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_type(name, "a boolean")),
    }
}

pub fn str_field<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_type(name, "a string")),
    }
}

/// An integer parameter with the API's range check.
pub fn int_field(
    body: &Map<String, Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(v) = body.get(name).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(n) = v
        .as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    else {
        return Err(ApiError::invalid_type(name, "an integer"));
    };
    if n < min as i64 {
        return Err(ApiError::invalid(format!(
            "Invalid '{name}': integer below minimum value. Expected a value >= {min}, but got {n} instead."
        ))
        .param(name)
        .code("integer_below_min_value"));
    }
    if n as u64 > max {
        return Err(ApiError::invalid(format!(
            "Invalid '{name}': integer above maximum value. Expected a value <= {max}, but got {n} instead."
        ))
        .param(name)
        .code("integer_above_max_value"));
    }
    Ok(Some(n as u64))
}

/// `stream_options.include_usage`.
pub fn include_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Whether a model reasons before answering (and reports `reasoning_tokens`).
pub fn is_reasoning_model(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
        && !model.contains("-chat")
}

/// Reasoning tokens by effort: a fixed number per level (see docs/mock-upstream.md).
pub fn reasoning_tokens(model: &str, effort: Option<&str>) -> u64 {
    if !is_reasoning_model(model) {
        return 0;
    }
    match effort {
        Some("none") | Some("minimal") => 0,
        Some("low") => 64,
        Some("high") => 576,
        Some("xhigh") => 1024,
        _ => 192,
    }
}

/// A function tool offered to the model.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub parameters: Option<Value>,
}

/// `tool_choice`, reduced to what decides the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// Output format: text, any JSON object, or JSON under a schema.
#[derive(Debug, Clone)]
pub enum Format {
    Text,
    JsonObject,
    JsonSchema(Value),
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// What decides one generated answer.
#[derive(Debug)]
pub struct GenSpec<'a> {
    pub enc: Encoding,
    pub tools: &'a [Tool],
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// The conversation ends with a tool result: the model answers in text under `auto`.
    pub after_tool_result: bool,
    /// Text of the last user message: tools named in it are the ones called.
    pub last_user_text: &'a str,
    pub format: &'a Format,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    pub budget: Option<u64>,
    pub reasoning: u64,
    pub output_tokens: RangeInclusive<u32>,
    /// `Some(k)` when logprobs were asked for, with `k` alternatives per token.
    pub logprobs: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Pieces,
}

/// Per-token log probabilities of generated text.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// One generated answer (a chat choice, a Responses output).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The text, or `None` when the answer is tool calls.
    pub text: Option<Pieces>,
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    pub reasoning_tokens: u64,
    /// Visible and reasoning tokens.
    pub completion_tokens: u64,
    /// One entry per piece of `text`.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// Tokens a tool call costs beyond its arguments (framing; see docs/mock-upstream.md).
const TOOL_CALL_FRAMING: u64 = 3;

/// The documented tool rule: `none` → text; a named function → that call; `required` →
/// a call; `auto` → a call unless the conversation ends with a tool result. The tools
/// called are those whose names appear in the last user message (all of them when
/// parallel calls are allowed, else the first), or one chosen by hash if none is named.
fn tools_to_call<'t>(spec: &GenSpec<'t>, rng: &mut SplitMix64) -> Vec<&'t Tool> {
    let tools = spec.tools;
    if tools.is_empty() {
        return Vec::new();
    }
    match &spec.tool_choice {
        ToolChoice::None => return Vec::new(),
        ToolChoice::Named(n) => return tools.iter().filter(|t| &t.name == n).take(1).collect(),
        ToolChoice::Auto if spec.after_tool_result => return Vec::new(),
        ToolChoice::Auto | ToolChoice::Required => {}
    }
    let mut named: Vec<&Tool> = tools
        .iter()
        .filter(|t| spec.last_user_text.contains(t.name.as_str()))
        .collect();
    if !spec.parallel_tool_calls {
        named.truncate(1);
    }
    if named.is_empty() {
        named.push(&tools[rng.below(tools.len() as u64) as usize]);
    }
    named
}

/// Generates one answer. `rng` is this answer's own generator.
pub fn generate(spec: &GenSpec<'_>, mut rng: SplitMix64) -> Generated {
    let reasoning = spec
        .budget
        .map_or(spec.reasoning, |b| spec.reasoning.min(b));
    let mut left = spec.budget.map(|b| b - reasoning);
    let calls = tools_to_call(spec, &mut rng);
    if !calls.is_empty() {
        let mut out = Vec::with_capacity(calls.len());
        let mut visible = 0u64;
        let mut finish = Finish::ToolCalls;
        for tool in calls {
            let id = format!("call_{}", alnum(&mut rng, 24));
            let args = generate::value_for_schema(&mut rng, tool.parameters.as_ref());
            let mut arguments =
                generate::tokenized(spec.enc, &serde_json::to_string(&args).unwrap_or_default());
            let framing = spec.enc.count(&tool.name) as u64 + TOOL_CALL_FRAMING;
            if let Some(l) = left.as_mut() {
                let room = l.saturating_sub(framing);
                if arguments.truncate_tokens(room) || *l < framing {
                    finish = Finish::Length;
                }
            }
            let cost = framing + arguments.token_count();
            visible += cost;
            if let Some(l) = left.as_mut() {
                *l = l.saturating_sub(cost);
            }
            out.push(ToolCall {
                id,
                name: tool.name.clone(),
                arguments,
            });
            if finish == Finish::Length {
                break;
            }
        }
        return Generated {
            text: None,
            tool_calls: out,
            finish,
            reasoning_tokens: reasoning,
            completion_tokens: reasoning + visible,
            logprobs: None,
        };
    }
    let mut text = match spec.format {
        Format::Text => {
            let n = rng.range(
                u64::from(*spec.output_tokens.start()),
                u64::from(*spec.output_tokens.end()),
            );
            generate::prose(&mut rng, n)
        }
        Format::JsonObject => {
            let v = generate::value_for_schema(&mut rng, None);
            generate::tokenized(spec.enc, &serde_json::to_string(&v).unwrap_or_default())
        }
        Format::JsonSchema(schema) => {
            let v = generate::value_for_schema(&mut rng, Some(schema));
            generate::tokenized(spec.enc, &serde_json::to_string(&v).unwrap_or_default())
        }
    };
    let finish = match left {
        Some(l) if text.truncate_tokens(l) => Finish::Length,
        _ => Finish::Stop,
    };
    let logprobs = spec.logprobs.map(|k| {
        text.iter()
            .map(|piece| {
                let (logprob, top) = generate::logprobs(&mut rng, piece, k);
                TokenLogprob { logprob, top }
            })
            .collect()
    });
    let visible = text.token_count();
    Generated {
        text: Some(text),
        tool_calls: Vec::new(),
        finish,
        reasoning_tokens: reasoning,
        completion_tokens: reasoning + visible,
        logprobs,
    }
}

/// `fp_` and 10 hex digits, fixed per model as the real fingerprints are per deployment.
pub fn system_fingerprint(model: &str) -> String {
    let h = blake3::hash(model.as_bytes());
    format!("fp_{}", &h.to_hex()[..10])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec<'a>(tools: &'a [Tool], format: &'a Format) -> GenSpec<'a> {
        GenSpec {
            enc: Encoding::O200kBase,
            tools,
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            after_tool_result: false,
            last_user_text: "",
            format,
            budget: None,
            reasoning: 0,
            output_tokens: 16..=64,
            logprobs: None,
        }
    }

    #[test]
    fn special_models() {
        assert_eq!(
            Special::from_model("mock-error-429"),
            Special::Error(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(Special::from_model("mock-error-200"), Special::None);
        assert_eq!(Special::from_model("mock-timeout"), Special::Timeout);
        assert_eq!(Special::from_model("gpt-4o"), Special::None);
    }

    #[test]
    fn content_hash_ignores_key_order_and_transport_fields() {
        let a = parse_object(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        let b = parse_object(
            br#"{"messages":[{"content":"hi","role":"user"}],"model":"m","user":"u"}"#,
        )
        .unwrap();
        let c =
            parse_object(br#"{"messages":[{"content":"hi!","role":"user"}],"model":"m"}"#).unwrap();
        assert_eq!(content_hash(0, "chat", &a), content_hash(0, "chat", &b));
        assert_ne!(content_hash(0, "chat", &a), content_hash(0, "chat", &c));
        assert_ne!(content_hash(0, "chat", &a), content_hash(1, "chat", &a));
    }

    #[test]
    fn tool_rule() {
        let tools = vec![
            Tool {
                name: "get_weather".into(),
                parameters: Some(json!({"type":"object","properties":{"city":{"type":"string"}}})),
            },
            Tool {
                name: "get_time".into(),
                parameters: None,
            },
        ];
        let fmt = Format::Text;
        let mut s = spec(&tools, &fmt);
        s.last_user_text = "call get_time and get_weather";
        let g = generate(&s, SplitMix64::new(1));
        assert_eq!(g.finish, Finish::ToolCalls);
        let names: Vec<&str> = g.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["get_weather", "get_time"]);
        let args: Value = serde_json::from_str(&g.tool_calls[0].arguments.text).unwrap();
        assert!(args["city"].is_string());
        s.parallel_tool_calls = false;
        assert_eq!(generate(&s, SplitMix64::new(1)).tool_calls.len(), 1);
        s.after_tool_result = true;
        assert!(generate(&s, SplitMix64::new(1)).text.is_some());
        s.tool_choice = ToolChoice::Required;
        assert!(!generate(&s, SplitMix64::new(1)).tool_calls.is_empty());
        s.tool_choice = ToolChoice::None;
        assert!(generate(&s, SplitMix64::new(1)).tool_calls.is_empty());
        s.tool_choice = ToolChoice::Named("get_time".into());
        assert_eq!(
            generate(&s, SplitMix64::new(1)).tool_calls[0].name,
            "get_time"
        );
    }

    #[test]
    fn budget_cuts_with_length_and_counts_reasoning() {
        let fmt = Format::Text;
        let mut s = spec(&[], &fmt);
        s.budget = Some(5);
        let g = generate(&s, SplitMix64::new(9));
        assert_eq!((g.finish, g.completion_tokens), (Finish::Length, 5));
        s.reasoning = 192;
        s.budget = Some(100);
        let g = generate(&s, SplitMix64::new(9));
        assert_eq!(
            (g.finish, g.reasoning_tokens, g.completion_tokens),
            (Finish::Length, 100, 100)
        );
        assert_eq!(g.text.unwrap().text, "");
        let fmt = Format::JsonObject;
        let g = generate(&spec(&[], &fmt), SplitMix64::new(2));
        assert!(serde_json::from_str::<Value>(&g.text.unwrap().text).is_ok());
    }
}
