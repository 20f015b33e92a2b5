//! What a request asks for ([`RequestFlags`]), whether it depends on state the provider
//! holds ([`ServerState`]), and the exact bytes the proxy forwards upstream
//! ([`prepare_upstream_body`]): the caller's bytes, changed only by the documented
//! splices ([`plan_splices`]), never re-serialized.

use std::ops::Range;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::WireError;
use crate::breakpoint::BlockPath;
use crate::rawjson::{self, Member};
use crate::route::Route;

/// The facts about a request body that steer caching and forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFlags<'a> {
    /// `stream: true` on a route that can stream.
    pub stream: bool,
    /// The client receives usage in its stream: `stream_options.include_usage: true`
    /// on chat/completions; always on responses (`response.completed` carries it).
    pub include_usage: bool,
    /// The output is sampled: `temperature` absent (the API default is 1) or above 0.
    /// Embeddings are never sampled.
    pub sampled: bool,
    /// The requested `model`.
    pub model: Option<&'a str>,
    /// The caller set a (non-null) `prompt_cache_key`.
    pub has_prompt_cache_key: bool,
    /// The answer depends on state the request does not carry: never cached.
    pub server_state: Option<ServerState>,
}

/// Why a request's answer depends on state the provider holds (or fetches) rather than
/// on the request alone. Such a request is forwarded and never cached: a stored answer
/// would be stale, or would skip a side effect the caller relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Responses `conversation`: items are read from, and appended to, a conversation.
    Conversation,
    /// Responses `background: true`: the answer is a queued response to poll.
    Background,
    /// Responses `prompt` without a `version`: the template's current version, which
    /// its owner can change.
    StoredPrompt,
    /// A tool the provider runs against state the request does not carry: file search
    /// (vector stores), web search, a remote MCP server, an existing code-interpreter
    /// container (Responses), or chat `web_search_options`.
    ProviderTool,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Conversation => "conversation",
            ServerState::Background => "background",
            ServerState::StoredPrompt => "stored_prompt",
            ServerState::ProviderTool => "provider_tool",
        }
    }
}

/// Reads the [`RequestFlags`] of a parsed request body.
pub fn request_flags(route: Route, body: &Map<String, Value>) -> RequestFlags<'_> {
    let stream = route.can_stream() && body.get("stream") == Some(&Value::Bool(true));
    let include_usage = match route {
        Route::ChatCompletions | Route::Completions => {
            stream
                && body
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    == Some(&Value::Bool(true))
        }
        Route::Responses => true,
        Route::Embeddings => false,
    };
    let sampled = match route {
        Route::Embeddings => false,
        _ => match body.get("temperature") {
            None | Some(Value::Null) => true,
            Some(t) => t.as_f64().is_none_or(|t| t > 0.0),
        },
    };
    RequestFlags {
        stream,
        include_usage,
        sampled,
        model: body.get("model").and_then(Value::as_str),
        has_prompt_cache_key: body.get("prompt_cache_key").is_some_and(|v| !v.is_null()),
        server_state: server_state(route, body),
    }
}

/// Responses tools whose results come from provider-side or live state.
fn is_provider_tool(tool: &Value) -> bool {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
    kind == "file_search"
        || kind == "mcp"
        || kind.starts_with("web_search")
        // `container: "auto"` (an object) starts a fresh one; an id names one that
        // already holds files and state.
        || (kind == "code_interpreter" && tool.get("container").is_some_and(Value::is_string))
}

fn server_state(route: Route, body: &Map<String, Value>) -> Option<ServerState> {
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    match route {
        Route::Responses => {
            if present("conversation") {
                return Some(ServerState::Conversation);
            }
            if body.get("background") == Some(&Value::Bool(true)) {
                return Some(ServerState::Background);
            }
            if let Some(prompt) = body.get("prompt").filter(|p| !p.is_null()) {
                let pinned = prompt
                    .get("version")
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty());
                if !pinned {
                    return Some(ServerState::StoredPrompt);
                }
            }
            let tools = body.get("tools").and_then(Value::as_array);
            if tools.is_some_and(|t| t.iter().any(is_provider_tool)) {
                return Some(ServerState::ProviderTool);
            }
            None
        }
        Route::ChatCompletions => {
            present("web_search_options").then_some(ServerState::ProviderTool)
        }
        Route::Completions | Route::Embeddings => None,
    }
}

/// What the proxy adds to a request before forwarding it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injections<'a> {
    /// Ask for the usage chunk (`stream_options.include_usage`) on streamed chat and
    /// legacy completions requests; ignored elsewhere.
    pub include_usage: bool,
    /// A `prompt_cache_key` to set when the caller set none (chat completions and
    /// responses only: the other routes do not accept the field).
    pub prompt_cache_key: Option<&'a str>,
    /// An explicit prompt-cache breakpoint (`prompt_cache_breakpoint: {"mode":
    /// "explicit"}`) on the content block at this path (chat completions and responses).
    pub breakpoint: Option<BlockPath>,
}

/// One change to the caller's bytes: `original[at]` is replaced by `with`. An empty
/// `at` is an insertion (always right after an object's `{`); a non-empty one is
/// exactly one JSON value as the caller wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub at: Range<usize>,
    pub with: Vec<u8>,
}

/// The only member named `name`, or `None` when there is none or more than one (a
/// duplicated member is never touched: which one counts is the reader's choice).
fn only<'m>(b: &[u8], members: &'m [Member], name: &str) -> Option<Option<&'m Member>> {
    let mut found = members.iter().filter(|m| m.key_is(b, name));
    let first = found.next();
    match found.next() {
        Some(_) => None,
        None => Some(first),
    }
}

/// The splices that carry `inject` into `original`, in order of position. Every one is
/// listed in `docs/security.md` ("Forwarding"):
/// - `prompt_cache_key` (chat, responses; only when the caller set none): inserted
///   after the top-level `{`, or replacing the value of a `"prompt_cache_key": null`;
/// - `stream_options.include_usage: true` (streamed chat and completions): inserted as
///   `"stream_options":{…}` after the top-level `{`, replacing a `null` value, inserted
///   after the `{` of an existing `stream_options` object, or replacing the value of an
///   existing `include_usage` that is not `true`.
///
/// - `prompt_cache_breakpoint` (chat, responses; see [`breakpoint_splice`]): inserted
///   after the `{` of the content part it marks, or, on a string `content`, the string
///   replaced by a one-part array holding the same string as written:
///   `[{"type":"text","text":<the string>,"prompt_cache_breakpoint":{"mode":"explicit"}}]`
///   (`input_text` in Responses).
///
/// Nothing else changes: no whitespace, key order or number spelling. A member that is
/// duplicated, or a `stream_options` that is neither an object nor `null`, is left alone
/// (the provider judges such a body as the caller wrote it).
pub fn plan_splices(
    original: &[u8],
    route: Route,
    inject: &Injections<'_>,
) -> Result<Vec<Splice>, WireError> {
    let open = rawjson::document(original).map_err(WireError::Syntax)?;
    if original[open] != b'{' {
        return Err(WireError::NotAnObject);
    }
    let top = rawjson::members(original, open, 0).map_err(WireError::Syntax)?;
    let value_is = |m: &Member, text: &[u8]| &original[m.value.clone()] == text;

    // Fields inserted after the top-level brace, in this order.
    let mut inserted: Vec<Vec<u8>> = Vec::new();
    let mut splices = Vec::new();

    if let Some(key) = inject
        .prompt_cache_key
        .filter(|_| matches!(route, Route::ChatCompletions | Route::Responses))
    {
        let mut text = Vec::with_capacity(key.len() + 2);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, key);
        match only(original, &top, "prompt_cache_key") {
            Some(None) => {
                let mut field = b"\"prompt_cache_key\":".to_vec();
                field.extend_from_slice(&text);
                inserted.push(field);
            }
            Some(Some(m)) if value_is(m, b"null") => splices.push(Splice {
                at: m.value.clone(),
                with: text,
            }),
            // The caller's own key, or a duplicated one: untouched.
            _ => {}
        }
    }

    let streamed = matches!(only(original, &top, "stream"), Some(Some(m)) if value_is(m, b"true"));
    if inject.include_usage
        && matches!(route, Route::ChatCompletions | Route::Completions)
        && streamed
    {
        const OPTIONS: &[u8] = br#"{"include_usage":true}"#;
        match only(original, &top, "stream_options") {
            Some(None) => {
                let mut field = b"\"stream_options\":".to_vec();
                field.extend_from_slice(OPTIONS);
                inserted.push(field);
            }
            Some(Some(m)) if value_is(m, b"null") => splices.push(Splice {
                at: m.value.clone(),
                with: OPTIONS.to_vec(),
            }),
            Some(Some(m)) if original[m.value.start] == b'{' => {
                let inner =
                    rawjson::members(original, m.value.start, 1).map_err(WireError::Syntax)?;
                match only(original, &inner, "include_usage") {
                    Some(None) => {
                        let mut with = b"\"include_usage\":true".to_vec();
                        if !inner.is_empty() {
                            with.push(b',');
                        }
                        let at = m.value.start + 1;
                        splices.push(Splice { at: at..at, with });
                    }
                    Some(Some(u)) if !value_is(u, b"true") => splices.push(Splice {
                        at: u.value.clone(),
                        with: b"true".to_vec(),
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    if let Some(path) = inject
        .breakpoint
        .filter(|_| matches!(route, Route::ChatCompletions | Route::Responses))
        && let Some(s) = breakpoint_at(original, &top, path)?
    {
        splices.push(s);
    }

    if !inserted.is_empty() {
        let mut with = inserted.join(&b","[..]);
        if !top.is_empty() {
            with.push(b',');
        }
        let at = open + 1;
        splices.push(Splice { at: at..at, with });
    }
    splices.sort_by_key(|s| s.at.start);
    Ok(splices)
}

/// The marker a breakpoint splice writes.
const BREAKPOINT: &[u8] = br#""prompt_cache_breakpoint":{"mode":"explicit"}"#;

/// The splice that puts an explicit breakpoint on the block at `path` of a body, or
/// `None` when the body has no such block in a form that can take one without other
/// changes (a duplicated member, a part that is not an object, a part that already has a
/// marker, content of another type).
pub fn breakpoint_splice(original: &[u8], path: BlockPath) -> Result<Option<Splice>, WireError> {
    let open = rawjson::document(original).map_err(WireError::Syntax)?;
    if original[open] != b'{' {
        return Err(WireError::NotAnObject);
    }
    let top = rawjson::members(original, open, 0).map_err(WireError::Syntax)?;
    breakpoint_at(original, &top, path)
}

/// The value spans of the elements of the array at `b[open] == b'['`.
fn elements(b: &[u8], open: usize, depth: usize) -> Result<Vec<Range<usize>>, WireError> {
    let mut out = Vec::new();
    let mut pos = rawjson::skip_ws(b, open + 1);
    if b.get(pos) == Some(&b']') {
        return Ok(out);
    }
    loop {
        let end = rawjson::skip_value(b, pos, depth + 1).map_err(WireError::Syntax)?;
        out.push(pos..end);
        pos = rawjson::skip_ws(b, end);
        match b.get(pos) {
            Some(b',') => pos = rawjson::skip_ws(b, pos + 1),
            _ => return Ok(out),
        }
    }
}

fn breakpoint_at(b: &[u8], top: &[Member], path: BlockPath) -> Result<Option<Splice>, WireError> {
    let Some(Some(list)) = only(b, top, path.list.as_str()) else {
        return Ok(None);
    };
    if b[list.value.start] != b'[' {
        return Ok(None);
    }
    let items = elements(b, list.value.start, 0)?;
    let Some(item) = items.get(path.item).filter(|r| b[r.start] == b'{') else {
        return Ok(None);
    };
    let fields = rawjson::members(b, item.start, 2).map_err(WireError::Syntax)?;
    let Some(Some(content)) = only(b, &fields, "content") else {
        return Ok(None);
    };
    match (path.part, b[content.value.start]) {
        (None, b'"') => {
            let mut with = Vec::with_capacity(content.value.len() + 80);
            with.extend_from_slice(br#"[{"type":""#);
            with.extend_from_slice(path.text_type().as_bytes());
            with.extend_from_slice(br#"","text":"#);
            with.extend_from_slice(&b[content.value.clone()]);
            with.push(b',');
            with.extend_from_slice(BREAKPOINT);
            with.extend_from_slice(b"}]");
            Ok(Some(Splice {
                at: content.value.clone(),
                with,
            }))
        }
        (Some(j), b'[') => {
            let parts = elements(b, content.value.start, 3)?;
            let Some(part) = parts.get(j).filter(|r| b[r.start] == b'{') else {
                return Ok(None);
            };
            let inner = rawjson::members(b, part.start, 4).map_err(WireError::Syntax)?;
            if inner.iter().any(|m| m.key_is(b, "prompt_cache_breakpoint")) {
                return Ok(None);
            }
            let mut with = BREAKPOINT.to_vec();
            if !inner.is_empty() {
                with.push(b',');
            }
            let at = part.start + 1;
            Ok(Some(Splice { at: at..at, with }))
        }
        _ => Ok(None),
    }
}

/// `original` with the splices applied (they must be in order and not overlap).
pub fn apply_splices(original: &Bytes, splices: &[Splice]) -> Bytes {
    if splices.is_empty() {
        return original.clone();
    }
    let extra: usize = splices.iter().map(|s| s.with.len()).sum();
    let mut out = Vec::with_capacity(original.len() + extra);
    let mut pos = 0;
    for s in splices {
        out.extend_from_slice(&original[pos..s.at.start]);
        out.extend_from_slice(&s.with);
        pos = s.at.end;
    }
    out.extend_from_slice(&original[pos..]);
    Bytes::from(out)
}

/// The bytes to forward upstream: `original` with [`plan_splices`] applied. Nothing to
/// inject: `original` itself (a cheap `Bytes` clone).
pub fn prepare_upstream_body(
    original: &Bytes,
    route: Route,
    inject: &Injections<'_>,
) -> Result<Bytes, WireError> {
    if inject.prompt_cache_key.is_none() && !inject.include_usage && inject.breakpoint.is_none() {
        return Ok(original.clone());
    }
    let splices = plan_splices(original, route, inject)?;
    Ok(apply_splices(original, &splices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Map<String, Value> {
        serde_json::from_slice(b).unwrap()
    }

    fn prep(route: Route, body: &'static [u8], inject: Injections<'_>) -> Bytes {
        prepare_upstream_body(&Bytes::from_static(body), route, &inject).unwrap()
    }

    fn prep_str(route: Route, body: &'static str, inject: Injections<'_>) -> String {
        String::from_utf8(prep(route, body.as_bytes(), inject).to_vec()).unwrap()
    }

    const BOTH: Injections<'static> = Injections {
        include_usage: true,
        prompt_cache_key: Some("pk-1"),
        breakpoint: None,
    };
    const USAGE: Injections<'static> = Injections {
        include_usage: true,
        prompt_cache_key: None,
        breakpoint: None,
    };

    /// Nested key order, number spellings, escapes and whitespace a re-serialization
    /// would change.
    const FRAGILE: &str = r#""response_format": {"type":"json_schema","json_schema":{"name":"s","schema":{"properties":{"zeta":{"type":"number","minimum":1.50},"alpha":{"type":"string"}}}}},
  "seed": 18446744073709551617, "temperature": 0.30000000000000004, "x": "\u00e9\/""#;

    #[test]
    fn flags_read_the_body() {
        let b = parse(br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"temperature":0}"#);
        let f = request_flags(Route::ChatCompletions, &b);
        assert_eq!(
            f,
            RequestFlags {
                stream: true,
                include_usage: true,
                sampled: false,
                model: Some("gpt-4o"),
                has_prompt_cache_key: false,
                server_state: None,
            }
        );
        let b = parse(br#"{"model":"m","prompt_cache_key":"x","temperature":0.7}"#);
        let f = request_flags(Route::ChatCompletions, &b);
        assert!(!f.stream && !f.include_usage && f.sampled && f.has_prompt_cache_key);
        assert!(
            request_flags(Route::ChatCompletions, &parse(b"{}")).sampled,
            "default temperature is 1"
        );
        let b = parse(br#"{"stream":true,"prompt_cache_key":null}"#);
        assert!(!request_flags(Route::Embeddings, &b).stream);
        assert!(!request_flags(Route::Embeddings, &b).sampled);
        assert!(!request_flags(Route::ChatCompletions, &b).has_prompt_cache_key);
        assert!(request_flags(Route::Responses, &b).include_usage);
    }

    #[test]
    fn server_state_is_found() {
        let state = |route, b: &str| request_flags(route, &parse(b.as_bytes())).server_state;
        let r = Route::Responses;
        assert_eq!(state(r, r#"{"input":"hi"}"#), None);
        assert_eq!(
            state(r, r#"{"conversation":"conv_1"}"#),
            Some(ServerState::Conversation)
        );
        assert_eq!(
            state(r, r#"{"conversation":{"id":"conv_1"}}"#),
            Some(ServerState::Conversation)
        );
        assert_eq!(state(r, r#"{"conversation":null}"#), None);
        assert_eq!(
            state(r, r#"{"background":true}"#),
            Some(ServerState::Background)
        );
        assert_eq!(state(r, r#"{"background":false}"#), None);
        assert_eq!(
            state(r, r#"{"prompt":{"id":"pmpt_1"}}"#),
            Some(ServerState::StoredPrompt)
        );
        assert_eq!(
            state(r, r#"{"prompt":{"id":"pmpt_1","version":"3"}}"#),
            None
        );
        assert_eq!(state(r, r#"{"previous_response_id":"resp_1"}"#), None);
        for tool in [
            r#"{"type":"file_search","vector_store_ids":["vs_1"]}"#,
            r#"{"type":"web_search"}"#,
            r#"{"type":"web_search_preview"}"#,
            r#"{"type":"mcp","server_label":"x","server_url":"https://x"}"#,
            r#"{"type":"code_interpreter","container":"cntr_1"}"#,
        ] {
            assert_eq!(
                state(r, &format!(r#"{{"tools":[{tool}]}}"#)),
                Some(ServerState::ProviderTool),
                "{tool}"
            );
        }
        assert_eq!(
            state(
                r,
                r#"{"tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}"#
            ),
            None
        );
        assert_eq!(
            state(r, r#"{"tools":[{"type":"function","name":"f"}]}"#),
            None
        );
        assert_eq!(
            state(Route::ChatCompletions, r#"{"web_search_options":{}}"#),
            Some(ServerState::ProviderTool)
        );
        assert_eq!(
            state(
                Route::ChatCompletions,
                r#"{"conversation":"c","background":true}"#
            ),
            None
        );
    }

    #[test]
    fn nothing_to_inject_returns_the_same_bytes() {
        let body: &'static [u8] = br#"{"model":"m", "stream":false}"#;
        let original = Bytes::from_static(body);
        let out = prepare_upstream_body(&original, Route::ChatCompletions, &Injections::default())
            .unwrap();
        assert_eq!(
            out.as_ptr(),
            original.as_ptr(),
            "no copy, no re-serialization"
        );
        // include_usage on a non-streamed request changes nothing either
        assert_eq!(&prep(Route::ChatCompletions, body, USAGE)[..], body);
        // embeddings accept neither field
        assert_eq!(
            &prep(Route::Embeddings, br#"{"input":"x"}"#, BOTH)[..],
            br#"{"input":"x"}"#
        );
        // already asked for: untouched, byte for byte
        let asked: &'static [u8] =
            b"{ \"stream\" : true , \"stream_options\" : { \"include_usage\" : true } }";
        assert_eq!(&prep(Route::ChatCompletions, asked, USAGE)[..], asked);
    }

    /// Every splice, byte for byte: the only difference is the spliced text.
    #[test]
    fn each_splice_changes_only_its_bytes() {
        let body = |head: &str| -> &'static str {
            Box::leak(format!("{{{head}\n  {FRAGILE} , \"stream\": true }}").into_boxed_str())
        };
        let after_brace =
            |head: &str, ins: &str| format!("{{{ins}{head}\n  {FRAGILE} , \"stream\": true }}");

        // 1. both fields inserted after the top-level brace
        let b = body("");
        assert_eq!(
            prep_str(Route::ChatCompletions, b, BOTH),
            after_brace(
                "",
                r#""prompt_cache_key":"pk-1","stream_options":{"include_usage":true},"#
            )
        );
        // 2. prompt_cache_key: null replaced in place
        let b = body(r#" "prompt_cache_key" :  null,"#);
        assert_eq!(
            prep_str(Route::Responses, b, BOTH),
            format!("{{ \"prompt_cache_key\" :  \"pk-1\",\n  {FRAGILE} , \"stream\": true }}")
        );
        // 3. stream_options: null replaced in place
        let b = body(r#""stream_options":null,"#);
        assert_eq!(
            prep_str(Route::ChatCompletions, b, USAGE),
            format!(
                "{{\"stream_options\":{{\"include_usage\":true}},\n  {FRAGILE} , \"stream\": true }}"
            )
        );
        // 4. include_usage inserted into an existing stream_options object
        let b = body(r#""stream_options": { "include_obfuscation": false },"#);
        assert_eq!(
            prep_str(Route::ChatCompletions, b, USAGE),
            format!(
                "{{\"stream_options\": {{\"include_usage\":true, \"include_obfuscation\": false }},\n  {FRAGILE} , \"stream\": true }}"
            )
        );
        let b = body(r#""stream_options":{ },"#);
        assert_eq!(
            prep_str(Route::Completions, b, USAGE),
            format!(
                "{{\"stream_options\":{{\"include_usage\":true }},\n  {FRAGILE} , \"stream\": true }}"
            )
        );
        // 5. include_usage: false replaced in place
        let b = body(r#""stream_options":{"include_obfuscation":false, "include_usage" : false},"#);
        assert_eq!(
            prep_str(Route::ChatCompletions, b, USAGE),
            format!(
                "{{\"stream_options\":{{\"include_obfuscation\":false, \"include_usage\" : true}},\n  {FRAGILE} , \"stream\": true }}"
            )
        );
    }

    #[test]
    fn injections_into_small_bodies() {
        assert_eq!(
            prep_str(
                Route::ChatCompletions,
                " \n{\"model\":\"m\",\"stream\":true}",
                BOTH
            ),
            " \n{\"prompt_cache_key\":\"pk-1\",\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true}"
        );
        assert_eq!(
            prep_str(Route::Responses, "{}", BOTH),
            r#"{"prompt_cache_key":"pk-1"}"#
        );
        assert_eq!(
            prep_str(Route::Completions, r#"{"stream":true}"#, BOTH),
            r#"{"stream_options":{"include_usage":true},"stream":true}"#,
            "no key on legacy completions"
        );
        let odd = Injections {
            include_usage: false,
            prompt_cache_key: Some("a\"b"),
            breakpoint: None,
        };
        assert_eq!(
            prep_str(Route::ChatCompletions, "{ }", odd),
            r#"{"prompt_cache_key":"a\"b" }"#
        );
    }

    #[test]
    fn a_callers_or_a_duplicated_member_is_never_touched() {
        let own: &'static [u8] = br#"{"prompt_cache_key":"mine","stream":false}"#;
        assert_eq!(&prep(Route::ChatCompletions, own, BOTH)[..], own);
        let dup: &'static [u8] = br#"{"prompt_cache_key":null,"prompt_cache_key":null}"#;
        assert_eq!(&prep(Route::ChatCompletions, dup, BOTH)[..], dup);
        let dup: &'static [u8] = br#"{"stream":true,"stream_options":null,"stream_options":null}"#;
        assert_eq!(&prep(Route::ChatCompletions, dup, USAGE)[..], dup);
        let odd: &'static [u8] = br#"{"stream":true,"stream_options":"yes"}"#;
        assert_eq!(&prep(Route::ChatCompletions, odd, USAGE)[..], odd);
        assert!(matches!(
            prepare_upstream_body(&Bytes::from_static(b"[1]"), Route::ChatCompletions, &BOTH),
            Err(WireError::NotAnObject)
        ));
    }

    fn at(list: crate::breakpoint::List, item: usize, part: Option<usize>) -> Injections<'static> {
        Injections {
            breakpoint: Some(BlockPath { list, item, part }),
            ..Injections::default()
        }
    }

    /// A breakpoint splice changes only its bytes, and its parsed twin
    /// (`breakpoint::blocks::place_in_body`) reads the same.
    #[test]
    fn breakpoint_splices_are_byte_exact() {
        use crate::breakpoint::List::{Input, Messages};
        let body = "{\"model\":\"gpt-5.6\", \"messages\": [ {\"role\":\"system\",\"content\": \"Rules \\u00e9\\n\" } ,\n {\"content\":[ {\"type\":\"text\",\"text\":\"a\"}, {\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}} ],\"role\":\"user\"}], \"temperature\": 0.30000000000000004}";
        let s = prep_str(
            Route::ChatCompletions,
            Box::leak(body.into()),
            at(Messages, 0, None),
        );
        assert_eq!(
            s,
            body.replace(
                "\"Rules \\u00e9\\n\"",
                "[{\"type\":\"text\",\"text\":\"Rules \\u00e9\\n\",\"prompt_cache_breakpoint\":{\"mode\":\"explicit\"}}]"
            )
        );
        let s = prep_str(
            Route::ChatCompletions,
            Box::leak(body.into()),
            at(Messages, 1, Some(1)),
        );
        assert_eq!(
            s,
            body.replace(
                "{\"type\":\"image_url\"",
                "{\"prompt_cache_breakpoint\":{\"mode\":\"explicit\"},\"type\":\"image_url\""
            )
        );
        for (bytes, path) in [
            (
                s.clone(),
                BlockPath {
                    list: Messages,
                    item: 1,
                    part: Some(1),
                },
            ),
            (
                prep_str(
                    Route::ChatCompletions,
                    Box::leak(body.into()),
                    at(Messages, 0, None),
                ),
                BlockPath {
                    list: Messages,
                    item: 0,
                    part: None,
                },
            ),
        ] {
            let mut twin = parse(body.as_bytes());
            assert!(crate::breakpoint::blocks::place_in_body(&mut twin, path));
            assert_eq!(parse(bytes.as_bytes()), twin);
        }
        // Responses: a string content becomes an input_text part.
        let resp = r#"{"input":[{"role":"developer","content":"x"}]}"#;
        assert_eq!(
            prep_str(Route::Responses, resp, at(Input, 0, None)),
            r#"{"input":[{"role":"developer","content":[{"type":"input_text","text":"x","prompt_cache_breakpoint":{"mode":"explicit"}}]}]}"#
        );
        // Nothing that fits: left alone, byte for byte.
        for (route, b, inj) in [
            (Route::ChatCompletions, body, at(Messages, 5, None)),
            (Route::ChatCompletions, body, at(Messages, 0, Some(0))),
            (Route::ChatCompletions, body, at(Messages, 1, None)),
            (Route::ChatCompletions, body, at(Input, 0, None)),
            (Route::Completions, body, at(Messages, 0, None)),
            (
                Route::ChatCompletions,
                r#"{"messages":[{"content":"a","content":"b"}]}"#,
                at(Messages, 0, None),
            ),
            (
                Route::ChatCompletions,
                r#"{"messages":[{"content":[{"type":"text","text":"a","prompt_cache_breakpoint":{"mode":"explicit"}}]}]}"#,
                at(Messages, 0, Some(0)),
            ),
        ] {
            assert_eq!(prep_str(route, Box::leak(b.into()), inj), b);
        }
    }
}
