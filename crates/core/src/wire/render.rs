//! Renders a stored non-streamed response as the server-sent events the API would have
//! streamed for it, so a streamed request can be answered from a JSON entry.
//!
//! The rendering is chosen so that assembling it (the way the SDKs and
//! [`StreamAssembler`](crate::sse::StreamAssembler) do) gives back the stored object:
//! text is cut into word-sized pieces, `tool_calls` arrive as a head chunk (id, type,
//! name, empty arguments) followed by argument pieces, and `logprobs` entries are
//! dealt out to the content pieces they belong to.

use std::ops::Range;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{ObjectWriter, WireError};
use crate::route::Route;

/// Longest text piece in one rendered chunk, in bytes (a piece is a word with its
/// leading whitespace, cut at this length at a character boundary). Real streams carry
/// about one token per chunk; a word is close and keeps the overhead bounded.
const MAX_PIECE_BYTES: usize = 24;

/// Renders a stored non-streamed response as the SSE events the API would have sent,
/// each a complete event (`data: ...\n\n`, with `event:` lines for responses), all at
/// once. [`SseRendering`] gives them one at a time.
///
/// Chat completions: a role chunk, content (or refusal) pieces, `tool_calls` and
/// legacy `function_call` pieces, a finish chunk per choice, then the usage-only chunk
/// when `include_usage` (every other chunk then carries `"usage": null`, as the API's
/// do) and `data: [DONE]`. Legacy completions likewise with `text`. Responses: the
/// typed event sequence from `response.created` to `response.completed` with
/// `sequence_number`s (`include_usage` does not apply: the final response carries
/// usage). Embeddings cannot stream.
pub fn json_to_sse(
    route: Route,
    json: &[u8],
    include_usage: bool,
) -> Result<Vec<Bytes>, WireError> {
    let mut out = Vec::new();
    SseRendering::new(route, json, include_usage)?.render(&mut |event| {
        out.push(event);
        true
    })?;
    Ok(out)
}

/// A stored response checked for rendering as SSE: every shape error is found by
/// [`SseRendering::new`], so [`SseRendering::render`] hands out events one at a time,
/// as a reader takes them, without holding them all (a 20 MiB answer is about seven
/// times that in events).
#[derive(Debug)]
pub struct SseRendering {
    route: Route,
    obj: Map<String, Value>,
    include_usage: bool,
}

impl SseRendering {
    /// Parses and checks a stored response (see [`json_to_sse`]).
    pub fn new(route: Route, json: &[u8], include_usage: bool) -> Result<SseRendering, WireError> {
        if !route.can_stream() {
            return Err(WireError::NotStreamable(route));
        }
        let obj = match serde_json::from_slice::<Value>(json)? {
            Value::Object(o) => o,
            _ => return Err(WireError::NotAnObject),
        };
        if route != Route::Responses {
            check_choices(route, &obj)?;
        }
        Ok(SseRendering {
            route,
            obj,
            include_usage,
        })
    }

    /// Renders the events in order into `emit`; stops early when `emit` returns
    /// `false` (the reader is gone).
    pub fn render(self, emit: &mut dyn FnMut(Bytes) -> bool) -> Result<(), WireError> {
        let mut out = Out {
            emit,
            stopped: false,
        };
        match self.route {
            Route::Responses => {
                response_events(self.obj, &mut out);
                Ok(())
            }
            route => choices_events(route, self.obj, self.include_usage, &mut out),
        }
    }
}

/// The shape errors rendering choices can meet, found before any event is sent.
fn check_choices(route: Route, obj: &Map<String, Value>) -> Result<(), WireError> {
    let Some(Value::Array(choices)) = obj.get("choices") else {
        return Err(WireError::Shape("no choices array"));
    };
    for choice in choices {
        let Value::Object(choice) = choice else {
            return Err(WireError::Shape("a choice is not an object"));
        };
        if route == Route::ChatCompletions {
            if !matches!(
                choice.get("message"),
                None | Some(Value::Null | Value::Object(_))
            ) {
                return Err(WireError::Shape("message is not an object"));
            }
        } else if !matches!(
            choice.get("text"),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err(WireError::Shape("text is not a string"));
        }
    }
    Ok(())
}

/// Where rendered events go, until the reader stops taking them.
struct Out<'a> {
    emit: &'a mut dyn FnMut(Bytes) -> bool,
    stopped: bool,
}

impl Out<'_> {
    fn push(&mut self, event: Bytes) {
        if !self.stopped && !(self.emit)(event) {
            self.stopped = true;
        }
    }
}

/// Cuts text into word-sized pieces: each starts with the whitespace before its word.
/// An iterator, so a long text is never held as a list of pieces.
pub(crate) fn pieces(s: &str) -> Pieces<'_> {
    Pieces { s, start: 0 }
}

/// See [`pieces`].
#[derive(Debug, Clone)]
pub(crate) struct Pieces<'a> {
    s: &'a str,
    start: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.s[self.start..];
        if rest.is_empty() {
            return None;
        }
        let mut in_word = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            let ws = c.is_whitespace();
            if i > 0 && ((ws && in_word) || i >= MAX_PIECE_BYTES) {
                end = i;
                break;
            }
            in_word = !ws;
        }
        self.start += end;
        Some(&rest[..end])
    }
}

/// Deals tokens of the given byte lengths out to pieces as they come: each piece gets
/// the tokens that end within it; the last piece takes whatever is left.
struct Dealer<'a> {
    lens: &'a [usize],
    i: usize,
    tok_bytes: usize,
    piece_bytes: usize,
}

impl<'a> Dealer<'a> {
    fn new(lens: &'a [usize]) -> Dealer<'a> {
        Dealer {
            lens,
            i: 0,
            tok_bytes: 0,
            piece_bytes: 0,
        }
    }

    fn deal(&mut self, piece_len: usize, last: bool) -> Range<usize> {
        self.piece_bytes += piece_len;
        let start = self.i;
        if last {
            self.i = self.lens.len();
        } else {
            while self.i < self.lens.len() && self.tok_bytes + self.lens[self.i] <= self.piece_bytes
            {
                self.tok_bytes += self.lens[self.i];
                self.i += 1;
            }
        }
        start..self.i
    }
}

/// [`Dealer`] over a whole list of pieces.
#[cfg(test)]
fn partition(lens: &[usize], pieces: &[&str]) -> Vec<Range<usize>> {
    let mut d = Dealer::new(lens);
    pieces
        .iter()
        .enumerate()
        .map(|(k, p)| d.deal(p.len(), k + 1 == pieces.len()))
        .collect()
}

/// The chunk envelope shared by every chunk of one rendered stream.
struct Frame {
    /// `{"id":...,"object":...,...` without the closing brace.
    head: Vec<u8>,
    include_usage: bool,
}

impl Frame {
    fn chunk(&self, choice: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + choice.len() + 48);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b",\"choices\":[");
        out.extend_from_slice(choice);
        out.push(b']');
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }

    fn usage_chunk(&self, usage: &Value) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + 160);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b",\"choices\":[],\"usage\":");
        let _ = serde_json::to_writer(&mut out, usage);
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }
}

fn choices_events(
    route: Route,
    mut obj: Map<String, Value>,
    include_usage: bool,
    out: &mut Out<'_>,
) -> Result<(), WireError> {
    let chat = route == Route::ChatCompletions;
    let choices = match obj.remove("choices") {
        Some(Value::Array(c)) => c,
        _ => return Err(WireError::Shape("no choices array")),
    };
    let usage = obj.remove("usage").filter(|u| !u.is_null());
    obj.remove("object");
    let mut w = ObjectWriter::new();
    if let Some(id) = obj.remove("id") {
        w.field("id", &id);
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    w.field("object", &Value::String(object.into()));
    for k in ["created", "model"] {
        if let Some(v) = obj.remove(k) {
            w.field(k, &v);
        }
    }
    for (k, v) in &obj {
        w.field(k, v);
    }
    let mut head = w.finish_vec();
    head.pop(); // the closing brace: chunks continue the object
    let frame = Frame {
        head,
        include_usage,
    };

    for choice in choices {
        let Value::Object(choice) = choice else {
            return Err(WireError::Shape("a choice is not an object"));
        };
        if chat {
            chat_choice(&frame, choice, out)?;
        } else {
            text_choice(&frame, choice, out)?;
        }
    }
    if include_usage && let Some(u) = usage {
        out.push(frame.usage_chunk(&u));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(())
}

/// One choice of a chunk, fields in the API's order.
struct ChoiceOut<'a> {
    index: &'a Value,
    /// `delta` (chat) written as JSON, or `None` for legacy completions.
    delta: Option<Vec<u8>>,
    /// `text` (legacy completions).
    text: Option<&'a str>,
    /// `None`: the key is left out (the stored choice had none).
    logprobs: Option<Value>,
    finish_reason: &'a Value,
    extra: Option<&'a Map<String, Value>>,
}

impl ChoiceOut<'_> {
    fn write(&self) -> Vec<u8> {
        let mut w = ObjectWriter::with_capacity(128);
        if let Some(t) = self.text {
            w.field("text", &Value::String(t.into()));
        }
        w.field("index", self.index);
        if let Some(d) = &self.delta {
            w.field_raw("delta", d);
        }
        if let Some(l) = &self.logprobs {
            w.field("logprobs", l);
        }
        w.field("finish_reason", self.finish_reason);
        if let Some(extra) = self.extra {
            for (k, v) in extra {
                w.field(k, v);
            }
        }
        w.finish_vec()
    }
}

fn delta(fields: &[(&str, &Value)]) -> Vec<u8> {
    let mut w = ObjectWriter::with_capacity(64);
    for (k, v) in fields {
        w.field(k, v);
    }
    w.finish_vec()
}

/// Byte length of the text a chat logprob entry stands for.
fn chat_token_len(entry: &Value) -> usize {
    match entry.get("bytes") {
        Some(Value::Array(b)) => b.len(),
        _ => entry
            .get("token")
            .and_then(Value::as_str)
            .map_or(0, str::len),
    }
}

/// The token entries of `logprobs[key]` and their byte lengths, when the text has
/// pieces to deal them out to.
fn chat_logprob_entries<'a>(
    lp: Option<&'a Value>,
    key: &str,
    text: &str,
) -> Option<(&'a [Value], Vec<usize>)> {
    let entries = lp?.get(key)?.as_array()?;
    if text.is_empty() {
        return None;
    }
    Some((entries, entries.iter().map(chat_token_len).collect()))
}

fn chat_choice(
    frame: &Frame,
    mut choice: Map<String, Value>,
    out: &mut Out<'_>,
) -> Result<(), WireError> {
    let index = choice.remove("index").unwrap_or(Value::from(0));
    let mut msg = match choice.remove("message") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(WireError::Shape("message is not an object")),
    };
    let finish = choice.remove("finish_reason").unwrap_or(Value::Null);
    let logprobs = choice.remove("logprobs");
    let extra = choice;
    let null = Value::Null;
    let empty = Value::String(String::new());

    let role = msg.remove("role");
    let content = msg.remove("content");
    let refusal = msg.remove("refusal");
    fn text_of(v: &Option<Value>) -> &str {
        match v {
            Some(Value::String(s)) => s,
            _ => "",
        }
    }
    let (content_text, refusal_text) = (text_of(&content), text_of(&refusal));
    let lp_content = chat_logprob_entries(logprobs.as_ref(), "content", content_text);
    let lp_refusal = chat_logprob_entries(logprobs.as_ref(), "refusal", refusal_text);
    // The head chunk's logprobs: the stored object with the split lists emptied, so
    // the pieces' entries extend them.
    let lp_head = logprobs.as_ref().map(|lp| match lp {
        Value::Object(o) => {
            let mut o = o.clone();
            if lp_content.is_some() {
                o.insert("content".into(), Value::Array(Vec::new()));
            }
            if lp_refusal.is_some() {
                o.insert("refusal".into(), Value::Array(Vec::new()));
            }
            Value::Object(o)
        }
        other => other.clone(),
    });
    // Later chunks: null where the stored choice had the key (as the API sends).
    let lp_rest = logprobs.as_ref().map(|_| Value::Null);

    let tool_calls = match msg.remove("tool_calls") {
        Some(Value::Array(calls)) => calls,
        Some(other) => {
            msg.insert("tool_calls".into(), other);
            Vec::new()
        }
        None => Vec::new(),
    };
    let function_call = match msg.remove("function_call") {
        Some(Value::Object(f)) => Some(f),
        Some(other) => {
            msg.insert("function_call".into(), other);
            None
        }
        None => None,
    };

    let chunk = |delta: Vec<u8>, logprobs: Option<Value>, finish: &Value, first: bool| {
        frame.chunk(
            &ChoiceOut {
                index: &index,
                delta: Some(delta),
                text: None,
                logprobs,
                finish_reason: finish,
                extra: first.then_some(&extra),
            }
            .write(),
        )
    };

    // Head: role, empty content/refusal, and every other message field whole.
    let mut head: Vec<(&str, &Value)> = Vec::new();
    if let Some(r) = &role {
        head.push(("role", r));
    }
    match &content {
        Some(Value::String(_)) => head.push(("content", &empty)),
        Some(v) => head.push(("content", v)),
        None => {}
    }
    match &refusal {
        Some(Value::String(_)) => head.push(("refusal", &empty)),
        Some(v) => head.push(("refusal", v)),
        None => {}
    }
    for (k, v) in &msg {
        head.push((k, v));
    }
    out.push(chunk(delta(&head), lp_head, &null, true));

    for (key, text, parts) in [
        ("content", content_text, &lp_content),
        ("refusal", refusal_text, &lp_refusal),
    ] {
        let mut dealer = parts.as_ref().map(|(_, lens)| Dealer::new(lens));
        let mut ps = pieces(text).peekable();
        while let Some(p) = ps.next() {
            if out.stopped {
                return Ok(());
            }
            let lp = match (&mut dealer, parts) {
                (Some(dealer), Some((entries, _))) => {
                    let range = dealer.deal(p.len(), ps.peek().is_none());
                    let mut o = Map::new();
                    o.insert(key.into(), Value::Array(entries[range].to_vec()));
                    Some(Value::Object(o))
                }
                _ => lp_rest.clone(),
            };
            out.push(chunk(
                delta(&[(key, &Value::String(p.into()))]),
                lp,
                &null,
                false,
            ));
        }
    }

    for (i, call) in tool_calls.into_iter().enumerate() {
        let i = Value::from(i);
        let args = call
            .get("function")
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut head_call = ObjectWriter::with_capacity(128);
        head_call.field("index", &i);
        if let Value::Object(call) = &call {
            for (k, v) in call {
                match (k.as_str(), v, &args) {
                    ("index", _, _) => {}
                    ("function", Value::Object(f), Some(_)) => {
                        let mut f = f.clone();
                        f.insert("arguments".into(), empty.clone());
                        head_call.field(k, &Value::Object(f));
                    }
                    _ => head_call.field(k, v),
                }
            }
        }
        let head_call = head_call.finish_vec();
        let mut d = ObjectWriter::with_capacity(head_call.len() + 16);
        d.field_raw("tool_calls", &[b"[", &head_call[..], b"]"].concat());
        out.push(chunk(d.finish_vec(), lp_rest.clone(), &null, false));
        for p in pieces(args.as_deref().unwrap_or("")) {
            if out.stopped {
                return Ok(());
            }
            let mut piece = ObjectWriter::with_capacity(64);
            piece.field("index", &i);
            piece.field_raw(
                "function",
                &delta(&[("arguments", &Value::String(p.into()))]),
            );
            let piece = piece.finish_vec();
            let mut d = ObjectWriter::with_capacity(piece.len() + 16);
            d.field_raw("tool_calls", &[b"[", &piece[..], b"]"].concat());
            out.push(chunk(d.finish_vec(), lp_rest.clone(), &null, false));
        }
    }

    if let Some(mut f) = function_call {
        let args = match f.remove("arguments") {
            Some(Value::String(a)) => a,
            Some(other) => {
                f.insert("arguments".into(), other);
                String::new()
            }
            None => String::new(),
        };
        f.insert("arguments".into(), empty.clone());
        let fc = Value::Object(f);
        out.push(chunk(
            delta(&[("function_call", &fc)]),
            lp_rest.clone(),
            &null,
            false,
        ));
        for p in pieces(&args) {
            if out.stopped {
                return Ok(());
            }
            let piece = delta(&[("arguments", &Value::String(p.into()))]);
            let mut d = ObjectWriter::with_capacity(piece.len() + 20);
            d.field_raw("function_call", &piece);
            out.push(chunk(d.finish_vec(), lp_rest.clone(), &null, false));
        }
    }

    out.push(chunk(b"{}".to_vec(), lp_rest, &finish, false));
    Ok(())
}

fn text_choice(
    frame: &Frame,
    mut choice: Map<String, Value>,
    out: &mut Out<'_>,
) -> Result<(), WireError> {
    let index = choice.remove("index").unwrap_or(Value::from(0));
    let text = match choice.remove("text") {
        Some(Value::String(t)) => t,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(WireError::Shape("text is not a string")),
    };
    let finish = choice.remove("finish_reason").unwrap_or(Value::Null);
    let logprobs = choice.remove("logprobs");
    let extra = choice;
    let null = Value::Null;

    // Legacy logprobs are parallel lists (tokens, token_logprobs, top_logprobs,
    // text_offset): each piece gets the same slice of every list.
    let split: Option<(&Map<String, Value>, usize, Vec<usize>)> = match &logprobs {
        Some(Value::Object(lp)) if !text.is_empty() => {
            lp.get("tokens").and_then(Value::as_array).map(|tokens| {
                let lens = tokens
                    .iter()
                    .map(|t| t.as_str().map_or(0, str::len))
                    .collect();
                (lp, tokens.len(), lens)
            })
        }
        _ => None,
    };
    let lp_rest = logprobs.as_ref().map(|_| Value::Null);

    let mut dealer = split.as_ref().map(|(_, _, lens)| Dealer::new(lens));
    let mut ps = pieces(&text).enumerate().peekable();
    while let Some((k, p)) = ps.next() {
        if out.stopped {
            return Ok(());
        }
        let lp = match (&mut dealer, &split) {
            (Some(dealer), Some((lp, n, _))) => {
                let r = dealer.deal(p.len(), ps.peek().is_none());
                let mut part = Map::new();
                for (key, v) in *lp {
                    match v {
                        Value::Array(a) if a.len() == *n => {
                            part.insert(key.clone(), Value::Array(a[r.clone()].to_vec()));
                        }
                        _ if k == 0 => {
                            part.insert(key.clone(), v.clone());
                        }
                        _ => {}
                    }
                }
                Some(Value::Object(part))
            }
            _ if k == 0 => logprobs.clone(),
            _ => lp_rest.clone(),
        };
        out.push(
            frame.chunk(
                &ChoiceOut {
                    index: &index,
                    delta: None,
                    text: Some(p),
                    logprobs: lp,
                    finish_reason: &null,
                    extra: (k == 0).then_some(&extra),
                }
                .write(),
            ),
        );
    }
    let last_lp = if text.is_empty() { logprobs } else { lp_rest };
    out.push(
        frame.chunk(
            &ChoiceOut {
                index: &index,
                delta: None,
                text: Some(""),
                logprobs: last_lp,
                finish_reason: &finish,
                extra: text.is_empty().then_some(&extra),
            }
            .write(),
        ),
    );
    Ok(())
}

/// Writes the events of a responses stream, numbering them.
struct EventSink<'o, 'e> {
    out: &'o mut Out<'e>,
    seq: u64,
}

impl EventSink<'_, '_> {
    fn emit(&mut self, kind: &str, fields: &[(&str, &Value)]) {
        let mut w = ObjectWriter::with_capacity(128);
        w.field("type", &Value::String(kind.into()));
        for (k, v) in fields {
            w.field(k, v);
        }
        w.field("sequence_number", &Value::from(self.seq));
        self.seq += 1;
        let json = w.finish_vec();
        let mut ev = Vec::with_capacity(json.len() + kind.len() + 16);
        ev.extend_from_slice(b"event: ");
        ev.extend_from_slice(kind.as_bytes());
        ev.extend_from_slice(b"\ndata: ");
        ev.extend_from_slice(&json);
        ev.extend_from_slice(b"\n\n");
        self.out.push(Bytes::from(ev));
    }
}

fn with(v: &Value, changes: &[(&str, Value)]) -> Value {
    let mut v = v.clone();
    if let Value::Object(o) = &mut v {
        for (k, new) in changes {
            if o.contains_key(*k) {
                o.insert((*k).into(), new.clone());
            }
        }
    }
    v
}

fn response_events(resp: Map<String, Value>, out: &mut Out<'_>) {
    let resp = Value::Object(resp);
    let output: Vec<Value> = resp
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut s = EventSink { out, seq: 0 };
    let in_progress = Value::String("in_progress".into());
    let empty_list = Value::Array(Vec::new());
    let empty_str = Value::String(String::new());

    let snapshot = with(
        &resp,
        &[
            ("status", in_progress.clone()),
            ("output", empty_list.clone()),
            ("usage", Value::Null),
            ("completed_at", Value::Null),
        ],
    );
    s.emit("response.created", &[("response", &snapshot)]);
    s.emit("response.in_progress", &[("response", &snapshot)]);

    for (oi, item) in output.iter().enumerate() {
        let oi = Value::from(oi);
        let item_id = item.get("id").cloned().unwrap_or(Value::Null);
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message" => {
                let added = with(
                    item,
                    &[
                        ("content", empty_list.clone()),
                        ("status", in_progress.clone()),
                    ],
                );
                s.emit(
                    "response.output_item.added",
                    &[("output_index", &oi), ("item", &added)],
                );
                let parts = item.get("content").and_then(Value::as_array);
                for (ci, part) in parts.into_iter().flatten().enumerate() {
                    let ci = Value::from(ci);
                    let at = [
                        ("item_id", &item_id),
                        ("output_index", &oi),
                        ("content_index", &ci),
                    ];
                    let ptype = part.get("type").and_then(Value::as_str).unwrap_or("");
                    let (text_key, delta_kind, done_kind) = match ptype {
                        "output_text" => (
                            "text",
                            "response.output_text.delta",
                            "response.output_text.done",
                        ),
                        "refusal" => ("refusal", "response.refusal.delta", "response.refusal.done"),
                        _ => ("", "", ""),
                    };
                    let text = part.get(text_key).and_then(Value::as_str);
                    let Some(text) = text.filter(|_| !text_key.is_empty()) else {
                        s.emit(
                            "response.content_part.added",
                            &[at[0], at[1], at[2], ("part", part)],
                        );
                        s.emit(
                            "response.content_part.done",
                            &[at[0], at[1], at[2], ("part", part)],
                        );
                        continue;
                    };
                    let added_part = with(
                        part,
                        &[
                            (text_key, empty_str.clone()),
                            ("annotations", empty_list.clone()),
                            ("logprobs", empty_list.clone()),
                        ],
                    );
                    s.emit(
                        "response.content_part.added",
                        &[at[0], at[1], at[2], ("part", &added_part)],
                    );
                    for p in pieces(text) {
                        if s.out.stopped {
                            return;
                        }
                        let p = Value::String(p.into());
                        if ptype == "output_text" {
                            s.emit(
                                delta_kind,
                                &[
                                    at[0],
                                    at[1],
                                    at[2],
                                    ("delta", &p),
                                    ("logprobs", &empty_list),
                                ],
                            );
                        } else {
                            s.emit(delta_kind, &[at[0], at[1], at[2], ("delta", &p)]);
                        }
                    }
                    let full = Value::String(text.into());
                    if ptype == "output_text" {
                        let lp = part.get("logprobs").unwrap_or(&empty_list);
                        s.emit(
                            done_kind,
                            &[at[0], at[1], at[2], ("text", &full), ("logprobs", lp)],
                        );
                    } else {
                        s.emit(done_kind, &[at[0], at[1], at[2], ("refusal", &full)]);
                    }
                    s.emit(
                        "response.content_part.done",
                        &[at[0], at[1], at[2], ("part", part)],
                    );
                }
            }
            "function_call" => {
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                let added = with(
                    item,
                    &[
                        ("arguments", empty_str.clone()),
                        ("status", in_progress.clone()),
                    ],
                );
                s.emit(
                    "response.output_item.added",
                    &[("output_index", &oi), ("item", &added)],
                );
                for p in pieces(args) {
                    if s.out.stopped {
                        return;
                    }
                    let p = Value::String(p.into());
                    s.emit(
                        "response.function_call_arguments.delta",
                        &[("item_id", &item_id), ("output_index", &oi), ("delta", &p)],
                    );
                }
                let name = item.get("name").unwrap_or(&Value::Null);
                let full = Value::String(args.into());
                s.emit(
                    "response.function_call_arguments.done",
                    &[
                        ("item_id", &item_id),
                        ("output_index", &oi),
                        ("name", name),
                        ("arguments", &full),
                    ],
                );
            }
            _ => {
                let added = with(item, &[("status", in_progress.clone())]);
                s.emit(
                    "response.output_item.added",
                    &[("output_index", &oi), ("item", &added)],
                );
            }
        }
        s.emit(
            "response.output_item.done",
            &[("output_index", &oi), ("item", item)],
        );
    }

    let terminal = match resp.get("status").and_then(Value::as_str) {
        Some("failed") => "response.failed",
        Some("incomplete") => "response.incomplete",
        _ => "response.completed",
    };
    s.emit(terminal, &[("response", &resp)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_words_with_leading_whitespace() {
        let pieces = |s| pieces(s).collect::<Vec<_>>();
        assert_eq!(
            pieces("Hello world, how  are\nyou"),
            ["Hello", " world,", " how", "  are", "\nyou"]
        );
        assert_eq!(pieces(""), Vec::<&str>::new());
        assert_eq!(pieces("  x"), ["  x"]);
        let long = "ä".repeat(20); // 40 bytes, no whitespace
        let ps = pieces(&long);
        assert_eq!(ps.concat(), long);
        assert!(ps.len() == 2 && ps.iter().all(|p| p.len() <= MAX_PIECE_BYTES + 3));
    }

    #[test]
    fn partition_deals_tokens_to_the_pieces_they_end_in() {
        // tokens "He" "llo" " wor" "ld" over pieces "Hello" " world"
        assert_eq!(
            partition(&[2, 3, 4, 2], &["Hello", " world"]),
            vec![0..2, 2..4]
        );
        // more pieces than tokens: empty ranges, the last one takes the rest
        assert_eq!(partition(&[11], &["Hello", " world"]), vec![0..0, 0..1]);
        assert_eq!(partition(&[], &["a"]), vec![0..0]);
    }

    #[test]
    fn events_are_handed_out_one_at_a_time_and_stop_when_the_reader_does() {
        let json = serde_json::json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "word ".repeat(5000)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 5000, "total_tokens": 5001},
        });
        let bytes = serde_json::to_vec(&json).unwrap();
        let all = json_to_sse(Route::ChatCompletions, &bytes, true).unwrap();
        assert!(all.len() > 5000);
        let mut seen = 0;
        SseRendering::new(Route::ChatCompletions, &bytes, true)
            .unwrap()
            .render(&mut |event| {
                assert_eq!(event, all[seen]);
                seen += 1;
                seen < 10
            })
            .unwrap();
        assert_eq!(seen, 10, "rendering stopped when the reader did");
        // Every shape error is found before the first event.
        let bad = serde_json::json!({"choices": [
            {"index": 0, "finish_reason": "stop", "message": {"content": "x"}}, 3]});
        let bad = serde_json::to_vec(&bad).unwrap();
        assert!(SseRendering::new(Route::ChatCompletions, &bad, false).is_err());
        let bad = br#"{"choices": [{"index": 0, "text": 7}]}"#;
        assert!(SseRendering::new(Route::Completions, bad, false).is_err());
    }

    #[test]
    fn embeddings_do_not_stream() {
        assert!(matches!(
            json_to_sse(Route::Embeddings, b"{}", false),
            Err(WireError::NotStreamable(Route::Embeddings))
        ));
        assert!(matches!(
            json_to_sse(Route::ChatCompletions, b"[]", false),
            Err(WireError::NotAnObject)
        ));
        assert!(matches!(
            json_to_sse(Route::ChatCompletions, b"{}", false),
            Err(WireError::Shape(_))
        ));
    }
}
