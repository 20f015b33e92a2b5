//! A request's prompt as content blocks in the order the provider reads them, each with a
//! digest of the prompt up to its end and, where the provider accepts one, the place a
//! breakpoint can be put on it without splitting or rewriting the caller's text.
//!
//! OpenAI (GPT-5.6 and later) accepts `prompt_cache_breakpoint` on content parts of
//! non-assistant messages: `text`, `image_url`, `input_audio`, `file` in Chat
//! Completions; `input_text`, `input_image`, `input_file` in Responses. Tool definitions,
//! schemas and the Responses `instructions` field are blocks that cannot carry one. A
//! string `content` is one block that can, once written as a one-part array with the
//! same text (the only reshaping the proxy does; see `docs/provider-caching.md`).

use serde_json::{Map, Value};

use crate::key::canonical_value;
use crate::provider::rng::{fold, mix64};
use crate::route::Route;

/// Blocks looked at per request: a stable prefix deeper than this is still found up to
/// here, and the per-family memory stays bounded.
pub const MAX_BLOCKS: usize = 64;

/// Content-part types of Chat Completions that may carry a breakpoint.
pub const CHAT_PARTS: [&str; 4] = ["text", "image_url", "input_audio", "file"];
/// Content-part types of Responses that may carry a breakpoint.
pub const RESPONSES_PARTS: [&str; 3] = ["input_text", "input_image", "input_file"];

/// The array of items a block sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Chat Completions `messages`.
    Messages,
    /// Responses `input`.
    Input,
}

impl List {
    pub fn as_str(self) -> &'static str {
        match self {
            List::Messages => "messages",
            List::Input => "input",
        }
    }
}

/// Where a breakpoint goes: `list[item].content` (a string, made a one-part array) or
/// `list[item].content[part]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPath {
    pub list: List,
    pub item: usize,
    /// `None`: the content is a string.
    pub part: Option<usize>,
}

impl BlockPath {
    /// The type of the part a string content becomes.
    pub fn text_type(self) -> &'static str {
        match self.list {
            List::Messages => "text",
            List::Input => "input_text",
        }
    }
}

impl std::fmt::Display for BlockPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}].content", self.list.as_str(), self.item)?;
        if let Some(p) = self.part {
            write!(f, "[{p}]")?;
        }
        Ok(())
    }
}

/// What a block contributes to the prompt, for counting its tokens.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Text(&'a str),
    /// Described to the model as its JSON (tools, schemas, other parts).
    Json(&'a Value),
    /// A fixed number of tokens (images, framing).
    Tokens(u32),
}

/// One block of a prompt.
#[derive(Debug, Clone)]
pub struct Block<'a> {
    /// Identifies the prompt from its start to the end of this block.
    pub chain: u64,
    /// Where a breakpoint can sit at the end of this block, if anywhere.
    pub mark: Option<BlockPath>,
    /// Its content, and the message framing tokens that come with it.
    pub content: Content<'a>,
    pub framing: u32,
}

/// The blocks of a request, and what the caller already decided about breakpoints.
#[derive(Debug, Clone, Default)]
pub struct Blocks<'a> {
    pub blocks: Vec<Block<'a>>,
    /// The prompt had more than [`MAX_BLOCKS`] blocks (the rest are not listed).
    pub truncated: bool,
    /// Index of the last block of the latest non-assistant message: where OpenAI's
    /// implicit breakpoint sits (implicit mode).
    pub implicit_end: Option<usize>,
    /// The request carries an assistant turn or a tool result: a conversation that grew.
    pub continues: bool,
    /// The caller placed `prompt_cache_breakpoint` on some part.
    pub caller_breakpoints: bool,
    /// The caller set `prompt_cache_options.mode: "explicit"` (only its own breakpoints).
    pub caller_explicit_mode: bool,
    /// Index of the last block of the first user message.
    pub first_user_end: Option<usize>,
}

/// What the learner reads of a request's blocks, owned (replay keeps it per logged
/// request without the body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outline {
    pub chains: Vec<u64>,
    pub marks: Vec<Option<BlockPath>>,
    pub implicit_end: Option<usize>,
    pub continues: bool,
    pub caller_breakpoints: bool,
    pub caller_explicit_mode: bool,
    /// Identifies the conversation (see [`Blocks::first_user_end`]).
    pub conversation: Option<u64>,
}

impl Blocks<'_> {
    pub fn outline(&self) -> Outline {
        Outline {
            chains: self.blocks.iter().map(|b| b.chain).collect(),
            marks: self.blocks.iter().map(|b| b.mark).collect(),
            implicit_end: self.implicit_end,
            continues: self.continues,
            caller_breakpoints: self.caller_breakpoints,
            caller_explicit_mode: self.caller_explicit_mode,
            conversation: conversation_of(
                &self.blocks.iter().map(|b| b.chain).collect::<Vec<_>>(),
                self.first_user_end,
            ),
        }
    }
}

/// Identifies a request's conversation: the prompt up to the end of its first user
/// message (what `prompt_cache_key = "conversation"` is derived from), `None` without one.
fn conversation_of(chains: &[u64], first_user_end: Option<usize>) -> Option<u64> {
    first_user_end.and_then(|i| chains.get(i).copied())
}

fn digest(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("prefixcache breakpoint block v1");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

struct Builder<'a> {
    out: Blocks<'a>,
    chain: u64,
}

impl<'a> Builder<'a> {
    fn push(&mut self, d: u64, mark: Option<BlockPath>, content: Content<'a>, framing: u32) {
        if self.out.blocks.len() >= MAX_BLOCKS {
            self.out.truncated = true;
            return;
        }
        self.chain = mix64(fold(self.chain, d));
        self.out.blocks.push(Block {
            chain: self.chain,
            mark,
            content,
            framing,
        });
    }
}

/// The blocks of a Chat Completions or Responses request (empty for other routes).
pub fn request_blocks<'a>(route: Route, body: &'a Map<String, Value>) -> Blocks<'a> {
    let mut b = Builder {
        out: Blocks::default(),
        chain: 0x9E37_79B9_7F4A_7C15,
    };
    let options_explicit = body
        .get("prompt_cache_options")
        .and_then(|o| o.get("mode"))
        .and_then(Value::as_str)
        == Some("explicit");
    b.out.caller_explicit_mode = options_explicit;
    match route {
        Route::ChatCompletions => {
            head(&mut b, body, &["tools", "response_format"]);
            let items = body.get("messages").and_then(Value::as_array);
            for (i, m) in items.map_or(&[][..], Vec::as_slice).iter().enumerate() {
                message(&mut b, List::Messages, i, m);
            }
        }
        Route::Responses => {
            head(&mut b, body, &["tools", "text", "instructions"]);
            match body.get("input") {
                Some(Value::String(s)) => {
                    let d = digest(&[b"user", s.as_bytes()]);
                    b.push(d, None, Content::Text(s), 4);
                    b.out.implicit_end = b.out.blocks.len().checked_sub(1);
                    b.out.first_user_end = b.out.implicit_end;
                }
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        input_item(&mut b, i, item);
                    }
                }
                _ => {}
            }
        }
        Route::Completions | Route::Embeddings => {}
    }
    b.out
}

/// Everything before the messages that the model reads, as one block that cannot carry
/// a breakpoint.
fn head<'a>(b: &mut Builder<'a>, body: &'a Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if let Some(v) = body.get(*f).filter(|v| !v.is_null()) {
            let d = digest(&[f.as_bytes(), &canonical_value(v)]);
            let content = match v {
                Value::String(s) => Content::Text(s),
                other => Content::Json(other),
            };
            b.push(d, None, content, 4);
        }
    }
}

fn message<'a>(b: &mut Builder<'a>, list: List, item: usize, m: &'a Value) {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let markable = role != "assistant";
    if matches!(role, "assistant" | "tool" | "function") {
        b.out.continues = true;
    }
    let allowed: &[&str] = match list {
        List::Messages => &CHAT_PARTS,
        List::Input => &RESPONSES_PARTS,
    };
    // The message's other fields (name, tool calls, tool_call_id) as one digest, taken
    // into its first block; a change there changes everything after the message start.
    let mut rest = m.as_object().cloned().unwrap_or_default();
    rest.remove("content");
    let head = canonical_value(&Value::Object(rest));
    let mut first = true;
    let push = |b: &mut Builder<'a>, first: &mut bool, bytes: &[u8], mark, content| {
        let d = if *first {
            digest(&[&head, bytes])
        } else {
            digest(&[bytes])
        };
        let framing = if *first { 4 } else { 0 };
        *first = false;
        b.push(d, mark, content, framing);
    };
    match m.get("content") {
        Some(Value::String(s)) => {
            let mark = markable.then_some(BlockPath {
                list,
                item,
                part: None,
            });
            push(b, &mut first, s.as_bytes(), mark, Content::Text(s));
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if p.get("prompt_cache_breakpoint").is_some() {
                    b.out.caller_breakpoints = true;
                }
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                let mark = (markable && allowed.contains(&kind)).then_some(BlockPath {
                    list,
                    item,
                    part: Some(j),
                });
                let content = match p.get("text").and_then(Value::as_str) {
                    Some(t) => Content::Text(t),
                    None if kind.contains("image") => Content::Tokens(85),
                    None => Content::Json(p),
                };
                // The marker itself is not part of the prompt, and a plain text part
                // reads as the same tokens as a string content.
                let plain = p.as_object().is_some_and(|o| {
                    o.keys()
                        .all(|k| matches!(k.as_str(), "type" | "text" | "prompt_cache_breakpoint"))
                });
                match (plain, p.get("text").and_then(Value::as_str)) {
                    (true, Some(t)) => push(b, &mut first, t.as_bytes(), mark, content),
                    _ => {
                        let mut bare = p.as_object().cloned().unwrap_or_default();
                        bare.remove("prompt_cache_breakpoint");
                        let bytes = canonical_value(&Value::Object(bare));
                        push(b, &mut first, &bytes, mark, content);
                    }
                }
            }
        }
        _ => {}
    }
    if first {
        // No content (an assistant turn of tool calls): the message is one block.
        push(b, &mut first, b"", None, Content::Json(m));
    }
    if markable {
        b.out.implicit_end = b.out.blocks.len().checked_sub(1);
    }
    if role == "user" && b.out.first_user_end.is_none() {
        b.out.first_user_end = b.out.blocks.len().checked_sub(1);
    }
}

fn input_item<'a>(b: &mut Builder<'a>, i: usize, item: &'a Value) {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => message(b, List::Input, i, item),
        // Reasoning items of earlier turns are not read again by the model.
        "reasoning" => {}
        other => {
            // A tool call, its output, or another item: one block, no breakpoint (an
            // output's parts can carry one, but a tool's result is the changing tail).
            b.out.continues = true;
            if let Some(parts) = item.get("output").and_then(Value::as_array)
                && parts
                    .iter()
                    .any(|p| p.get("prompt_cache_breakpoint").is_some())
            {
                b.out.caller_breakpoints = true;
            }
            let d = digest(&[other.as_bytes(), &canonical_value(item)]);
            b.push(d, None, Content::Json(item), 4);
            if other == "function_call_output" {
                b.out.implicit_end = b.out.blocks.len().checked_sub(1);
            }
        }
    }
}

/// The body with a breakpoint placed at `path` (the parsed twin of the byte splice in
/// `wire::plan_splices`; replay and tests use it). `false` when the path names nothing
/// that can carry one.
pub fn place_in_body(body: &mut Map<String, Value>, path: BlockPath) -> bool {
    let Some(Value::Array(items)) = body.get_mut(path.list.as_str()) else {
        return false;
    };
    let Some(content) = items
        .get_mut(path.item)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.get_mut("content"))
    else {
        return false;
    };
    let marker = serde_json::json!({"mode": "explicit"});
    match (path.part, &mut *content) {
        (None, Value::String(s)) => {
            let text = std::mem::take(s);
            *content = serde_json::json!([{
                "type": path.text_type(), "text": text, "prompt_cache_breakpoint": marker
            }]);
            true
        }
        (Some(j), Value::Array(parts)) => match parts.get_mut(j).and_then(Value::as_object_mut) {
            Some(p) => {
                p.insert("prompt_cache_breakpoint".into(), marker);
                true
            }
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blocks(route: Route, v: &Value) -> Vec<(u64, Option<String>)> {
        request_blocks(route, v.as_object().unwrap())
            .blocks
            .iter()
            .map(|b| (b.chain, b.mark.map(|m| m.to_string())))
            .collect()
    }

    #[test]
    fn chat_blocks_and_where_they_can_be_marked() {
        let body = json!({"tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [
            {"role": "system", "content": "rules"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}, {"type": "refusal", "refusal": "r"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "42"}
        ]});
        let b = request_blocks(Route::ChatCompletions, body.as_object().unwrap());
        let marks: Vec<Option<String>> = b
            .blocks
            .iter()
            .map(|b| b.mark.map(|m| m.to_string()))
            .collect();
        assert_eq!(
            marks,
            vec![
                None,
                Some("messages[0].content".into()),
                Some("messages[1].content[0]".into()),
                Some("messages[1].content[1]".into()),
                None,
                None,
                None,
                Some("messages[4].content".into()),
            ]
        );
        assert_eq!(b.implicit_end, Some(7));
        assert!(b.continues && !b.caller_breakpoints && !b.caller_explicit_mode);
    }

    #[test]
    fn chains_follow_the_prefix_and_ignore_markers() {
        let a = json!({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q1"}]});
        let b = json!({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q2"}]});
        let c = json!({"messages": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q1"}]});
        let (ba, bb, bc) = (
            blocks(Route::ChatCompletions, &a),
            blocks(Route::ChatCompletions, &b),
            blocks(Route::ChatCompletions, &c),
        );
        assert_eq!(ba[0].0, bb[0].0);
        assert_ne!(ba[1].0, bb[1].0);
        assert_ne!(ba[0].0, bc[0].0, "the role is part of the block");
        // A caller's marker (or ours) does not change the chain.
        let mut marked = a.as_object().unwrap().clone();
        assert!(place_in_body(
            &mut marked,
            BlockPath {
                list: List::Messages,
                item: 0,
                part: None
            }
        ));
        let m = request_blocks(Route::ChatCompletions, &marked);
        assert_eq!(
            m.blocks[0].chain, ba[0].0,
            "a one-part array reads as its string"
        );
        assert!(m.caller_breakpoints);
    }

    #[test]
    fn responses_blocks() {
        let body = json!({"instructions": "be kind", "prompt_cache_options": {"mode": "explicit"}, "input": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "x"},
            {"type": "function_call_output", "call_id": "x", "output": "ok"},
            {"type": "reasoning", "summary": []}
        ]});
        let b = request_blocks(Route::Responses, body.as_object().unwrap());
        let marks: Vec<Option<String>> = b
            .blocks
            .iter()
            .map(|b| b.mark.map(|m| m.to_string()))
            .collect();
        assert_eq!(
            marks,
            vec![
                None,
                Some("input[0].content".into()),
                Some("input[1].content[0]".into()),
                None,
                None
            ]
        );
        assert_eq!(b.implicit_end, Some(4));
        assert!(b.caller_explicit_mode && b.continues);
        assert!(
            request_blocks(Route::Embeddings, body.as_object().unwrap())
                .blocks
                .is_empty()
        );
    }
}
