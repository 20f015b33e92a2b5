//! `POST /v1/completions` (legacy text completions): string, string-array and token-array
//! prompts, `n`, `echo`, `max_tokens` (default 16, as in the API), `logprobs`, streaming.

use bytes::Bytes;
use prefixcache_core::provider::prompt::completion_prompts;
use prefixcache_core::tokenizer::Encoding;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::chat::{PrepareCtx, RenderCtx, Usage};
use crate::error::ApiError;
use crate::plan::{self, Format, GenSpec, Generated, ToolChoice, content_hash, rng_for};
use crate::sse;

/// The API's default `max_tokens` for legacy completions.
const DEFAULT_MAX_TOKENS: u64 = 16;

#[derive(Debug)]
pub struct CompletionsPlan {
    /// `(prompt index, generated)` in choice order.
    pub choices: Vec<Generated>,
    /// Echoed prompt text per choice (empty without `echo`).
    pub echo: Vec<String>,
    pub completion_tokens: u64,
    pub fingerprint: String,
}

/// The prompts as token sequences (`provider::prompt::completion_prompts`, once the
/// shape is checked here), and their texts (for `echo`).
fn prompts(body: &Map<String, Value>, enc: Encoding) -> Result<Vec<(Vec<u32>, String)>, ApiError> {
    let texts = prompt_texts(body, enc)?;
    let tokens = completion_prompts(body, enc);
    Ok(tokens.into_iter().zip(texts).collect())
}

/// Checks the `prompt` shape and returns each prompt's text.
fn prompt_texts(body: &Map<String, Value>, enc: Encoding) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid_type(
            "prompt",
            "a string, an array of strings, an array of tokens or an array of token arrays",
        )
    };
    let ids = |v: &Value| -> Option<Vec<u32>> {
        v.as_array()?
            .iter()
            .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect()
    };
    let decode = |ids: &[u32]| String::from_utf8_lossy(&enc.decode_bytes(ids)).into_owned();
    match body.get("prompt") {
        None | Some(Value::Null) => Err(ApiError::missing("prompt")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad()),
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Value::Number(_) => {
                let t = ids(&Value::Array(items.clone())).ok_or_else(bad)?;
                Ok(vec![decode(&t)])
            }
            Value::Array(_) => items
                .iter()
                .map(|i| Ok(decode(&ids(i).ok_or_else(bad)?)))
                .collect(),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

pub(crate) fn prepare(
    body: &Map<String, Value>,
    model: &str,
    ctx: &PrepareCtx,
) -> Result<(Vec<Vec<u32>>, CompletionsPlan), ApiError> {
    let enc = plan::encoding(model);
    let prompts = prompts(body, enc)?;
    let n = plan::int_field(body, "n", 1, 128)?.unwrap_or(1);
    let max_tokens =
        plan::int_field(body, "max_tokens", 0, u64::MAX >> 1)?.unwrap_or(DEFAULT_MAX_TOKENS);
    let echo = plan::bool_field(body, "echo")?.unwrap_or(false);
    let logprobs = plan::int_field(body, "logprobs", 0, 5)?;
    let hash = content_hash(ctx.seed, "completions", body);
    let format = Format::Text;
    let mut choices = Vec::new();
    let mut echoes = Vec::new();
    for (pi, (_, text)) in prompts.iter().enumerate() {
        let spec = GenSpec {
            enc,
            tools: &[],
            tool_choice: ToolChoice::None,
            parallel_tool_calls: false,
            after_tool_result: false,
            last_user_text: "",
            format: &format,
            budget: Some(max_tokens),
            reasoning: 0,
            output_tokens: ctx.output_tokens.clone(),
            logprobs: logprobs.map(|k| k as usize),
        };
        for j in 0..n {
            choices.push(plan::generate(&spec, rng_for(&hash, pi as u64 * 1000 + j)));
            echoes.push(if echo { text.clone() } else { String::new() });
        }
    }
    let plan = CompletionsPlan {
        completion_tokens: choices.iter().map(|c| c.completion_tokens).sum(),
        choices,
        echo: echoes,
        fingerprint: plan::system_fingerprint(model),
    };
    Ok((prompts.into_iter().map(|(t, _)| t).collect(), plan))
}

#[derive(Serialize)]
struct Logprobs<'a> {
    tokens: Vec<&'a str>,
    token_logprobs: Vec<f64>,
    top_logprobs: Vec<serde_json::Map<String, Value>>,
    text_offset: Vec<usize>,
}

fn logprobs<'a>(g: &'a Generated, offset: usize) -> Option<Logprobs<'a>> {
    let (text, lps) = (g.text.as_ref()?, g.logprobs.as_ref()?);
    let mut out = Logprobs {
        tokens: Vec::new(),
        token_logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        text_offset: Vec::new(),
    };
    let mut at = offset;
    for (piece, lp) in text.iter().zip(lps) {
        out.tokens.push(piece);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|(t, l)| (t.clone(), serde_json::json!(l)))
                .collect(),
        );
        out.text_offset.push(at);
        at += piece.len();
    }
    Some(out)
}

#[derive(Serialize)]
struct Choice<'a> {
    text: &'a str,
    index: usize,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Completion<'a, C: Serialize> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

pub(crate) fn render_json(p: &CompletionsPlan, r: &RenderCtx<'_>) -> Bytes {
    let texts: Vec<String> = p
        .choices
        .iter()
        .zip(&p.echo)
        .map(|(g, echo)| format!("{echo}{}", g.text.as_ref().map_or("", |t| t.text.as_str())))
        .collect();
    let choices: Vec<Choice<'_>> = p
        .choices
        .iter()
        .enumerate()
        .map(|(index, g)| Choice {
            text: &texts[index],
            index,
            logprobs: logprobs(g, p.echo[index].len()),
            finish_reason: Some(g.finish.as_str()),
        })
        .collect();
    let c = Completion {
        id: r.id,
        object: "text_completion",
        created: r.created,
        model: r.model,
        system_fingerprint: &p.fingerprint,
        choices,
        usage: Some(Usage::new(
            r.prompt_tokens,
            r.cached_tokens,
            None,
            p.completion_tokens,
            0,
        )),
    };
    Bytes::from(serde_json::to_vec(&c).unwrap_or_default())
}

pub(crate) fn render_events(p: &CompletionsPlan, r: &RenderCtx<'_>) -> Vec<Bytes> {
    let chunk = |choices: Vec<Choice<'_>>| {
        sse::data(&Completion {
            id: r.id,
            object: "text_completion",
            created: r.created,
            model: r.model,
            system_fingerprint: &p.fingerprint,
            choices,
            usage: None,
        })
    };
    let mut events = Vec::new();
    for (index, g) in p.choices.iter().enumerate() {
        if !p.echo[index].is_empty() {
            events.push(chunk(vec![Choice {
                text: &p.echo[index],
                index,
                logprobs: None,
                finish_reason: None,
            }]));
        }
        if let Some(text) = &g.text {
            for (i, piece) in text.iter().enumerate() {
                let lp = g
                    .logprobs
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .map(|lp| Logprobs {
                        tokens: vec![piece],
                        token_logprobs: vec![lp.logprob],
                        top_logprobs: vec![
                            lp.top
                                .iter()
                                .map(|(t, l)| (t.clone(), serde_json::json!(l)))
                                .collect(),
                        ],
                        text_offset: vec![p.echo[index].len()],
                    });
                events.push(chunk(vec![Choice {
                    text: piece,
                    index,
                    logprobs: lp,
                    finish_reason: None,
                }]));
            }
        }
        events.push(chunk(vec![Choice {
            text: "",
            index,
            logprobs: None,
            finish_reason: Some(g.finish.as_str()),
        }]));
    }
    if r.include_usage {
        events.push(sse::data(&Completion {
            id: r.id,
            object: "text_completion",
            created: r.created,
            model: r.model,
            system_fingerprint: &p.fingerprint,
            choices: [(); 0],
            usage: Some(Usage::new(
                r.prompt_tokens,
                r.cached_tokens,
                None,
                p.completion_tokens,
                0,
            )),
        }));
    }
    events.push(sse::done());
    events
}
