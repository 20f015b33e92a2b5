//! Assembly of a Messages API event stream into the message a non-streamed request would
//! have returned, the way the official SDK's `accumulate_event` does it, and the
//! completeness rule for storing a stream.
//!
//! Events are told apart by their data's `type` (`message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`,
//! `error`); an `event:` line that names another type makes the stream malformed, since a
//! client dispatching on the event name would read it differently.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::fields::{self, Fields};
use crate::sse::SseEvent;
use crate::usage::Usage;
use crate::wire::{WireError, usage_from_value};

/// What one event of a Messages stream was, for the proxy's forwarding and storing
/// decisions. Every kind is forwarded to the client as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `message_start`: the message with empty content and the input usage.
    MessageStart,
    /// `content_block_start`, `content_block_delta`, `content_block_stop`.
    Block,
    /// `message_delta`: the stop reason and the cumulative usage.
    MessageDelta,
    /// `message_stop`: the end of a finished message.
    MessageStop,
    /// `ping`: keeps the connection alive; carries nothing.
    Ping,
    /// `error` (an overloaded API mid-stream, say). The stream is never stored.
    Error,
    /// Comments, events without data, and event types this assembler does not know.
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageStart => "message_start",
            EventKind::Block => "block",
            EventKind::MessageDelta => "message_delta",
            EventKind::MessageStop => "message_stop",
            EventKind::Ping => "ping",
            EventKind::Error => "error",
            EventKind::Other => "other",
        }
    }
}

/// One content block being assembled.
#[derive(Debug)]
struct Block {
    fields: Fields,
    /// Text accumulated for the block's `text` (text blocks) or `thinking` field.
    text: Option<(&'static str, String)>,
    /// `input_json_delta` fragments, concatenated (tool use blocks).
    json: Option<String>,
    /// Citations from `citations_delta`, appended to the start block's own.
    citations: Vec<Box<RawValue>>,
    stopped: bool,
}

/// Assembles a Messages stream event by event (see the module docs) and says whether it
/// ended properly.
///
/// Merging follows the SDK: `text_delta` and `thinking_delta` append, `input_json_delta`
/// fragments are concatenated and parsed when the block stops, `signature_delta` sets the
/// signature, `citations_delta` appends a citation; `message_delta` sets `stop_reason`,
/// `stop_sequence` (and `stop_details`, `container` when given) and overwrites the usage
/// counters it carries, which are cumulative. Everything else of the message comes from
/// `message_start`, field order and bytes kept.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    message: Option<Fields>,
    usage: Option<Fields>,
    blocks: Vec<Block>,
    stop_reason: Option<Box<RawValue>>,
    started: bool,
    stopped: bool,
    failed: bool,
    /// Something did not parse or did not fit (a block index out of order, tool input
    /// that is not JSON): the stream is not stored and cannot be converted.
    malformed: bool,
    /// An event or delta type this assembler does not know: the stream may be stored
    /// (it is replayed byte for byte) but not converted to JSON, which could lose it.
    unknown: bool,
    events: u64,
}

#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    message: Option<Box<RawValue>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<Box<RawValue>>,
    #[serde(default)]
    delta: Option<Box<RawValue>>,
    #[serde(default)]
    usage: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct DeltaIn {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    citation: Option<Box<RawValue>>,
}

/// Usage counters a `message_delta` may carry, cumulative: each overwrites the
/// `message_start` value when present and not null (the SDK's rule).
const DELTA_USAGE_FIELDS: [&str; 6] = [
    "output_tokens",
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
];

impl MessageAssembler {
    pub fn new() -> MessageAssembler {
        MessageAssembler::default()
    }

    /// Takes in one event; returns what it was.
    pub fn push(&mut self, ev: &SseEvent) -> EventKind {
        self.events += 1;
        let Some(data) = ev.data.as_deref() else {
            return EventKind::Other;
        };
        let name = ev.event_str();
        let Ok(e) = serde_json::from_slice::<EventIn<'_>>(data) else {
            // `event: error` with a body that is not JSON is still an error.
            if name == Some("error") {
                self.failed = true;
                return EventKind::Error;
            }
            self.malformed = true;
            return EventKind::Other;
        };
        if name.is_some_and(|n| n != e.kind) {
            self.malformed = true;
            if name == Some("error") {
                self.failed = true;
                return EventKind::Error;
            }
        }
        match e.kind.as_ref() {
            "message_start" => {
                self.message_start(e.message);
                EventKind::MessageStart
            }
            "content_block_start" => {
                self.block_start(e.index, e.content_block);
                EventKind::Block
            }
            "content_block_delta" => {
                self.block_delta(e.index, e.delta);
                EventKind::Block
            }
            "content_block_stop" => {
                self.block_stop(e.index);
                EventKind::Block
            }
            "message_delta" => {
                self.message_delta(e.delta, e.usage);
                EventKind::MessageDelta
            }
            "message_stop" => {
                if !self.started || self.stopped {
                    self.malformed = true;
                }
                self.stopped = true;
                EventKind::MessageStop
            }
            "ping" => EventKind::Ping,
            "error" => {
                self.failed = true;
                EventKind::Error
            }
            _ => {
                self.unknown = true;
                EventKind::Other
            }
        }
    }

    fn message_start(&mut self, message: Option<Box<RawValue>>) {
        let parsed = message.and_then(|m| fields::parse(m.get()));
        match parsed {
            Some(mut m) if !self.started => {
                self.usage = m.get("usage").and_then(|u| fields::parse(u.get()));
                self.stop_reason = m.get("stop_reason").map(|r| fields::raw(r.get().into()));
                // Content comes from the block events.
                m.set("content", fields::raw("[]".into()));
                self.message = Some(m);
                self.started = true;
            }
            _ => self.malformed = true,
        }
    }

    fn block(&mut self, index: Option<u64>) -> Option<&mut Block> {
        let i = usize::try_from(index?).ok()?;
        self.blocks.get_mut(i).filter(|b| !b.stopped)
    }

    fn block_start(&mut self, index: Option<u64>, block: Option<Box<RawValue>>) {
        let parsed = block.and_then(|b| fields::parse(b.get()));
        let (Some(f), true) = (
            parsed,
            self.started && index == Some(self.blocks.len() as u64),
        ) else {
            self.malformed = true;
            return;
        };
        let kind = f.str("type").unwrap_or_default();
        let text = match kind.as_str() {
            "text" => Some(("text", f.str("text").unwrap_or_default())),
            "thinking" => Some(("thinking", f.str("thinking").unwrap_or_default())),
            _ => None,
        };
        let json = matches!(kind.as_str(), "tool_use" | "server_tool_use").then(String::new);
        self.blocks.push(Block {
            fields: f,
            text,
            json,
            citations: Vec::new(),
            stopped: false,
        });
    }

    fn block_delta(&mut self, index: Option<u64>, delta: Option<Box<RawValue>>) {
        let Some(d) = delta.and_then(|d| serde_json::from_str::<DeltaIn>(d.get()).ok()) else {
            self.malformed = true;
            return;
        };
        let kind = d.kind.clone().unwrap_or_default();
        let Some(b) = self.block(index) else {
            self.malformed = true;
            return;
        };
        let ok = match (kind.as_str(), &mut b.text, &mut b.json) {
            ("text_delta", Some(("text", t)), _) => d.text.map(|s| t.push_str(&s)).is_some(),
            ("thinking_delta", Some(("thinking", t)), _) => {
                d.thinking.map(|s| t.push_str(&s)).is_some()
            }
            ("input_json_delta", _, Some(j)) => d.partial_json.map(|s| j.push_str(&s)).is_some(),
            ("signature_delta", Some(("thinking", _)), _) => match d.signature {
                Some(s) => {
                    b.fields.set("signature", fields::raw_str(&s));
                    true
                }
                None => false,
            },
            ("citations_delta", Some(("text", _)), _) => match d.citation {
                Some(c) => {
                    b.citations.push(c);
                    true
                }
                None => false,
            },
            (
                "text_delta" | "thinking_delta" | "input_json_delta" | "signature_delta"
                | "citations_delta",
                _,
                _,
            ) => false,
            _ => {
                self.unknown = true;
                return;
            }
        };
        if !ok {
            // A known delta on a block that cannot take it, or without its field.
            self.malformed = true;
        }
    }

    fn block_stop(&mut self, index: Option<u64>) {
        let Some(b) = self.block(index) else {
            self.malformed = true;
            return;
        };
        b.stopped = true;
        if let Some(j) = b.json.take() {
            // No fragment at all: the input stays as `content_block_start` gave it.
            if !j.is_empty() {
                match RawValue::from_string(j) {
                    Ok(v) => b.fields.set("input", v),
                    Err(_) => self.malformed = true,
                }
            }
        }
    }

    fn message_delta(&mut self, delta: Option<Box<RawValue>>, usage: Option<Box<RawValue>>) {
        let (Some(msg), Some(delta)) = (
            self.message.as_mut(),
            delta.and_then(|d| fields::parse(d.get())),
        ) else {
            self.malformed = true;
            return;
        };
        for key in ["stop_reason", "stop_sequence"] {
            let v = delta
                .get(key)
                .map_or_else(fields::null, |v| fields::raw(v.get().into()));
            if key == "stop_reason" {
                self.stop_reason = Some(v.clone());
            }
            msg.set(key, v);
        }
        for key in ["stop_details", "container"] {
            if let Some(v) = delta.get(key).filter(|v| v.get() != "null") {
                msg.set(key, fields::raw(v.get().into()));
            }
        }
        let Some(u) = usage.and_then(|u| fields::parse(u.get())) else {
            return;
        };
        let acc = self.usage.get_or_insert_with(Fields::default);
        for key in DELTA_USAGE_FIELDS {
            if let Some(v) = u.get(key).filter(|v| v.get() != "null") {
                acc.set(key, fields::raw(v.get().into()));
            }
        }
    }

    /// Whether the stream ended properly and may be stored: `message_start` and
    /// `message_stop` seen, `stop_reason` set, every block stopped, no `error` event and
    /// nothing malformed.
    pub fn is_complete(&self) -> bool {
        self.started
            && self.stopped
            && !self.failed
            && !self.malformed
            && self.blocks.iter().all(|b| b.stopped)
            && self.stop_reason.as_ref().is_some_and(|r| r.get() != "null")
    }

    /// Whether an `error` event was seen.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether the stream carried an event or delta type this assembler does not know
    /// (then [`MessageAssembler::into_json`] refuses: the message could lose it).
    pub fn has_unknown(&self) -> bool {
        self.unknown
    }

    /// Events pushed so far.
    pub fn events_seen(&self) -> u64 {
        self.events
    }

    /// The usage so far (`message_start`'s, updated by `message_delta`), normalized.
    pub fn usage(&self) -> Option<Usage> {
        let u = self.usage.as_ref()?;
        let v: serde_json::Value = serde_json::from_slice(&u.to_vec()).ok()?;
        usage_from_value(&v)
    }

    /// The `model` of `message_start`.
    pub fn model(&self) -> Option<String> {
        self.message.as_ref()?.str("model")
    }

    /// The message a non-streamed request would have returned. Refused for a stream
    /// that is not complete, or that carried something this assembler does not know.
    pub fn into_json(self) -> Result<Bytes, WireError> {
        if self.events == 0 {
            return Err(WireError::EmptyStream);
        }
        if !self.is_complete() {
            return Err(WireError::Incomplete);
        }
        if self.unknown {
            return Err(WireError::Shape(
                "the stream carries an event or delta type the assembler does not know",
            ));
        }
        let Some(msg) = self.message else {
            return Err(WireError::Incomplete);
        };
        let mut content = Vec::with_capacity(256);
        content.push(b'[');
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                content.push(b',');
            }
            write_block(&mut content, b);
        }
        content.push(b']');
        let content = String::from_utf8_lossy(&content).into_owned();
        let usage = self
            .usage
            .map(|u| String::from_utf8_lossy(&u.to_vec()).into_owned());
        let mut out = Vec::with_capacity(content.len() + 512);
        msg.write_with(&mut out, |k| match k {
            "content" => Some(Some(content.as_str())),
            "usage" => usage.as_deref().map(Some),
            _ => None,
        });
        Ok(Bytes::from(out))
    }
}

fn write_block(out: &mut Vec<u8>, b: &Block) {
    let text = b
        .text
        .as_ref()
        .map(|(k, t)| (*k, serde_json::to_string(t).unwrap_or_default()));
    let citations = (!b.citations.is_empty()).then(|| {
        // The start block's own citations (usually none), then the streamed ones.
        let mut all: Vec<&RawValue> = b
            .fields
            .get("citations")
            .and_then(|c| serde_json::from_str::<Vec<&RawValue>>(c.get()).ok())
            .unwrap_or_default();
        all.extend(b.citations.iter().map(AsRef::as_ref));
        serde_json::to_string(&all).unwrap_or_default()
    });
    let mut fields = b.fields.clone();
    if citations.is_some() && fields.get("citations").is_none() {
        fields.set("citations", fields::null());
    }
    fields.write_with(out, |k| match (k, &text, &citations) {
        (k, Some((tk, t)), _) if k == *tk => Some(Some(t.as_str())),
        ("citations", _, Some(c)) => Some(Some(c.as_str())),
        _ => None,
    });
}
