//! Server-sent events: sans-IO framing of an upstream byte stream ([`SseSplitter`]) and
//! assembly of OpenAI streams into the equivalent non-streamed object ([`StreamAssembler`]).
//!
//! The proxy runs every streamed byte through both, so they are built for that: the
//! splitter scans each byte once (SIMD `memchr` for line ends), hands out events as
//! slices of the input `Bytes` (no copy when an event lies within one chunk), and keeps
//! each event's exact bytes so they can be forwarded unchanged. Framing follows the
//! WHATWG "event stream" interpretation rules; see `docs/streaming.md` for where and why
//! it deviates (it keeps comment-only and field-less blocks as events, so that the
//! concatenated `raw` bytes always equal the input).

use std::collections::BTreeMap;

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::route::Route;
use crate::usage::Usage;
use crate::wire::{self, WireError};

/// One server-sent event: a block of lines ended by a blank line.
///
/// Every block becomes an event, also one that carries only comments (`: ping`) or no
/// field at all; [`SseEvent::data`] is `None` for those, and a WHATWG client would not
/// dispatch them. Keeping them means `raw` of all events, concatenated, is exactly the
/// stream the splitter was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The exact bytes of the event, its terminating blank line included.
    pub raw: Bytes,
    /// The `event:` field (the last one, if repeated).
    pub event: Option<Bytes>,
    /// The `data:` lines joined with `\n`; `None` when the block had no `data` field.
    pub data: Option<Bytes>,
    /// The `id:` field (ignored, as the spec says, when it contains a NUL).
    pub id: Option<Bytes>,
    /// The `retry:` field when it is all ASCII digits.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The `event:` field as text (`None` when absent or not UTF-8).
    pub fn event_str(&self) -> Option<&str> {
        self.event
            .as_deref()
            .and_then(|e| std::str::from_utf8(e).ok())
    }

    /// The data as text (`None` when absent or not UTF-8).
    pub fn data_str(&self) -> Option<&str> {
        self.data
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
    }

    /// Whether this is the chat/completions end marker `data: [DONE]`.
    pub fn is_done_marker(&self) -> bool {
        self.data.as_deref() == Some(b"[DONE]")
    }

    /// Parses one complete block (its blank line included). `skip_bom` drops a leading
    /// UTF-8 byte-order mark, which the spec ignores at the start of a stream.
    fn parse(raw: Bytes, skip_bom: bool) -> SseEvent {
        let mut ev = SseEvent {
            raw,
            event: None,
            data: None,
            id: None,
            retry: None,
        };
        let bytes: &[u8] = &ev.raw;
        let mut pos = if skip_bom && bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        // Joined data only when there are several `data:` lines; one line stays a slice.
        let mut joined: Option<BytesMut> = None;
        while pos < bytes.len() {
            let end = memchr::memchr2(b'\n', b'\r', &bytes[pos..]).map_or(bytes.len(), |o| pos + o);
            let line = pos..end;
            pos = match bytes.get(end) {
                Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => end + 2,
                Some(_) => end + 1,
                None => end,
            };
            if line.is_empty() {
                break;
            }
            let text = &bytes[line.clone()];
            if text[0] == b':' {
                continue;
            }
            let (name, value) = match memchr::memchr(b':', text) {
                Some(c) => {
                    let v = line.start + c + 1;
                    let v = if bytes.get(v) == Some(&b' ') && v < line.end {
                        v + 1
                    } else {
                        v
                    };
                    (&text[..c], v..line.end)
                }
                None => (text, line.end..line.end),
            };
            match name {
                b"data" => match (&mut joined, &ev.data) {
                    (None, None) => ev.data = Some(ev.raw.slice(value)),
                    (None, Some(first)) => {
                        let mut j = BytesMut::with_capacity(first.len() + 1 + value.len());
                        j.extend_from_slice(first);
                        j.extend_from_slice(b"\n");
                        j.extend_from_slice(&bytes[value]);
                        joined = Some(j);
                    }
                    (Some(j), _) => {
                        j.extend_from_slice(b"\n");
                        j.extend_from_slice(&bytes[value]);
                    }
                },
                b"event" => ev.event = Some(ev.raw.slice(value)),
                b"id" if memchr::memchr(0, &bytes[value.clone()]).is_none() => {
                    ev.id = Some(ev.raw.slice(value));
                }
                b"retry" => {
                    let digits = &bytes[value];
                    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                        ev.retry = std::str::from_utf8(digits)
                            .ok()
                            .and_then(|s| s.parse().ok());
                    }
                }
                _ => {}
            }
        }
        if let Some(j) = joined {
            ev.data = Some(j.freeze());
        }
        ev
    }
}

/// Where the scan for the end of the current event stands; carried across chunks so
/// that every byte is looked at once.
#[derive(Debug, Clone, Copy)]
struct ScanState {
    /// The next byte starts a line (a line end was just seen, or the event just began).
    line_start: bool,
    /// The last byte seen was a CR; a following LF belongs to it.
    after_cr: bool,
    /// The blank line that ends the event has been seen, ending in that CR: the event
    /// is complete, but if the next byte is an LF it is still part of it.
    ended_on_cr: bool,
}

impl ScanState {
    const START: ScanState = ScanState {
        line_start: true,
        after_cr: false,
        ended_on_cr: false,
    };

    /// Scans `b` (the bytes following everything scanned so far). Returns the offset in
    /// `b` just past the end of the current event, if it ends within `b`.
    fn scan(&mut self, b: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < b.len() {
            if self.after_cr {
                self.after_cr = false;
                let lf = b[i] == b'\n';
                if lf {
                    i += 1;
                }
                if self.ended_on_cr {
                    self.ended_on_cr = false;
                    return Some(i);
                }
                if lf {
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', &b[i..]) {
                None => {
                    self.line_start = false;
                    return None;
                }
                Some(off) => {
                    let t = i + off;
                    let blank = off == 0 && self.line_start;
                    self.line_start = true;
                    i = t + 1;
                    if b[t] == b'\r' {
                        self.after_cr = true;
                        self.ended_on_cr = blank;
                    } else if blank {
                        return Some(i);
                    }
                }
            }
        }
        None
    }
}

/// Incremental, sans-IO framing of a server-sent-event byte stream.
///
/// Feed it chunks as they arrive, in order; it returns the events completed by each
/// chunk. Any chunking of the same bytes yields the same events.
///
/// ```
/// use bytes::Bytes;
/// use prefixcache_core::sse::SseSplitter;
///
/// let mut s = SseSplitter::new();
/// assert!(s.push_bytes(Bytes::from_static(b"data: {\"a\"")).is_empty());
/// let evs = s.push_bytes(Bytes::from_static(b":1}\n\ndata: [DONE]\n\n"));
/// assert_eq!(evs.len(), 2);
/// assert_eq!(evs[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
/// assert_eq!(&evs[0].raw[..], b"data: {\"a\":1}\n\n");
/// assert!(evs[1].is_done_marker());
/// assert_eq!(s.finish(), None);
/// ```
#[derive(Debug)]
pub struct SseSplitter {
    /// Bytes of the current, unfinished event.
    buf: BytesMut,
    state: ScanState,
    /// No event has been completed yet (a BOM may open the stream).
    at_stream_start: bool,
    /// The first bytes may still turn out to be a BOM.
    bom_undecided: bool,
    /// Bytes fed so far, for limits and diagnostics.
    fed: u64,
}

impl Default for SseSplitter {
    fn default() -> Self {
        SseSplitter::new()
    }
}

impl SseSplitter {
    pub fn new() -> SseSplitter {
        SseSplitter {
            buf: BytesMut::new(),
            state: ScanState::START,
            at_stream_start: true,
            bom_undecided: true,
            fed: 0,
        }
    }

    /// Feeds a chunk; returns the events it completed. Events that lie within the
    /// chunk are slices of it (no copy); only an event's bytes that straddle chunks
    /// are copied, once.
    pub fn push_bytes(&mut self, chunk: Bytes) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.push_into(chunk, &mut out);
        out
    }

    /// Feeds a borrowed chunk (copied once); returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.push_bytes(Bytes::copy_from_slice(chunk))
    }

    /// Like [`push_bytes`](Self::push_bytes), appending to `out` (reuse it to avoid an
    /// allocation per chunk).
    pub fn push_into(&mut self, mut chunk: Bytes, out: &mut Vec<SseEvent>) {
        self.fed += chunk.len() as u64;
        if self.bom_undecided && !self.take_bom(&mut chunk) {
            return;
        }
        while !chunk.is_empty() {
            match self.state.scan(&chunk) {
                Some(end) => {
                    let raw = if self.buf.is_empty() {
                        chunk.split_to(end)
                    } else {
                        self.buf.extend_from_slice(&chunk[..end]);
                        let _ = chunk.split_to(end);
                        self.buf.split().freeze()
                    };
                    self.state = ScanState::START;
                    out.push(SseEvent::parse(raw, self.at_stream_start));
                    self.at_stream_start = false;
                }
                None => {
                    self.buf.extend_from_slice(&chunk);
                    break;
                }
            }
        }
    }

    /// Decides whether the stream opens with a UTF-8 BOM, which the spec strips once at
    /// offset 0, however the bytes are chunked. A BOM stays in the first event's `raw`
    /// (and is skipped when its fields are parsed) but does not start a line: a blank
    /// line right after it is a blank line. Returns false while still undecided.
    fn take_bom(&mut self, chunk: &mut Bytes) -> bool {
        const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
        let have = self.buf.len();
        let take = (BOM.len() - have).min(chunk.len());
        if chunk[..take] == BOM[have..have + take] {
            self.buf.extend_from_slice(&chunk[..take]);
            let _ = chunk.split_to(take);
            if self.buf.len() < BOM.len() {
                return false;
            }
        } else if have > 0 {
            // A BOM prefix that was not one is ordinary line content.
            self.state.line_start = false;
        }
        self.bom_undecided = false;
        true
    }

    /// Bytes held for the event in progress.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Total bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// Ends the stream. Returns what was left: `Complete` for a final event whose blank
    /// line ended in a CR (only the next byte could tell whether an LF belonged to it),
    /// `Partial` for an event cut before its blank line (a WHATWG client discards it).
    /// The splitter is empty afterwards.
    pub fn finish(&mut self) -> Option<SseTail> {
        let ended = self.state.ended_on_cr;
        self.state = ScanState::START;
        if self.buf.is_empty() {
            return None;
        }
        let ev = SseEvent::parse(self.buf.split().freeze(), self.at_stream_start);
        self.at_stream_start = false;
        Some(if ended {
            SseTail::Complete(ev)
        } else {
            SseTail::Partial(ev)
        })
    }
}

/// What [`SseSplitter::finish`] found after the last complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseTail {
    /// A complete event (its blank line ended in a CR at the very end of the stream).
    Complete(SseEvent),
    /// The stream was cut inside an event: its bytes, fields parsed as far as they go.
    Partial(SseEvent),
}

impl SseTail {
    pub fn raw(&self) -> &Bytes {
        match self {
            SseTail::Complete(e) | SseTail::Partial(e) => &e.raw,
        }
    }
}

/// Splits a whole stored stream. A trailing cut event is returned as the last element
/// only if `keep_partial`.
pub fn split_all(sse: &Bytes, keep_partial: bool) -> Vec<SseEvent> {
    let mut s = SseSplitter::new();
    let mut out = s.push_bytes(sse.clone());
    match s.finish() {
        Some(SseTail::Complete(e)) => out.push(e),
        Some(SseTail::Partial(e)) if keep_partial => out.push(e),
        _ => {}
    }
    out
}

/// What one event was, for the proxy's forwarding decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A regular chunk or typed event carrying part of the response: forward it.
    Chunk,
    /// The chat/completions usage-only chunk (`choices: []` + `usage`): forward it only
    /// when the client asked for usage.
    UsageOnly,
    /// `data: [DONE]` (chat/completions).
    Done,
    /// `response.completed` (responses).
    Completed,
    /// An error in the stream: `response.failed`, `response.incomplete`, an `error`
    /// event, or an error object in a chat/completions stream. Never stored.
    Failed,
    /// Anything else: comments, keep-alives, events without data, unparseable data.
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Chunk => "chunk",
            EventKind::UsageOnly => "usage_only",
            EventKind::Done => "done",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Other => "other",
        }
    }
}

/// Assembles a streamed response, event by event, into what the API would have returned
/// without streaming, and tells whether the stream ended properly.
///
/// Chat completions and legacy completions are merged the way the official SDKs merge
/// deltas (`openai-python`'s `accumulate_delta`): strings concatenate, lists of objects
/// with an `index` merge by index (`tool_calls`), other lists extend (`logprobs`), and
/// `null` never overwrites a value. Identity fields (`id`, `type`, `name`, `role`, ...)
/// are replaced, not concatenated. Responses streams are not merged at all: the
/// `response.completed` event carries the final object.
#[derive(Debug)]
pub struct StreamAssembler {
    route: Route,
    inner: Inner,
    failed: bool,
    events: u64,
}

#[derive(Debug)]
enum Inner {
    Choices(ChoicesState),
    Responses(ResponsesState),
    /// Embeddings cannot stream; every event is `Other`.
    None,
}

#[derive(Debug, Default)]
struct ChoicesState {
    /// Top-level fields of the chunks (`id`, `created`, `model`, ...), last non-null wins.
    top: Map<String, Value>,
    /// Per choice index: the accumulated choice (`delta` merged into `message`, or
    /// `text` for legacy completions).
    choices: BTreeMap<u64, Map<String, Value>>,
    /// Per choice index: the merged `delta`s, which become the `message`.
    messages: BTreeMap<u64, Map<String, Value>>,
    usage: Option<Value>,
    done: bool,
    /// A data line was not JSON: the stream cannot be trusted to be complete.
    malformed: bool,
}

#[derive(Debug, Default)]
struct ResponsesState {
    /// The response object of the terminal event (`response.completed`, or `.failed`
    /// / `.incomplete`), bytes exactly as sent.
    terminal: Option<Box<RawValue>>,
    completed: bool,
    /// `response.created`'s snapshot (model, id) for streams that end without a
    /// terminal event.
    model: Option<String>,
    usage: Option<Usage>,
    /// `response.output_item.done` items by output index: the final items when a
    /// terminal event omits `output`.
    done_items: BTreeMap<u64, Box<RawValue>>,
}

impl StreamAssembler {
    pub fn new(route: Route) -> StreamAssembler {
        let inner = match route {
            Route::ChatCompletions | Route::Completions => Inner::Choices(ChoicesState::default()),
            Route::Responses => Inner::Responses(ResponsesState::default()),
            Route::Embeddings => Inner::None,
        };
        StreamAssembler {
            route,
            inner,
            failed: false,
            events: 0,
        }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Takes in one event; returns what it was.
    pub fn push(&mut self, ev: &SseEvent) -> EventKind {
        self.events += 1;
        let kind = match &mut self.inner {
            Inner::Choices(st) => st.push(ev),
            Inner::Responses(st) => st.push(ev),
            Inner::None => EventKind::Other,
        };
        if kind == EventKind::Failed {
            self.failed = true;
        }
        kind
    }

    /// Whether the stream ended properly and may be stored: chat/completions saw
    /// `[DONE]` and a `finish_reason` on every choice (and at least one choice);
    /// responses saw `response.completed`. Never after an error event.
    pub fn is_complete(&self) -> bool {
        if self.failed {
            return false;
        }
        match &self.inner {
            Inner::Choices(st) => {
                st.done
                    && !st.malformed
                    && !st.choices.is_empty()
                    && st
                        .choices
                        .values()
                        .all(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
            }
            Inner::Responses(st) => st.completed,
            Inner::None => false,
        }
    }

    /// Whether an error event was seen.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Events pushed so far.
    pub fn events_seen(&self) -> u64 {
        self.events
    }

    /// The usage the stream reported (the usage-only chunk, or the terminal response's
    /// `usage`), normalized.
    pub fn usage(&self) -> Option<Usage> {
        match &self.inner {
            Inner::Choices(st) => st.usage.as_ref().and_then(wire::usage_from_value),
            Inner::Responses(st) => st.usage,
            Inner::None => None,
        }
    }

    /// The `model` the stream reported.
    pub fn model(&self) -> Option<&str> {
        match &self.inner {
            Inner::Choices(st) => st.top.get("model").and_then(Value::as_str),
            Inner::Responses(st) => st.model.as_deref(),
            Inner::None => None,
        }
    }

    /// The non-streamed equivalent: a `chat.completion` / `text_completion` object with
    /// `usage` when the stream had it, or the response object of `response.completed`
    /// (for responses, a stream without a terminal event is an error). A chat stream
    /// that is not complete assembles to what it has; check [`is_complete`] first when
    /// that matters.
    ///
    /// [`is_complete`]: Self::is_complete
    pub fn into_json(self) -> Result<Bytes, WireError> {
        match self.inner {
            Inner::Choices(st) => st.into_json(self.route),
            Inner::Responses(st) => st.into_json(),
            Inner::None => Err(WireError::NotStreamable(self.route)),
        }
    }
}

impl ChoicesState {
    fn push(&mut self, ev: &SseEvent) -> EventKind {
        let Some(data) = ev.data.as_deref() else {
            return EventKind::Other;
        };
        if data == b"[DONE]" {
            self.done = true;
            return EventKind::Done;
        }
        if ev.event.as_deref() == Some(b"error") {
            return EventKind::Failed;
        }
        if data.iter().all(u8::is_ascii_whitespace) {
            return EventKind::Other;
        }
        // Merged straight from the parser into the accumulated state: no intermediate
        // `Value` tree, and text borrowed from the input when it has no escapes.
        let mut de = serde_json::Deserializer::from_slice(data);
        let parsed = ChunkSeed { st: self }
            .deserialize(&mut de)
            .and_then(|out| de.end().map(|()| out));
        let out = match parsed {
            Ok(out) => out,
            Err(_) => {
                // A chunk that is not JSON may have been merged in part: whatever the
                // stream assembles to can no longer be trusted, so it is never complete.
                self.malformed = true;
                return EventKind::Other;
            }
        };
        if out.error {
            EventKind::Failed
        } else if out.usage && out.choices == 0 {
            EventKind::UsageOnly
        } else {
            EventKind::Chunk
        }
    }

    /// Sets a top-level field: the last non-null value wins; a key seen only as null
    /// (`system_fingerprint: null`) stays, as null.
    fn set_top(&mut self, key: Cow<'_, str>, f: Field<'_>) {
        match (self.top.get_mut(&*key), f) {
            (Some(Value::String(old)), Field::Str(new)) => {
                if *old != *new {
                    *old = new.into_owned();
                }
            }
            (Some(_), Field::Other(Value::Null)) => {}
            (Some(slot), f) => *slot = f.into_value(),
            (None, f) => {
                self.top.insert(key.into_owned(), f.into_value());
            }
        }
    }

    /// Merges one field of a choice (not `index`, not `delta`) into choice `index`.
    fn merge_choice_field(&mut self, index: u64, key: Cow<'_, str>, f: Field<'_>) {
        let acc = self.choices.entry(index).or_default();
        match &*key {
            // streamed piecewise: text concatenates, logprob lists extend
            "text" | "logprobs" => merge_field(acc, key, f),
            // finish_reason and provider extras: last non-null wins
            _ => {
                let v = f.into_value();
                if !v.is_null() || !acc.contains_key(&*key) {
                    acc.insert(key.into_owned(), v);
                }
            }
        }
    }

    /// The accumulated `message` of choice `index` (its merged deltas).
    fn message_mut(&mut self, index: u64) -> &mut Map<String, Value> {
        self.choices.entry(index).or_default();
        self.messages.entry(index).or_default()
    }

    fn into_json(self, route: Route) -> Result<Bytes, WireError> {
        if self.choices.is_empty() && self.top.is_empty() {
            return Err(WireError::EmptyStream);
        }
        let object = match route {
            Route::Completions => "text_completion",
            _ => "chat.completion",
        };
        let mut top = self.top;
        let mut messages = self.messages;
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, mut c) in self.choices {
            let mut out = Map::new();
            out.insert("index".into(), Value::from(index));
            if route == Route::ChatCompletions {
                let mut msg = messages.remove(&index).unwrap_or_default();
                finish_message(&mut msg);
                out.insert("message".into(), Value::Object(msg));
            } else {
                let text = c.remove("text").unwrap_or(Value::String(String::new()));
                out.insert("text".into(), text);
            }
            out.insert(
                "logprobs".into(),
                c.remove("logprobs").unwrap_or(Value::Null),
            );
            out.insert(
                "finish_reason".into(),
                c.remove("finish_reason").unwrap_or(Value::Null),
            );
            c.remove("index");
            c.remove("delta");
            out.extend(c);
            choices.push(Value::Object(out));
        }
        // Written in the API's field order; serde_json's map would sort them.
        let mut w = wire::ObjectWriter::new();
        w.field("id", top.remove("id").as_ref().unwrap_or(&Value::Null));
        w.field("object", &Value::String(object.into()));
        w.field(
            "created",
            top.remove("created").as_ref().unwrap_or(&Value::Null),
        );
        w.field(
            "model",
            top.remove("model").as_ref().unwrap_or(&Value::Null),
        );
        w.field("choices", &Value::Array(choices));
        if let Some(u) = &self.usage {
            w.field("usage", u);
        }
        for (k, v) in &top {
            w.field(k, v);
        }
        Ok(w.finish())
    }
}

/// Makes an accumulated delta look like a non-streamed message: a role and a content
/// key always, `tool_calls` without their stream-only `index`.
fn finish_message(msg: &mut Map<String, Value>) {
    if !msg.contains_key("role") {
        msg.insert("role".into(), Value::String("assistant".into()));
    }
    if !msg.contains_key("content") {
        msg.insert("content".into(), Value::Null);
    }
    if let Some(Value::Array(calls)) = msg.get_mut("tool_calls") {
        for call in calls.iter_mut() {
            if let Value::Object(call) = call {
                call.remove("index");
            }
        }
    }
}

/// A JSON value as the merge needs it: strings apart (borrowed from the input when they
/// have no escapes, so streamed text is appended without an allocation per chunk).
enum Field<'de> {
    Str(Cow<'de, str>),
    Other(Value),
}

impl Field<'_> {
    fn into_value(self) -> Value {
        match self {
            Field::Str(s) => Value::String(s.into_owned()),
            Field::Other(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Null))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Field::deserialize(d)? {
            Field::Str(s) => Ok(Key(s)),
            Field::Other(_) => Err(de::Error::custom("object key is not a string")),
        }
    }
}

/// What one chunk held, besides what was merged.
#[derive(Default)]
struct ChunkOut {
    choices: usize,
    usage: bool,
    error: bool,
}

/// Parses a chat/completions chunk, merging it into the state as it goes.
struct ChunkSeed<'s> {
    st: &'s mut ChoicesState,
}

impl<'de> DeserializeSeed<'de> for ChunkSeed<'_> {
    type Value = ChunkOut;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ChunkOut, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = ChunkOut;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chunk object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChunkOut, A::Error> {
        let mut out = ChunkOut::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "choices" => {
                    out.choices += map.next_value_seed(ChoicesSeed { st: &mut *self.st })?
                }
                "usage" => {
                    let v: Value = map.next_value()?;
                    if !v.is_null() {
                        self.st.usage = Some(v);
                        out.usage = true;
                    }
                }
                "error" => out.error |= !map.next_value::<Value>()?.is_null(),
                "object" | "obfuscation" => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let f: Field<'_> = map.next_value()?;
                    self.st.set_top(key, f);
                }
            }
        }
        Ok(out)
    }
}

/// The `choices` list of a chunk; yields how many choices it had.
struct ChoicesSeed<'s> {
    st: &'s mut ChoicesState,
}

impl<'de> DeserializeSeed<'de> for ChoicesSeed<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of choices")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq
            .next_element_seed(ChoiceSeed { st: &mut *self.st })?
            .is_some()
        {
            n += 1;
        }
        Ok(n)
    }
    // Anything but a list holds no choice.
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_none<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<usize, A::Error> {
        IgnoredAny.visit_map(map).map(|_| 0)
    }
    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_str<E>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }
}

/// One choice of a chunk. Its fields are merged as soon as its `index` is known (the
/// API sends `index` first); fields before it wait.
struct ChoiceSeed<'s> {
    st: &'s mut ChoicesState,
}

impl<'de> DeserializeSeed<'de> for ChoiceSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a choice object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut index: Option<u64> = None;
        let mut early: Vec<(Cow<'de, str>, Field<'de>)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            match (&*key, index) {
                ("index", _) => {
                    let i = map.next_value::<Value>()?.as_u64().unwrap_or(0);
                    index = Some(i);
                    self.st.choices.entry(i).or_default();
                    for (k, f) in early.drain(..) {
                        self.merge(i, k, f);
                    }
                }
                ("delta", Some(i)) => {
                    map.next_value_seed(DeltaSeed {
                        msg: self.st.message_mut(i),
                    })?;
                }
                (_, Some(i)) => {
                    let f: Field<'de> = map.next_value()?;
                    self.merge(i, key, f);
                }
                (_, None) => early.push((key, map.next_value()?)),
            }
        }
        let i = index.unwrap_or(0);
        self.st.choices.entry(i).or_default();
        for (k, f) in early {
            self.merge(i, k, f);
        }
        Ok(())
    }
    // A choice that is not an object has nothing to merge.
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| ())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

impl ChoiceSeed<'_> {
    fn merge(&mut self, index: u64, key: Cow<'_, str>, f: Field<'_>) {
        if key == "delta" {
            if let Field::Other(Value::Object(delta)) = f {
                accumulate(self.st.message_mut(index), delta);
            }
        } else {
            self.st.merge_choice_field(index, key, f);
        }
    }
}

/// A choice's `delta`, merged field by field into the accumulated message.
struct DeltaSeed<'s> {
    msg: &'s mut Map<String, Value>,
}

impl<'de> DeserializeSeed<'de> for DeltaSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a delta object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let f: Field<'de> = map.next_value()?;
            merge_field(self.msg, key, f);
        }
        Ok(())
    }
    // A delta that is not an object adds nothing.
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| ())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// [`accumulate_field`] with the common case first: a streamed string appended to the
/// accumulated one in place.
fn merge_field(acc: &mut Map<String, Value>, key: Cow<'_, str>, f: Field<'_>) {
    if let Field::Str(s) = &f
        && !REPLACE_KEYS.contains(&&*key)
        && let Some(Value::String(a)) = acc.get_mut(&*key)
    {
        a.push_str(s);
        return;
    }
    accumulate_field(acc, key.into_owned(), f.into_value());
}

/// Keys whose value identifies something rather than being streamed piecewise: a new
/// non-empty value replaces the old one instead of being appended to it.
const REPLACE_KEYS: [&str; 8] = [
    "index",
    "type",
    "id",
    "name",
    "role",
    "call_id",
    "expires_at",
    "status",
];

/// Merges a delta object into an accumulated one (see [`StreamAssembler`]).
pub(crate) fn accumulate(acc: &mut Map<String, Value>, delta: Map<String, Value>) {
    for (k, v) in delta {
        accumulate_field(acc, k, v);
    }
}

fn accumulate_field(acc: &mut Map<String, Value>, key: String, delta: Value) {
    let Some(slot) = acc.get_mut(&key) else {
        acc.insert(key, delta);
        return;
    };
    if delta.is_null() {
        return;
    }
    if slot.is_null() {
        *slot = delta;
        return;
    }
    if REPLACE_KEYS.contains(&key.as_str()) {
        let empty = matches!(&delta, Value::String(s) if s.is_empty());
        if !empty {
            *slot = delta;
        }
        return;
    }
    match (slot, delta) {
        (Value::String(a), Value::String(b)) => a.push_str(&b),
        (Value::Object(a), Value::Object(b)) => accumulate(a, b),
        (Value::Array(a), Value::Array(b)) => {
            for entry in b {
                let idx = match &entry {
                    Value::Object(o) => o.get("index").and_then(Value::as_u64),
                    _ => None,
                };
                match idx {
                    Some(i) => {
                        let pos = a
                            .iter()
                            .position(|e| e.get("index").and_then(Value::as_u64) == Some(i));
                        match (pos, entry) {
                            (Some(p), Value::Object(entry)) => {
                                if let Value::Object(existing) = &mut a[p] {
                                    accumulate(existing, entry);
                                }
                            }
                            (_, entry) => a.push(entry),
                        }
                    }
                    None => a.push(entry),
                }
            }
        }
        (slot, delta) => *slot = delta,
    }
}

/// The fields of a responses event that the assembler reads; everything else is skipped
/// without being built.
#[derive(Deserialize)]
struct ResponsesEventIn<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(borrow, default)]
    item: Option<&'a RawValue>,
}

/// The parts of a response object the assembler needs.
#[derive(Deserialize)]
struct ResponseHead {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    output: Option<IgnoredAny>,
}

impl ResponsesState {
    fn push(&mut self, ev: &SseEvent) -> EventKind {
        let Some(data) = ev.data.as_deref() else {
            return EventKind::Other;
        };
        // Deltas are the bulk of a stream and carry nothing the final object lacks:
        // classify them by the `event:` field without parsing their JSON.
        if let Some(name) = ev.event.as_deref()
            && name.starts_with(b"response.")
            && !matches!(
                name,
                b"response.created"
                    | b"response.completed"
                    | b"response.failed"
                    | b"response.incomplete"
                    | b"response.output_item.done"
            )
        {
            return EventKind::Chunk;
        }
        let Ok(parsed) = serde_json::from_slice::<ResponsesEventIn<'_>>(data) else {
            return if ev.event.as_deref() == Some(b"error") {
                EventKind::Failed
            } else {
                EventKind::Other
            };
        };
        let kind = parsed
            .kind
            .as_deref()
            .or_else(|| ev.event_str())
            .unwrap_or("");
        match kind {
            "response.created" => {
                self.note_head(parsed.response, false);
                EventKind::Chunk
            }
            "response.completed" => {
                self.completed = true;
                self.note_head(parsed.response, true);
                EventKind::Completed
            }
            "response.failed" | "response.incomplete" => {
                self.note_head(parsed.response, true);
                EventKind::Failed
            }
            "error" => EventKind::Failed,
            "response.output_item.done" => {
                if let (Some(i), Some(item)) = (parsed.output_index, parsed.item) {
                    self.done_items.insert(i, item.to_owned());
                }
                EventKind::Chunk
            }
            k if k.starts_with("response.") => EventKind::Chunk,
            _ => EventKind::Other,
        }
    }

    fn note_head(&mut self, response: Option<&RawValue>, terminal: bool) {
        let Some(raw) = response else {
            return;
        };
        if let Ok(head) = serde_json::from_str::<ResponseHead>(raw.get()) {
            if head.model.is_some() {
                self.model = head.model;
            }
            if let Some(u) = head.usage.as_ref().and_then(wire::usage_from_value) {
                self.usage = Some(u);
            }
        }
        if terminal {
            self.terminal = Some(raw.to_owned());
        }
    }

    fn into_json(self) -> Result<Bytes, WireError> {
        let Some(raw) = self.terminal else {
            return Err(WireError::Incomplete);
        };
        let has_output = serde_json::from_str::<ResponseHead>(raw.get())
            .map(|h| h.output.is_some())
            .unwrap_or(false);
        if has_output || self.done_items.is_empty() {
            return Ok(Bytes::copy_from_slice(raw.get().as_bytes()));
        }
        // The terminal event omitted `output`: rebuild it from the finished items.
        let mut obj: Map<String, Value> = serde_json::from_str(raw.get())?;
        let items = self
            .done_items
            .into_values()
            .map(|i| serde_json::from_str::<Value>(i.get()))
            .collect::<Result<Vec<_>, _>>()?;
        obj.insert("output".into(), Value::Array(items));
        Ok(Bytes::from(serde_json::to_vec(&obj)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<SseTail>) {
        let mut s = SseSplitter::new();
        let mut evs = Vec::new();
        for c in chunks {
            evs.extend(s.push(c));
        }
        (evs, s.finish())
    }

    fn data(e: &SseEvent) -> &str {
        e.data_str().unwrap()
    }

    #[test]
    fn splits_lf_crlf_and_cr_streams_alike() {
        for sep in ["\n", "\r\n", "\r"] {
            let text =
                format!("event: a{sep}data: 1{sep}data: 2{sep}{sep}: comment{sep}data:x{sep}{sep}");
            let (mut evs, tail) = split(&[text.as_bytes()]);
            if sep == "\r" {
                // the final CR might have been the start of a CRLF: finish() decides
                let Some(SseTail::Complete(last)) = tail else {
                    panic!("expected a complete tail, got {tail:?}")
                };
                evs.push(last);
            } else {
                assert_eq!(tail, None);
            }
            assert_eq!(evs.len(), 2, "sep {sep:?}");
            assert_eq!(evs[0].event_str(), Some("a"));
            assert_eq!(data(&evs[0]), "1\n2");
            assert_eq!(data(&evs[1]), "x");
            let raw: Vec<u8> = evs.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, text.as_bytes());
        }
    }

    #[test]
    fn field_parsing_follows_the_spec() {
        let (evs, _) = split(&[
            b"data\n\ndata:  two spaces\nid: 7\nretry: 1500\nunknown: x\n\nid: a\0b\nretry: 1x\n\n",
        ]);
        assert_eq!(
            evs[0].data.as_deref(),
            Some(&b""[..]),
            "a bare `data` is empty data"
        );
        assert_eq!(
            data(&evs[1]),
            " two spaces",
            "only one leading space is stripped"
        );
        assert_eq!(evs[1].id.as_deref(), Some(&b"7"[..]));
        assert_eq!(evs[1].retry, Some(1500));
        assert_eq!(evs[2].id, None, "an id with NUL is ignored");
        assert_eq!(evs[2].retry, None);
        assert_eq!(evs[2].data, None);
    }

    #[test]
    fn bom_is_skipped_only_at_stream_start() {
        let (evs, _) = split(&[b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(data(&evs[0]), "a");
        assert_eq!(evs[1].data, None, "a BOM later is part of a field name");
        // split one byte per chunk, and followed at once by a blank line
        let (evs, _) = split(&[b"\xEF", b"\xBB", b"\xBF", b"\n", b"data: a\n\n"]);
        assert_eq!(evs.len(), 2);
        assert_eq!(&evs[0].raw[..], b"\xEF\xBB\xBF\n");
        assert_eq!(data(&evs[1]), "a");
        // a BOM prefix that is not a BOM is content
        let (evs, _) = split(&[b"\xEF", b"\xBBdata: a\n\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, None);
    }

    #[test]
    fn crlf_split_between_chunks_stays_one_terminator() {
        let (evs, tail) = split(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(evs.len(), 2);
        assert_eq!(&evs[0].raw[..], b"data: a\r\n\r\n");
        assert_eq!(tail, None);
    }

    #[test]
    fn cut_event_is_a_partial_tail() {
        let (evs, tail) = split(&[b"data: [DONE]\n\ndata: {\"x\""]);
        assert_eq!(evs.len(), 1);
        match tail {
            Some(SseTail::Partial(e)) => assert_eq!(&e.raw[..], b"data: {\"x\""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_within_one_chunk_share_its_buffer() {
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 2\n\n");
        let mut s = SseSplitter::new();
        let evs = s.push_bytes(chunk.clone());
        assert_eq!(evs[0].raw.as_ptr(), chunk.as_ptr(), "sliced, not copied");
    }

    fn chat(events: &[&str]) -> StreamAssembler {
        let mut a = StreamAssembler::new(Route::ChatCompletions);
        for e in events {
            for ev in split(&[format!("data: {e}\n\n").as_bytes()]).0 {
                a.push(&ev);
            }
        }
        a
    }

    #[test]
    fn choice_fields_before_index_wait_for_it() {
        let a = chat(&[
            r#"{"choices":[{"delta":{"role":"assistant","content":"Hé"},"finish_reason":null,"index":1}]}"#,
            r#"{"choices":[{"delta":{"content":"llo \"x\""},"index":1,"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert!(a.is_complete());
        let v: Value = serde_json::from_slice(&a.into_json().unwrap()).unwrap();
        assert_eq!(v["choices"][0]["index"], 1);
        assert_eq!(v["choices"][0]["message"]["content"], "Héllo \"x\"");
    }

    #[test]
    fn a_malformed_chunk_makes_a_stream_incomplete() {
        let ok = r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#;
        assert!(chat(&[ok, "[DONE]"]).is_complete());
        let mut a = StreamAssembler::new(Route::ChatCompletions);
        let evs = split(&[format!(
            "data: {ok}\n\ndata: {{\"choices\":[{{\"index\":0,\n\ndata: [DONE]\n\n"
        )
        .as_bytes()])
        .0;
        let kinds: Vec<EventKind> = evs.iter().map(|e| a.push(e)).collect();
        assert_eq!(kinds, [EventKind::Chunk, EventKind::Other, EventKind::Done]);
        assert!(!a.is_complete());
        // blank data (a keep-alive some servers send) is harmless
        assert!(chat(&[ok, "", "[DONE]"]).is_complete());
    }

    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "data: [a-z{}\":, ]{0,12}".prop_map(|s| s.into_bytes()),
            "event: [a-z.]{1,8}".prop_map(|s| s.into_bytes()),
            ": [a-z]{0,4}".prop_map(|s| s.into_bytes()),
            "(id|retry|data)".prop_map(|s| s.into_bytes()),
            Just(b"data: [DONE]".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
        ];
        let sep = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
        prop::collection::vec((line, sep.clone(), any::<bool>(), sep), 0..12).prop_map(|ls| {
            let mut out = Vec::new();
            for (l, s, blank, s2) in ls {
                out.extend_from_slice(&l);
                out.extend_from_slice(s);
                if blank {
                    out.extend_from_slice(s2);
                }
            }
            out
        })
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            stream in arb_stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let (whole, whole_tail) = split(&[&stream]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for p in points {
                chunks.push(&stream[prev..p]);
                prev = p;
            }
            chunks.push(&stream[prev..]);
            let (parts, parts_tail) = split(&chunks);
            prop_assert_eq!(&whole, &parts);
            prop_assert_eq!(&whole_tail, &parts_tail);
            // nothing is lost or duplicated: raw bytes concatenate to the input
            let mut raw: Vec<u8> = parts.iter().flat_map(|e| e.raw.to_vec()).collect();
            if let Some(t) = &parts_tail {
                raw.extend_from_slice(t.raw());
            }
            prop_assert_eq!(raw, stream);
        }
    }
}
