//! The prompt a Messages request renders to, as the prompt cache sees it: blocks in the
//! order tools → system → messages, each ending a prefix with its own identity and token
//! count, and the `cache_control` markers on them, validated as the API does.
//!
//! **Token counts are estimated.** Claude's tokenizer is not public; the simulation
//! counts text with `o200k_base` (a real, deterministic BPE of similar granularity) plus
//! fixed framing: 1 token opening the system prompt, per message 2 (its start and role)
//! and 1 closing it, per tool 1 plus its definition's JSON, and 2 priming the reply. An
//! image counts [`IMAGE_TOKENS`], whatever its size (the mock does not decode it); other
//! non-text blocks count the tokens of their JSON. Thinking blocks of earlier turns count
//! nothing: the API strips them from the prompt. What is exact is the structure: which
//! block a breakpoint ends, and that a prefix matches only if everything before it is
//! identical.

use serde_json::{Map, Value};

use crate::provider::rng::{fold, mix64};
use crate::tokenizer::Encoding;

/// Tokens an image block costs in the estimate: about what Anthropic documents for an
/// image at the largest size it keeps without resizing (its formula is width × height /
/// 750, capped near 1,600).
pub const IMAGE_TOKENS: u64 = 1600;
/// Breakpoints a request may carry, the automatic one included.
pub const MAX_BREAKPOINTS: usize = 4;

/// Pseudo-token ids for framing: above every vocabulary, as in the OpenAI prompts.
const SYSTEM: u32 = 0xFFFF_FE00;
const START: u32 = 0xFFFF_FE01;
const END: u32 = 0xFFFF_FE02;
const TOOL: u32 = 0xFFFF_FE03;
const MESSAGES: u32 = 0xFFFF_FE04;
const IMAGE: u32 = 0xFFFF_FE05;

/// The lifetime of a cache entry (`cache_control.ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CacheTtl {
    /// `"5m"`, the default: writes cost 1.25x input.
    Min5,
    /// `"1h"`: writes cost 2x input.
    Hour1,
}

impl CacheTtl {
    pub fn parse(s: &str) -> Option<CacheTtl> {
        match s {
            "5m" => Some(CacheTtl::Min5),
            "1h" => Some(CacheTtl::Hour1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::Min5 => "5m",
            CacheTtl::Hour1 => "1h",
        }
    }

    pub fn millis(self) -> u64 {
        match self {
            CacheTtl::Min5 => 5 * 60_000,
            CacheTtl::Hour1 => 3_600_000,
        }
    }
}

/// One block of the prompt: the prefix that ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Tokens from the start of the prompt to the end of this block.
    pub tokens: u64,
    /// Identifies that prefix (the model and every token before it included).
    pub id: u64,
}

/// A cache breakpoint: the block it ends and the lifetime it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakpoint {
    pub block: usize,
    pub ttl: CacheTtl,
}

/// What the cache needs of a Messages request, computed once per distinct request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesPrompt {
    /// The estimated `input_tokens` with nothing cached.
    pub tokens: u64,
    /// Every block, in prompt order.
    pub blocks: Vec<Block>,
    /// The breakpoints, in prompt order, at most [`MAX_BREAKPOINTS`].
    pub breakpoints: Vec<Breakpoint>,
    /// The model's minimum cacheable prefix.
    pub min_tokens: u64,
}

/// A request the API would refuse with 400 `invalid_request_error`. `message` is the
/// API's message, with the path of the offending field where the API names one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PromptError {
    pub message: String,
}

fn err(message: impl Into<String>) -> PromptError {
    PromptError {
        message: message.into(),
    }
}

/// A block being laid out, before its identity is known.
struct Builder {
    enc: Encoding,
    h: u64,
    tokens: u64,
    blocks: Vec<Block>,
    /// Per block: the marker it carries (explicit), and whether it may carry one.
    marks: Vec<(Option<CacheTtl>, bool, String)>,
}

impl Builder {
    fn push_ids(&mut self, ids: impl IntoIterator<Item = u32>) {
        for t in ids {
            self.h = fold(self.h, u64::from(t));
            self.tokens += 1;
        }
    }

    fn text(&mut self, s: &str) {
        let ids = self.enc.encode(s);
        self.push_ids(ids);
    }

    fn json(&mut self, v: &Value) {
        self.text(&serde_json::to_string(v).unwrap_or_default());
    }

    fn end_block(&mut self, mark: Option<CacheTtl>, markable: bool, path: String) {
        self.blocks.push(Block {
            tokens: self.tokens,
            id: mix64(self.h ^ self.tokens.rotate_left(32) ^ 0xA17B_10C4_E5D0_0001),
        });
        self.marks.push((mark, markable, path));
    }
}

/// Reads a block's `cache_control` (`{"type": "ephemeral", "ttl"?: "5m" | "1h"}`).
fn cache_control(v: Option<&Value>, path: &str) -> Result<Option<CacheTtl>, PromptError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(o) = v.as_object() else {
        return Err(err(format!(
            "{path}.cache_control: Input should be an object"
        )));
    };
    if o.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(err(format!(
            "{path}.cache_control.type: Input should be 'ephemeral'"
        )));
    }
    if let Some(k) = o.keys().find(|k| *k != "type" && *k != "ttl") {
        return Err(err(format!(
            "{path}.cache_control.{k}: Extra inputs are not permitted"
        )));
    }
    match o.get("ttl") {
        None | Some(Value::Null) => Ok(Some(CacheTtl::Min5)),
        Some(t) => t
            .as_str()
            .and_then(CacheTtl::parse)
            .map(Some)
            .ok_or_else(|| {
                err(format!(
                    "{path}.cache_control.ttl: Input should be '5m' or '1h'"
                ))
            }),
    }
}

/// The API's text for a marker on a block that cannot carry one, or `None` if it may.
fn unmarkable(block: &Map<String, Value>, path: &str) -> Option<String> {
    match block.get("type").and_then(Value::as_str) {
        Some(t @ ("thinking" | "redacted_thinking")) => Some(format!(
            "{path}.{t}.cache_control: Extra inputs are not permitted"
        )),
        Some("text") if block.get("text").and_then(Value::as_str) == Some("") => Some(format!(
            "{path}.text: cache_control cannot be set for empty text blocks"
        )),
        _ => None,
    }
}

/// What in a request invalidates the cached messages (but not tools and system):
/// `tool_choice`, the thinking settings, and whether any image is present.
fn messages_salt(body: &Map<String, Value>) -> u64 {
    let has_image = body
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|ms| {
            ms.iter().any(|m| {
                m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(is_image))
            })
        });
    let mut h = 0x5A17_u64;
    for key in ["tool_choice", "thinking"] {
        let s = body
            .get(key)
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .unwrap_or_default();
        let d = blake3::hash(s.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_bytes()[..8]);
        h = fold(h, u64::from_le_bytes(b));
    }
    fold(h, u64::from(has_image))
}

fn is_image(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("image")
        || block
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(is_image))
}

/// The block's content without its `cache_control` (markers never change what the
/// model reads).
fn without_marker(block: &Map<String, Value>) -> Value {
    let mut b = block.clone();
    b.remove("cache_control");
    Value::Object(b)
}

/// Lays out one content block.
fn content_block(b: &mut Builder, block: &Map<String, Value>) {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => b.text(block.get("text").and_then(Value::as_str).unwrap_or("")),
        Some("image") => {
            let src = serde_json::to_string(&block.get("source")).unwrap_or_default();
            let d = blake3::hash(src.as_bytes());
            let mut h = [0u8; 4];
            h.copy_from_slice(&d.as_bytes()[..4]);
            // The first token carries the image's identity, so another image differs.
            b.push_ids([0x8000_0000 | (u32::from_le_bytes(h) & 0x7FFF_FFFF)]);
            b.push_ids(std::iter::repeat_n(IMAGE, IMAGE_TOKENS as usize - 1));
        }
        // Stripped from the prompt by the API (earlier turns' reasoning).
        Some("thinking" | "redacted_thinking") => {}
        _ => b.json(&without_marker(block)),
    }
}

/// The prompt of a Messages request body, estimated (see the module docs), with its
/// breakpoints; `seed` is the simulation's domain. Fails as the API would on a request whose markers it refuses: a marker on a
/// thinking block or an empty text block, a malformed `cache_control`, more than
/// [`MAX_BREAKPOINTS`] (the automatic one counted), or a 1-hour marker after a 5-minute
/// one. The body is otherwise taken as valid: fields of the wrong shape count nothing.
pub fn messages_prompt(
    body: &Map<String, Value>,
    model: &str,
    enc: Encoding,
    seed: u64,
) -> Result<MessagesPrompt, PromptError> {
    let model_hash = {
        let d = blake3::hash(model.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_bytes()[..8]);
        u64::from_le_bytes(b)
    };
    let mut b = Builder {
        enc,
        h: fold(seed ^ 0xC1A0_DE00_0000_0001, model_hash),
        tokens: 0,
        blocks: Vec::new(),
        marks: Vec::new(),
    };
    // Tools first.
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        for (i, t) in tools.iter().enumerate() {
            let path = format!("tools.{i}");
            let Some(t) = t.as_object() else { continue };
            let mark = cache_control(t.get("cache_control"), &path)?;
            b.push_ids([TOOL]);
            b.json(&without_marker(t));
            b.end_block(mark, true, path);
        }
    }
    // Then the system prompt.
    match body.get("system") {
        Some(Value::String(s)) if !s.is_empty() => {
            b.push_ids([SYSTEM]);
            b.text(s);
            // A plain string is one block but carries no marker of its own.
            b.end_block(None, true, "system".into());
        }
        Some(Value::Array(blocks)) if !blocks.is_empty() => {
            b.push_ids([SYSTEM]);
            for (i, s) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                let Some(s) = s.as_object() else { continue };
                let mark = cache_control(s.get("cache_control"), &path)?;
                if let (Some(_), Some(e)) = (mark, unmarkable(s, &path)) {
                    return Err(err(e));
                }
                b.text(s.get("text").and_then(Value::as_str).unwrap_or(""));
                b.end_block(mark, unmarkable(s, &path).is_none(), path);
            }
        }
        _ => {}
    }
    // Then the messages, behind what invalidates only them.
    b.push_ids([MESSAGES]);
    b.h = fold(b.h, messages_salt(body));
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            b.push_ids([START]);
            b.text(role);
            match m.get("content") {
                Some(Value::String(s)) => {
                    b.text(s);
                    b.end_block(None, !s.is_empty(), format!("messages.{i}.content"));
                }
                Some(Value::Array(blocks)) => {
                    for (j, c) in blocks.iter().enumerate() {
                        let path = format!("messages.{i}.content.{j}");
                        let Some(c) = c.as_object() else { continue };
                        let mark = cache_control(c.get("cache_control"), &path)?;
                        let bad = unmarkable(c, &path);
                        if let (Some(_), Some(e)) = (mark, &bad) {
                            return Err(err(e.clone()));
                        }
                        content_block(&mut b, c);
                        b.end_block(mark, bad.is_none(), path);
                    }
                }
                _ => {}
            }
            b.push_ids([END]);
        }
    }
    b.push_ids([START]);
    b.text("assistant");

    // Breakpoints: the explicit markers, and the automatic one on the last block that
    // may carry a marker.
    let explicit = b.marks.iter().filter(|m| m.0.is_some()).count();
    let automatic = cache_control(body.get("cache_control"), "cache_control").map_err(|e| {
        err(e
            .message
            .replacen("cache_control.cache_control", "cache_control", 1))
    })?;
    let total = explicit + usize::from(automatic.is_some());
    if total > MAX_BREAKPOINTS {
        return Err(err(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {total}."
        )));
    }
    let mut breakpoints: Vec<Breakpoint> = b
        .marks
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.0.map(|ttl| Breakpoint { block: i, ttl }))
        .collect();
    if let Some(ttl) = automatic
        && let Some(last) = b.marks.iter().rposition(|m| m.1)
    {
        // On a block that already has a marker, the two are one breakpoint.
        if !breakpoints.iter().any(|bp| bp.block == last) {
            breakpoints.push(Breakpoint { block: last, ttl });
            breakpoints.sort_by_key(|bp| bp.block);
        }
    }
    // Longer lifetimes first: a 1-hour marker may not follow a 5-minute one.
    let mut seen_short = false;
    for bp in &breakpoints {
        match bp.ttl {
            CacheTtl::Min5 => seen_short = true,
            CacheTtl::Hour1 if seen_short => {
                let path = &b.marks[bp.block].2;
                return Err(err(format!(
                    "{path}.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`."
                )));
            }
            CacheTtl::Hour1 => {}
        }
    }
    Ok(MessagesPrompt {
        tokens: b.tokens,
        blocks: b.blocks,
        breakpoints,
        min_tokens: super::min_cacheable_tokens(model),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(body: Value) -> Result<MessagesPrompt, PromptError> {
        messages_prompt(
            body.as_object().unwrap(),
            "claude-opus-5",
            Encoding::O200kBase,
            7,
        )
    }

    fn count(s: &str) -> u64 {
        Encoding::O200kBase.count(s) as u64
    }

    #[test]
    fn blocks_follow_tools_system_messages_with_their_framing() {
        let tool = json!({"name": "get_weather", "description": "Weather.",
            "input_schema": {"type": "object"}});
        let p = prompt(json!({"model": "claude-opus-5", "max_tokens": 10,
            "tools": [tool],
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [{"role": "user", "content": "Hi there"}]}))
        .unwrap();
        // Counted by hand from the framing rules: tool 1 + JSON; system 1 + text;
        // messages marker 1; message start 1 + role + content + end 1; reply 1 + role.
        let tool_json = count(&serde_json::to_string(&tool).unwrap());
        let t1 = 1 + tool_json;
        let t2 = t1 + 1 + count("You are terse.");
        let t3 = t2 + 1 + 1 + count("user") + count("Hi there");
        let total = t3 + 1 + 1 + count("assistant");
        assert_eq!(
            p.blocks.iter().map(|b| b.tokens).collect::<Vec<_>>(),
            [t1, t2, t3]
        );
        assert_eq!(p.tokens, total);
        assert!(p.breakpoints.is_empty());
        assert_eq!(p.min_tokens, 512);
    }

    #[test]
    fn a_later_turn_keeps_the_earlier_blocks_identities() {
        let turn1 = json!({"system": "S", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "first question"}]}]});
        let turn2 = json!({"system": "S", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "first question"}]},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second"}]});
        let (a, b) = (prompt(turn1).unwrap(), prompt(turn2).unwrap());
        assert_eq!(a.blocks, b.blocks[..2]);
        // A change in the system prompt changes every identity after it.
        let other = prompt(
            json!({"system": "T", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "first question"}]}]}),
        )
        .unwrap();
        assert!(
            other
                .blocks
                .iter()
                .zip(&a.blocks)
                .all(|(x, y)| x.id != y.id)
        );
        // tool_choice or thinking change the messages' identities, not the system's.
        let thinking = prompt(json!({"system": "S", "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "first question"}]}]}))
        .unwrap();
        assert_eq!(thinking.blocks[0], a.blocks[0]);
        assert_ne!(thinking.blocks[1].id, a.blocks[1].id);
        assert_eq!(thinking.blocks[1].tokens, a.blocks[1].tokens);
    }

    #[test]
    fn markers_and_the_automatic_breakpoint() {
        let p = prompt(json!({"cache_control": {"type": "ephemeral"},
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "q"},
                {"type": "text", "text": "r", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}]}))
        .unwrap();
        // system.0 (1h), messages.0.content.1 (5m, explicit, also the last markable
        // block: the thinking block cannot carry the automatic one).
        assert_eq!(
            p.breakpoints,
            [
                Breakpoint {
                    block: 0,
                    ttl: CacheTtl::Hour1
                },
                Breakpoint {
                    block: 2,
                    ttl: CacheTtl::Min5
                }
            ]
        );
        // Thinking blocks of earlier turns count nothing: only the framing between.
        assert_eq!(
            p.blocks[3].tokens,
            p.blocks[2].tokens + 1 + 1 + count("assistant")
        );
    }

    #[test]
    fn the_api_refuses_what_it_refuses() {
        let m = |extra: Value| json!({"type": "text", "text": "x", "cache_control": extra});
        let four: Vec<Value> = (0..4).map(|_| m(json!({"type": "ephemeral"}))).collect();
        let e = prompt(json!({"cache_control": {"type": "ephemeral"},
            "messages": [{"role": "user", "content": four}]}))
        .unwrap_err();
        assert_eq!(
            e.message,
            "A maximum of 4 blocks with cache_control may be provided. Found 5."
        );
        let e = prompt(json!({"messages": [{"role": "user", "content": [
            m(json!({"type": "ephemeral"})), m(json!({"type": "ephemeral", "ttl": "1h"}))]}]}))
        .unwrap_err();
        assert!(
            e.message.starts_with("messages.0.content.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block."),
            "{}",
            e.message
        );
        let e = prompt(json!({"messages": [{"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s", "cache_control": {"type": "ephemeral"}}]}]}))
        .unwrap_err();
        assert_eq!(
            e.message,
            "messages.0.content.0.thinking.cache_control: Extra inputs are not permitted"
        );
        let e = prompt(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}]}]}))
        .unwrap_err();
        assert_eq!(
            e.message,
            "messages.0.content.0.text: cache_control cannot be set for empty text blocks"
        );
        let e = prompt(json!({"tools": [{"name": "t", "input_schema": {},
            "cache_control": {"type": "ephemeral", "ttl": "2h"}}], "messages": []}))
        .unwrap_err();
        assert_eq!(
            e.message,
            "tools.0.cache_control.ttl: Input should be '5m' or '1h'"
        );
        let e =
            prompt(json!({"cache_control": {"type": "persistent"}, "messages": []})).unwrap_err();
        assert_eq!(e.message, "cache_control.type: Input should be 'ephemeral'");
        // Four explicit markers are fine; 1h before 5m is fine.
        let ok = prompt(json!({"system": [{"type": "text", "text": "s",
            "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": [
                m(json!({"type": "ephemeral"})), m(json!({"type": "ephemeral"})),
                m(json!({"type": "ephemeral", "ttl": "5m"}))]}]}))
        .unwrap();
        assert_eq!(ok.breakpoints.len(), 4);
    }

    #[test]
    fn images_count_a_fixed_estimate_and_differ_by_source() {
        let img = |data: &str| {
            json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}]})
        };
        let (a, b) = (prompt(img("AAAA")).unwrap(), prompt(img("BBBB")).unwrap());
        let before = 1 + 1 + count("user");
        assert_eq!(a.blocks[0].tokens, before + IMAGE_TOKENS);
        assert_ne!(a.blocks[0].id, b.blocks[0].id);
    }
}
