//! `POST /v1/responses`: input (string or items), `instructions`, function tools,
//! `text.format`, `max_output_tokens` (status `incomplete`), reasoning items for reasoning
//! models; the `response` object, or the typed event stream with `sequence_number`.

use bytes::Bytes;
use prefixcache_core::provider::prompt::{PromptBuilder, PromptSeq, responses_prompt};
use serde_json::{Map, Value, json};

use crate::chat::{PrepareCtx, tool_choice};
use crate::error::ApiError;
use crate::plan::{
    self, Finish, Format, GenSpec, Generated, Tool, ToolChoice, content_hash, rng_for,
};
use crate::rng::SplitMix64;
use crate::sse;

#[derive(Debug)]
pub struct ResponsesPlan {
    pub generated: Generated,
    /// Ids of the reasoning item (reasoning models), the message, and each function call.
    pub reasoning_id: Option<String>,
    pub message_id: String,
    pub call_item_ids: Vec<String>,
    /// Request fields the response object echoes.
    pub echo: Echo,
}

/// Request parameters the `response` object repeats.
#[derive(Debug, Clone)]
pub struct Echo {
    pub instructions: Value,
    pub max_output_tokens: Value,
    pub parallel_tool_calls: bool,
    pub prompt_cache_key: Value,
    pub reasoning_effort: Value,
    pub store: bool,
    pub temperature: Value,
    pub text_format: Value,
    pub tool_choice: Value,
    pub tools: Value,
    pub top_p: Value,
    pub user: Value,
    pub metadata: Value,
}

fn hex_id(rng: &mut SplitMix64, prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 48);
    s.push_str(prefix);
    for _ in 0..6 {
        s.push_str(&format!("{:08x}", rng.next_u64() as u32));
    }
    s
}

/// Validates one input item (or easy message); returns its role-ish kind and, for a
/// message, its text. Its tokens come from `provider::prompt::responses_prompt`.
fn input_item(item: &Value, i: usize) -> Result<(&'static str, String), ApiError> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Ok(match kind {
        "message" => {
            let role = item
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing(&format!("input[{i}].role")))?;
            let text = match item.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            (if role == "user" { "user" } else { "other" }, text)
        }
        "function_call_output" => ("tool", String::new()),
        _ => ("other", String::new()),
    })
}

pub(crate) fn prepare(
    body: &Map<String, Value>,
    model: &str,
    ctx: &PrepareCtx,
) -> Result<(PromptSeq, ResponsesPlan), ApiError> {
    let enc = plan::encoding(model);
    if let Some(prev) = plan::str_field(body, "previous_response_id")? {
        // The mock stores no responses, so a reference to one cannot resolve.
        return Err(
            ApiError::invalid(format!("Previous response with id '{prev}' not found."))
                .param("previous_response_id")
                .code("previous_response_not_found"),
        );
    }
    let input = match body.get("input") {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(v @ (Value::String(_) | Value::Array(_))) => v,
        Some(_) => return Err(ApiError::invalid_type("input", "a string or an array")),
    };
    // Must be a string when given; its tokens come from `responses_prompt`.
    plan::str_field(body, "instructions")?;
    let budget = plan::int_field(body, "max_output_tokens", 16, u64::MAX >> 1)?;
    let parallel = plan::bool_field(body, "parallel_tool_calls")?.unwrap_or(true);
    let choice = tool_choice(body.get("tool_choice"), "tool_choice")?;
    let effort = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str);

    let mut tools = Vec::new();
    if let Some(list) = body.get("tools").and_then(Value::as_array) {
        for t in list {
            if t.get("type").and_then(Value::as_str) == Some("function") {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                tools.push(Tool {
                    name: name.to_string(),
                    parameters: t.get("parameters").cloned(),
                });
            }
        }
    }
    if let ToolChoice::Named(name) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(ApiError::invalid(format!(
            "Invalid value for 'tool_choice': function '{name}' is not one of the tools."
        ))
        .param("tool_choice"));
    }
    let text_cfg = body.get("text").and_then(|t| t.get("format"));
    let format = match text_cfg.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_schema") => Format::JsonSchema(
            text_cfg
                .and_then(|f| f.get("schema"))
                .cloned()
                .unwrap_or(Value::Null),
        ),
        Some("json_object") => Format::JsonObject,
        _ => Format::Text,
    };
    let mut last_kind = "user";
    let mut last_user = String::new();
    match input {
        Value::String(s) => last_user = s.clone(),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (kind, text) = input_item(item, i)?;
                if kind == "user" {
                    last_user = text;
                }
                last_kind = kind;
            }
        }
        _ => {}
    }
    // The body is valid: its prompt is the provider's token sequence of it.
    let mut b = PromptBuilder::new(enc);
    responses_prompt(&mut b, body);

    let hash = content_hash(ctx.seed, "responses", body);
    let spec = GenSpec {
        enc,
        tools: &tools,
        tool_choice: choice,
        parallel_tool_calls: parallel,
        after_tool_result: last_kind == "tool",
        last_user_text: &last_user,
        format: &format,
        budget,
        reasoning: plan::reasoning_tokens(model, effort),
        output_tokens: ctx.output_tokens.clone(),
        logprobs: None,
    };
    let generated = plan::generate(&spec, rng_for(&hash, 0));
    let mut ids = rng_for(&hash, 1 << 40);
    let reasoning_id = plan::is_reasoning_model(model).then(|| hex_id(&mut ids, "rs_"));
    let message_id = hex_id(&mut ids, "msg_");
    let call_item_ids = generated
        .tool_calls
        .iter()
        .map(|_| hex_id(&mut ids, "fc_"))
        .collect();
    let get = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let echo = Echo {
        instructions: get("instructions"),
        max_output_tokens: get("max_output_tokens"),
        parallel_tool_calls: parallel,
        prompt_cache_key: get("prompt_cache_key"),
        reasoning_effort: effort.map_or(Value::Null, |e| json!(e)),
        store: plan::bool_field(body, "store")?.unwrap_or(true),
        temperature: body.get("temperature").cloned().unwrap_or(json!(1.0)),
        text_format: text_cfg.cloned().unwrap_or(json!({"type": "text"})),
        tool_choice: body.get("tool_choice").cloned().unwrap_or(json!("auto")),
        tools: body.get("tools").cloned().unwrap_or(json!([])),
        top_p: body.get("top_p").cloned().unwrap_or(json!(1.0)),
        user: get("user"),
        metadata: body.get("metadata").cloned().unwrap_or(json!({})),
    };
    Ok((
        b.finish_seq(),
        ResponsesPlan {
            generated,
            reasoning_id,
            message_id,
            call_item_ids,
            echo,
        },
    ))
}

/// Per-request values of a rendering.
#[derive(Debug, Clone)]
pub struct RenderCtx<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub model: &'a str,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    /// GPT-5.6 and later: tokens written, of which with a 12-hour lifetime.
    pub cache_write: Option<(u64, u64)>,
    /// GPT-5.6 and later: `prompt_cache_options` as applied (`mode`, `ttl`).
    pub cache_options: Option<(&'static str, &'static str)>,
}

fn reasoning_item(id: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": []})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "content": [output_text(text)],
        "role": "assistant"
    })
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

fn call_item(id: &str, call: &plan::ToolCall, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.id,
        "name": call.name
    })
}

fn complete(p: &ResponsesPlan) -> bool {
    p.generated.finish != Finish::Length
}

fn output_items(p: &ResponsesPlan) -> Vec<Value> {
    let status = if complete(p) {
        "completed"
    } else {
        "incomplete"
    };
    let mut out = Vec::new();
    if let Some(id) = &p.reasoning_id {
        out.push(reasoning_item(id));
    }
    match &p.generated.text {
        Some(t) => out.push(message_item(&p.message_id, &t.text, status)),
        None => {
            for (call, id) in p.generated.tool_calls.iter().zip(&p.call_item_ids) {
                out.push(call_item(id, call, &call.arguments.text, status));
            }
        }
    }
    out
}

/// The `response` object; `final_state` false gives the in-progress form of the first
/// stream events (no output, no usage).
fn response_object(p: &ResponsesPlan, r: &RenderCtx<'_>, final_state: bool) -> Value {
    let e = &p.echo;
    let (status, incomplete, output, usage) = if final_state {
        let g = &p.generated;
        let details = match r.cache_write {
            None => json!({"cached_tokens": r.cached_tokens}),
            Some((written, h12)) => json!({
                "cached_tokens": r.cached_tokens,
                "cache_write_tokens": written,
                "cache_write_tokens_details": {
                    "ttl_30m_tokens": written - h12.min(written),
                    "ttl_12h_tokens": h12
                }
            }),
        };
        let usage = json!({
            "input_tokens": r.input_tokens,
            "input_tokens_details": details,
            "output_tokens": g.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": g.reasoning_tokens},
            "total_tokens": r.input_tokens + g.completion_tokens
        });
        if complete(p) {
            (
                "completed",
                Value::Null,
                Value::Array(output_items(p)),
                usage,
            )
        } else {
            (
                "incomplete",
                json!({"reason": "max_output_tokens"}),
                Value::Array(output_items(p)),
                usage,
            )
        }
    } else {
        ("in_progress", Value::Null, json!([]), Value::Null)
    };
    let mut obj = json!({
        "id": r.id,
        "object": "response",
        "created_at": r.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": e.instructions,
        "max_output_tokens": e.max_output_tokens,
        "max_tool_calls": null,
        "model": r.model,
        "output": output,
        "parallel_tool_calls": e.parallel_tool_calls,
        "previous_response_id": null,
        "prompt_cache_key": e.prompt_cache_key,
        "reasoning": {"effort": e.reasoning_effort, "summary": null},
        "safety_identifier": null,
        "service_tier": "default",
        "store": e.store,
        "temperature": e.temperature,
        "text": {"format": e.text_format, "verbosity": "medium"},
        "tool_choice": e.tool_choice,
        "tools": e.tools,
        "top_logprobs": 0,
        "top_p": e.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": e.user,
        "metadata": e.metadata
    });
    if let (Some((mode, ttl)), Some(o)) = (r.cache_options, obj.as_object_mut()) {
        o.insert(
            "prompt_cache_options".into(),
            json!({"mode": mode, "ttl": ttl}),
        );
    }
    obj
}

pub(crate) fn render_json(p: &ResponsesPlan, r: &RenderCtx<'_>) -> Bytes {
    Bytes::from(serde_json::to_vec(&response_object(p, r, true)).unwrap_or_default())
}

/// The typed event sequence of a streamed response.
pub(crate) fn render_events(p: &ResponsesPlan, r: &RenderCtx<'_>) -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut seq = 0u64;
    let mut push = |kind: &str, mut payload: Value| {
        if let Value::Object(m) = &mut payload {
            // `type` first and `sequence_number` on every event, as the API sends them.
            let mut ordered = Map::new();
            ordered.insert("type".into(), json!(kind));
            ordered.insert("sequence_number".into(), json!(seq));
            ordered.extend(std::mem::take(m));
            payload = Value::Object(ordered);
        }
        events.push(sse::event(kind, &payload));
        seq += 1;
    };
    push(
        "response.created",
        json!({"response": response_object(p, r, false)}),
    );
    push(
        "response.in_progress",
        json!({"response": response_object(p, r, false)}),
    );
    let status = if complete(p) {
        "completed"
    } else {
        "incomplete"
    };
    let mut index = 0usize;
    if let Some(id) = &p.reasoning_id {
        push(
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(id)}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": index, "item": reasoning_item(id)}),
        );
        index += 1;
    }
    match &p.generated.text {
        Some(text) => {
            let id = p.message_id.as_str();
            push(
                "response.output_item.added",
                json!({"output_index": index, "item": {
                    "id": id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"
                }}),
            );
            push(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
            );
            for piece in text.iter() {
                push(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []}),
                );
            }
            push(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text.text, "logprobs": []}),
            );
            push(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text(&text.text)}),
            );
            push(
                "response.output_item.done",
                json!({"output_index": index, "item": message_item(id, &text.text, status)}),
            );
        }
        None => {
            for (call, id) in p.generated.tool_calls.iter().zip(&p.call_item_ids) {
                push(
                    "response.output_item.added",
                    json!({"output_index": index, "item": call_item(id, call, "", "in_progress")}),
                );
                for piece in call.arguments.iter() {
                    push(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": piece}),
                    );
                }
                push(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": call.arguments.text}),
                );
                push(
                    "response.output_item.done",
                    json!({"output_index": index, "item": call_item(id, call, &call.arguments.text, status)}),
                );
                index += 1;
            }
        }
    }
    let last = if complete(p) {
        "response.completed"
    } else {
        "response.incomplete"
    };
    push(last, json!({"response": response_object(p, r, true)}));
    events
}
