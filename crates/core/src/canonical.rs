//! The canonical form of a request body, computed from the bytes the caller sent: two
//! bodies share it exactly when the provider would read the same request from them.
//!
//! Rules (the table in `docs/security.md`, "Key rules"):
//! - Object members keep the order they were written in, except in the objects the API
//!   reads into a fixed struct ([`Shape`]: the top level, messages, content parts, tool
//!   and format wrappers), whose members are sorted (in descending key order). A JSON schema, tool parameters, and
//!   every field this table does not name keep their order: structured outputs follow
//!   the schema's property order.
//! - A number keeps its exact value and whether it was written as an integer
//!   (`1` ≠ `1.0`, `1.0` = `1.00` = `1e0`; `2^64` ≠ `2^64+1`): no precision is lost.
//! - A string is its decoded text (`"\u00e9"` = `"é"`), written with serde_json's escapes.
//! - The top-level fields in [`NON_SEMANTIC_FIELDS`] are dropped.
//! - A key written twice in any object is reported ([`CanonicalBody::has_duplicate_keys`]):
//!   parsers disagree on which one wins, so such a request is never cached.

use std::cmp::Ordering;
use std::ops::Range;

use crate::rawjson::{self, MAX_DEPTH, NumTok, StrTok, SyntaxError, skip_ws};
use crate::route::Route;

/// Top-level request fields that cannot change the model's output, dropped from the
/// canonical form. `stream`/`stream_options` change only the transport (a hit is
/// rendered in either form); the rest are bookkeeping, routing or billing hints.
/// (`store` is not among them: whether the provider keeps the response, and so whether
/// its id can be retrieved or chained from, depends on it.)
pub const NON_SEMANTIC_FIELDS: [&str; 8] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
];

/// How the API reads a value: where member order cannot matter.
#[derive(Debug)]
pub enum Shape {
    /// Read as written: objects keep their member order, at every depth below.
    Any,
    /// An object the API reads into a fixed struct: members sorted. The listed members
    /// have the given shapes; every other member is [`Shape::Any`].
    Struct(&'static [(&'static str, Shape)]),
    /// An array whose items have the shape.
    List(&'static Shape),
}

/// A fixed struct whose members are all read as written.
const FIXED: Shape = Shape::Struct(&[]);

const CHAT_PART: Shape = Shape::Struct(&[
    ("image_url", FIXED),
    ("input_audio", FIXED),
    ("file", FIXED),
]);
const CHAT_TOOL_CALL: Shape = Shape::Struct(&[("function", FIXED)]);
const CHAT_MESSAGE: Shape = Shape::Struct(&[
    ("content", Shape::List(&CHAT_PART)),
    ("tool_calls", Shape::List(&CHAT_TOOL_CALL)),
    ("function_call", FIXED),
    ("audio", FIXED),
]);
const CHAT_TOOL: Shape = Shape::Struct(&[("function", FIXED)]);

/// `POST /v1/chat/completions`.
pub const CHAT_COMPLETIONS: Shape = Shape::Struct(&[
    ("messages", Shape::List(&CHAT_MESSAGE)),
    ("tools", Shape::List(&CHAT_TOOL)),
    ("functions", Shape::List(&FIXED)),
    ("response_format", Shape::Struct(&[("json_schema", FIXED)])),
    ("tool_choice", Shape::Struct(&[("function", FIXED)])),
    ("function_call", FIXED),
    ("stream_options", FIXED),
    ("audio", FIXED),
    (
        "prediction",
        Shape::Struct(&[("content", Shape::List(&CHAT_PART))]),
    ),
]);

const RESPONSE_ITEM: Shape = Shape::Struct(&[("content", Shape::List(&FIXED))]);

/// `POST /v1/responses`.
pub const RESPONSES: Shape = Shape::Struct(&[
    ("input", Shape::List(&RESPONSE_ITEM)),
    ("text", Shape::Struct(&[("format", FIXED)])),
    ("tools", Shape::List(&FIXED)),
    ("tool_choice", FIXED),
    ("reasoning", FIXED),
    ("prompt", FIXED),
    ("conversation", FIXED),
]);

/// The shape of a route's request body.
pub fn shape(route: Route) -> &'static Shape {
    match route {
        Route::ChatCompletions => &CHAT_COMPLETIONS,
        Route::Responses => &RESPONSES,
        // `prompt` / `input` are strings or arrays; nothing nested is a struct.
        Route::Completions | Route::Embeddings => &FIXED,
    }
}

/// Why a body has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("the request body is not a JSON object")]
    NotAnObject,
}

/// A request body in canonical form: its top-level members (non-semantic ones dropped)
/// in canonical order. Written out, it is `{` + members joined by `,` + `}`.
#[derive(Debug, Clone)]
pub struct CanonicalBody {
    buf: Vec<u8>,
    members: Vec<Range<usize>>,
    duplicate_keys: bool,
}

impl CanonicalBody {
    /// Whether some object in the body has a key twice. Such a body has a canonical form
    /// (both members kept, in written order) but must not be cached.
    pub fn has_duplicate_keys(&self) -> bool {
        self.duplicate_keys
    }

    /// Feeds the canonical bytes to `hasher`: joined first when small (one `update`
    /// costs less than many), by reference when large (no copy of a long body).
    pub fn hash_into(&self, hasher: &mut blake3::Hasher) {
        if self.buf.len() <= JOIN_BELOW {
            hasher.update(&self.to_vec());
        } else {
            self.write_to(|b| {
                hasher.update(b);
            });
        }
    }

    /// Feeds the canonical bytes to `sink` in order, without joining them first (the
    /// top level is reordered by reference, never copied).
    pub fn write_to(&self, mut sink: impl FnMut(&[u8])) {
        sink(b"{");
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                sink(b",");
            }
            sink(&self.buf[m.clone()]);
        }
        sink(b"}");
    }

    /// The canonical bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let len = self.members.iter().map(|m| m.len() + 1).sum::<usize>() + 2;
        let mut out = Vec::with_capacity(len);
        self.write_to(|b| out.extend_from_slice(b));
        out
    }
}

/// Below this many canonical bytes, [`CanonicalBody::hash_into`] joins the members.
const JOIN_BELOW: usize = 64 * 1024;

/// Canonicalizes a request body of `route` (see the module docs). `normalize_whitespace`
/// (a strategy option) collapses whitespace runs in every string value.
pub fn canonicalize(
    route: Route,
    raw: &[u8],
    normalize_whitespace: bool,
) -> Result<CanonicalBody, CanonError> {
    let start = skip_ws(raw, 0);
    if raw.get(start) != Some(&b'{') {
        // Still report broken JSON as such.
        rawjson::document(raw)?;
        return Err(CanonError::NotAnObject);
    }
    let mut w = Writer {
        b: raw,
        out: Vec::with_capacity(raw.len() + 16),
        recs: Vec::with_capacity(32),
        scratch: Vec::new(),
        order: Vec::new(),
        text: String::new(),
        normalize: normalize_whitespace,
        duplicate: false,
    };
    let fields = match shape(route) {
        Shape::Struct(fields) => fields,
        _ => &[][..],
    };
    let (end, members) = w.top_level(start, fields)?;
    let rest = skip_ws(raw, end);
    if rest != raw.len() {
        return Err(SyntaxError {
            at: rest,
            what: "trailing characters",
        }
        .into());
    }
    Ok(CanonicalBody {
        buf: w.out,
        members,
        duplicate_keys: w.duplicate,
    })
}

/// The order of members in a fixed struct: descending bytes of the (canonical) key. Any
/// fixed order would do; this one is the order SDKs write the members people send most
/// (`role` before `content`, `type` before `text` or `image_url`, `type` before
/// `function`), so a usual body needs no reordering, and a long message is never
/// copied twice.
fn canonical_order(a: &[u8], b: &[u8]) -> Ordering {
    b.cmp(a)
}

/// One member written to `out`: `"key":value` at `start..end`, the key at `start..key_end`.
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: usize,
    key_end: usize,
    end: usize,
    dropped: bool,
}

struct Writer<'a> {
    b: &'a [u8],
    out: Vec<u8>,
    /// Members of the objects being written, innermost last.
    recs: Vec<Rec>,
    scratch: Vec<u8>,
    order: Vec<usize>,
    text: String,
    normalize: bool,
    duplicate: bool,
}

/// How an object's members are ordered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The top level: sorted by reference, non-semantic members dropped.
    Top,
    /// A fixed struct: sorted in place.
    Sorted,
    /// As written.
    Kept,
}

impl Writer<'_> {
    fn key_text(&self, r: &Rec) -> &[u8] {
        // Between the quotes of the canonical key.
        &self.out[r.start + 1..r.key_end - 1]
    }

    fn top_level(
        &mut self,
        open: usize,
        fields: &'static [(&'static str, Shape)],
    ) -> Result<(usize, Vec<Range<usize>>), CanonError> {
        let end = self.object(open, Some(fields), Order::Top, 0)?;
        let recs = std::mem::take(&mut self.recs);
        let mut order: Vec<usize> = (0..recs.len()).collect();
        // Equal keys (a duplicate) keep their written order: the index breaks the tie.
        order.sort_unstable_by(|&x, &y| {
            canonical_order(self.key_text(&recs[x]), self.key_text(&recs[y])).then(x.cmp(&y))
        });
        if order
            .windows(2)
            .any(|p| self.key_text(&recs[p[0]]) == self.key_text(&recs[p[1]]))
        {
            self.duplicate = true;
        }
        let members = order
            .into_iter()
            .map(|i| recs[i])
            .filter(|r| !r.dropped)
            .map(|r| r.start..r.end)
            .collect();
        Ok((end, members))
    }

    /// Writes the value at `b[i]` (no leading whitespace); returns the index after it.
    fn value(
        &mut self,
        i: usize,
        shape: &'static Shape,
        depth: usize,
    ) -> Result<usize, CanonError> {
        match self.b.get(i) {
            Some(b'"') => {
                let (tok, next) = rawjson::scan_string(self.b, i)?;
                self.string(&tok, self.normalize);
                Ok(next)
            }
            Some(b'{') => match shape {
                Shape::Struct(fields) => self.object(i, Some(fields), Order::Sorted, depth),
                _ => self.object(i, None, Order::Kept, depth),
            },
            Some(b'[') => {
                let items = match shape {
                    Shape::List(inner) => inner,
                    _ => &Shape::Any,
                };
                self.array(i, items, depth)
            }
            Some(b'-' | b'0'..=b'9') => {
                let (tok, next) = rawjson::scan_number(self.b, i)?;
                self.number(&tok);
                Ok(next)
            }
            Some(_) | None => {
                let next = rawjson::skip_value(self.b, i, depth)?;
                // true, false or null: already in their only form.
                self.out.extend_from_slice(&self.b[i..next]);
                Ok(next)
            }
        }
    }

    fn array(
        &mut self,
        i: usize,
        items: &'static Shape,
        depth: usize,
    ) -> Result<usize, CanonError> {
        if depth + 1 > MAX_DEPTH {
            return Err(SyntaxError {
                at: i,
                what: "nesting too deep",
            }
            .into());
        }
        self.out.push(b'[');
        let mut pos = skip_ws(self.b, i + 1);
        if self.b.get(pos) == Some(&b']') {
            self.out.push(b']');
            return Ok(pos + 1);
        }
        loop {
            pos = self.value(pos, items, depth + 1)?;
            pos = skip_ws(self.b, pos);
            match self.b.get(pos) {
                Some(b',') => {
                    self.out.push(b',');
                    pos = skip_ws(self.b, pos + 1);
                }
                Some(b']') => {
                    self.out.push(b']');
                    return Ok(pos + 1);
                }
                _ => {
                    return Err(SyntaxError {
                        at: pos,
                        what: "expected ',' or ']' in array",
                    }
                    .into());
                }
            }
        }
    }

    fn object(
        &mut self,
        i: usize,
        fields: Option<&'static [(&'static str, Shape)]>,
        order: Order,
        depth: usize,
    ) -> Result<usize, CanonError> {
        let syntax = |at, what| -> CanonError { SyntaxError { at, what }.into() };
        if depth + 1 > MAX_DEPTH {
            return Err(syntax(i, "nesting too deep"));
        }
        let base = self.recs.len();
        let (content, end) = if order == Order::Top {
            (0, self.members(i, fields, order, depth)?)
        } else {
            self.out.push(b'{');
            let content = self.out.len();
            let end = self.members(i, fields, order, depth)?;
            (content, end)
        };
        if order != Order::Top {
            self.finish_object(base, content, order == Order::Sorted);
            self.recs.truncate(base);
            self.out.push(b'}');
        }
        Ok(end)
    }

    /// Writes the members of the object at `b[i] == b'{'` (comma-separated, no braces)
    /// and records them; returns the index after the object.
    fn members(
        &mut self,
        i: usize,
        fields: Option<&'static [(&'static str, Shape)]>,
        order: Order,
        depth: usize,
    ) -> Result<usize, CanonError> {
        let syntax = |at, what| -> CanonError { SyntaxError { at, what }.into() };
        let mut pos = skip_ws(self.b, i + 1);
        if self.b.get(pos) == Some(&b'}') {
            return Ok(pos + 1);
        }
        let mut first = true;
        loop {
            if self.b.get(pos) != Some(&b'"') {
                return Err(syntax(pos, "expected a string key"));
            }
            let (key, after_key) = rawjson::scan_string(self.b, pos)?;
            if !first && order != Order::Top {
                self.out.push(b',');
            }
            first = false;
            let start = self.out.len();
            // Keys are never whitespace-normalized: they name fields.
            self.string(&key, false);
            let key_end = self.out.len();
            let rec_key = Rec {
                start,
                key_end,
                end: key_end,
                dropped: false,
            };
            let child = match fields {
                Some(fields) => {
                    let name = self.key_text(&rec_key);
                    fields
                        .iter()
                        .find(|(n, _)| n.as_bytes() == name)
                        .map_or(&Shape::Any, |(_, s)| s)
                }
                None => &Shape::Any,
            };
            let dropped = order == Order::Top
                && NON_SEMANTIC_FIELDS
                    .iter()
                    .any(|f| f.as_bytes() == self.key_text(&rec_key));
            pos = skip_ws(self.b, after_key);
            if self.b.get(pos) != Some(&b':') {
                return Err(syntax(pos, "expected ':' after a key"));
            }
            self.out.push(b':');
            pos = skip_ws(self.b, pos + 1);
            pos = self.value(pos, child, depth + 1)?;
            self.recs.push(Rec {
                end: self.out.len(),
                dropped,
                ..rec_key
            });
            pos = skip_ws(self.b, pos);
            match self.b.get(pos) {
                Some(b',') => pos = skip_ws(self.b, pos + 1),
                Some(b'}') => return Ok(pos + 1),
                _ => return Err(syntax(pos, "expected ',' or '}' in object")),
            }
        }
    }

    /// Checks the members `recs[base..]` (written at `out[content..]`) for a repeated
    /// key and, for a fixed struct, puts them in key order.
    fn finish_object(&mut self, base: usize, content: usize, sort: bool) {
        let n = self.recs.len() - base;
        if n < 2 {
            return;
        }
        let recs = &self.recs[base..];
        let in_order = recs
            .windows(2)
            .all(|p| canonical_order(self.key_text(&p[0]), self.key_text(&p[1])) == Ordering::Less);
        if in_order {
            return; // sorted, and no key twice
        }
        if !sort && n <= 8 {
            // Few members: compare pairs rather than sort.
            for x in 0..n {
                for y in x + 1..n {
                    if self.key_text(&recs[x]) == self.key_text(&recs[y]) {
                        self.duplicate = true;
                        return;
                    }
                }
            }
            return;
        }
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..n);
        // Stable: members with the same key (a duplicate) keep their written order.
        order.sort_by(|&x, &y| canonical_order(self.key_text(&recs[x]), self.key_text(&recs[y])));
        if order
            .windows(2)
            .any(|p| self.key_text(&recs[p[0]]) == self.key_text(&recs[p[1]]))
        {
            self.duplicate = true;
        }
        if sort {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.extend_from_slice(&self.out[content..]);
            self.out.truncate(content);
            for (k, &idx) in order.iter().enumerate() {
                if k > 0 {
                    self.out.push(b',');
                }
                let r = self.recs[base + idx];
                self.out
                    .extend_from_slice(&scratch[r.start - content..r.end - content]);
            }
            self.scratch = scratch;
        }
        self.order = order;
    }

    fn string(&mut self, tok: &StrTok, normalize: bool) {
        if (!tok.escaped || tok.canonical_escapes) && !normalize {
            // Validated: no raw quote, backslash or control character, and every escape
            // already in serde_json's spelling: the text is its own canonical form.
            self.out.push(b'"');
            self.out.extend_from_slice(&self.b[tok.content.clone()]);
            self.out.push(b'"');
            return;
        }
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        rawjson::decode_string(self.b, tok, &mut text);
        if normalize {
            let normal = crate::key::normalize_whitespace(&text);
            write_escaped(&mut self.out, &normal);
        } else {
            write_escaped(&mut self.out, &text);
        }
        self.text = text;
    }

    fn number(&mut self, tok: &NumTok) {
        let b = self.b;
        if tok.is_integer() {
            // JSON's integer grammar has one spelling per value (no leading zeros, no
            // '+'); `-0` stays distinct from `0`, as a float `-0.0` would.
            self.out.extend_from_slice(&b[tok.span.clone()]);
            return;
        }
        write_float(&mut self.out, b, tok);
    }
}

/// A string with serde_json's escapes (`"`, `\`, and control characters only).
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A number written with a fraction or exponent, as `[-]digits e exponent` with no
/// leading or trailing zero in the digits: one spelling per exact value. The `e` keeps
/// it apart from every integer. An exponent too large for `i64` arithmetic (no sane body
/// has one) keeps its literal text: still exact, at worst two spellings of one value.
fn write_float(out: &mut Vec<u8>, b: &[u8], tok: &NumTok) {
    let int = &b[tok.int.clone()];
    let frac = tok.frac.clone().map_or(&b[0..0], |r| &b[r]);
    let written_exp = match &tok.exp {
        None => Some(0i64),
        Some((neg, r)) => {
            let d = &b[r.clone()];
            let d = &d[d.iter().take_while(|&&c| c == b'0').count()..];
            (d.len() <= 18).then(|| {
                let v = d
                    .iter()
                    .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
                if *neg { -v } else { v }
            })
        }
    };
    let start = out.len();
    if tok.negative {
        out.push(b'-');
    }
    // value = (int ++ frac) × 10^(exponent − fraction digits)
    let digits = out.len();
    out.extend_from_slice(int);
    out.extend_from_slice(frac);
    let lead = out[digits..].iter().take_while(|&&d| d == b'0').count();
    out.drain(digits..digits + lead);
    if out.len() == digits {
        out.extend_from_slice(b"0e0");
        return;
    }
    let trailing = out[digits..]
        .iter()
        .rev()
        .take_while(|&&d| d == b'0')
        .count();
    out.truncate(out.len() - trailing);
    let exp = written_exp.and_then(|e| {
        e.checked_sub(i64::try_from(frac.len()).ok()?)?
            .checked_add(i64::try_from(trailing).ok()?)
    });
    match exp {
        Some(e) => {
            out.push(b'e');
            out.extend_from_slice(e.to_string().as_bytes());
        }
        None => {
            out.truncate(start);
            out.extend_from_slice(&b[tok.span.clone()]);
        }
    }
}

/// Generators shared by the proptests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    pub fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-z \n\"\\\\é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn canon(route: Route, s: &str) -> String {
        String::from_utf8(canonicalize(route, s.as_bytes(), false).unwrap().to_vec()).unwrap()
    }

    fn chat(s: &str) -> String {
        canon(Route::ChatCompletions, s)
    }

    #[test]
    fn fixed_structs_are_sorted_and_the_rest_kept() {
        let body = r#"{"tools":[{"function":{"parameters":{"type":"object","properties":{"b":{},"a":{}}},"name":"f"},"type":"function"}],
            "messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],"model":"m","extra":{"z":1,"y":2}}"#;
        assert_eq!(
            chat(body),
            r#"{"tools":[{"type":"function","function":{"parameters":{"type":"object","properties":{"b":{},"a":{}}},"name":"f"}}],"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"extra":{"z":1,"y":2}}"#
        );
        let schema = r#"{"response_format":{"type":"json_schema","json_schema":{"schema":{"properties":{"b":1,"a":2}},"name":"x"}}}"#;
        assert_eq!(
            chat(schema),
            r#"{"response_format":{"type":"json_schema","json_schema":{"schema":{"properties":{"b":1,"a":2}},"name":"x"}}}"#
        );
        let text_format = r#"{"text":{"format":{"type":"json_schema","schema":{"b":1,"a":2},"name":"x"}},"tools":[{"parameters":{"b":1,"a":2},"type":"function"}]}"#;
        assert_eq!(
            canon(Route::Responses, text_format),
            r#"{"tools":[{"type":"function","parameters":{"b":1,"a":2}}],"text":{"format":{"type":"json_schema","schema":{"b":1,"a":2},"name":"x"}}}"#
        );
    }

    #[test]
    fn numbers_keep_their_exact_value_and_kind() {
        let n = |s: &str| chat(&format!(r#"{{"n":{s}}}"#));
        assert_ne!(n("18446744073709551616"), n("18446744073709551617"));
        assert_ne!(n("1"), n("1.0"), "integer and float spellings differ");
        assert_eq!(n("1.0"), n("1.00"));
        assert_eq!(n("1.0"), n("1e0"));
        assert_eq!(n("1.5e3"), n("1500.0"));
        assert_eq!(n("0.5"), n("5E-1"));
        assert_eq!(n("0.5"), n("50e-2"));
        assert_eq!(n("0.0"), n("0e10"));
        assert_ne!(n("0.0"), n("-0.0"));
        assert_ne!(n("0"), n("-0"));
        assert_ne!(n("0.1"), n("0.10000000000000001"));
        assert_eq!(n("0.5"), r#"{"n":5e-1}"#);
        assert_eq!(n("1500.0"), r#"{"n":15e2}"#);
        assert_eq!(n("-0.00120"), r#"{"n":-12e-4}"#);
        assert_eq!(n("100"), r#"{"n":100}"#);
    }

    #[test]
    fn strings_are_compared_decoded() {
        assert_eq!(chat(r#"{"s":"\u00e9\/"}"#), chat(r#"{"s":"é/"}"#));
        assert_eq!(chat(r#"{"s":"a\u0000"}"#), r#"{"s":"a\u0000"}"#);
        assert_eq!(chat(r#"{"\u0061":1}"#), chat(r#"{"a":1}"#));
    }

    #[test]
    fn non_semantic_fields_are_dropped_at_the_top_only() {
        let a = chat(r#"{"model":"m","stream":true,"user":"u","store":true,"x":{"user":1}}"#);
        assert_eq!(a, r#"{"x":{"user":1},"store":true,"model":"m"}"#);
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        let dup = |s: &str| {
            canonicalize(Route::ChatCompletions, s.as_bytes(), false)
                .unwrap()
                .has_duplicate_keys()
        };
        assert!(!dup(r#"{"a":1,"b":{"c":1,"d":2}}"#));
        assert!(dup(r#"{"a":1,"a":1}"#));
        assert!(
            dup(r#"{"stream":true,"stream":false}"#),
            "dropped fields too"
        );
        assert!(dup(r#"{"a":{"x":1,"y":2,"x":3}}"#));
        assert!(dup(r#"{"a":{"\u0078":1,"x":3}}"#), "decoded keys compare");
        assert!(dup(r#"{"messages":[{"role":"user","role":"system"}]}"#));
        let many: String = (0..20).map(|i| format!(r#""k{i}":1,"#)).collect();
        assert!(dup(&format!(r#"{{"a":{{{many}"k3":2}}}}"#)));
        assert!(!dup(&format!(r#"{{"a":{{{many}"k99":2}}}}"#)));
    }

    #[test]
    fn whitespace_normalization_touches_values_only() {
        let c = canonicalize(
            Route::ChatCompletions,
            br#"{"a  b":"x \n\n y","c":"\t"}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.to_vec(), br#"{"c":"","a  b":"x y"}"#);
    }

    #[test]
    fn errors() {
        assert_eq!(
            canonicalize(Route::ChatCompletions, b"[1]", false).unwrap_err(),
            CanonError::NotAnObject
        );
        assert!(matches!(
            canonicalize(Route::ChatCompletions, b"{\"a\":1} x", false),
            Err(CanonError::Syntax(_))
        ));
        assert!(matches!(
            canonicalize(Route::ChatCompletions, b"[", false),
            Err(CanonError::Syntax(_))
        ));
    }

    fn shuffled(v: &Value, seed: u64) -> String {
        // Writes `v` with every object's members in an order drawn from `seed`.
        fn go(v: &Value, seed: &mut u64, out: &mut String) {
            match v {
                Value::Object(m) => {
                    let mut items: Vec<_> = m.iter().collect();
                    for i in (1..items.len()).rev() {
                        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        items.swap(i, (*seed >> 33) as usize % (i + 1));
                    }
                    out.push('{');
                    for (i, (k, v)) in items.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::to_string(k).unwrap());
                        out.push(':');
                        go(v, seed, out);
                    }
                    out.push('}');
                }
                Value::Array(a) => {
                    out.push('[');
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        go(x, seed, out);
                    }
                    out.push(']');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let mut seed = seed;
        let mut s = String::new();
        go(v, &mut seed, &mut s);
        s
    }

    proptest! {
        #[test]
        fn canonical_form_is_idempotent_and_parses_back(v in tests_support::arb_json(), seed in any::<u64>()) {
            let body = serde_json::json!({"x": v});
            let text = shuffled(&body, seed);
            let once = canonicalize(Route::Responses, text.as_bytes(), false).unwrap().to_vec();
            let twice = canonicalize(Route::Responses, &once, false).unwrap().to_vec();
            prop_assert_eq!(&once, &twice);
            let a: Value = serde_json::from_slice(&once).unwrap();
            let b: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn order_counts_only_outside_fixed_structs(v in tests_support::arb_json(), s1 in any::<u64>(), s2 in any::<u64>()) {
            // Inside an unknown field: order as written, so shuffles differ exactly when
            // the written texts differ in member order.
            let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi", "name": "n"}], "x": v});
            let (t1, t2) = (shuffled(&body, s1), shuffled(&body, s2));
            let (c1, c2) = (chat(&t1), chat(&t2));
            let x1: Value = serde_json::from_str(&t1).unwrap();
            let x2: Value = serde_json::from_str(&t2).unwrap();
            let order_of = |t: &str| -> String {
                // The unknown field's text, re-read as written.
                let b = t.as_bytes();
                let m = rawjson::members(b, 0, 0).unwrap();
                let x = m.iter().find(|m| m.key_is(b, "x")).unwrap();
                String::from_utf8(b[x.value.clone()].to_vec()).unwrap()
            };
            prop_assert_eq!(x1, x2);
            prop_assert_eq!(c1 == c2, order_of(&t1) == order_of(&t2));
        }
    }
}
