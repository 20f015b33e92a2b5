//! `POST /v1/chat/completions`: request → plan (prompt tokens, choices), and the plan
//! rendered as a `chat.completion` object or as `chat.completion.chunk` events.

use bytes::Bytes;
use prefixcache_core::provider::prompt::{PromptBuilder, PromptSeq, chat_prompt};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::plan::{
    self, Finish, Format, GenSpec, Generated, TokenLogprob, Tool, ToolChoice, content_hash, rng_for,
};
use crate::sse;

/// The prepared content of a chat completion.
#[derive(Debug)]
pub struct ChatPlan {
    pub choices: Vec<Generated>,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub fingerprint: String,
}

/// What a plan builder needs beyond the body.
#[derive(Debug, Clone)]
pub struct PrepareCtx {
    pub seed: u64,
    pub output_tokens: std::ops::RangeInclusive<u32>,
}

/// Validates the tools of a chat request (`{"type":"function","function":{...}}`) and
/// lists the callable ones. Their tokens come from `provider::prompt::chat_prompt`.
fn chat_tools(body: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(tools) = body.get("tools").filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| ApiError::invalid_type("tools", "an array"))?;
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        // Custom and other tool kinds are described to the model but never called here.
        if t.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let f = t
            .get("function")
            .ok_or_else(|| ApiError::missing(&format!("tools[{i}].function")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&format!("tools[{i}].function.name")))?;
        out.push(Tool {
            name: name.to_string(),
            parameters: f.get("parameters").cloned(),
        });
    }
    Ok(out)
}

pub(crate) fn tool_choice(v: Option<&Value>, param: &str) -> Result<ToolChoice, ApiError> {
    Ok(match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid value: '{other}'. Supported values are: 'none', 'auto', and 'required'."
                ))
                .param(param)
                .code("invalid_value"));
            }
        },
        Some(Value::Object(o)) => {
            // Chat: {"type":"function","function":{"name":..}}; Responses: {"type":"function","name":..}.
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(n)) => ToolChoice::Named(n.to_string()),
                _ => ToolChoice::Auto,
            }
        }
        Some(_) => return Err(ApiError::invalid_type(param, "a string or an object")),
    })
}

/// Text of a message's content (string or text parts), for the tool rule.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub(crate) fn prepare(
    body: &Map<String, Value>,
    model: &str,
    ctx: &PrepareCtx,
) -> Result<(PromptSeq, ChatPlan), ApiError> {
    let enc = plan::encoding(model);
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::missing("messages")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ApiError::invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            )
            .param("messages")
            .code("empty_array"));
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(ApiError::invalid_type("messages", "an array")),
    };
    let reasoning_model = plan::is_reasoning_model(model);
    let n = plan::int_field(body, "n", 1, 128)?.unwrap_or(1);
    let max_tokens = plan::int_field(body, "max_tokens", 1, u64::MAX >> 1)?;
    if reasoning_model && max_tokens.is_some() {
        return Err(ApiError::invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        )
        .param("max_tokens")
        .code("unsupported_parameter"));
    }
    let budget = plan::int_field(body, "max_completion_tokens", 1, u64::MAX >> 1)?.or(max_tokens);
    let logprobs = plan::bool_field(body, "logprobs")?.unwrap_or(false);
    let top_logprobs = plan::int_field(body, "top_logprobs", 0, 20)?;
    if top_logprobs.is_some() && !logprobs {
        return Err(ApiError::invalid(
            "Invalid value for 'top_logprobs': logprobs must be set to true.",
        )
        .param("top_logprobs"));
    }
    let parallel = plan::bool_field(body, "parallel_tool_calls")?.unwrap_or(true);
    let choice = tool_choice(body.get("tool_choice"), "tool_choice")?;
    let effort = plan::str_field(body, "reasoning_effort")?;

    let tools = chat_tools(body)?;
    if let ToolChoice::Named(name) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(ApiError::invalid(format!(
            "Invalid value for 'tool_choice': function '{name}' is not one of the tools."
        ))
        .param("tool_choice"));
    }
    let format = match body.get("response_format") {
        None | Some(Value::Null) => Format::Text,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => Format::JsonObject,
            Some("json_schema") => {
                let js = rf
                    .get("json_schema")
                    .ok_or_else(|| ApiError::missing("response_format.json_schema"))?;
                Format::JsonSchema(js.get("schema").cloned().unwrap_or(Value::Null))
            }
            Some("text") => Format::Text,
            _ => {
                return Err(ApiError::invalid(
                    "Invalid value for 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
                )
                .param("response_format.type"));
            }
        },
    };
    let mut last_user = String::new();
    let mut last_role = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&format!("messages[{i}].role")))?;
        if role == "user" {
            last_user = content_text(m.get("content"));
        }
        last_role = role;
    }
    // The body is valid: its prompt is the provider's token sequence of it.
    let mut b = PromptBuilder::new(enc);
    chat_prompt(&mut b, body);

    let hash = content_hash(ctx.seed, "chat", body);
    let spec = GenSpec {
        enc,
        tools: &tools,
        tool_choice: choice,
        parallel_tool_calls: parallel,
        after_tool_result: matches!(last_role, "tool" | "function"),
        last_user_text: &last_user,
        format: &format,
        budget,
        reasoning: plan::reasoning_tokens(model, effort),
        output_tokens: ctx.output_tokens.clone(),
        logprobs: logprobs.then(|| top_logprobs.unwrap_or(0) as usize),
    };
    let choices: Vec<Generated> = (0..n)
        .map(|i| plan::generate(&spec, rng_for(&hash, i)))
        .collect();
    let plan = ChatPlan {
        completion_tokens: choices.iter().map(|c| c.completion_tokens).sum(),
        reasoning_tokens: choices.iter().map(|c| c.reasoning_tokens).sum(),
        choices,
        fingerprint: plan::system_fingerprint(model),
    };
    Ok((b.finish_seq(), plan))
}

/// Per-request values of a rendering.
#[derive(Debug, Clone)]
pub struct RenderCtx<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// `Some` for models that report cache writes (GPT-5.6 and later).
    pub cache_write_tokens: Option<u64>,
    pub include_usage: bool,
}

#[derive(Serialize)]
pub(crate) struct PromptDetails {
    pub cached_tokens: u64,
    pub audio_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct CompletionDetails {
    pub reasoning_tokens: u64,
    pub audio_tokens: u64,
    pub accepted_prediction_tokens: u64,
    pub rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
    pub completion_tokens_details: CompletionDetails,
}

impl Usage {
    pub(crate) fn new(
        prompt: u64,
        cached: u64,
        written: Option<u64>,
        completion: u64,
        reasoning: u64,
    ) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: cached,
                audio_tokens: 0,
                cache_write_tokens: written,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: reasoning,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'a str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallJson<'a>>>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Logprobs<'a> {
    content: Vec<LogprobEntry<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
pub(crate) struct LogprobEntry<'a> {
    pub token: &'a str,
    pub logprob: f64,
    pub bytes: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<LogprobEntry<'a>>>,
}

pub(crate) fn logprob_entry<'a>(piece: &'a str, lp: &'a TokenLogprob) -> LogprobEntry<'a> {
    LogprobEntry {
        token: piece,
        logprob: lp.logprob,
        bytes: piece.as_bytes(),
        top_logprobs: Some(
            lp.top
                .iter()
                .map(|(t, l)| LogprobEntry {
                    token: t,
                    logprob: *l,
                    bytes: t.as_bytes(),
                    top_logprobs: None,
                })
                .collect(),
        ),
    }
}

fn choice_logprobs<'a>(g: &'a Generated) -> Option<Logprobs<'a>> {
    let (text, lps) = (g.text.as_ref()?, g.logprobs.as_ref()?);
    Some(Logprobs {
        content: text
            .iter()
            .zip(lps)
            .map(|(p, lp)| logprob_entry(p, lp))
            .collect(),
        refusal: None,
    })
}

/// The `chat.completion` object.
pub(crate) fn render_json(p: &ChatPlan, r: &RenderCtx<'_>) -> Bytes {
    let choices = p
        .choices
        .iter()
        .enumerate()
        .map(|(index, g)| Choice {
            index,
            message: Message {
                role: "assistant",
                content: g.text.as_ref().map(|t| t.text.as_str()),
                refusal: None,
                tool_calls: (!g.tool_calls.is_empty()).then(|| {
                    g.tool_calls
                        .iter()
                        .map(|c| ToolCallJson {
                            index: None,
                            id: Some(&c.id),
                            kind: Some("function"),
                            function: FunctionJson {
                                name: Some(&c.name),
                                arguments: &c.arguments.text,
                            },
                        })
                        .collect()
                }),
                annotations: [],
            },
            logprobs: choice_logprobs(g),
            finish_reason: g.finish.as_str(),
        })
        .collect();
    let c = Completion {
        id: r.id,
        object: "chat.completion",
        created: r.created,
        model: r.model,
        choices,
        usage: Usage::new(
            r.prompt_tokens,
            r.cached_tokens,
            r.cache_write_tokens,
            p.completion_tokens,
            p.reasoning_tokens,
        ),
        service_tier: "default",
        system_fingerprint: &p.fingerprint,
    };
    Bytes::from(serde_json::to_vec(&c).unwrap_or_default())
}

#[derive(Serialize)]
struct Chunk<'a, C: Serialize> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'a str,
    choices: C,
    /// Present (as `null` until the last chunk) only when usage was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` serializes as `"content": null` (first chunk of a tool-call answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'a str>>,
}

/// The `data:` payloads of one choice's chunks, in order.
fn choice_deltas<'a>(index: usize, g: &'a Generated) -> Vec<ChunkChoice<'a>> {
    let mut out = Vec::new();
    match &g.text {
        Some(text) => {
            out.push(ChunkChoice {
                index,
                delta: Delta {
                    role: Some("assistant"),
                    content: Some(Some("")),
                    refusal: Some(None),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            });
            for (i, piece) in text.iter().enumerate() {
                let logprobs = g
                    .logprobs
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .map(|lp| Logprobs {
                        content: vec![logprob_entry(piece, lp)],
                        refusal: None,
                    });
                out.push(ChunkChoice {
                    index,
                    delta: Delta {
                        content: Some(Some(piece)),
                        ..Delta::default()
                    },
                    logprobs,
                    finish_reason: None,
                });
            }
        }
        None => {
            for (ci, call) in g.tool_calls.iter().enumerate() {
                let head = ToolCallJson {
                    index: Some(ci),
                    id: Some(&call.id),
                    kind: Some("function"),
                    function: FunctionJson {
                        name: Some(&call.name),
                        arguments: "",
                    },
                };
                let delta = if ci == 0 {
                    Delta {
                        role: Some("assistant"),
                        content: Some(None),
                        tool_calls: Some(vec![head]),
                        refusal: Some(None),
                    }
                } else {
                    Delta {
                        tool_calls: Some(vec![head]),
                        ..Delta::default()
                    }
                };
                out.push(ChunkChoice {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: None,
                });
                for piece in call.arguments.iter() {
                    out.push(ChunkChoice {
                        index,
                        delta: Delta {
                            tool_calls: Some(vec![ToolCallJson {
                                index: Some(ci),
                                id: None,
                                kind: None,
                                function: FunctionJson {
                                    name: None,
                                    arguments: piece,
                                },
                            }]),
                            ..Delta::default()
                        },
                        logprobs: None,
                        finish_reason: None,
                    });
                }
            }
        }
    }
    out.push(ChunkChoice {
        index,
        delta: Delta::default(),
        logprobs: None,
        finish_reason: Some(match g.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }),
    });
    out
}

/// The stream's events: every choice's chunks (choices interleaved, as the API streams
/// them in parallel), the usage chunk when asked for, then `[DONE]`.
pub(crate) fn render_events(p: &ChatPlan, r: &RenderCtx<'_>) -> Vec<Bytes> {
    let per_choice: Vec<Vec<ChunkChoice<'_>>> = p
        .choices
        .iter()
        .enumerate()
        .map(|(i, g)| choice_deltas(i, g))
        .collect();
    let longest = per_choice.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = per_choice.into_iter().map(Vec::into_iter).collect();
    let mut events = Vec::with_capacity(longest * iters.len() + 2);
    let usage_field = || r.include_usage.then_some(None);
    for _ in 0..longest {
        for it in iters.iter_mut() {
            if let Some(choice) = it.next() {
                let chunk = Chunk {
                    id: r.id,
                    object: "chat.completion.chunk",
                    created: r.created,
                    model: r.model,
                    service_tier: "default",
                    system_fingerprint: &p.fingerprint,
                    choices: [choice],
                    usage: usage_field(),
                };
                events.push(sse::data(&chunk));
            }
        }
    }
    if r.include_usage {
        let chunk = Chunk {
            id: r.id,
            object: "chat.completion.chunk",
            created: r.created,
            model: r.model,
            service_tier: "default",
            system_fingerprint: &p.fingerprint,
            choices: [(); 0],
            usage: Some(Some(Usage::new(
                r.prompt_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                p.completion_tokens,
                p.reasoning_tokens,
            ))),
        };
        events.push(sse::data(&chunk));
    }
    events.push(sse::done());
    events
}
