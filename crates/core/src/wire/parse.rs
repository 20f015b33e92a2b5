//! The parsed request the proxy steers by: only the members it reads (flags, the
//! strategy's model, the prefix family, the conversation key), built within a memory
//! budget, so no body can make its tree many times larger than its bytes.
//!
//! Keys and forwarded bytes come from the raw body (`canonical`, `plan_splices`), so a
//! member this tree skips changes nothing the provider sees or the key covers.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::WireError;
use crate::route::Route;

/// Tree bytes allowed whatever the body's size: room for requests with many small
/// objects (fifty tools with their schemas), whose tree is 10-20 times their text.
pub const TREE_BASE_BYTES: usize = 4 << 20;
/// Tree bytes allowed per body byte on top of the base: a body of long strings (the
/// usual large request) parses to about its own size.
pub const TREE_BYTES_PER_BODY_BYTE: usize = 2;
/// Budget of the fallback tree that only carries the forwarding flags.
const FLAGS_BUDGET: usize = 64 << 10;

/// What [`parse_request`] may build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Estimated heap bytes of the tree (strings, map nodes, array slots).
    pub budget: usize,
    /// Elements kept of a completions `prompt` or an embeddings `input` (counted over
    /// nested arrays). Only their start is read (the prefix family's window), so the
    /// rest of a token-id array is validated but not kept. Must exceed the largest
    /// window a family can render ([`crate::prefix::MAX_WINDOW_BYTES`]) for families
    /// to stay exact: every kept element renders at least one byte.
    pub prompt_elements: usize,
}

impl TreeLimits {
    /// The limits for a body of `len` bytes.
    pub fn for_body(len: usize) -> TreeLimits {
        TreeLimits {
            budget: TREE_BASE_BYTES.saturating_add(len.saturating_mul(TREE_BYTES_PER_BODY_BYTE)),
            prompt_elements: crate::prefix::MAX_WINDOW_BYTES + 64,
        }
    }
}

/// A request body as the proxy reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The members the proxy reads; every other member is skipped unparsed.
    pub body: Map<String, Value>,
    /// `false` when the members this route reads would not fit the budget: `body` then
    /// holds at most the small members that steer forwarding (`model`, `stream`,
    /// `stream_options`, `temperature`, ...), and the request must not be cached (its
    /// family and conversation key are unknown).
    pub complete: bool,
}

/// How a member is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Whole,
    /// A completions `prompt` / embeddings `input`: arrays cut at `prompt_elements`.
    Prompt,
}

/// Members every route reads ([`super::request_flags`]).
const FLAG_MEMBERS: [&str; 5] = [
    "model",
    "stream",
    "stream_options",
    "temperature",
    "prompt_cache_key",
];

/// The members `route` reads: flags, server-side state, and what the prefix renderers
/// walk (`crate::prefix`).
fn member(route: Route, name: &str, flags_only: bool) -> Option<Keep> {
    if FLAG_MEMBERS.contains(&name) {
        return Some(Keep::Whole);
    }
    let (state, rendered): (&[&str], &[&str]) = match route {
        Route::ChatCompletions => (
            &["web_search_options"],
            &["tools", "functions", "response_format", "messages"],
        ),
        Route::Responses => (
            &["conversation", "background", "prompt"],
            &["tools", "functions", "text", "instructions", "input"],
        ),
        Route::Completions => (&[], &["prompt"]),
        Route::Embeddings => (&[], &["input"]),
    };
    if state.contains(&name) {
        return Some(Keep::Whole);
    }
    if flags_only || !rendered.contains(&name) {
        return None;
    }
    match (route, name) {
        (Route::Completions, "prompt") | (Route::Embeddings, "input") => Some(Keep::Prompt),
        _ => Some(Keep::Whole),
    }
}

/// Parses a request body into the members the proxy reads, within `limits`.
///
/// Under budget, `body` equals `serde_json::from_slice::<Map<String, Value>>(raw)`
/// restricted to those members (and a prompt's arrays cut as [`TreeLimits`] says).
/// Errors only when the body is not a JSON object.
///
/// ```
/// use prefixcache_core::route::Route;
/// use prefixcache_core::wire::{TreeLimits, parse_request};
///
/// let raw = br#"{"model":"gpt-4o","pad":[0,0,0,0],"messages":[{"role":"user","content":"hi"}]}"#;
/// let parsed = parse_request(Route::ChatCompletions, raw, TreeLimits::for_body(raw.len())).unwrap();
/// assert!(parsed.complete);
/// assert!(parsed.body.contains_key("messages") && !parsed.body.contains_key("pad"));
///
/// // A budget too small for the messages keeps only the forwarding flags.
/// let tiny = TreeLimits { budget: 100, ..TreeLimits::for_body(0) };
/// let parsed = parse_request(Route::ChatCompletions, raw, tiny).unwrap();
/// assert!(!parsed.complete);
/// assert_eq!(parsed.body["model"], "gpt-4o");
/// assert!(!parsed.body.contains_key("messages"));
/// ```
pub fn parse_request(
    route: Route,
    raw: &[u8],
    limits: TreeLimits,
) -> Result<ParsedRequest, WireError> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Not an object: say whether it is JSON at all.
        serde_json::from_slice::<IgnoredAny>(raw)?;
        return Err(WireError::NotAnObject);
    }
    match parse_members(route, raw, limits.budget, limits.prompt_elements, false) {
        Ok(body) => {
            return Ok(ParsedRequest {
                body,
                complete: true,
            });
        }
        Err(Failure::Json(e)) => return Err(WireError::InvalidJson(e)),
        Err(Failure::OverBudget) => {}
    }
    // The body is valid JSON so far as it was read; the rest is checked by the raw
    // reader the key is built from. Keep what forwarding needs, if that is small.
    let body = match parse_members(route, raw, FLAGS_BUDGET, 0, true) {
        Ok(body) => body,
        Err(Failure::Json(e)) => return Err(WireError::InvalidJson(e)),
        Err(Failure::OverBudget) => Map::new(),
    };
    Ok(ParsedRequest {
        body,
        complete: false,
    })
}

enum Failure {
    Json(serde_json::Error),
    OverBudget,
}

fn parse_members(
    route: Route,
    raw: &[u8],
    budget: usize,
    prompt_elements: usize,
    flags_only: bool,
) -> Result<Map<String, Value>, Failure> {
    let budget = Budget {
        left: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    let prompt_left = Cell::new(prompt_elements);
    let mut de = serde_json::Deserializer::from_slice(raw);
    let top = Top {
        route,
        budget: &budget,
        prompt_left: &prompt_left,
        flags_only,
    };
    let result = de::Deserializer::deserialize_map(&mut de, top).and_then(|m| {
        de.end()?;
        Ok(m)
    });
    match result {
        Ok(m) => Ok(m),
        Err(_) if budget.exceeded.get() => Err(Failure::OverBudget),
        Err(e) => Err(Failure::Json(e)),
    }
}

/// Estimated heap bytes left for the tree.
struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

/// Heap bytes of one `Value` slot in its array (with the vector's growth slack).
const ARRAY_SLOT: usize = 48;
/// Heap bytes of a map entry besides its key's text: the key `String`, the `Value`
/// slot, allocator overhead.
const MAP_ENTRY: usize = 88;
/// Heap bytes of a non-empty map's first B-tree node (11 slots of key and value).
const MAP_NODE: usize = 640;
/// Allocator overhead of a string.
const STRING: usize = 16;

impl Budget {
    fn take<E: de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("request tree over its memory budget"))
            }
        }
    }
}

struct Top<'b> {
    route: Route,
    budget: &'b Budget,
    prompt_left: &'b Cell<usize>,
    flags_only: bool,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match member(self.route, &key, self.flags_only) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(keep) => {
                    self.budget.take(key.len() + MAP_ENTRY)?;
                    let value = match keep {
                        Keep::Whole => map.next_value_seed(Tree {
                            budget: self.budget,
                            prompt_left: None,
                        })?,
                        Keep::Prompt => map.next_value_seed(Tree {
                            budget: self.budget,
                            prompt_left: Some(self.prompt_left),
                        })?,
                    };
                    // Last one wins, as serde_json's map does.
                    out.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

/// One value, built like `serde_json::Value` but charged to the budget; with
/// `prompt_left`, arrays keep only that many elements in all.
#[derive(Clone, Copy)]
struct Tree<'b> {
    budget: &'b Budget,
    prompt_left: Option<&'b Cell<usize>>,
}

impl<'de> DeserializeSeed<'de> for Tree<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take(v.len() + STRING)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take(v.len() + STRING)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        let Some(left) = self.prompt_left else {
            while let Some(v) = seq.next_element_seed(self)? {
                self.budget.take(ARRAY_SLOT)?;
                out.push(v);
            }
            return Ok(Value::Array(out));
        };
        while left.get() > 0 {
            match seq.next_element_seed(self)? {
                Some(v) => {
                    left.set(left.get().saturating_sub(1));
                    self.budget.take(ARRAY_SLOT)?;
                    out.push(v);
                }
                None => return Ok(Value::Array(out)),
            }
        }
        // The rest is never rendered (the kept part fills any window first), but
        // whether it holds a non-number decides how the kept part is rendered (token
        // ids or items): a `null` in its place keeps that answer.
        let mut mixed = false;
        while let Some(is_number) = seq.next_element_seed(IsNumber)? {
            mixed |= !is_number;
        }
        if mixed {
            out.push(Value::Null);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.is_empty() {
                self.budget.take(MAP_NODE)?;
            }
            self.budget.take(key.len() + MAP_ENTRY)?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Skips a value, saying whether it was a number.
struct IsNumber;

impl<'de> DeserializeSeed<'de> for IsNumber {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsNumber {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::{FamilyParams, PrefixScope, conversation_digest, family, scope_digest};
    use crate::tokenizer::Encoding;
    use proptest::prelude::*;
    use serde_json::json;

    fn full(raw: &[u8]) -> Map<String, Value> {
        serde_json::from_slice(raw).unwrap()
    }

    fn lean(route: Route, raw: &[u8]) -> ParsedRequest {
        parse_request(route, raw, TreeLimits::for_body(raw.len())).unwrap()
    }

    #[test]
    fn members_nobody_reads_are_skipped() {
        let raw = serde_json::to_vec(&json!({
            "model": "gpt-4o", "stream": true, "metadata": {"a": [1, 2]}, "user": "u",
            "messages": [{"role": "user", "content": "hi"}], "pad": vec![0; 1000],
        }))
        .unwrap();
        let p = lean(Route::ChatCompletions, &raw);
        assert!(p.complete);
        let mut keys: Vec<&str> = p.body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["messages", "model", "stream"]);
        assert_eq!(p.body["messages"], full(&raw)["messages"]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |raw: &[u8]| {
            parse_request(Route::ChatCompletions, raw, TreeLimits::for_body(raw.len())).unwrap_err()
        };
        assert!(matches!(e(b"[1]"), WireError::NotAnObject));
        assert!(matches!(e(b"{"), WireError::InvalidJson(_)));
        assert!(matches!(e(b"{} x"), WireError::InvalidJson(_)));
        assert!(matches!(e(b"{\"pad\": [1,}"), WireError::InvalidJson(_)));
        assert!(matches!(e(b""), WireError::InvalidJson(_)));
    }

    #[test]
    fn a_dense_body_keeps_only_the_forwarding_flags() {
        // Fifty thousand tiny objects: about 20 bytes of text each, ~700 in a tree.
        let messages: Vec<Value> = (0..50_000)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        let raw = serde_json::to_vec(&json!({
            "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "messages": messages,
        }))
        .unwrap();
        let p = lean(Route::ChatCompletions, &raw);
        assert!(!p.complete);
        assert_eq!(p.body["model"], "gpt-4o");
        assert_eq!(p.body["stream"], true);
        assert_eq!(p.body["stream_options"], json!({"include_usage": true}));
        assert!(!p.body.contains_key("messages"));
        // The same messages as one long string are cheap.
        let raw = serde_json::to_vec(&json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "x".repeat(raw.len())}],
        }))
        .unwrap();
        assert!(lean(Route::ChatCompletions, &raw).complete);
    }

    #[test]
    fn long_token_arrays_keep_their_start_and_family() {
        let n = crate::prefix::MAX_WINDOW_BYTES * 3;
        let ids: Vec<u32> = (0..n as u32).map(|i| 1000 + i % 5000).collect();
        for input in [
            json!(ids),
            json!([ids.clone(), ids.clone()]),
            json!([ids
                .iter()
                .map(|&i| json!(i))
                .chain([json!("x")])
                .collect::<Vec<_>>()]),
        ] {
            let raw =
                serde_json::to_vec(&json!({"model": "text-embedding-3-small", "input": input}))
                    .unwrap();
            let p = lean(Route::Embeddings, &raw);
            assert!(p.complete);
            let kept = serde_json::to_vec(&p.body["input"]).unwrap().len();
            assert!(kept < raw.len() / 2, "the token ids were cut");
            let params = FamilyParams::new(Encoding::Cl100kBase);
            assert_eq!(
                family(Route::Embeddings, &p.body, &params),
                family(Route::Embeddings, &full(&raw), &params)
            );
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z ]{0,40}", Just(" ".repeat(300)), "[a-z\\n ]{0,2000}",]
    }

    fn arb_request() -> impl Strategy<Value = (Route, Value)> {
        let message = (
            prop_oneof![
                Just("system"),
                Just("user"),
                Just("assistant"),
                Just("developer")
            ],
            arb_text(),
        )
            .prop_map(|(role, text)| json!({"role": role, "content": text}));
        let messages = prop::collection::vec(message, 0..6);
        let tools = prop::collection::vec("[a-z]{1,8}", 0..3).prop_map(|names| {
            names
                .into_iter()
                .map(|n| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}))
                .collect::<Vec<_>>()
        });
        let ids = prop::collection::vec(0u32..100_300, 0..200);
        (
            0..4usize,
            messages,
            tools,
            ids,
            arb_text(),
            any::<bool>(),
            prop::option::of(0.0f64..2.0),
        )
            .prop_map(|(route, messages, tools, ids, text, stream, temperature)| {
                let mut body =
                    json!({"model": "gpt-4o-mini", "stream": stream, "extra": {"x": [1, 2]}});
                if let Some(t) = temperature {
                    body["temperature"] = json!(t);
                }
                let route = match route {
                    0 => {
                        body["messages"] = json!(messages);
                        body["tools"] = json!(tools);
                        Route::ChatCompletions
                    }
                    1 => {
                        body["input"] = json!(messages);
                        body["instructions"] = json!(text);
                        body["tools"] = json!(tools);
                        Route::Responses
                    }
                    2 => {
                        body["prompt"] = json!([text, ids]);
                        Route::Completions
                    }
                    _ => {
                        body["input"] = json!(ids);
                        Route::Embeddings
                    }
                };
                (route, body)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Everything the proxy derives from the tree is the same on the lean tree.
        #[test]
        fn the_lean_tree_steers_like_the_full_one((route, body) in arb_request(), normalize in any::<bool>()) {
            let raw = serde_json::to_vec(&body).unwrap();
            let full = full(&raw);
            let p = lean(route, &raw);
            prop_assert!(p.complete);
            prop_assert_eq!(super::super::request_flags(route, &p.body), super::super::request_flags(route, &full));
            let mut params = FamilyParams::new(Encoding::O200kBase);
            params.normalize_whitespace = normalize;
            prop_assert_eq!(family(route, &p.body, &params), family(route, &full, &params));
            prop_assert_eq!(conversation_digest(route, &p.body), conversation_digest(route, &full));
            prop_assert_eq!(
                scope_digest(route, &p.body, PrefixScope::Static),
                scope_digest(route, &full, PrefixScope::Static)
            );
        }
    }
}
