//! Stream assembly against real-shaped OpenAI streams: tool calls split over many
//! chunks, interleaved `n = 2` choices with logprobs and a refusal, the usage chunk,
//! legacy completions, a Responses stream with a function call, and broken streams.

// Helpers outside #[test] fns are test code too; clippy.toml only exempts the fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use prefixcache_core::route::Route;
use prefixcache_core::sse::{EventKind, SseSplitter, SseTail, StreamAssembler};
use prefixcache_core::usage::Usage;
use prefixcache_core::wire;
use serde_json::{Value, json};

/// A chat chunk with the envelope every chunk of one response shares.
fn chat_chunk(choices: Value, usage: Value) -> String {
    let mut c = json!({
        "id": "chatcmpl-C9kq2", "object": "chat.completion.chunk", "created": 1733100000,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_50cad350e4",
        "choices": choices, "usage": usage, "obfuscation": "aB3x",
    });
    if c["usage"] == json!("absent") {
        c.as_object_mut().unwrap().remove("usage");
    }
    format!("data: {c}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

/// Pushes a whole stream in small chunks, as the network would deliver it.
fn assemble(route: Route, sse: &str) -> (StreamAssembler, Vec<EventKind>, Option<SseTail>) {
    let mut split = SseSplitter::new();
    let mut asm = StreamAssembler::new(route);
    let mut kinds = Vec::new();
    for piece in sse.as_bytes().chunks(7) {
        for ev in split.push_bytes(Bytes::copy_from_slice(piece)) {
            kinds.push(asm.push(&ev));
        }
    }
    let tail = split.finish();
    (asm, kinds, tail)
}

fn json_of(asm: StreamAssembler) -> Value {
    serde_json::from_slice(&asm.into_json().unwrap()).unwrap()
}

fn tool_call_stream() -> String {
    let mut s = String::new();
    let d = |delta: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]);
    s += &chat_chunk(
        d(
            json!({"role": "assistant", "content": null, "refusal": null,
                 "tool_calls": [{"index": 0, "id": "call_Wq1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": ""}}]}),
        ),
        Value::Null,
    );
    for frag in ["{\"ci", "ty\": ", "\"Par", "is\", \"u", "nit\": \"c\"}"] {
        s += &chat_chunk(
            d(json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})),
            Value::Null,
        );
    }
    s += &chat_chunk(
        d(
            json!({"tool_calls": [{"index": 1, "id": "call_Tz7", "type": "function",
                                 "function": {"name": "get_time", "arguments": ""}}]}),
        ),
        Value::Null,
    );
    for frag in ["{\"tz\"", ":\"Europe/", "Paris\"}"] {
        s += &chat_chunk(
            d(json!({"tool_calls": [{"index": 1, "function": {"arguments": frag}}]})),
            Value::Null,
        );
    }
    s += &chat_chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]),
        Value::Null,
    );
    s += &chat_chunk(
        json!([]),
        json!({"prompt_tokens": 1430, "completion_tokens": 41, "total_tokens": 1471,
               "prompt_tokens_details": {"cached_tokens": 1280, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
    );
    s + DONE
}

#[test]
fn chat_tool_calls_split_over_many_chunks_assemble_by_index() {
    let (asm, kinds, tail) = assemble(Route::ChatCompletions, &tool_call_stream());
    assert_eq!(tail, None);
    assert_eq!(kinds.len(), 13);
    assert!(kinds[..11].iter().all(|k| *k == EventKind::Chunk));
    assert_eq!(kinds[11], EventKind::UsageOnly);
    assert_eq!(kinds[12], EventKind::Done);
    assert!(asm.is_complete());
    assert_eq!(asm.model(), Some("gpt-4o-2024-08-06"));
    assert_eq!(
        asm.usage(),
        Some(Usage {
            prompt_tokens: 1430,
            completion_tokens: 41,
            cached_tokens: 1280,
            cache_write_tokens: 0,
            cache_write_long_tokens: 0,
        })
    );
    assert_eq!(
        json_of(asm),
        json!({
            "id": "chatcmpl-C9kq2", "object": "chat.completion", "created": 1733100000,
            "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_50cad350e4",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_Wq1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}},
                    {"id": "call_Tz7", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 1430, "completion_tokens": 41, "total_tokens": 1471,
                "prompt_tokens_details": {"cached_tokens": 1280, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        })
    );
}

/// `n = 2` with logprobs: choice 0 answers, choice 1 refuses; chunks interleave.
fn two_choice_stream() -> String {
    let lp = |tok: &str, p: f64| json!({"token": tok, "logprob": p, "bytes": tok.as_bytes(), "top_logprobs": []});
    let mut s = String::new();
    s += &chat_chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                "logprobs": {"content": [], "refusal": null}, "finish_reason": null}]),
        "absent".into(),
    );
    s += &chat_chunk(
        json!([{"index": 1, "delta": {"role": "assistant", "content": null, "refusal": ""},
                "logprobs": {"content": null, "refusal": []}, "finish_reason": null}]),
        "absent".into(),
    );
    let parts = [
        (0, "Bonjour", -0.01),
        (1, "I'm", -0.002),
        (0, " le", -0.3),
        (1, " sorry", -0.5),
        (0, " monde", -0.04),
    ];
    for (i, tok, p) in parts {
        let (delta, logprobs) = if i == 0 {
            (
                json!({"content": tok}),
                json!({"content": [lp(tok, p)], "refusal": null}),
            )
        } else {
            (
                json!({"refusal": tok}),
                json!({"content": null, "refusal": [lp(tok, p)]}),
            )
        };
        s += &chat_chunk(
            json!([{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": null}]),
            "absent".into(),
        );
    }
    s += &chat_chunk(
        json!([{"index": 1, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        "absent".into(),
    );
    s += &chat_chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        "absent".into(),
    );
    s + DONE
}

#[test]
fn interleaved_choices_with_logprobs_and_refusal() {
    let (asm, kinds, _) = assemble(Route::ChatCompletions, &two_choice_stream());
    assert!(
        kinds
            .iter()
            .all(|k| matches!(k, EventKind::Chunk | EventKind::Done))
    );
    assert!(asm.is_complete());
    assert_eq!(asm.usage(), None, "no usage chunk was asked for");
    let v = json_of(asm);
    assert!(v.get("usage").is_none());
    let c = &v["choices"];
    assert_eq!(c[0]["message"]["content"], "Bonjour le monde");
    assert_eq!(c[0]["message"]["refusal"], Value::Null);
    let toks: Vec<&str> = c[0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(toks, ["Bonjour", " le", " monde"]);
    assert_eq!(c[0]["logprobs"]["refusal"], Value::Null);
    assert_eq!(c[1]["index"], 1);
    assert_eq!(c[1]["message"]["content"], Value::Null);
    assert_eq!(c[1]["message"]["refusal"], "I'm sorry");
    assert_eq!(c[1]["logprobs"]["refusal"].as_array().unwrap().len(), 2);
    assert_eq!(c[1]["logprobs"]["content"], Value::Null);
    assert_eq!(c[1]["finish_reason"], "stop");
}

#[test]
fn incomplete_streams_are_not_complete() {
    let full = two_choice_stream();
    // no [DONE]
    let (asm, _, _) = assemble(Route::ChatCompletions, full.strip_suffix(DONE).unwrap());
    assert!(!asm.is_complete());
    // a choice without finish_reason: drop the index-1 finish chunk
    let without: String = full
        .split_inclusive("\n\n")
        .filter(|e| !e.contains(r#""index":1,"logprobs":null"#) || !e.contains("stop"))
        .collect();
    assert!(without.len() < full.len());
    let (asm, _, _) = assemble(Route::ChatCompletions, &without);
    assert!(!asm.is_complete());
    // cut mid-event: the tail is partial, the stream incomplete
    let cut = &full[..full.len() - DONE.len() - 20];
    let (asm, _, tail) = assemble(Route::ChatCompletions, cut);
    assert!(matches!(tail, Some(SseTail::Partial(_))));
    assert!(!asm.is_complete());
    // only [DONE]: no choice at all
    let (asm, _, _) = assemble(Route::ChatCompletions, DONE);
    assert!(!asm.is_complete());
    assert!(asm.into_json().is_err());
}

#[test]
fn an_error_in_a_chat_stream_fails_it() {
    let mut s = tool_call_stream();
    let at = s.find("data: [DONE]").unwrap();
    s.insert_str(
        at,
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
    );
    let (asm, kinds, _) = assemble(Route::ChatCompletions, &s);
    assert!(kinds.contains(&EventKind::Failed));
    assert!(asm.failed());
    assert!(!asm.is_complete());
}

#[test]
fn keepalive_comments_are_other_events() {
    let s = format!(": keep-alive\n\n{}", tool_call_stream());
    let (asm, kinds, _) = assemble(Route::ChatCompletions, &s);
    assert_eq!(kinds[0], EventKind::Other);
    assert!(asm.is_complete());
}

fn legacy_stream() -> String {
    let chunk = |text: &str, lp: Value, finish: Value| {
        let c = json!({"id": "cmpl-8Qx", "object": "text_completion", "created": 1733100001,
            "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}],
            "model": "gpt-3.5-turbo-instruct", "system_fingerprint": null, "usage": null});
        format!("data: {c}\n\n")
    };
    let lp = |tok: &str, p: f64, off: u64| json!({"tokens": [tok], "token_logprobs": [p], "top_logprobs": [{tok: p}], "text_offset": [off]});
    let mut s = String::new();
    s += &chunk("\n\n", lp("\n\n", -0.1, 12), Value::Null);
    s += &chunk("Once", lp("Once", -0.9, 14), Value::Null);
    s += &chunk(" upon", lp(" upon", -0.02, 18), Value::Null);
    s += &chunk("", Value::Null, json!("length"));
    let usage = json!({"id": "cmpl-8Qx", "object": "text_completion", "created": 1733100001, "choices": [],
        "model": "gpt-3.5-turbo-instruct", "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    s += &format!("data: {usage}\n\n");
    s + DONE
}

#[test]
fn legacy_completions_assemble_text_and_parallel_logprobs() {
    let (asm, kinds, _) = assemble(Route::Completions, &legacy_stream());
    assert_eq!(kinds[4], EventKind::UsageOnly);
    assert!(asm.is_complete());
    assert_eq!(asm.usage().map(|u| u.total()), Some(8));
    let v = json_of(asm);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "\n\nOnce upon");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["\n\n", "Once", " upon"]));
    assert_eq!(lp["text_offset"], json!([12, 14, 18]));
    assert_eq!(lp["top_logprobs"].as_array().unwrap().len(), 3);
}

/// A Responses stream: reasoning item, a function call (arguments in pieces), then a
/// message; `response.completed` carries the final object.
fn responses_stream(terminal: &str, with_output: bool) -> String {
    let mut seq = 0;
    let mut s = String::new();
    let mut ev = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(seq);
        seq += 1;
        s += &format!("event: {kind}\ndata: {body}\n\n");
    };
    let base = json!({"id": "resp_68a1", "object": "response", "created_at": 1733100002, "status": "in_progress",
        "model": "gpt-5-2025-08-07", "output": [], "parallel_tool_calls": true, "tool_choice": "auto",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
        "usage": null, "text": {"format": {"type": "text"}}});
    ev("response.created", json!({"response": base}));
    ev("response.in_progress", json!({"response": base}));
    let call = json!({"id": "fc_01", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Oslo\"}",
        "call_id": "call_Kq9", "name": "get_weather"});
    let msg = json!({"id": "msg_02", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Checking Oslo."}]});
    let reasoning = json!({"id": "rs_00", "type": "reasoning", "summary": []});
    ev(
        "response.output_item.added",
        json!({"output_index": 0, "item": reasoning}),
    );
    ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": reasoning}),
    );
    ev(
        "response.output_item.added",
        json!({"output_index": 1, "item": {"id": "fc_01", "type": "function_call",
        "status": "in_progress", "arguments": "", "call_id": "call_Kq9", "name": "get_weather"}}),
    );
    for d in ["{\"ci", "ty\":\"Os", "lo\"}"] {
        ev(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_01", "output_index": 1, "delta": d, "obfuscation": "q"}),
        );
    }
    ev(
        "response.function_call_arguments.done",
        json!({"item_id": "fc_01", "output_index": 1, "arguments": "{\"city\":\"Oslo\"}"}),
    );
    ev(
        "response.output_item.done",
        json!({"output_index": 1, "item": call}),
    );
    ev(
        "response.output_item.added",
        json!({"output_index": 2, "item": {"id": "msg_02", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
    );
    ev(
        "response.content_part.added",
        json!({"item_id": "msg_02", "output_index": 2, "content_index": 0, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
    );
    for d in ["Checking", " Oslo."] {
        ev(
            "response.output_text.delta",
            json!({"item_id": "msg_02", "output_index": 2, "content_index": 0, "delta": d, "logprobs": []}),
        );
    }
    ev(
        "response.output_text.done",
        json!({"item_id": "msg_02", "output_index": 2, "content_index": 0, "text": "Checking Oslo.", "logprobs": []}),
    );
    ev(
        "response.output_item.done",
        json!({"output_index": 2, "item": msg}),
    );
    let mut fin = base.clone();
    fin["status"] = json!(terminal.trim_start_matches("response."));
    fin["output"] = if with_output {
        json!([reasoning, call, msg])
    } else {
        Value::Null
    };
    fin["usage"] = json!({"input_tokens": 2100, "input_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 128},
        "output_tokens": 60, "output_tokens_details": {"reasoning_tokens": 32}, "total_tokens": 2160});
    ev(terminal, json!({"response": fin}));
    s
}

#[test]
fn responses_stream_keeps_the_completed_object() {
    let sse = responses_stream("response.completed", true);
    let (asm, kinds, tail) = assemble(Route::Responses, &sse);
    assert_eq!(tail, None);
    assert_eq!(*kinds.last().unwrap(), EventKind::Completed);
    assert!(
        kinds[..kinds.len() - 1]
            .iter()
            .all(|k| *k == EventKind::Chunk)
    );
    assert!(asm.is_complete());
    assert_eq!(asm.model(), Some("gpt-5-2025-08-07"));
    assert_eq!(
        asm.usage(),
        Some(Usage {
            prompt_tokens: 2100,
            completion_tokens: 60,
            cached_tokens: 1920,
            cache_write_tokens: 128,
            cache_write_long_tokens: 0,
        })
    );
    let v = json_of(asm);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][1]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(v["output"][2]["content"][0]["text"], "Checking Oslo.");
    // the same through the one-shot helper
    let again: Value =
        serde_json::from_slice(&wire::sse_to_json(Route::Responses, sse.as_bytes()).unwrap())
            .unwrap();
    assert_eq!(again, v);
}

#[test]
fn responses_completed_without_output_is_rebuilt_from_done_items() {
    let (asm, _, _) = assemble(
        Route::Responses,
        &responses_stream("response.completed", false),
    );
    assert!(asm.is_complete());
    let v = json_of(asm);
    let types: Vec<&str> = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["reasoning", "function_call", "message"]);
    assert_eq!(v["output"][1]["status"], "completed");
}

#[test]
fn responses_failures_and_cuts_are_not_complete() {
    for terminal in ["response.failed", "response.incomplete"] {
        let (asm, kinds, _) = assemble(Route::Responses, &responses_stream(terminal, true));
        assert_eq!(*kinds.last().unwrap(), EventKind::Failed, "{terminal}");
        assert!(!asm.is_complete());
        assert!(
            asm.usage().is_some(),
            "usage of a failed response still counts"
        );
    }
    let sse = responses_stream("response.completed", true);
    let cut = &sse[..sse.rfind("event: response.completed").unwrap()];
    let (asm, _, _) = assemble(Route::Responses, cut);
    assert!(!asm.is_complete());
    assert!(matches!(asm.into_json(), Err(wire::WireError::Incomplete)));
    let err = "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\",\"param\":null,\"sequence_number\":3}\n\n";
    let (asm, kinds, _) = assemble(Route::Responses, &format!("{cut}{err}"));
    assert_eq!(*kinds.last().unwrap(), EventKind::Failed);
    assert!(!asm.is_complete());
}

#[test]
fn replay_drops_the_usage_chunk_unless_asked() {
    let sse = tool_call_stream();
    let all = wire::replay_sse(Route::ChatCompletions, sse.as_bytes(), true).unwrap();
    assert_eq!(
        all.concat(),
        sse.as_bytes(),
        "replay with usage is byte-identical"
    );
    let without = wire::replay_sse(Route::ChatCompletions, sse.as_bytes(), false).unwrap();
    assert_eq!(without.len(), all.len() - 1);
    assert!(
        !without
            .iter()
            .any(|e| e.windows(16).any(|w| w == b"\"prompt_tokens\":"))
    );
    assert_eq!(without.last().unwrap().as_ref(), DONE.as_bytes());
    // a stream stored without usage replays unchanged either way
    let plain = two_choice_stream();
    assert_eq!(
        wire::replay_sse(Route::ChatCompletions, plain.as_bytes(), true)
            .unwrap()
            .concat(),
        plain.as_bytes()
    );
    assert!(wire::replay_sse(Route::Embeddings, b"", true).is_err());
}

#[test]
fn sse_to_json_of_a_stored_stream() {
    let v: Value = serde_json::from_slice(
        &wire::sse_to_json(Route::ChatCompletions, tool_call_stream().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][1]["function"]["name"],
        "get_time"
    );
    let (u, m) = wire::json_usage(Route::ChatCompletions, &serde_json::to_vec(&v).unwrap());
    assert_eq!(u.map(|u| u.cached_tokens), Some(1280));
    assert_eq!(m.as_deref(), Some("gpt-4o-2024-08-06"));
    assert!(wire::json_is_complete(
        Route::ChatCompletions,
        &serde_json::to_vec(&v).unwrap()
    ));
}
