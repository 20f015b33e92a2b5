//! The prompt as the provider sees it: a token sequence (tools and schemas first, then
//! the messages in their chat framing) whose length is the `prompt_tokens` OpenAI reports,
//! and whose 128-token blocks the prompt-cache simulation ([`super::cache`]) hashes.
//!
//! Counting follows OpenAI's published recipes (the cookbook's `num_tokens_from_messages`
//! and `num_tokens_for_tools`), realised as an actual sequence so count and cache agree:
//! each message is `<start> role [<name> name] <message> content <end>` (3 framing tokens,
//! +1 with a name), the reply is primed with `<start> assistant <message>` (3 tokens),
//! and a later turn's prompt therefore starts with the earlier turn's whole prompt,
//! exactly as the real template behaves. Framing tokens are pseudo-ids above every
//! vocabulary, so they never collide with text. The approximations (tools, images,
//! structured-output schemas, Responses input items) are listed in `docs/mock-upstream.md`.
//!
//! [`request_prompts`] builds the sequences of a request body; it is lenient (a missing
//! field contributes nothing) because the mock validates bodies before and the offline
//! tools read whatever was logged. [`request_prompt_seqs`] also returns where the
//! cache breakpoints of the GPT-5.6 rules can sit ([`Mark`]): after a content part that
//! carries `prompt_cache_breakpoint`, and at the end of every message.

use serde_json::{Map, Value};

use super::rng::{fold, mix64};
use crate::key::canonical_value;
use crate::route::Route;
use crate::tokenizer::Encoding;

const START: u32 = 0xFFFF_FF00;
const MESSAGE: u32 = 0xFFFF_FF01;
const END: u32 = 0xFFFF_FF02;
const NAME: u32 = 0xFFFF_FF03;
const TOOLS: u32 = 0xFFFF_FF04;
const IMAGE: u32 = 0xFFFF_FF05;
/// Pseudo-ids carrying a hash (of an image or a whole tool definition) have this bit set:
/// vocabularies end far below it.
const HASHED: u32 = 0x8000_0000;

/// Tokens an image costs: the documented low-detail price, used for every detail level
/// because the mock does not fetch images to learn their size.
pub const IMAGE_TOKENS: usize = 85;

/// Encodes the text parts of a prompt. The default encodes every text; an offline tool
/// replaying millions of requests that share a long system prompt memoizes (each text
/// is encoded on its own in the sequence, so a memo by text is exact).
pub trait TextEncoder {
    /// Appends the tokens of `text` (as `enc.encode(text)`) to `out`.
    fn encode_into(&mut self, enc: Encoding, text: &str, out: &mut Vec<u32>);
}

/// A place in a prompt where a cache breakpoint can sit: after `pos` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub pos: u64,
    pub kind: MarkKind,
}

/// What ends at a [`Mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A content part carrying `prompt_cache_breakpoint: {"mode": "explicit"}`, with its
    /// own `ttl` if it names one (else the request's `prompt_cache_options.ttl`).
    Explicit(Option<CacheTtl>),
    /// The end of a message. `eligible`: not an assistant message, so OpenAI's implicit
    /// breakpoint ("near the latest user or tool message") may sit here.
    MessageEnd { eligible: bool },
}

/// The minimum lifetime of a GPT-5.6 cache breakpoint (`prompt_cache_options.ttl`,
/// `prompt_cache_breakpoint.ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CacheTtl {
    /// `"30m"`: the default, and the only value Chat Completions accepts per request.
    Min30,
    /// `"12h"`: Responses only; writes cost 2.5x input instead of 1.25x.
    Hour12,
}

impl CacheTtl {
    pub fn parse(s: &str) -> Option<CacheTtl> {
        match s {
            "30m" => Some(CacheTtl::Min30),
            "12h" => Some(CacheTtl::Hour12),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::Min30 => "30m",
            CacheTtl::Hour12 => "12h",
        }
    }

    pub fn millis(self) -> u64 {
        match self {
            CacheTtl::Min30 => 30 * 60_000,
            CacheTtl::Hour12 => 12 * 3_600_000,
        }
    }
}

/// A prompt's token sequence with its breakpoint marks, in order of position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptSeq {
    pub tokens: Vec<u32>,
    pub marks: Vec<Mark>,
    /// Where each message content block ends: (item index in `messages` / `input`,
    /// part index or `None` for a string content, tokens before its end). A breakpoint
    /// placed on that block sits there (`breakpoint::BlockPath`).
    pub units: Vec<ContentUnit>,
}

/// The end of one content block of a message (see [`PromptSeq::units`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentUnit {
    pub item: usize,
    pub part: Option<usize>,
    pub pos: u64,
}

/// Builds a prompt token sequence.
pub struct PromptBuilder<'a> {
    enc: Encoding,
    tokens: Vec<u32>,
    marks: Vec<Mark>,
    units: Vec<ContentUnit>,
    /// The message being built (its index in `messages` / `input`).
    item: Option<usize>,
    encoder: Option<&'a mut dyn TextEncoder>,
}

impl std::fmt::Debug for PromptBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptBuilder")
            .field("enc", &self.enc)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The function-calling overheads of the cookbook's `num_tokens_for_tools` for an encoding.
struct ToolOverheads {
    func_init: usize,
    prop_init: usize,
    prop_key: usize,
    enum_init: isize,
    enum_item: usize,
    func_end: usize,
}

impl<'a> PromptBuilder<'a> {
    pub fn new(enc: Encoding) -> PromptBuilder<'static> {
        PromptBuilder {
            enc,
            tokens: Vec::new(),
            marks: Vec::new(),
            units: Vec::new(),
            item: None,
            encoder: None,
        }
    }

    /// A builder whose texts go through `encoder` (a memo, say).
    pub fn with_encoder(enc: Encoding, encoder: &'a mut dyn TextEncoder) -> PromptBuilder<'a> {
        PromptBuilder {
            enc,
            tokens: Vec::new(),
            marks: Vec::new(),
            units: Vec::new(),
            item: None,
            encoder: Some(encoder),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.enc
    }

    /// Appends the tokens of `text`.
    pub fn text(&mut self, text: &str) {
        match self.encoder.as_deref_mut() {
            Some(e) => e.encode_into(self.enc, text, &mut self.tokens),
            None => self.tokens.extend(self.enc.encode(text)),
        }
    }

    /// Appends token ids as given (legacy completions accept token arrays).
    pub fn ids(&mut self, ids: impl IntoIterator<Item = u32>) {
        self.tokens.extend(ids);
    }

    fn marks(&mut self, mark: u32, n: usize) {
        self.tokens.extend(std::iter::repeat_n(mark, n));
    }

    fn hashed(&mut self, h: u64) {
        self.tokens.push(HASHED | (h as u32 & !HASHED));
    }

    fn hashed_str(&mut self, s: &str) -> u64 {
        let h = blake3::hash(s.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b)
    }

    /// An image part: [`IMAGE_TOKENS`] tokens, the first carrying a hash of its URL/data.
    pub fn image(&mut self, url: &str) {
        let h = self.hashed_str(url);
        self.hashed(h);
        self.marks(IMAGE, IMAGE_TOKENS - 1);
    }

    /// Opens a message: `<start> role [<name> name] <message>`.
    pub fn open(&mut self, role: &str, name: Option<&str>) {
        self.tokens.push(START);
        self.text(role);
        if let Some(name) = name {
            self.tokens.push(NAME);
            self.text(name);
        }
        self.tokens.push(MESSAGE);
    }

    pub fn close(&mut self) {
        self.tokens.push(END);
    }

    /// Closes a message and marks its end (see [`MarkKind::MessageEnd`]).
    pub fn close_message(&mut self, role: &str) {
        self.close();
        self.mark(MarkKind::MessageEnd {
            eligible: role != "assistant",
        });
    }

    /// Says which message (by index) the next content belongs to.
    pub fn item(&mut self, item: Option<usize>) {
        self.item = item;
    }

    /// Records the end of a content block of the current message.
    fn unit(&mut self, part: Option<usize>) {
        if let Some(item) = self.item {
            self.units.push(ContentUnit {
                item,
                part,
                pos: self.tokens.len() as u64,
            });
        }
    }

    /// Marks the current position.
    pub fn mark(&mut self, kind: MarkKind) {
        self.marks.push(Mark {
            pos: self.tokens.len() as u64,
            kind,
        });
    }

    /// A tool call inside an assistant message: `<start> name <message> arguments <end>`
    /// (3 framing tokens, as the mock charges for the calls it makes).
    pub fn tool_call(&mut self, name: &str, arguments: &str) {
        self.tokens.push(START);
        self.text(name);
        self.tokens.push(MESSAGE);
        self.text(arguments);
        self.tokens.push(END);
    }

    /// The reply priming every chat prompt ends with: `<start> assistant <message>`.
    pub fn prime_reply(&mut self) {
        self.tokens.push(START);
        self.tokens.push(self.assistant_token());
        self.tokens.push(MESSAGE);
    }

    fn assistant_token(&self) -> u32 {
        // "assistant" is one token in both encodings; encoding it keeps the priming equal
        // to the head of a later assistant message.
        self.enc
            .encode("assistant")
            .first()
            .copied()
            .unwrap_or(START)
    }

    /// A function tool, counted as `num_tokens_for_tools` counts it. The first framing
    /// token carries a hash of the whole definition: the recipe reads only top-level
    /// properties, but the provider sees (and caches) the full schema, so any change must
    /// change the sequence.
    pub fn function_tool(&mut self, name: &str, description: &str, parameters: Option<&Value>) {
        let o = self.overheads();
        let mut def = String::new();
        def.push_str(name);
        def.push('\0');
        def.push_str(description);
        if let Some(p) = parameters {
            def.push('\0');
            def.push_str(&String::from_utf8_lossy(&canonical_value(p)));
        }
        let h = self.hashed_str(&def);
        self.hashed(h);
        self.marks(TOOLS, o.func_init.saturating_sub(1));
        self.text(&format!(
            "{name}:{}",
            description.strip_suffix('.').unwrap_or(description)
        ));
        let props = parameters
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        if let Some(props) = props.filter(|p| !p.is_empty()) {
            self.marks(TOOLS, o.prop_init);
            for (key, prop) in props {
                self.marks(TOOLS, o.prop_key);
                if let Some(items) = prop.get("enum").and_then(Value::as_array) {
                    let framing = o.enum_init + (o.enum_item * items.len()) as isize;
                    self.marks(TOOLS, framing.max(0) as usize);
                    for item in items {
                        self.text(&scalar_text(item));
                    }
                }
                let ty = prop.get("type").map(scalar_text).unwrap_or_default();
                let desc = prop.get("description").map(scalar_text).unwrap_or_default();
                let desc = desc.strip_suffix('.').unwrap_or(&desc);
                self.text(&format!("{key}:{ty}:{desc}"));
            }
        }
    }

    /// Closes the tool section (`func_end`), after the last function tool.
    pub fn end_tools(&mut self) {
        let n = self.overheads().func_end;
        self.marks(TOOLS, n);
    }

    /// A structured-output schema or a non-function tool: its canonical JSON as text.
    pub fn json_text(&mut self, v: &Value) {
        let bytes = canonical_value(v);
        self.text(&String::from_utf8_lossy(&bytes));
    }

    fn overheads(&self) -> ToolOverheads {
        // The cookbook's figures: gpt-4o family (o200k) vs gpt-4 / gpt-3.5 (cl100k).
        let func_init = match self.enc {
            Encoding::Cl100kBase => 10,
            Encoding::O200kBase | Encoding::O200kHarmony => 7,
        };
        ToolOverheads {
            func_init,
            prop_init: 3,
            prop_key: 3,
            enum_init: -3,
            enum_item: 3,
            func_end: 12,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn finish(self) -> Vec<u32> {
        self.tokens
    }

    /// The sequence with its breakpoint marks.
    pub fn finish_seq(self) -> PromptSeq {
        PromptSeq {
            tokens: self.tokens,
            marks: self.marks,
            units: self.units,
        }
    }
}

/// A JSON scalar as the text the recipe would concatenate (`"a"` → `a`, `3` → `3`).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => String::from_utf8_lossy(&canonical_value(other)).into(),
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// The prompt token sequences of a request body: one for chat and Responses, one per
/// prompt for legacy completions, none for embeddings (they are not prompt-cached).
pub fn request_prompts(route: Route, body: &Map<String, Value>, enc: Encoding) -> Vec<Vec<u32>> {
    request_prompt_seqs(route, body, enc)
        .into_iter()
        .map(|s| s.tokens)
        .collect()
}

/// [`request_prompts`] with the breakpoint marks of each sequence (legacy completions
/// have none: they are not messages).
pub fn request_prompt_seqs(
    route: Route,
    body: &Map<String, Value>,
    enc: Encoding,
) -> Vec<PromptSeq> {
    match route {
        Route::ChatCompletions => {
            let mut b = PromptBuilder::new(enc);
            chat_prompt(&mut b, body);
            vec![b.finish_seq()]
        }
        Route::Responses => {
            let mut b = PromptBuilder::new(enc);
            responses_prompt(&mut b, body);
            vec![b.finish_seq()]
        }
        Route::Completions => completion_prompts(body, enc)
            .into_iter()
            .map(|tokens| PromptSeq {
                tokens,
                ..PromptSeq::default()
            })
            .collect(),
        Route::Embeddings => Vec::new(),
    }
}

/// [`request_prompts`] with the texts encoded through `encoder`.
pub fn request_prompts_with(
    route: Route,
    body: &Map<String, Value>,
    enc: Encoding,
    encoder: &mut dyn TextEncoder,
) -> Vec<Vec<u32>> {
    request_prompt_seqs_with(route, body, enc, encoder)
        .into_iter()
        .map(|s| s.tokens)
        .collect()
}

/// [`request_prompt_seqs`] with the texts encoded through `encoder`.
pub fn request_prompt_seqs_with(
    route: Route,
    body: &Map<String, Value>,
    enc: Encoding,
    encoder: &mut dyn TextEncoder,
) -> Vec<PromptSeq> {
    match route {
        Route::ChatCompletions => {
            let mut b = PromptBuilder::with_encoder(enc, encoder);
            chat_prompt(&mut b, body);
            vec![b.finish_seq()]
        }
        Route::Responses => {
            let mut b = PromptBuilder::with_encoder(enc, encoder);
            responses_prompt(&mut b, body);
            vec![b.finish_seq()]
        }
        Route::Completions => completion_prompts(body, enc)
            .into_iter()
            .map(|tokens| PromptSeq {
                tokens,
                ..PromptSeq::default()
            })
            .collect(),
        Route::Embeddings => Vec::new(),
    }
}

/// A Chat Completions request: function tools (other tools as canonical JSON), the
/// `json_schema` response format, each message with its tool calls and `tool_call_id`,
/// then the reply priming.
pub fn chat_prompt(b: &mut PromptBuilder<'_>, body: &Map<String, Value>) {
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut functions = 0usize;
        for t in tools {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let f = t.get("function");
                    let field = |k: &str| f.and_then(|f| f.get(k));
                    b.function_tool(
                        field("name").and_then(Value::as_str).unwrap_or(""),
                        field("description").and_then(Value::as_str).unwrap_or(""),
                        field("parameters"),
                    );
                    functions += 1;
                }
                // Custom and other tool kinds: described to the model as their JSON.
                _ => b.json_text(t),
            }
        }
        if functions > 0 {
            b.end_tools();
        }
    }
    if let Some(rf) = body.get("response_format")
        && rf.get("type").and_then(Value::as_str) == Some("json_schema")
        && let Some(js) = rf.get("json_schema")
    {
        b.json_text(js);
    }
    for (i, m) in body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        b.open(role, m.get("name").and_then(Value::as_str));
        b.item(Some(i));
        content_tokens(b, m.get("content"));
        b.item(None);
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let f = c.get("function");
                let field = |k: &str| {
                    f.and_then(|f| f.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                b.tool_call(field("name"), field("arguments"));
            }
        }
        if let Some(id) = m.get("tool_call_id").and_then(Value::as_str) {
            b.text(id);
        }
        b.close_message(role);
    }
    b.prime_reply();
}

/// A Responses request: function tools, the `json_schema` text format, `instructions` as
/// a developer message, then the input (a string or items), then the reply priming.
pub fn responses_prompt(b: &mut PromptBuilder<'_>, body: &Map<String, Value>) {
    if let Some(list) = body.get("tools").and_then(Value::as_array) {
        let mut functions = 0usize;
        for t in list {
            if t.get("type").and_then(Value::as_str) == Some("function") {
                b.function_tool(
                    t.get("name").and_then(Value::as_str).unwrap_or(""),
                    t.get("description").and_then(Value::as_str).unwrap_or(""),
                    t.get("parameters"),
                );
                functions += 1;
            } else {
                b.json_text(t);
            }
        }
        if functions > 0 {
            b.end_tools();
        }
    }
    let format = body.get("text").and_then(|t| t.get("format"));
    if let Some(f) = format
        && f.get("type").and_then(Value::as_str) == Some("json_schema")
    {
        b.json_text(f);
    }
    if let Some(ins) = body.get("instructions").and_then(Value::as_str) {
        b.open("developer", None);
        b.text(ins);
        b.close_message("developer");
    }
    match body.get("input") {
        Some(Value::String(s)) => {
            b.open("user", None);
            b.text(s);
            b.close_message("user");
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(b, i, item);
            }
        }
        _ => {}
    }
    b.prime_reply();
}

/// One Responses input item (or easy message).
fn input_item(b: &mut PromptBuilder<'_>, index: usize, item: &Value) {
    match item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
    {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("");
            b.open(role, None);
            b.item(Some(index));
            content_tokens(b, item.get("content"));
            b.item(None);
            b.close_message(role);
        }
        "function_call" => {
            b.open("assistant", None);
            b.tool_call(
                item.get("name").and_then(Value::as_str).unwrap_or(""),
                item.get("arguments").and_then(Value::as_str).unwrap_or(""),
            );
            b.close_message("assistant");
        }
        "function_call_output" => {
            b.open("tool", None);
            match item.get("output") {
                Some(Value::String(s)) => b.text(s),
                other => content_tokens(b, other),
            }
            b.close_message("tool");
        }
        // Reasoning items of earlier turns are not re-read by the model.
        "reasoning" => {}
        _ => {
            b.open("user", None);
            b.json_text(item);
            b.close_message("user");
        }
    }
}

/// Appends a message content value (a string or parts) to the prompt.
pub fn content_tokens(b: &mut PromptBuilder<'_>, content: Option<&Value>) {
    match content {
        Some(Value::String(s)) => {
            b.text(s);
            b.unit(None);
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text" | "output_text") => {
                        b.text(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("refusal") => {
                        b.text(p.get("refusal").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("image_url") => {
                        let url = p.get("image_url").and_then(|i| i.get("url").or(Some(i)));
                        b.image(&url.map(plain_scalar).unwrap_or_default());
                    }
                    Some("input_image") => {
                        let src = p.get("image_url").or_else(|| p.get("file_id"));
                        b.image(&src.map(plain_scalar).unwrap_or_default());
                    }
                    _ => b.json_text(p),
                }
                b.unit(Some(j));
                if let Some(kind) = explicit_mark(p) {
                    b.mark(kind);
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => b.json_text(other),
    }
}

/// The mark of a content part carrying `prompt_cache_breakpoint: {"mode": "explicit"}`.
/// Lenient like the rest of this module: the mock rejects malformed markers before, and
/// a logged request with one is read as if it had none.
fn explicit_mark(part: &Value) -> Option<MarkKind> {
    let bp = part.get("prompt_cache_breakpoint")?;
    if bp.get("mode").and_then(Value::as_str) != Some("explicit") {
        return None;
    }
    let ttl = bp
        .get("ttl")
        .and_then(Value::as_str)
        .and_then(CacheTtl::parse);
    Some(MarkKind::Explicit(ttl))
}

fn plain_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The prompts of a legacy completion: a string, strings, a token array or token
/// arrays, each encoded (or taken) as the API does. Ids that are not `u32` are skipped.
pub fn completion_prompts(body: &Map<String, Value>, enc: Encoding) -> Vec<Vec<u32>> {
    let ids = |v: &[Value]| -> Vec<u32> {
        v.iter()
            .filter_map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect()
    };
    match body.get("prompt") {
        Some(Value::String(s)) => vec![enc.encode(s)],
        Some(Value::Array(items)) => match items.first() {
            Some(Value::Number(_)) => vec![ids(items)],
            Some(Value::Array(_)) => items
                .iter()
                .filter_map(Value::as_array)
                .map(|a| ids(a))
                .collect(),
            Some(_) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| enc.encode(s))
                .collect(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A cache breakpoint of a prompt (GPT-5.6 rules): the prefix of `tokens` tokens that
/// ends there, identified by `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakpoint {
    pub tokens: u64,
    pub id: u64,
    pub kind: BreakpointKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakpointKind {
    /// Placed by the caller, with the part's own TTL if it names one.
    Explicit(Option<CacheTtl>),
    /// The end of the latest non-assistant message: where OpenAI's implicit breakpoint
    /// sits when `prompt_cache_options.mode` is `implicit` (the default).
    Implicit,
    /// The end of an earlier non-assistant message: where an earlier turn of the
    /// conversation had its implicit breakpoint. Looked up ("the latest 80 breakpoints in
    /// the conversation"), never written by this request.
    Inherited,
}

/// What the prompt-cache simulation needs of a prompt, computed once per distinct request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptInfo {
    /// Length of the prompt in tokens.
    pub tokens: u64,
    /// `blocks[i]` identifies the prefix `tokens[..(i + 1) * step]` (a chained hash).
    pub blocks: Vec<u64>,
    /// Every explicit breakpoint and the implicit one, in order of position (GPT-5.6
    /// rules; empty for a prompt built without marks).
    pub breakpoints: Vec<Breakpoint>,
    /// Identifies the first `route_tokens` tokens and the `prompt_cache_key`: the routing key.
    pub route: u64,
    /// Identifies the first `route_tokens` tokens alone: [`PromptInfo::route_for`]
    /// combines it with other keys (replay compares `prompt_cache_key` policies).
    pub route_prefix: u64,
}

/// The routing key: the prompt start's hash folded with the `prompt_cache_key`'s.
fn route_key(route_prefix: u64, cache_key: Option<&str>) -> u64 {
    let key_hash = match cache_key {
        None => 0,
        Some(k) => {
            let d = blake3::hash(k.as_bytes());
            let mut b = [0u8; 8];
            b.copy_from_slice(&d.as_bytes()[..8]);
            u64::from_le_bytes(b) | 1
        }
    };
    fold(route_prefix, key_hash)
}

impl PromptInfo {
    /// Hashes `tokens` into prefix blocks of `step` tokens and a routing key over the
    /// first `route_tokens` tokens combined with `cache_key`.
    pub fn new(
        tokens: &[u32],
        step: usize,
        route_tokens: usize,
        cache_key: Option<&str>,
    ) -> PromptInfo {
        PromptInfo::with_marks(tokens, &[], step, route_tokens, cache_key)
    }

    /// [`PromptInfo::new`] with the breakpoints at `marks` (in order of position): one
    /// per explicit mark, an implicit one at the last eligible message end, and an
    /// inherited (read-only) one at every earlier eligible message end.
    pub fn with_marks(
        tokens: &[u32],
        marks: &[Mark],
        step: usize,
        route_tokens: usize,
        cache_key: Option<&str>,
    ) -> PromptInfo {
        let step = step.max(1);
        let mut blocks = Vec::with_capacity(tokens.len() / step);
        let mut h = 0x243F_6A88_85A3_08D3u64;
        let mut route_prefix = None;
        let implicit_at = marks
            .iter()
            .rposition(|m| m.kind == MarkKind::MessageEnd { eligible: true });
        let mut breakpoints = Vec::new();
        let mut next = 0usize;
        let place = |pos: u64, h: u64, next: &mut usize, out: &mut Vec<Breakpoint>| {
            while let Some(m) = marks.get(*next).filter(|m| m.pos <= pos) {
                let kind = match m.kind {
                    MarkKind::Explicit(ttl) => Some(BreakpointKind::Explicit(ttl)),
                    MarkKind::MessageEnd { .. } if Some(*next) == implicit_at => {
                        Some(BreakpointKind::Implicit)
                    }
                    MarkKind::MessageEnd { eligible: true } => Some(BreakpointKind::Inherited),
                    MarkKind::MessageEnd { eligible: false } => None,
                };
                // A mark at 0 tokens ends an empty prefix: nothing to cache.
                if let Some(kind) = kind.filter(|_| m.pos == pos && pos > 0) {
                    out.push(Breakpoint {
                        tokens: pos,
                        // Its own domain: never equal to a 128-token block identity.
                        id: mix64(h ^ pos.rotate_left(32) ^ 0xB4EA_4B01_47B4_EA4B),
                        kind,
                    });
                }
                *next += 1;
            }
        };
        for (i, t) in tokens.iter().enumerate() {
            h = fold(h, u64::from(*t));
            if i + 1 == route_tokens {
                route_prefix = Some(h);
            }
            if (i + 1) % step == 0 {
                blocks.push(mix64(h ^ (i as u64 + 1)));
            }
            place(i as u64 + 1, h, &mut next, &mut breakpoints);
        }
        let route_prefix = route_prefix.unwrap_or(h);
        PromptInfo {
            tokens: tokens.len() as u64,
            blocks,
            breakpoints,
            route: route_key(route_prefix, cache_key),
            route_prefix,
        }
    }

    /// The routing key of this prompt sent with `cache_key` as its `prompt_cache_key`.
    pub fn route_for(&self, cache_key: Option<&str>) -> u64 {
        route_key(self.route_prefix, cache_key)
    }
}

/// The explicit breakpoints (no TTL of their own) a marker at each of `positions` (in
/// ascending order) would make: what placing one on a content block adds to
/// [`PromptInfo::breakpoints`], the same identities [`PromptInfo::with_marks`] gives.
pub fn explicit_breakpoints_at(tokens: &[u32], positions: &[u64]) -> Vec<Breakpoint> {
    let mut out = Vec::with_capacity(positions.len());
    let mut h = 0x243F_6A88_85A3_08D3u64;
    let mut next = positions.iter().peekable();
    for (i, t) in tokens.iter().enumerate() {
        h = fold(h, u64::from(*t));
        let pos = i as u64 + 1;
        while let Some(&&p) = next.peek() {
            if p > pos {
                break;
            }
            if p == pos {
                out.push(Breakpoint {
                    tokens: pos,
                    id: mix64(h ^ pos.rotate_left(32) ^ 0xB4EA_4B01_47B4_EA4B),
                    kind: BreakpointKind::Explicit(None),
                });
            }
            next.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(enc: Encoding, messages: &[(&str, &str)]) -> Vec<u32> {
        let mut b = PromptBuilder::new(enc);
        for (role, content) in messages {
            b.open(role, None);
            b.text(content);
            b.close();
        }
        b.prime_reply();
        b.finish()
    }

    #[test]
    fn message_formula_matches_the_cookbook() {
        // The cookbook's worked example for gpt-4o / gpt-4: 3 per message + role +
        // content, + 3 for the reply priming.
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let msgs = [
                ("system", "You are a helpful assistant."),
                ("user", "Hello there, how are you?"),
            ];
            let expected: usize = msgs
                .iter()
                .map(|(r, c)| 3 + enc.count(r) + enc.count(c))
                .sum::<usize>()
                + 3;
            assert_eq!(chat(enc, &msgs).len(), expected);
        }
        // With a name: +1 and the name's tokens.
        let mut b = PromptBuilder::new(Encoding::O200kBase);
        b.open("user", Some("alice"));
        b.text("hi");
        b.close();
        b.prime_reply();
        let enc = Encoding::O200kBase;
        assert_eq!(
            b.len(),
            3 + enc.count("user") + 1 + enc.count("alice") + enc.count("hi") + 3
        );
    }

    #[test]
    fn a_later_turn_starts_with_the_earlier_prompt() {
        let enc = Encoding::O200kBase;
        let turn1 = chat(enc, &[("system", "Be brief."), ("user", "Hi")]);
        let turn2 = chat(
            enc,
            &[
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "More"),
            ],
        );
        assert_eq!(&turn2[..turn1.len()], &turn1[..]);
    }

    #[test]
    fn tool_recipe_counts() {
        // The cookbook's numbers for one function with one enum property on gpt-4o.
        let enc = Encoding::O200kBase;
        let params = json!({"type": "object", "properties": {
            "unit": {"type": "string", "description": "The unit.", "enum": ["c", "f"]}
        }});
        let mut b = PromptBuilder::new(enc);
        b.function_tool("get_weather", "Get the weather.", Some(&params));
        b.end_tools();
        let expected = 7
            + enc.count("get_weather:Get the weather")
            + 3
            + 3
            + (3 * 2 - 3)
            + enc.count("c")
            + enc.count("f")
            + enc.count("unit:string:The unit")
            + 12;
        assert_eq!(b.len(), expected);
    }

    #[test]
    fn nested_schema_changes_change_the_sequence_not_the_count() {
        let a = json!({"type": "object", "properties": {"q": {"type": "object", "properties": {"x": {"type": "string"}}}}});
        let b = json!({"type": "object", "properties": {"q": {"type": "object", "properties": {"y": {"type": "string"}}}}});
        let seq = |p: &Value| {
            let mut pb = PromptBuilder::new(Encoding::O200kBase);
            pb.function_tool("f", "d", Some(p));
            pb.finish()
        };
        assert_eq!(seq(&a).len(), seq(&b).len());
        assert_ne!(seq(&a), seq(&b));
    }

    #[test]
    fn prompt_info_blocks_and_routing() {
        let tokens: Vec<u32> = (0..1300).collect();
        let info = PromptInfo::new(&tokens, 128, 256, None);
        assert_eq!(info.tokens, 1300);
        assert_eq!(info.blocks.len(), 10);
        let mut longer = tokens.clone();
        longer.extend(5000..5200);
        let info2 = PromptInfo::new(&longer, 128, 256, None);
        assert_eq!(&info2.blocks[..10], &info.blocks[..]);
        assert_eq!(info2.route, info.route, "same first 256 tokens, same route");
        let keyed = PromptInfo::new(&tokens, 128, 256, Some("conv-1"));
        assert_ne!(keyed.route, info.route);
        assert_eq!(info.route_for(Some("conv-1")), keyed.route);
        assert_eq!(keyed.route_for(None), info.route);
        assert_eq!(keyed.blocks, info.blocks);
        let mut changed_late = tokens.clone();
        changed_late[300] = 9;
        assert_eq!(
            PromptInfo::new(&changed_late, 128, 256, None).route,
            info.route
        );
        let mut changed_early = tokens.clone();
        changed_early[10] = 9;
        assert_ne!(
            PromptInfo::new(&changed_early, 128, 256, None).route,
            info.route
        );
    }

    /// Encodes through a memo, counting how often it really encoded.
    #[derive(Default)]
    struct Memo {
        map: std::collections::HashMap<String, Vec<u32>>,
        encoded: usize,
    }

    impl TextEncoder for Memo {
        fn encode_into(&mut self, enc: Encoding, text: &str, out: &mut Vec<u32>) {
            if let Some(t) = self.map.get(text) {
                out.extend_from_slice(t);
                return;
            }
            self.encoded += 1;
            let t = enc.encode(text);
            out.extend_from_slice(&t);
            self.map.insert(text.to_string(), t);
        }
    }

    #[test]
    fn chat_request_sequence_is_the_recipe_in_order() {
        let enc = Encoding::O200kBase;
        let params = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        let schema = json!({"name": "out", "schema": {"type": "object"}});
        let body = json!({
            "model": "gpt-4o",
            "tools": [
                {"type": "function", "function": {"name": "search", "description": "Search.", "parameters": params}},
                {"type": "custom", "custom": {"name": "x"}}
            ],
            "response_format": {"type": "json_schema", "json_schema": schema},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Find it"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ]
        });
        let mut b = PromptBuilder::new(enc);
        b.function_tool("search", "Search.", Some(&params));
        b.json_text(&json!({"type": "custom", "custom": {"name": "x"}}));
        b.end_tools();
        b.json_text(&schema);
        b.open("system", None);
        b.text("Be brief.");
        b.close();
        b.open("user", Some("ann"));
        b.text("Find it");
        b.image("https://x/y.png");
        b.close();
        b.open("assistant", None);
        b.tool_call("search", "{}");
        b.close();
        b.open("tool", None);
        b.text("42");
        b.text("c1");
        b.close();
        b.prime_reply();
        let expected = b.finish();
        let body = body.as_object().unwrap();
        assert_eq!(
            request_prompts(Route::ChatCompletions, body, enc),
            vec![expected.clone()]
        );
        let mut memo = Memo::default();
        let twice: Vec<Vec<u32>> = (0..2)
            .flat_map(|_| request_prompts_with(Route::ChatCompletions, body, enc, &mut memo))
            .collect();
        assert_eq!(twice, vec![expected.clone(), expected]);
        let texts = memo.encoded;
        request_prompts_with(Route::ChatCompletions, body, enc, &mut memo);
        assert_eq!(memo.encoded, texts, "a third pass encodes nothing new");
    }

    #[test]
    fn responses_and_completions_sequences() {
        let enc = Encoding::O200kBase;
        let body = json!({
            "instructions": "Be kind.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "x"},
                {"type": "function_call_output", "call_id": "x", "output": "ok"},
                {"type": "reasoning", "summary": []}
            ]
        });
        let mut b = PromptBuilder::new(enc);
        b.open("developer", None);
        b.text("Be kind.");
        b.close();
        b.open("user", None);
        b.text("hi");
        b.close();
        b.open("assistant", None);
        b.tool_call("f", "{}");
        b.close();
        b.open("tool", None);
        b.text("ok");
        b.close();
        b.prime_reply();
        assert_eq!(
            request_prompts(Route::Responses, body.as_object().unwrap(), enc),
            vec![b.finish()]
        );
        let p = |v: Value| {
            request_prompts(
                Route::Completions,
                json!({"prompt": v}).as_object().unwrap(),
                enc,
            )
        };
        assert_eq!(p(json!("hello world")), vec![vec![24912, 2375]]);
        assert_eq!(p(json!(["hello", " world"])), vec![vec![24912], vec![2375]]);
        assert_eq!(p(json!([24912, 2375])), vec![vec![24912, 2375]]);
        assert_eq!(p(json!([[24912], [2375]])), vec![vec![24912], vec![2375]]);
        assert!(
            request_prompts(
                Route::Embeddings,
                json!({"input": "x"}).as_object().unwrap(),
                enc
            )
            .is_empty()
        );
    }

    #[test]
    fn marks_follow_breakpoints_and_message_ends() {
        let enc = Encoding::O200kBase;
        let chat = json!({"messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Rules.", "prompt_cache_breakpoint": {"mode": "explicit"}},
                {"type": "text", "text": "More.", "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"}}
            ]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}
        ]});
        let seqs = request_prompt_seqs(Route::ChatCompletions, chat.as_object().unwrap(), enc);
        // Positions by hand: <start> system <message> = 2 + count("system") tokens, then
        // the parts; each message adds <end>, the next opens with 2 + role tokens.
        let sys_open = 2 + enc.count("system") as u64;
        let p1 = sys_open + enc.count("Rules.") as u64;
        let p2 = p1 + enc.count("More.") as u64;
        let sys_end = p2 + 1;
        let user_end = sys_end + 2 + enc.count("user") as u64 + enc.count("Hi") as u64 + 1;
        let asst_end = user_end + 2 + enc.count("assistant") as u64 + enc.count("Hello") as u64 + 1;
        assert_eq!(
            seqs[0].marks,
            vec![
                Mark {
                    pos: p1,
                    kind: MarkKind::Explicit(None)
                },
                Mark {
                    pos: p2,
                    kind: MarkKind::Explicit(Some(CacheTtl::Hour12))
                },
                Mark {
                    pos: sys_end,
                    kind: MarkKind::MessageEnd { eligible: true }
                },
                Mark {
                    pos: user_end,
                    kind: MarkKind::MessageEnd { eligible: true }
                },
                Mark {
                    pos: asst_end,
                    kind: MarkKind::MessageEnd { eligible: false }
                },
            ]
        );
        // The implicit breakpoint is the user message's end, not the assistant's; the
        // system message's end is where an earlier turn's implicit one sat.
        let info = PromptInfo::with_marks(&seqs[0].tokens, &seqs[0].marks, 128, 256, None);
        let kinds: Vec<(u64, BreakpointKind)> = info
            .breakpoints
            .iter()
            .map(|b| (b.tokens, b.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (p1, BreakpointKind::Explicit(None)),
                (p2, BreakpointKind::Explicit(Some(CacheTtl::Hour12))),
                (sys_end, BreakpointKind::Inherited),
                (user_end, BreakpointKind::Implicit),
            ]
        );
        // Responses: a function_call_output is a tool message, so it is eligible.
        let resp = json!({"instructions": "Be kind.", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi", "prompt_cache_breakpoint": {"mode": "explicit"}}]},
            {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "x"},
            {"type": "function_call_output", "call_id": "x", "output": "ok"}
        ]});
        let seqs = request_prompt_seqs(Route::Responses, resp.as_object().unwrap(), enc);
        let kinds: Vec<MarkKind> = seqs[0].marks.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            vec![
                MarkKind::MessageEnd { eligible: true },
                MarkKind::Explicit(None),
                MarkKind::MessageEnd { eligible: true },
                MarkKind::MessageEnd { eligible: false },
                MarkKind::MessageEnd { eligible: true },
            ]
        );
        // A breakpoint id depends on the prefix only: same prefix, same id; and a
        // malformed marker is no breakpoint (the mock rejects it before).
        let other = json!({"messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Rules.", "prompt_cache_breakpoint": {"mode": "explicit"}},
                {"type": "text", "text": "Other.", "prompt_cache_breakpoint": {"mode": "bogus"}}
            ]}
        ]});
        let s2 = request_prompt_seqs(Route::ChatCompletions, other.as_object().unwrap(), enc);
        let i2 = PromptInfo::with_marks(&s2[0].tokens, &s2[0].marks, 128, 256, None);
        assert_eq!(i2.breakpoints[0].id, info.breakpoints[0].id);
        assert_eq!(i2.breakpoints.len(), 2, "one explicit, one implicit");
    }
}
