//! The wire format of every route, streamed and not, checked field by field, with the
//! streams parsed back by a plain SSE split and their sequence invariants asserted.

// Helpers outside #[test] fns assert like tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Event, get, post, sse_events};
use prefixcache_core::tokenizer::Encoding;
use prefixcache_mock::{MockConfig, spawn_local};
use serde_json::{Value, json};

fn chat_body(content: &str) -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content}
        ]
    })
}

/// The cookbook's count: 3 per message + role + content (+1 + name), + 3 priming.
fn expected_prompt_tokens(enc: Encoding, messages: &[(&str, &str)]) -> u64 {
    messages
        .iter()
        .map(|(r, c)| 3 + enc.count(r) + enc.count(c))
        .sum::<usize>() as u64
        + 3
}

#[tokio::test]
async fn chat_completion_shape_usage_and_determinism() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let a = post(&server, "/v1/chat/completions", &chat_body("Hello there")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.header("x-request-id").unwrap().starts_with("req_"));
    assert_eq!(a.header("openai-version"), Some("2020-10-01"));
    assert!(a.header("openai-processing-ms").is_some());
    assert!(a.header("x-ratelimit-limit-requests").is_some());
    let v = a.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o");
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["refusal"], Value::Null);
    assert_eq!(choice["message"]["annotations"], json!([]));
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    let enc = Encoding::O200kBase;
    let u = &v["usage"];
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap(),
        expected_prompt_tokens(
            enc,
            &[("system", "You are terse."), ("user", "Hello there")]
        )
    );
    assert_eq!(
        u["completion_tokens"].as_u64().unwrap(),
        enc.count(content) as u64
    );
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        u["prompt_tokens_details"],
        json!({"cached_tokens": 0, "audio_tokens": 0})
    );
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);

    // Same request: same content, new id. Different request: different content.
    let b = post(&server, "/v1/chat/completions", &chat_body("Hello there"))
        .await
        .json();
    assert_eq!(b["choices"], v["choices"]);
    assert_ne!(b["id"], v["id"]);
    let c = post(&server, "/v1/chat/completions", &chat_body("Hello there!"))
        .await
        .json();
    assert_ne!(
        c["choices"][0]["message"]["content"],
        choice["message"]["content"]
    );
    // Key order does not matter; the seed does.
    let reordered = r#"{"messages":[{"content":"You are terse.","role":"system"},{"content":"Hello there","role":"user"}],"model":"gpt-4o"}"#;
    let d = common::post_raw(&server, "/v1/chat/completions", reordered, &[])
        .await
        .json();
    assert_eq!(d["choices"], v["choices"]);
    let other_seed = spawn_local(MockConfig {
        seed: 99,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let e = post(
        &other_seed,
        "/v1/chat/completions",
        &chat_body("Hello there"),
    )
    .await
    .json();
    assert_ne!(
        e["choices"][0]["message"]["content"],
        choice["message"]["content"]
    );
    // cl100k models count with cl100k.
    let mut g4 = chat_body("Hello there");
    g4["model"] = json!("gpt-4");
    let f = post(&server, "/v1/chat/completions", &g4).await.json();
    assert_eq!(
        f["usage"]["prompt_tokens"].as_u64().unwrap(),
        expected_prompt_tokens(
            Encoding::Cl100kBase,
            &[("system", "You are terse."), ("user", "Hello there")]
        )
    );
    server.shutdown().await.unwrap();
    other_seed.shutdown().await.unwrap();
}

/// Checks a chat stream's invariants and returns (per-choice content, per-choice tool
/// calls as (id, name, arguments), per-choice finish reason, usage if sent).
fn check_chat_stream(events: &[Event], include_usage: bool) -> Assembled {
    assert_eq!(
        events.last().unwrap().data,
        "[DONE]",
        "stream must end with [DONE]"
    );
    assert!(events.iter().all(|e| e.event.is_none()));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let id = chunks[0]["id"].clone();
    let mut content: Vec<String> = Vec::new();
    let mut calls: Vec<Vec<(String, String, String)>> = Vec::new();
    let mut finish: Vec<Option<String>> = Vec::new();
    let mut saw_role: Vec<bool> = Vec::new();
    let mut usage = None;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id, "one id for the whole stream");
        assert!(c["system_fingerprint"].is_string());
        if include_usage {
            assert!(
                c.as_object().unwrap().contains_key("usage"),
                "usage key on every chunk"
            );
        } else {
            assert!(
                !c.as_object().unwrap().contains_key("usage"),
                "no usage key without include_usage"
            );
        }
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(
                include_usage && i == chunks.len() - 1,
                "only the last chunk has no choices"
            );
            usage = Some(c["usage"].clone());
            continue;
        }
        if include_usage {
            assert_eq!(
                c["usage"],
                Value::Null,
                "usage is null before the last chunk"
            );
        }
        assert_eq!(choices.len(), 1);
        let ch = &choices[0];
        let idx = ch["index"].as_u64().unwrap() as usize;
        while content.len() <= idx {
            content.push(String::new());
            calls.push(Vec::new());
            finish.push(None);
            saw_role.push(false);
        }
        assert!(
            finish[idx].is_none(),
            "nothing after a choice's finish_reason"
        );
        let delta = &ch["delta"];
        if !saw_role[idx] {
            assert_eq!(
                delta["role"], "assistant",
                "the first delta of a choice carries the role"
            );
            saw_role[idx] = true;
        } else {
            assert!(delta.get("role").is_none());
        }
        if let Some(t) = delta["content"].as_str() {
            content[idx].push_str(t);
        }
        if let Some(tcs) = delta["tool_calls"].as_array() {
            for tc in tcs {
                let ti = tc["index"].as_u64().unwrap() as usize;
                if ti == calls[idx].len() {
                    assert!(
                        tc["id"].is_string() && tc["function"]["name"].is_string(),
                        "first fragment names the call"
                    );
                    assert_eq!(tc["type"], "function");
                    calls[idx].push((
                        tc["id"].as_str().unwrap().into(),
                        tc["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                } else {
                    assert!(ti < calls[idx].len(), "tool call indices grow by one");
                    assert!(tc.get("id").is_none());
                }
                calls[idx][ti]
                    .2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            assert_eq!(delta, &json!({}), "the finish chunk has an empty delta");
            finish[idx] = Some(f.to_string());
        }
    }
    assert_eq!(include_usage, usage.is_some());
    let finish: Vec<String> = finish
        .into_iter()
        .map(|f| f.expect("every choice finishes"))
        .collect();
    (content, calls, finish, usage)
}

/// Per-choice content, per-choice tool calls as (id, name, arguments), per-choice finish
/// reason, and the usage chunk's usage if one was sent.
type Assembled = (
    Vec<String>,
    Vec<Vec<(String, String, String)>>,
    Vec<String>,
    Option<Value>,
);

#[tokio::test]
async fn chat_stream_matches_the_json_answer() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let body = chat_body("Stream me something");
    let plain = post(&server, "/v1/chat/completions", &body).await.json();
    for include_usage in [true, false] {
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        if include_usage {
            sb["stream_options"] = json!({"include_usage": true});
        }
        let r = post(&server, "/v1/chat/completions", &sb).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        let events = sse_events(&r.text());
        let (content, _, finish, usage) = check_chat_stream(&events, include_usage);
        assert_eq!(
            content,
            [plain["choices"][0]["message"]["content"].as_str().unwrap()]
        );
        assert_eq!(finish, ["stop"]);
        // One token per content delta, like the API.
        let deltas = events.len() - 3 - usize::from(include_usage);
        assert_eq!(
            deltas as u64,
            plain["usage"]["completion_tokens"].as_u64().unwrap()
        );
        if let Some(u) = usage {
            assert_eq!(u, plain["usage"]);
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn n_choices_stream_interleaved_and_assemble_by_index() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let mut body = chat_body("Give me three");
    body["n"] = json!(3);
    let plain = post(&server, "/v1/chat/completions", &body).await.json();
    let texts: Vec<&str> = plain["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(
        texts[0] != texts[1] && texts[1] != texts[2],
        "choices differ"
    );
    let total: u64 = texts
        .iter()
        .map(|t| Encoding::O200kBase.count(t) as u64)
        .sum();
    assert_eq!(plain["usage"]["completion_tokens"].as_u64().unwrap(), total);
    body["stream"] = json!(true);
    let events = sse_events(&post(&server, "/v1/chat/completions", &body).await.text());
    let (content, _, finish, _) = check_chat_stream(&events, false);
    assert_eq!(content, texts);
    assert_eq!(finish, ["stop", "stop", "stop"]);
    // Interleaved: the first three chunks are the three role chunks.
    let first: Vec<u64> = events[..3]
        .iter()
        .map(|e| e.json()["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(first, [0, 1, 2]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tool_calls_by_rule_and_streamed_by_index() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}
    ]);
    let mut body = chat_body("Use get_weather and get_time please");
    body["tools"] = tools.clone();
    let plain = post(&server, "/v1/chat/completions", &body).await.json();
    let choice = &plain["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "both named tools are called in parallel");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    assert!(args["unit"] == "c" || args["unit"] == "f");
    // Tools add prompt tokens.
    let no_tools = post(
        &server,
        "/v1/chat/completions",
        &chat_body("Use get_weather and get_time please"),
    )
    .await
    .json();
    assert!(plain["usage"]["prompt_tokens"].as_u64() > no_tools["usage"]["prompt_tokens"].as_u64());

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let events = sse_events(&post(&server, "/v1/chat/completions", &sb).await.text());
    let (_, streamed, finish, _) = check_chat_stream(&events, false);
    assert_eq!(finish, ["tool_calls"]);
    let expected: Vec<(String, String, String)> = calls
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["function"]["name"].as_str().unwrap().into(),
                c["function"]["arguments"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(streamed[0], expected);

    // After a tool result, `auto` answers in text; `required` and a named choice force calls.
    let mut after = body.clone();
    after["messages"] = json!([
        {"role": "user", "content": "Use get_weather"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}
    ]);
    let v = post(&server, "/v1/chat/completions", &after).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"].is_string());
    after["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let v = post(&server, "/v1/chat/completions", &after).await.json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    after["tool_choice"] = json!("none");
    let v = post(&server, "/v1/chat/completions", &after).await.json();
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_tokens_json_mode_logprobs_and_reasoning() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let mut body = chat_body("Write a lot");
    body["max_tokens"] = json!(5);
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(
        Encoding::O200kBase.count(v["choices"][0]["message"]["content"].as_str().unwrap()),
        5
    );

    let mut body = chat_body("Describe a person");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false}}});
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    let person: Value = serde_json::from_str(text).unwrap();
    assert!(person["name"].is_string() && person["age"].is_u64());
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        Encoding::O200kBase.count(text) as u64
    );
    body["response_format"] = json!({"type": "json_object"});
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    assert!(
        serde_json::from_str::<Value>(v["choices"][0]["message"]["content"].as_str().unwrap())
            .unwrap()
            .is_object()
    );

    let mut body = chat_body("Probabilities");
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    let lp = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    let joined: String = lp.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(
        joined,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    for t in lp {
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(t["top_logprobs"][0]["token"], t["token"]);
        let bytes: Vec<u8> = t["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, t["token"].as_str().unwrap().as_bytes());
    }

    let mut body = chat_body("Think first");
    body["model"] = json!("o3");
    body["reasoning_effort"] = json!("low");
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    let visible =
        Encoding::O200kBase.count(v["choices"][0]["message"]["content"].as_str().unwrap()) as u64;
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        64
    );
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        visible + 64
    );
    body["max_tokens"] = json!(10);
    let r = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "unsupported_parameter");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn legacy_completions_json_and_stream() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"});
    let v = post(&server, "/v1/completions", &body).await.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let text = v["choices"][0]["text"].as_str().unwrap();
    // The API's default max_tokens is 16.
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(Encoding::Cl100kBase.count(text), 16);
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        Encoding::Cl100kBase.count("Say this is a test") as u64
    );

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = sse_events(&post(&server, "/v1/completions", &sb).await.text());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let mut streamed = String::new();
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["object"], "text_completion");
        streamed.push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(streamed, text);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert_eq!(chunks.last().unwrap()["usage"], v["usage"]);

    // Several prompts, token prompts, n and echo.
    let v = post(&server, "/v1/completions", &json!({"model": "davinci-002", "prompt": ["a b", "c d"], "n": 2, "echo": true, "max_tokens": 3})).await.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert!(choices[0]["text"].as_str().unwrap().starts_with("a b"));
    assert!(choices[2]["text"].as_str().unwrap().starts_with("c d"));
    let enc = Encoding::Cl100kBase;
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        (enc.count("a b") + enc.count("c d")) as u64
    );
    assert_eq!(v["usage"]["completion_tokens"], 12);
    let v = post(
        &server,
        "/v1/completions",
        &json!({"model": "davinci-002", "prompt": [[64, 65], [66]]}),
    )
    .await
    .json();
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    // Mixed prompt kinds are rejected, as by the API.
    let r = post(
        &server,
        "/v1/completions",
        &json!({"model": "davinci-002", "prompt": ["a", [64]]}),
    )
    .await;
    assert_eq!(r.status, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    use base64::Engine as _;
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let v = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"]}),
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let vec0: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vec0.len(), 1536);
    let norm: f64 = vec0.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let tokens = Encoding::Cl100kBase.count("hello world") + Encoding::Cl100kBase.count("bye");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": tokens, "total_tokens": tokens})
    );
    // The same input alone gives the same vector.
    let single = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hello world"}),
    )
    .await
    .json();
    assert_eq!(single["data"][0]["embedding"], data[0]["embedding"]);
    // dimensions and base64.
    let b = post(&server, "/v1/embeddings", &json!({"model": "text-embedding-3-large", "input": "hello world", "dimensions": 256, "encoding_format": "base64"})).await.json();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 256 * 4);
    let floats: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let f = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-large", "input": "hello world", "dimensions": 256}),
    )
    .await
    .json();
    let as_float: Vec<f32> = f["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, as_float);
    let r = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}),
    )
    .await;
    assert_eq!(r.status, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn responses_object_and_event_stream() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let body = json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Tell me a story"});
    let v = post(&server, "/v1/responses", &body).await.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["instructions"], "Be brief.");
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["role"], "assistant");
    let text = out[0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(out[0]["content"][0]["type"], "output_text");
    let enc = Encoding::O200kBase;
    let u = &v["usage"];
    let expected_input = 3
        + enc.count("developer")
        + enc.count("Be brief.")
        + 3
        + enc.count("user")
        + enc.count("Tell me a story")
        + 3;
    assert_eq!(u["input_tokens"].as_u64().unwrap(), expected_input as u64);
    assert_eq!(u["output_tokens"].as_u64().unwrap(), enc.count(text) as u64);
    assert_eq!(u["input_tokens_details"], json!({"cached_tokens": 0}));
    assert_eq!(u["output_tokens_details"], json!({"reasoning_tokens": 0}));
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = post(&server, "/v1/responses", &sb).await;
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events = sse_events(&r.text());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_deref().expect("every event is named"))
        .collect();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    let mut streamed = String::new();
    for (i, e) in events.iter().enumerate() {
        let d = e.json();
        assert_eq!(
            d["type"],
            e.event.as_deref().unwrap(),
            "type matches the event name"
        );
        assert_eq!(
            d["sequence_number"], i as u64,
            "sequence numbers count from 0"
        );
        if let Some(t) = d["delta"].as_str() {
            streamed.push_str(t);
        }
    }
    assert_eq!(streamed, text);
    let created = events[0].json();
    assert_eq!(created["response"]["status"], "in_progress");
    assert_eq!(created["response"]["usage"], Value::Null);
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["output"], v["output"]);
    assert_eq!(done["response"]["usage"], v["usage"]);
    assert_eq!(done["response"]["id"], created["response"]["id"]);

    // Function calls, and `max_output_tokens` → incomplete.
    let call = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": "use lookup"}], "stream": true,
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]});
    let events = sse_events(&post(&server, "/v1/responses", &call).await.text());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert!(kinds.contains(&"response.function_call_arguments.delta"));
    assert!(kinds.contains(&"response.function_call_arguments.done"));
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["output"][0]["type"], "function_call");
    assert_eq!(done["response"]["output"][0]["name"], "lookup");
    let args: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["type"] == "response.function_call_arguments.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        args,
        done["response"]["output"][0]["arguments"].as_str().unwrap()
    );
    let short = json!({"model": "gpt-4.1", "input": "a long story please", "max_output_tokens": 16, "stream": true});
    let events = sse_events(&post(&server, "/v1/responses", &short).await.text());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.incomplete"));
    assert_eq!(
        last.json()["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    // Reasoning models put a reasoning item first and count reasoning tokens.
    let v = post(
        &server,
        "/v1/responses",
        &json!({"model": "o4-mini", "input": "hi", "reasoning": {"effort": "high"}}),
    )
    .await
    .json();
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert_eq!(v["output"][1]["type"], "message");
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 576);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn models_and_unknown_paths() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let v = get(&server, "/v1/models").await.json();
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o" && m["object"] == "model")
    );
    let m = get(&server, "/v1/models/gpt-4o").await;
    assert_eq!((m.status, m.json()["id"].clone()), (200, json!("gpt-4o")));
    let missing = get(&server, "/v1/models/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
    let r = post(&server, "/v1/nothing/here", &json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "Invalid URL (POST /v1/nothing/here)", "type": "invalid_request_error", "param": null, "code": null}})
    );
    server.shutdown().await.unwrap();
}
