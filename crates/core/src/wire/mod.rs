//! OpenAI wire handling around the cache: the members of a request the proxy reads
//! ([`parse_request`]), what a request asks for ([`request_flags`]),
//! the bytes forwarded upstream ([`prepare_upstream_body`]), usage and completeness of
//! a stored response ([`json_usage`], [`json_is_complete`]), rendering an entry in the
//! other form ([`json_to_sse`], [`sse_to_json`], [`replay_sse`]) and the optional body
//! annotation ([`annotate_json`], [`annotate_sse_event`]).
//!
//! All functions are pure and work on bytes; the SSE framing and stream assembly they
//! build on live in [`crate::sse`]. Decisions are recorded in `docs/streaming.md`.
//! Anthropic's Messages API has the same set of functions in [`anthropic`].

pub mod anthropic;
pub mod fuzzing;
mod parse;
mod render;
mod request;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::route::Route;
use crate::sse::{self, SseEvent, StreamAssembler};
use crate::usage::Usage;

pub use parse::{ParsedRequest, TreeLimits, parse_request};
pub use render::{SseRendering, json_to_sse};
pub use request::{
    Injections, RequestFlags, ServerState, Splice, apply_splices, breakpoint_splice, plan_splices,
    prepare_upstream_body, request_flags,
};

/// A body could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("{0}")]
    Syntax(crate::rawjson::SyntaxError),
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("{} responses cannot be streamed", .0.path())]
    NotStreamable(Route),
    #[error("the stream carried no event to assemble")]
    EmptyStream,
    #[error("the stream ended without a final response object")]
    Incomplete,
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
}

impl WireError {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WireError::InvalidJson(_) | WireError::Syntax(_) => "invalid_json",
            WireError::NotAnObject => "not_an_object",
            WireError::NotStreamable(_) => "not_streamable",
            WireError::EmptyStream => "empty_stream",
            WireError::Incomplete => "incomplete",
            WireError::Shape(_) => "shape",
        }
    }
}

/// Token counts as any of the APIs name them; nulls and missing fields are zero.
///
/// Three namings: chat and legacy completions (`prompt_tokens`, `completion_tokens`,
/// `prompt_tokens_details`), Responses (`input_tokens`, `output_tokens`,
/// `input_tokens_details`), and Anthropic's Messages API (`input_tokens` *without* the
/// cached and written tokens, `cache_read_input_tokens`, `cache_creation_input_tokens`,
/// `cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`). An object
/// with either Anthropic cache counter is read the Anthropic way; one without them means
/// the same under both readings.
#[derive(Deserialize, Default)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<DetailsIn>,
    #[serde(default)]
    input_tokens_details: Option<DetailsIn>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreationIn>,
}

#[derive(Deserialize, Default)]
struct DetailsIn {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// Prompt-cache writes, reported by GPT-5.6 and later (billed at 1.25x input).
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    /// Responses: the writes by lifetime (`ttl_30m_tokens`, `ttl_12h_tokens`).
    #[serde(default)]
    cache_write_tokens_details: Option<WriteDetailsIn>,
}

#[derive(Deserialize, Default)]
struct WriteDetailsIn {
    #[serde(default)]
    ttl_12h_tokens: Option<u64>,
}

/// Anthropic's `usage.cache_creation`: the written tokens by lifetime.
#[derive(Deserialize, Default)]
struct CacheCreationIn {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl UsageIn {
    fn normalize(self) -> Usage {
        if self.cache_read_input_tokens.is_some() || self.cache_creation_input_tokens.is_some() {
            // Anthropic: input_tokens counts only the tokens after the last cache
            // breakpoint; the total input is the sum of the three counters.
            let read = self.cache_read_input_tokens.unwrap_or(0);
            let written = self.cache_creation_input_tokens.unwrap_or(0);
            let long = self
                .cache_creation
                .and_then(|c| c.ephemeral_1h_input_tokens)
                .unwrap_or(0);
            return Usage {
                prompt_tokens: self.input_tokens.unwrap_or(0) + read + written,
                completion_tokens: self.output_tokens.unwrap_or(0),
                cached_tokens: read,
                cache_write_tokens: written,
                cache_write_long_tokens: long.min(written),
            };
        }
        let details = self
            .prompt_tokens_details
            .or(self.input_tokens_details)
            .unwrap_or_default();
        let written = details.cache_write_tokens.unwrap_or(0);
        let long = details
            .cache_write_tokens_details
            .and_then(|d| d.ttl_12h_tokens)
            .unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_tokens.or(self.input_tokens).unwrap_or(0),
            completion_tokens: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cached_tokens: details.cached_tokens.unwrap_or(0),
            cache_write_tokens: written,
            cache_write_long_tokens: long.min(written),
        }
    }
}

/// Normalizes a `usage` object of any route or provider: `prompt_tokens` /
/// `completion_tokens` with `prompt_tokens_details` (chat, completions, embeddings),
/// `input_tokens` / `output_tokens` with `input_tokens_details` (responses), or
/// Anthropic's counters (`cache_read_input_tokens`, `cache_creation_input_tokens`, added
/// to `input_tokens`); `cached_tokens` and `cache_write_tokens` with the part written at
/// the longer lifetime. `None` unless it is an object.
pub fn usage_from_value(v: &Value) -> Option<Usage> {
    if !v.is_object() {
        return None;
    }
    UsageIn::deserialize(v).ok().map(UsageIn::normalize)
}

#[derive(Deserialize)]
struct HeadIn {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

/// Usage and model of a non-streamed response body. Reads only those two fields (the
/// rest, e.g. a large `data` array of embeddings, is skipped without being built).
pub fn json_usage(route: Route, json: &[u8]) -> (Option<Usage>, Option<String>) {
    let _ = route; // every route names its usage fields distinctly; see UsageIn
    match serde_json::from_slice::<HeadIn>(json) {
        Ok(h) => (h.usage.map(UsageIn::normalize), h.model),
        Err(_) => (None, None),
    }
}

#[derive(Deserialize)]
struct CompletenessIn {
    #[serde(default)]
    choices: Option<Vec<ChoiceFinishIn>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    data: Option<IgnoredAny>,
}

/// What the proxy needs to know about a finished non-streamed response, read in one
/// parse: whether it is complete (see [`json_is_complete`]), its usage and its model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonSummary {
    pub complete: bool,
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

#[derive(Deserialize)]
struct SummaryIn {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(default)]
    choices: Option<Vec<ChoiceFinishIn>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    data: Option<IgnoredAny>,
}

/// [`json_is_complete`] and [`json_usage`] in one parse; a body that does not parse is
/// incomplete with nothing known.
pub fn json_summary(route: Route, json: &[u8]) -> JsonSummary {
    let Ok(s) = serde_json::from_slice::<SummaryIn>(json) else {
        return JsonSummary::default();
    };
    let complete = match route {
        Route::ChatCompletions | Route::Completions => s
            .choices
            .is_some_and(|ch| !ch.is_empty() && ch.iter().all(|c| c.finish_reason.is_some())),
        Route::Responses => s.status.as_deref() == Some("completed"),
        Route::Embeddings => s.data.is_some(),
    };
    JsonSummary {
        complete,
        usage: s.usage.map(UsageIn::normalize),
        model: s.model,
    }
}

#[derive(Deserialize)]
struct ChoiceFinishIn {
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

/// Whether a non-streamed response body is a finished answer worth storing: chat and
/// completions have at least one choice and a `finish_reason` on each; a response has
/// `status: "completed"`; embeddings have `data`.
pub fn json_is_complete(route: Route, json: &[u8]) -> bool {
    let Ok(c) = serde_json::from_slice::<CompletenessIn>(json) else {
        return false;
    };
    match route {
        Route::ChatCompletions | Route::Completions => c
            .choices
            .is_some_and(|ch| !ch.is_empty() && ch.iter().all(|c| c.finish_reason.is_some())),
        Route::Responses => c.status.as_deref() == Some("completed"),
        Route::Embeddings => c.data.is_some(),
    }
}

/// Assembles a stored stream into the non-streamed object (see
/// [`StreamAssembler::into_json`]).
pub fn sse_to_json(route: Route, sse: &[u8]) -> Result<Bytes, WireError> {
    if !route.can_stream() {
        return Err(WireError::NotStreamable(route));
    }
    let mut asm = StreamAssembler::new(route);
    for ev in sse::split_all(&Bytes::copy_from_slice(sse), false) {
        asm.push(&ev);
    }
    asm.into_json()
}

/// The events of a stored stream for a streamed hit, each exactly as stored. The
/// usage-only chunk is dropped unless the client asked for usage (a stream stored
/// without one simply has none to give).
pub fn replay_sse(route: Route, sse: &[u8], include_usage: bool) -> Result<Vec<Bytes>, WireError> {
    if !route.can_stream() {
        return Err(WireError::NotStreamable(route));
    }
    let events = sse::split_all(&Bytes::copy_from_slice(sse), true);
    let drop_usage = !include_usage && matches!(route, Route::ChatCompletions | Route::Completions);
    Ok(events
        .into_iter()
        .filter(|ev| !(drop_usage && is_usage_only(ev)))
        .map(|ev| ev.raw)
        .collect())
}

#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

/// Whether an event is the chat/completions usage-only chunk (`choices: []` and a
/// non-null `usage`), without building its JSON.
pub fn is_usage_only(ev: &SseEvent) -> bool {
    let Some(data) = ev.data.as_deref() else {
        return false;
    };
    if data.first() != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<UsageProbe>(data) {
        Ok(p) => p.usage.is_some() && p.choices.is_none_or(|c| c.is_empty()),
        Err(_) => false,
    }
}

/// Adds `"_cached"` and `"_cache_key"` to a JSON object body (strategy option
/// `annotate_body`). Spliced in after the opening brace, so the rest of the body is
/// byte-for-byte what upstream sent.
pub fn annotate_json(json: &[u8], cached: bool, cache_key_hex: &str) -> Result<Bytes, WireError> {
    let open = json
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .filter(|&i| json[i] == b'{')
        .ok_or(WireError::NotAnObject)?;
    let fields = annotation_fields(cached, cache_key_hex);
    Ok(splice_after_brace(json, open, &fields))
}

/// [`annotate_json`] for one SSE event: every `data:` line that opens a JSON object
/// gains the fields; `[DONE]`, comments and other lines are kept byte for byte.
pub fn annotate_sse_event(raw: &[u8], cached: bool, cache_key_hex: &str) -> Bytes {
    let fields = annotation_fields(cached, cache_key_hex);
    let mut out = Vec::with_capacity(raw.len() + fields.len() + 1);
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr::memchr2(b'\n', b'\r', &raw[pos..]).map_or(raw.len(), |o| pos + o);
        let line = &raw[pos..end];
        let value_at = line
            .strip_prefix(b"data:")
            .map(|rest| 5 + usize::from(rest.first() == Some(&b' ')));
        match value_at {
            Some(v) if line.get(v) == Some(&b'{') => {
                out.extend_from_slice(&splice_after_brace(line, v, &fields));
            }
            _ => out.extend_from_slice(line),
        }
        // keep the line terminator exactly
        let term_end = match raw.get(end) {
            Some(b'\r') if raw.get(end + 1) == Some(&b'\n') => end + 2,
            Some(_) => end + 1,
            None => end,
        };
        out.extend_from_slice(&raw[end..term_end]);
        pos = term_end;
    }
    Bytes::from(out)
}

fn annotation_fields(cached: bool, cache_key_hex: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(40 + cache_key_hex.len());
    f.extend_from_slice(if cached {
        b"\"_cached\":true,\"_cache_key\":"
    } else {
        b"\"_cached\":false,\"_cache_key\":"
    });
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut f, cache_key_hex);
    f
}

/// `json[..=open]` + `fields` + `,` (unless the object is empty) + the rest.
pub(crate) fn splice_after_brace(json: &[u8], open: usize, fields: &[u8]) -> Bytes {
    let rest = &json[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = Vec::with_capacity(json.len() + fields.len() + 1);
    out.extend_from_slice(&json[..=open]);
    out.extend_from_slice(fields);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// Writes a JSON object with fields in the order given (serde_json's map would sort
/// them), so rendered bodies read like the API's.
pub(crate) struct ObjectWriter {
    buf: Vec<u8>,
    first: bool,
}

impl ObjectWriter {
    pub(crate) fn new() -> ObjectWriter {
        ObjectWriter::with_capacity(256)
    }

    pub(crate) fn with_capacity(n: usize) -> ObjectWriter {
        let mut buf = Vec::with_capacity(n);
        buf.push(b'{');
        ObjectWriter { buf, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        let _ = serde_json::to_writer(&mut self.buf, name);
        self.buf.push(b':');
    }

    pub(crate) fn field(&mut self, name: &str, value: &Value) {
        self.key(name);
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, value);
    }

    /// A field whose value is already JSON text.
    pub(crate) fn field_raw(&mut self, name: &str, json: &[u8]) {
        self.key(name);
        self.buf.extend_from_slice(json);
    }

    pub(crate) fn finish_vec(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }

    pub(crate) fn finish(self) -> Bytes {
        Bytes::from(self.finish_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_agrees_with_usage_and_completeness() {
        let bodies: [(Route, &str); 6] = [
            (
                Route::ChatCompletions,
                r#"{"model":"m","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            ),
            (
                Route::ChatCompletions,
                r#"{"model":"m","choices":[{"finish_reason":null}]}"#,
            ),
            (Route::ChatCompletions, r#"{"choices":[]}"#),
            (
                Route::Responses,
                r#"{"model":"r","status":"completed","usage":{"input_tokens":5,"output_tokens":1}}"#,
            ),
            (
                Route::Embeddings,
                r#"{"model":"e","data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#,
            ),
            (
                Route::Completions,
                r#"{"model":"c","choices":[{"finish_reason":"length"}],"#,
            ),
        ];
        for (route, body) in bodies {
            let (usage, model) = json_usage(route, body.as_bytes());
            let summary = json_summary(route, body.as_bytes());
            assert_eq!(
                summary.complete,
                json_is_complete(route, body.as_bytes()),
                "{body}"
            );
            if summary.complete {
                assert_eq!((summary.usage, summary.model), (usage, model), "{body}");
            }
        }
    }

    #[test]
    fn usage_normalizes_both_namings_and_cache_writes() {
        let chat = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 80, "audio_tokens": 0}});
        assert_eq!(
            usage_from_value(&chat),
            Some(Usage {
                prompt_tokens: 2006,
                completion_tokens: 300,
                cached_tokens: 1920,
                cache_write_tokens: 80,
                cache_write_long_tokens: 0,
            })
        );
        let resp = json!({"input_tokens": 18014, "input_tokens_details": {"cache_write_tokens": 18011, "cached_tokens": 0},
            "output_tokens": 42, "output_tokens_details": {"reasoning_tokens": 25}, "total_tokens": 18056});
        assert_eq!(
            usage_from_value(&resp),
            Some(Usage {
                prompt_tokens: 18014,
                completion_tokens: 42,
                cached_tokens: 0,
                cache_write_tokens: 18011,
                cache_write_long_tokens: 0,
            })
        );
        let emb = json!({"prompt_tokens": 8, "total_tokens": 8});
        assert_eq!(usage_from_value(&emb).map(|u| u.prompt_tokens), Some(8));
        assert_eq!(usage_from_value(&Value::Null), None);
        let nulls =
            json!({"prompt_tokens": 3, "completion_tokens": null, "prompt_tokens_details": null});
        assert_eq!(usage_from_value(&nulls).map(|u| u.total()), Some(3));
    }

    #[test]
    fn usage_carries_the_12h_write_split_of_responses() {
        // Responses (SDK ResponseUsage): writes by lifetime under cache_write_tokens_details.
        let resp = json!({"input_tokens": 5000, "output_tokens": 10,
            "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 3000,
                "cache_write_tokens_details": {"ttl_30m_tokens": 1000, "ttl_12h_tokens": 2000}}});
        let u = usage_from_value(&resp).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.cache_write_long_tokens
            ),
            (5000, 1024, 3000, 2000)
        );
        assert_eq!(u.cache_write_short_tokens(), 1000);
        // A split larger than the total is clamped: the long part is a part.
        let odd = json!({"input_tokens": 10, "input_tokens_details": {"cache_write_tokens": 5,
            "cache_write_tokens_details": {"ttl_12h_tokens": 9}}});
        assert_eq!(usage_from_value(&odd).unwrap().cache_write_long_tokens, 5);
    }

    #[test]
    fn anthropic_usage_adds_cached_and_written_tokens_to_the_input() {
        // Anthropic's usage: input_tokens excludes the cache counters. Numbers from the
        // prompt-caching example (21 uncached, 188086 written with a 1-hour lifetime).
        let first = json!({"input_tokens": 21, "cache_creation_input_tokens": 188086,
            "cache_read_input_tokens": 0, "output_tokens": 393,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 188086},
            "service_tier": "standard"});
        assert_eq!(
            usage_from_value(&first),
            Some(Usage {
                prompt_tokens: 188107,
                completion_tokens: 393,
                cached_tokens: 0,
                cache_write_tokens: 188086,
                cache_write_long_tokens: 188086,
            })
        );
        let second = json!({"input_tokens": 21, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 188086, "output_tokens": 393});
        assert_eq!(
            usage_from_value(&second),
            Some(Usage {
                prompt_tokens: 188107,
                completion_tokens: 393,
                cached_tokens: 188086,
                cache_write_tokens: 0,
                cache_write_long_tokens: 0,
            })
        );
        // Without the cache counters an Anthropic usage reads like a Responses one.
        let plain = json!({"input_tokens": 11, "output_tokens": 6});
        assert_eq!(usage_from_value(&plain).map(|u| u.total()), Some(17));
        // Nulls are zero.
        let nulls = json!({"input_tokens": 7, "cache_read_input_tokens": null,
            "cache_creation_input_tokens": 3, "cache_creation": null, "output_tokens": 1});
        assert_eq!(
            usage_from_value(&nulls).map(|u| (u.prompt_tokens, u.cache_write_tokens)),
            Some((10, 3))
        );
    }

    #[test]
    fn json_usage_reads_model_and_usage_only() {
        let body = br#"{"object":"list","data":[{"embedding":[0.1,0.2],"index":0}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let (u, m) = json_usage(Route::Embeddings, body);
        assert_eq!(u.map(|u| u.prompt_tokens), Some(5));
        assert_eq!(m.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(json_usage(Route::Embeddings, b"not json"), (None, None));
    }

    #[test]
    fn completeness_of_json_bodies() {
        let done = br#"{"choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":"length"}]}"#;
        let open =
            br#"{"choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":null}]}"#;
        assert!(json_is_complete(Route::ChatCompletions, done));
        assert!(!json_is_complete(Route::ChatCompletions, open));
        assert!(!json_is_complete(
            Route::ChatCompletions,
            br#"{"choices":[]}"#
        ));
        assert!(json_is_complete(
            Route::Responses,
            br#"{"status":"completed"}"#
        ));
        assert!(!json_is_complete(
            Route::Responses,
            br#"{"status":"incomplete"}"#
        ));
        assert!(json_is_complete(Route::Embeddings, br#"{"data":[]}"#));
        assert!(!json_is_complete(Route::Embeddings, br#"{"error":{}}"#));
    }

    #[test]
    fn annotate_json_splices_after_the_brace() {
        let out = annotate_json(b"  {\"a\":1}", true, "ab12").unwrap();
        assert_eq!(&out[..], br#"  {"_cached":true,"_cache_key":"ab12","a":1}"#);
        let out = annotate_json(b"{ }", false, "k").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"_cached": false, "_cache_key": "k"}));
        assert!(matches!(
            annotate_json(b"[1]", true, "k"),
            Err(WireError::NotAnObject)
        ));
        assert!(matches!(
            annotate_json(b"", true, "k"),
            Err(WireError::NotAnObject)
        ));
    }

    #[test]
    fn annotate_sse_event_touches_only_json_data_lines() {
        let ev = b"event: response.created\r\ndata: {\"type\":\"x\"}\r\n\r\n";
        let out = annotate_sse_event(ev, true, "kk");
        assert_eq!(
            &out[..],
            &b"event: response.created\r\ndata: {\"_cached\":true,\"_cache_key\":\"kk\",\"type\":\"x\"}\r\n\r\n"[..]
        );
        assert_eq!(
            &annotate_sse_event(b"data: [DONE]\n\n", true, "k")[..],
            b"data: [DONE]\n\n"
        );
        assert_eq!(
            &annotate_sse_event(b": ping\n\n", true, "k")[..],
            b": ping\n\n"
        );
        assert_eq!(
            &annotate_sse_event(b"data:{}\n\n", false, "k")[..],
            &b"data:{\"_cached\":false,\"_cache_key\":\"k\"}\n\n"[..]
        );
    }

    #[test]
    fn usage_only_probe() {
        let ev = |s: &'static [u8]| sse::split_all(&Bytes::from_static(s), false).remove(0);
        assert!(is_usage_only(&ev(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n"
        )));
        assert!(!is_usage_only(&ev(
            b"data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1}}\n\n"
        )));
        assert!(!is_usage_only(&ev(
            b"data: {\"choices\":[],\"usage\":null}\n\n"
        )));
        assert!(!is_usage_only(&ev(b"data: [DONE]\n\n")));
    }
}
