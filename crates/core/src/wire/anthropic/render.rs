//! Renders a stored message as the event stream the Messages API would have sent for
//! it, so a streamed request can be answered from a JSON entry.
//!
//! The rendering is chosen so that assembling it (as the SDK and
//! [`MessageAssembler`](super::MessageAssembler) do) gives back the stored message:
//! `message_start` carries the message with empty content, `stop_reason: null` and the
//! input usage; each block opens with `content_block_start` (text and thinking emptied,
//! tool input `{}`), then text in word-sized `text_delta`s, thinking in `thinking_delta`s
//! and its `signature_delta`, citations in `citations_delta`s, tool input as
//! `input_json_delta` fragments of its exact JSON text; blocks without deltas
//! (`redacted_thinking`, server tool results) open complete. One `ping` follows the
//! first block start, as the API's streams have; `message_delta` carries the stop reason
//! and the usage counters; `message_stop` ends it.
//!
//! [`MessageEvents`] is an iterator, so a large message is rendered as a client reads it.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::fields::{self, Fields};
use crate::wire::WireError;

/// Longest text piece in one rendered delta, in bytes (a piece is a word with its
/// leading whitespace, cut at this length at a character boundary): about what a real
/// stream carries per event, and a bounded overhead.
const MAX_PIECE_BYTES: usize = 24;
/// Longest `input_json_delta` fragment, in bytes (cut at a character boundary).
const MAX_JSON_PIECE_BYTES: usize = 32;

/// Renders a stored message (see the module docs) as complete SSE events
/// (`event: <type>\ndata: <json>\n\n`), all at once.
pub fn json_to_sse(json: &[u8]) -> Result<Vec<Bytes>, WireError> {
    Ok(MessageEvents::new(json)?.collect())
}

/// The events of a rendered message, one at a time. [`MessageEvents::new`] finds every
/// error rendering can meet, so iteration never fails.
#[derive(Debug)]
pub struct MessageEvents {
    message: Fields,
    usage: Option<Fields>,
    blocks: Vec<RenderBlock>,
    state: State,
}

#[derive(Debug)]
struct RenderBlock {
    fields: Fields,
    kind: BlockKind,
}

#[derive(Debug)]
enum BlockKind {
    Text {
        text: String,
        citations: Vec<Box<RawValue>>,
    },
    Thinking {
        thinking: String,
        signature: Option<String>,
    },
    Tool {
        input: String,
    },
    /// Opens complete, no deltas.
    Whole,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Start,
    BlockStart(usize),
    Ping(usize),
    /// Block, delta step within the block (citations, then pieces), byte offset.
    Deltas(usize, usize, usize),
    Signature(usize),
    BlockStop(usize),
    MessageDelta,
    MessageStop,
    Done,
}

impl MessageEvents {
    /// Parses a stored message: a JSON object with `type: "message"`, a `content` array of
    /// objects with a `type`, and a `stop_reason`.
    pub fn new(json: &[u8]) -> Result<MessageEvents, WireError> {
        let text = std::str::from_utf8(json).map_err(|_| WireError::Shape("not UTF-8"))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        let message = fields::parse(text).ok_or(WireError::NotAnObject)?;
        if message.str("type").as_deref() != Some("message") {
            return Err(WireError::Shape("not a message object"));
        }
        if message.get("stop_reason").is_none_or(|r| r.get() == "null") {
            return Err(WireError::Incomplete);
        }
        let content = message
            .get("content")
            .and_then(|c| serde_json::from_str::<Vec<&RawValue>>(c.get()).ok())
            .ok_or(WireError::Shape("content is not an array"))?;
        let mut blocks = Vec::with_capacity(content.len());
        for c in content {
            let f = fields::parse(c.get())
                .ok_or(WireError::Shape("a content block is not an object"))?;
            let kind = match f.str("type").as_deref() {
                Some("text") => BlockKind::Text {
                    text: f
                        .str("text")
                        .ok_or(WireError::Shape("a text block without text"))?,
                    citations: f
                        .get("citations")
                        .and_then(|c| serde_json::from_str::<Vec<Box<RawValue>>>(c.get()).ok())
                        .unwrap_or_default(),
                },
                Some("thinking") => BlockKind::Thinking {
                    thinking: f.str("thinking").unwrap_or_default(),
                    signature: f.str("signature"),
                },
                Some("tool_use" | "server_tool_use") => BlockKind::Tool {
                    input: f
                        .get("input")
                        .map(|i| i.get().to_string())
                        .ok_or(WireError::Shape("a tool use block without input"))?,
                },
                Some(_) => BlockKind::Whole,
                None => return Err(WireError::Shape("a content block without a type")),
            };
            blocks.push(RenderBlock { fields: f, kind });
        }
        let usage = message.get("usage").and_then(|u| fields::parse(u.get()));
        Ok(MessageEvents {
            message,
            usage,
            blocks,
            state: State::Start,
        })
    }
}

fn event(kind: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(kind.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `{"type":kind,"index":i,<key>:<raw>}`.
fn block_event(kind: &str, index: usize, key: Option<(&str, &[u8])>) -> Bytes {
    let mut d = Vec::with_capacity(96);
    d.extend_from_slice(b"{\"type\":\"");
    d.extend_from_slice(kind.as_bytes());
    d.extend_from_slice(b"\",\"index\":");
    d.extend_from_slice(index.to_string().as_bytes());
    if let Some((k, v)) = key {
        d.extend_from_slice(b",\"");
        d.extend_from_slice(k.as_bytes());
        d.extend_from_slice(b"\":");
        d.extend_from_slice(v);
    }
    d.push(b'}');
    event(kind, &d)
}

/// `{"type":delta_type,field:"piece"}` as a `content_block_delta`.
fn delta(index: usize, delta_type: &str, field: &str, value: &[u8]) -> Bytes {
    let mut d = Vec::with_capacity(value.len() + 48);
    d.extend_from_slice(b"{\"type\":\"");
    d.extend_from_slice(delta_type.as_bytes());
    d.extend_from_slice(b"\",\"");
    d.extend_from_slice(field.as_bytes());
    d.extend_from_slice(b"\":");
    d.extend_from_slice(value);
    d.push(b'}');
    block_event("content_block_delta", index, Some(("delta", &d)))
}

fn json_str(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// The end of the next piece of `s` from `start`: a word with its leading whitespace,
/// at most `max` bytes (cut at a character boundary, never empty).
fn next_piece(s: &str, start: usize, max: usize, words: bool) -> usize {
    let mut in_word = false;
    for (i, c) in s[start..].char_indices() {
        let at = start + i;
        let ws = c.is_whitespace();
        if at > start && ((words && ws && in_word) || at - start >= max) {
            return at;
        }
        in_word = !ws;
    }
    s.len()
}

impl RenderBlock {
    /// The content block as `content_block_start` carries it.
    fn start(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match &self.kind {
            BlockKind::Text { citations, .. } => self.fields.write_with(&mut out, |k| match k {
                "text" => Some(Some("\"\"")),
                "citations" if !citations.is_empty() => Some(Some("[]")),
                _ => None,
            }),
            BlockKind::Thinking { .. } => self.fields.write_with(&mut out, |k| match k {
                "thinking" | "signature" => Some(Some("\"\"")),
                _ => None,
            }),
            BlockKind::Tool { .. } => self.fields.write_with(&mut out, |k| match k {
                "input" => Some(Some("{}")),
                _ => None,
            }),
            BlockKind::Whole => self.fields.write_with(&mut out, |_| None),
        }
        out
    }
}

impl Iterator for MessageEvents {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            let (ev, next) = self.step();
            self.state = next;
            if ev.is_some() || matches!(self.state, State::Done) {
                return ev;
            }
        }
    }
}

impl MessageEvents {
    fn after_block(&self, i: usize) -> State {
        if i + 1 < self.blocks.len() {
            State::BlockStart(i + 1)
        } else {
            State::MessageDelta
        }
    }

    /// One step of the state machine: maybe an event, and the next state.
    fn step(&self) -> (Option<Bytes>, State) {
        match self.state {
            State::Start => {
                let usage = self.usage.as_ref().map(|u| {
                    // The API reports a token or so of output at the start.
                    let out = u
                        .get("output_tokens")
                        .and_then(|v| v.get().parse::<u64>().ok())
                        .map_or(1, |n| n.min(1));
                    let mut buf = Vec::new();
                    let n = out.to_string();
                    u.write_with(&mut buf, |k| {
                        (k == "output_tokens").then_some(Some(n.as_str()))
                    });
                    String::from_utf8_lossy(&buf).into_owned()
                });
                let mut m = Vec::with_capacity(256);
                self.message.write_with(&mut m, |k| match k {
                    "content" => Some(Some("[]")),
                    "stop_reason" | "stop_sequence" => Some(Some("null")),
                    // Their values come with `message_delta`.
                    "stop_details" | "container" => Some(Some("null")),
                    "usage" => usage.as_deref().map(Some),
                    _ => None,
                });
                let mut d = Vec::with_capacity(m.len() + 40);
                d.extend_from_slice(b"{\"type\":\"message_start\",\"message\":");
                d.extend_from_slice(&m);
                d.push(b'}');
                let next = if self.blocks.is_empty() {
                    State::MessageDelta
                } else {
                    State::BlockStart(0)
                };
                (Some(event("message_start", &d)), next)
            }
            State::BlockStart(i) => {
                let b = &self.blocks[i];
                let ev = block_event(
                    "content_block_start",
                    i,
                    Some(("content_block", &b.start())),
                );
                let next = if i == 0 {
                    State::Ping(0)
                } else {
                    State::Deltas(i, 0, 0)
                };
                (Some(ev), next)
            }
            State::Ping(i) => (
                Some(event("ping", b"{\"type\":\"ping\"}")),
                State::Deltas(i, 0, 0),
            ),
            State::Deltas(i, step, at) => self.delta_step(i, step, at),
            State::Signature(i) => {
                let ev = match &self.blocks[i].kind {
                    BlockKind::Thinking {
                        signature: Some(s), ..
                    } => Some(delta(i, "signature_delta", "signature", &json_str(s))),
                    _ => None,
                };
                (ev, State::BlockStop(i))
            }
            State::BlockStop(i) => (
                Some(block_event("content_block_stop", i, None)),
                self.after_block(i),
            ),
            State::MessageDelta => {
                let mut d = Vec::with_capacity(160);
                d.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{");
                let mut first = true;
                for key in ["stop_reason", "stop_sequence", "stop_details", "container"] {
                    let v = self.message.get(key);
                    if v.is_none() && key != "stop_sequence" {
                        continue;
                    }
                    if !first {
                        d.push(b',');
                    }
                    first = false;
                    d.extend_from_slice(&json_str(key));
                    d.push(b':');
                    d.extend_from_slice(v.map_or("null", RawValue::get).as_bytes());
                }
                d.extend_from_slice(b"},\"usage\":");
                let mut u = Vec::with_capacity(96);
                match &self.usage {
                    Some(usage) => {
                        // The cumulative counters the API repeats at the end.
                        let keep = Fields(
                            usage
                                .0
                                .iter()
                                .filter(|(k, _)| {
                                    matches!(
                                        k.as_str(),
                                        "input_tokens"
                                            | "cache_creation_input_tokens"
                                            | "cache_read_input_tokens"
                                            | "output_tokens"
                                            | "server_tool_use"
                                            | "output_tokens_details"
                                    )
                                })
                                .cloned()
                                .collect(),
                        );
                        keep.write_with(&mut u, |_| None);
                    }
                    None => u.extend_from_slice(b"{\"output_tokens\":0}"),
                }
                d.extend_from_slice(&u);
                d.push(b'}');
                (Some(event("message_delta", &d)), State::MessageStop)
            }
            State::MessageStop => (
                Some(event("message_stop", b"{\"type\":\"message_stop\"}")),
                State::Done,
            ),
            State::Done => (None, State::Done),
        }
    }

    /// Deltas of block `i`: `step` 0 deals citations (index `at`), step 1 text pieces
    /// from byte `at`.
    fn delta_step(&self, i: usize, step: usize, at: usize) -> (Option<Bytes>, State) {
        let b = &self.blocks[i];
        match &b.kind {
            BlockKind::Text { text, citations } => {
                if step == 0 {
                    return match citations.get(at) {
                        Some(c) => (
                            Some(delta(i, "citations_delta", "citation", c.get().as_bytes())),
                            State::Deltas(i, 0, at + 1),
                        ),
                        None => (None, State::Deltas(i, 1, 0)),
                    };
                }
                if at >= text.len() {
                    return (None, State::BlockStop(i));
                }
                let end = next_piece(text, at, MAX_PIECE_BYTES, true);
                (
                    Some(delta(i, "text_delta", "text", &json_str(&text[at..end]))),
                    State::Deltas(i, 1, end),
                )
            }
            BlockKind::Thinking { thinking, .. } => {
                if at >= thinking.len() {
                    return (None, State::Signature(i));
                }
                let end = next_piece(thinking, at, MAX_PIECE_BYTES, true);
                (
                    Some(delta(
                        i,
                        "thinking_delta",
                        "thinking",
                        &json_str(&thinking[at..end]),
                    )),
                    State::Deltas(i, 1, end),
                )
            }
            BlockKind::Tool { input } => {
                if at >= input.len() {
                    return (None, State::BlockStop(i));
                }
                let end = next_piece(input, at, MAX_JSON_PIECE_BYTES, false);
                (
                    Some(delta(
                        i,
                        "input_json_delta",
                        "partial_json",
                        &json_str(&input[at..end]),
                    )),
                    State::Deltas(i, 1, end),
                )
            }
            BlockKind::Whole => (None, State::BlockStop(i)),
        }
    }
}
