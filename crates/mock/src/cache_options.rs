//! The prompt-cache parameters of a request (`prompt_cache_key`, `prompt_cache_retention`,
//! `prompt_cache_options`, `prompt_cache_breakpoint` on content parts), validated as the
//! API validates them and turned into the simulation's [`CachePolicy`]. Rules and sources:
//! `docs/provider-caching.md`.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::plan::str_field;
use crate::prompt::CacheTtl;
use crate::prompt_cache::{BreakpointMode, CachePolicy, CacheRules, Retention};
use crate::stats::MockRoute;

/// Content-part types that may carry `prompt_cache_breakpoint` in Chat Completions.
const CHAT_BREAKPOINT_PARTS: [&str; 5] = ["text", "image_url", "input_audio", "file", "refusal"];
/// Content-part types that may carry `prompt_cache_breakpoint` in Responses.
const RESPONSES_BREAKPOINT_PARTS: [&str; 3] = ["input_text", "input_image", "input_file"];

/// How a request uses the provider's prompt cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRequest {
    pub key: Option<String>,
    pub policy: CachePolicy,
}

/// Reads and validates the cache parameters of a request to `model` on `route`.
///
/// Models before GPT-5.6 reject `prompt_cache_options` and `prompt_cache_breakpoint`
/// (400 `unsupported_parameter`) and keep the block rules. The legacy completions route
/// keeps the block rules for every model: its prompts have no content parts to mark.
pub fn cache_request(
    route: MockRoute,
    model: &str,
    body: &Map<String, Value>,
) -> Result<CacheRequest, ApiError> {
    let key = str_field(body, "prompt_cache_key")?.map(str::to_string);
    let retention = Retention::from_request(str_field(body, "prompt_cache_retention")?);
    let rules = match route {
        MockRoute::ChatCompletions | MockRoute::Responses => CacheRules::for_model(model),
        _ => CacheRules::Blocks,
    };
    let options = body.get("prompt_cache_options").filter(|v| !v.is_null());
    if rules == CacheRules::Blocks {
        if options.is_some() {
            return Err(unsupported("prompt_cache_options"));
        }
        if let Some(path) = first_breakpoint(route, body) {
            return Err(unsupported(&path));
        }
        return Ok(CacheRequest {
            key,
            policy: CachePolicy::Blocks(retention),
        });
    }
    let (mode, ttl) = match options {
        None => (BreakpointMode::Implicit, CacheTtl::Min30),
        Some(v) => options_of(route, v)?,
    };
    check_breakpoints(route, body)?;
    Ok(CacheRequest {
        key,
        policy: CachePolicy::Breakpoints { mode, ttl },
    })
}

fn unsupported(param: &str) -> ApiError {
    ApiError::invalid(format!(
        "Unsupported parameter: '{param}' is not supported with this model."
    ))
    .param(param)
    .code("unsupported_parameter")
}

fn unknown(param: &str) -> ApiError {
    ApiError::invalid(format!("Unknown parameter: '{param}'."))
        .param(param)
        .code("unknown_parameter")
}

fn invalid_value(param: &str, value: &Value, expected: &str) -> ApiError {
    ApiError::invalid(format!(
        "Invalid value: {value}. Supported values are: {expected}."
    ))
    .param(param)
    .code("invalid_value")
}

/// The TTLs a route accepts: Chat Completions only `30m`, Responses also `12h`.
fn ttls(route: MockRoute) -> &'static str {
    match route {
        MockRoute::Responses => "'30m' and '12h'",
        _ => "'30m'",
    }
}

fn ttl_of(route: MockRoute, param: &str, v: &Value) -> Result<CacheTtl, ApiError> {
    match v.as_str().and_then(CacheTtl::parse) {
        Some(CacheTtl::Min30) => Ok(CacheTtl::Min30),
        Some(CacheTtl::Hour12) if route == MockRoute::Responses => Ok(CacheTtl::Hour12),
        _ => Err(invalid_value(param, v, ttls(route))),
    }
}

fn options_of(route: MockRoute, v: &Value) -> Result<(BreakpointMode, CacheTtl), ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid_type("prompt_cache_options", "an object"))?;
    let mut mode = BreakpointMode::Implicit;
    let mut ttl = CacheTtl::Min30;
    for (k, v) in obj {
        let param = format!("prompt_cache_options.{k}");
        match (k.as_str(), route) {
            ("mode", _) => {
                mode = match v.as_str() {
                    Some("implicit") => BreakpointMode::Implicit,
                    Some("explicit") => BreakpointMode::Explicit,
                    _ => return Err(invalid_value(&param, v, "'implicit' and 'explicit'")),
                };
            }
            ("ttl", _) => ttl = ttl_of(route, &param, v)?,
            // Responses-only fields, accepted with their documented types. Prompt-cache
            // diagnostics and prewarming are not simulated (docs/mock-upstream.md).
            ("comparison_response_id", MockRoute::Responses) => {
                if !(v.is_string() || v.is_null()) {
                    return Err(ApiError::invalid_type(&param, "a string"));
                }
            }
            ("prewarm", MockRoute::Responses) => {
                if !v.is_boolean() {
                    return Err(ApiError::invalid_type(&param, "a boolean"));
                }
            }
            _ => return Err(unknown(&param)),
        }
    }
    Ok((mode, ttl))
}

/// Every content part of the request with the path the API names it by.
fn parts(route: MockRoute, body: &Map<String, Value>) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let (list, field) = match route {
        MockRoute::ChatCompletions => ("messages", "content"),
        MockRoute::Responses => ("input", "content"),
        _ => return out,
    };
    let Some(items) = body.get(list).and_then(Value::as_array) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        // Responses: a function_call_output's output may be a list of input parts too.
        for f in [field, "output"] {
            if f == "output" && route != MockRoute::Responses {
                continue;
            }
            if let Some(ps) = item.get(f).and_then(Value::as_array) {
                for (j, p) in ps.iter().enumerate() {
                    out.push((format!("{list}[{i}].{f}[{j}]"), p));
                }
            }
        }
    }
    out
}

fn first_breakpoint(route: MockRoute, body: &Map<String, Value>) -> Option<String> {
    parts(route, body)
        .into_iter()
        .find(|(_, p)| p.get("prompt_cache_breakpoint").is_some())
        .map(|(path, _)| format!("{path}.prompt_cache_breakpoint"))
}

/// Each `prompt_cache_breakpoint`: an object `{"mode": "explicit"}` with an optional
/// `ttl`, on a content part of a type that can carry one.
fn check_breakpoints(route: MockRoute, body: &Map<String, Value>) -> Result<(), ApiError> {
    let allowed: &[&str] = match route {
        MockRoute::Responses => &RESPONSES_BREAKPOINT_PARTS,
        _ => &CHAT_BREAKPOINT_PARTS,
    };
    for (path, part) in parts(route, body) {
        let Some(bp) = part.get("prompt_cache_breakpoint") else {
            continue;
        };
        let param = format!("{path}.prompt_cache_breakpoint");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        if !allowed.contains(&kind) {
            return Err(ApiError::invalid(format!(
                "Invalid '{param}': cache breakpoints are not supported on content of type '{kind}'. Supported types: {}.",
                allowed.join(", ")
            ))
            .param(&param)
            .code("invalid_value"));
        }
        let obj = bp
            .as_object()
            .ok_or_else(|| ApiError::invalid_type(&param, "an object"))?;
        match obj.get("mode") {
            None => return Err(ApiError::missing(&format!("{param}.mode"))),
            Some(Value::String(m)) if m == "explicit" => {}
            Some(v) => return Err(invalid_value(&format!("{param}.mode"), v, "'explicit'")),
        }
        for (k, v) in obj {
            match k.as_str() {
                "mode" => {}
                "ttl" => {
                    ttl_of(route, &format!("{param}.ttl"), v)?;
                }
                _ => return Err(unknown(&format!("{param}.{k}"))),
            }
        }
    }
    Ok(())
}

/// The body as the content hash reads it: without the fields that only steer the
/// provider's cache (`prompt_cache_options`, `prompt_cache_breakpoint` on parts), and
/// with a content array of exactly one plain text part read as the string it carries. A
/// model writes the same answer in every case: the markers do not reach the prompt, and
/// `"content": "x"` and `"content": [{"type": "text", "text": "x"}]` render the same
/// tokens (the proxy turns the first into the second to place a breakpoint on it).
/// `None` when the body is already in that form.
pub fn without_cache_markers(
    route: MockRoute,
    body: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let list = match route {
        MockRoute::ChatCompletions => Some("messages"),
        MockRoute::Responses => Some("input"),
        _ => None,
    };
    let items = list
        .and_then(|l| body.get(l))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let touches_item = |item: &Value| {
        ["content", "output"].iter().any(|f| {
            item.get(*f).and_then(Value::as_array).is_some_and(|ps| {
                one_text_part(ps).is_some()
                    || ps
                        .iter()
                        .any(|p| p.get("prompt_cache_breakpoint").is_some())
            })
        })
    };
    if !body.contains_key("prompt_cache_options") && !items.iter().any(touches_item) {
        return None;
    }
    let mut out = body.clone();
    out.remove("prompt_cache_options");
    let Some(Value::Array(items)) = list.and_then(|l| out.get_mut(l)) else {
        return Some(out);
    };
    for item in items {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        for f in ["content", "output"] {
            let Some(Value::Array(ps)) = obj.get_mut(f) else {
                continue;
            };
            for p in ps.iter_mut() {
                if let Some(o) = p.as_object_mut() {
                    o.remove("prompt_cache_breakpoint");
                }
            }
            if let Some(text) = one_text_part(ps) {
                let text = Value::String(text.to_string());
                obj.insert(f.to_string(), text);
            }
        }
    }
    Some(out)
}

/// The text of a content array that is one text part and nothing else (its marker
/// aside): `[{"type": "text" | "input_text" | "output_text", "text": "..."}]`.
fn one_text_part(parts: &[Value]) -> Option<&str> {
    let [part] = parts else { return None };
    let o = part.as_object()?;
    let kind = o.get("type")?.as_str()?;
    if !matches!(kind, "text" | "input_text" | "output_text") {
        return None;
    }
    let plain = o
        .keys()
        .all(|k| matches!(k.as_str(), "type" | "text" | "prompt_cache_breakpoint"));
    if !plain {
        return None;
    }
    o.get("text")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(route: MockRoute, model: &str, body: Value) -> Result<CacheRequest, ApiError> {
        cache_request(route, model, body.as_object().unwrap())
    }

    fn err_body(e: ApiError) -> Value {
        serde_json::from_slice(&e.body()).unwrap()
    }

    const CHAT: MockRoute = MockRoute::ChatCompletions;
    const RESP: MockRoute = MockRoute::Responses;

    #[test]
    fn older_models_keep_block_rules_and_reject_the_new_fields() {
        let r = req(CHAT, "gpt-4o", json!({"prompt_cache_retention": "24h"})).unwrap();
        assert_eq!(r.policy, CachePolicy::Blocks(Retention::Extended));
        let e = req(
            CHAT,
            "gpt-5.5",
            json!({"prompt_cache_options": {"mode": "explicit"}}),
        )
        .unwrap_err();
        assert_eq!(
            err_body(e)["error"],
            json!({"message": "Unsupported parameter: 'prompt_cache_options' is not supported with this model.",
                   "type": "invalid_request_error", "param": "prompt_cache_options", "code": "unsupported_parameter"})
        );
        let e = req(
            RESP,
            "gpt-4.1",
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x", "prompt_cache_breakpoint": {"mode": "explicit"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(
            err_body(e)["error"]["param"],
            "input[0].content[0].prompt_cache_breakpoint"
        );
    }

    #[test]
    fn gpt_5_6_defaults_and_options() {
        let r = req(CHAT, "gpt-5.6-luna", json!({"prompt_cache_key": "k"})).unwrap();
        assert_eq!(r.policy, CachePolicy::BREAKPOINTS_DEFAULT);
        assert_eq!(r.key.as_deref(), Some("k"));
        let r = req(
            RESP,
            "gpt-5.6-sol",
            json!({"prompt_cache_options": {"mode": "explicit", "ttl": "12h", "prewarm": false, "comparison_response_id": null}}),
        )
        .unwrap();
        assert_eq!(
            r.policy,
            CachePolicy::Breakpoints {
                mode: BreakpointMode::Explicit,
                ttl: CacheTtl::Hour12
            }
        );
        // Chat Completions accepts only 30m.
        let e = req(
            CHAT,
            "gpt-5.6",
            json!({"prompt_cache_options": {"ttl": "12h"}}),
        )
        .unwrap_err();
        let b = err_body(e);
        assert_eq!(b["error"]["param"], "prompt_cache_options.ttl");
        assert_eq!(b["error"]["code"], "invalid_value");
        for (bad, param) in [
            (
                json!({"prompt_cache_options": "explicit"}),
                "prompt_cache_options",
            ),
            (
                json!({"prompt_cache_options": {"mode": "auto"}}),
                "prompt_cache_options.mode",
            ),
            (
                json!({"prompt_cache_options": {"ttl": "1h"}}),
                "prompt_cache_options.ttl",
            ),
            (
                json!({"prompt_cache_options": {"prewarm": true}}),
                "prompt_cache_options.prewarm",
            ),
            (
                json!({"prompt_cache_options": {"bogus": 1}}),
                "prompt_cache_options.bogus",
            ),
        ] {
            let e = req(CHAT, "gpt-5.6", bad).unwrap_err();
            assert_eq!(err_body(e)["error"]["param"], param);
        }
    }

    #[test]
    fn malformed_breakpoints_are_rejected_with_their_path() {
        let part = |bp: Value, kind: &str| {
            json!({"messages": [{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": kind, "text": "x", "prompt_cache_breakpoint": bp}]}]})
        };
        assert!(req(CHAT, "gpt-5.6", part(json!({"mode": "explicit"}), "text")).is_ok());
        assert!(
            req(
                CHAT,
                "gpt-5.6",
                part(json!({"mode": "explicit", "ttl": "30m"}), "refusal")
            )
            .is_ok()
        );
        let p = "messages[1].content[0].prompt_cache_breakpoint";
        for (bp, kind, param, code) in [
            (json!(true), "text", p.to_string(), Value::Null),
            (json!({}), "text", format!("{p}.mode"), Value::Null),
            (
                json!({"mode": "implicit"}),
                "text",
                format!("{p}.mode"),
                json!("invalid_value"),
            ),
            (
                json!({"mode": "explicit", "ttl": "12h"}),
                "text",
                format!("{p}.ttl"),
                json!("invalid_value"),
            ),
            (
                json!({"mode": "explicit", "x": 1}),
                "text",
                format!("{p}.x"),
                json!("unknown_parameter"),
            ),
            (
                json!({"mode": "explicit"}),
                "output_text",
                p.to_string(),
                json!("invalid_value"),
            ),
        ] {
            let e = req(CHAT, "gpt-5.6", part(bp.clone(), kind)).unwrap_err();
            let b = err_body(e);
            assert_eq!(b["error"]["type"], "invalid_request_error", "{bp}");
            assert_eq!(b["error"]["param"], json!(param), "{bp}");
            if !code.is_null() {
                assert_eq!(b["error"]["code"], code, "{bp}");
            }
        }
        // Responses: input parts only; an assistant's output_text cannot carry one, a
        // function_call_output's input parts can, and 12h is accepted.
        let ok = json!({"input": [
            {"type": "function_call_output", "call_id": "c", "output": [
                {"type": "input_text", "text": "r", "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"}}]}]});
        assert!(req(RESP, "gpt-5.6", ok).is_ok());
        let bad = json!({"input": [
            {"role": "assistant", "content": [{"type": "output_text", "text": "r", "prompt_cache_breakpoint": {"mode": "explicit"}}]}]});
        let e = req(RESP, "gpt-5.6", bad).unwrap_err();
        assert_eq!(
            err_body(e)["error"]["param"],
            "input[0].content[0].prompt_cache_breakpoint"
        );
    }

    #[test]
    fn markers_are_stripped_for_the_content_hash() {
        let with = json!({"prompt_cache_options": {"mode": "explicit"}, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x", "prompt_cache_breakpoint": {"mode": "explicit"}}, {"type": "text", "text": "y"}]}]});
        let without = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]});
        assert_eq!(
            without_cache_markers(CHAT, with.as_object().unwrap()).unwrap(),
            *without.as_object().unwrap()
        );
        assert!(without_cache_markers(CHAT, without.as_object().unwrap()).is_none());
    }

    /// The proxy places a breakpoint on a string content by turning it into a one-part
    /// array: the model must see (and answer) the same thing.
    #[test]
    fn a_one_part_text_array_reads_as_its_string() {
        let string = json!({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]});
        let spliced = json!({"messages": [{"role": "system", "content": [{"type": "text", "text": "rules", "prompt_cache_breakpoint": {"mode": "explicit"}}]}, {"role": "user", "content": "q"}]});
        assert_eq!(
            without_cache_markers(CHAT, spliced.as_object().unwrap()).unwrap(),
            *string.as_object().unwrap()
        );
        assert!(without_cache_markers(CHAT, string.as_object().unwrap()).is_none());
        let string = json!({"input": [{"role": "developer", "content": "rules"}, {"type": "function_call_output", "call_id": "c", "output": "ok"}]});
        let spliced = json!({"input": [{"role": "developer", "content": [{"type": "input_text", "text": "rules"}]}, {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "ok", "prompt_cache_breakpoint": {"mode": "explicit"}}]}]});
        assert_eq!(
            without_cache_markers(RESP, spliced.as_object().unwrap()).unwrap(),
            *string.as_object().unwrap()
        );
        // Not plain text (an image, extra fields, two parts): left as written.
        let image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]});
        assert!(without_cache_markers(CHAT, image.as_object().unwrap()).is_none());
    }
}
