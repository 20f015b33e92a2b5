//! Rendering stored JSON responses as SSE: the shape clients expect (role chunk, word
//! pieces, tool-call heads, finish chunk, usage chunk, `[DONE]`; typed Responses events
//! with sequence numbers) and the round trip JSON -> SSE -> assembled JSON.

// Helpers outside #[test] fns are test code too; clippy.toml only exempts the fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use prefixcache_core::route::Route;
use prefixcache_core::sse::{EventKind, StreamAssembler, split_all};
use prefixcache_core::wire::{self, annotate_sse_event, json_to_sse};
use proptest::prelude::*;
use serde_json::{Value, json};

fn assemble(route: Route, events: &[Bytes]) -> (StreamAssembler, Vec<EventKind>) {
    let mut asm = StreamAssembler::new(route);
    let mut kinds = Vec::new();
    for ev in split_all(&Bytes::from(events.concat()), false) {
        kinds.push(asm.push(&ev));
    }
    (asm, kinds)
}

fn data_of(ev: &Bytes) -> Value {
    let evs = split_all(ev, false);
    assert_eq!(evs.len(), 1, "one rendered item is one event");
    serde_json::from_slice(evs[0].data.as_deref().unwrap()).unwrap()
}

/// Renders, checks every event is well-formed, assembles, and compares.
fn round_trip(route: Route, stored: &Value, include_usage: bool) -> Vec<Bytes> {
    let events = json_to_sse(route, &serde_json::to_vec(stored).unwrap(), include_usage).unwrap();
    let (asm, _) = assemble(route, &events);
    assert!(asm.is_complete(), "a rendered stream is complete");
    let back: Value = serde_json::from_slice(&asm.into_json().unwrap()).unwrap();
    let mut want = stored.clone();
    if !include_usage && route != Route::Responses {
        want.as_object_mut().unwrap().remove("usage");
    }
    assert_eq!(back, want);
    events
}

fn lp(tok: &str, p: f64) -> Value {
    json!({"token": tok, "logprob": p, "bytes": tok.as_bytes(), "top_logprobs": [{"token": tok, "logprob": p, "bytes": tok.as_bytes()}]})
}

fn chat_text() -> Value {
    json!({
        "id": "chatcmpl-D1", "object": "chat.completion", "created": 1733200000, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend.", "refusal": null, "annotations": []},
            "logprobs": {"content": [lp("Hello", -0.1), lp(" there", -0.2), lp(",", -0.3), lp(" friend", -0.4), lp(".", -0.5)], "refusal": null},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 5, "total_tokens": 1205,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_0ba0d124f1"
    })
}

#[test]
fn chat_text_renders_as_a_real_stream_and_round_trips() {
    let events = round_trip(Route::ChatCompletions, &chat_text(), true);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data_of).collect();
    assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
    // role chunk, 3 word pieces, finish chunk, usage chunk
    assert_eq!(chunks.len(), 6);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-D1");
        assert!(
            c.get("usage").is_some(),
            "with include_usage every chunk has a usage field"
        );
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null, "annotations": []})
    );
    let texts: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Hello", " there,", " friend."]);
    // each piece carries the logprobs of its tokens
    let toks = |c: &Value| -> Vec<String> {
        c["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["token"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(toks(&chunks[2]), [" there", ","]);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["usage"], Value::Null);
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"]["prompt_tokens_details"]["cached_tokens"],
        1024
    );
}

#[test]
fn without_include_usage_there_is_no_usage_anywhere() {
    let events = round_trip(Route::ChatCompletions, &chat_text(), false);
    for ev in &events[..events.len() - 1] {
        assert!(data_of(ev).get("usage").is_none());
    }
}

fn chat_tools_and_refusal() -> Value {
    json!({
        "id": "chatcmpl-D2", "object": "chat.completion", "created": 1733200001, "model": "gpt-4.1-2025-04-14",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [
                    {"id": "call_a1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"weather in Lyon tomorrow morning\", \"units\": \"metric\"}"}},
                    {"id": "call_b2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
             "logprobs": null, "finish_reason": "tool_calls"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "I can't help with that.", "annotations": []},
             "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 40, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 64}},
        "service_tier": "default", "system_fingerprint": null
    })
}

#[test]
fn tool_calls_and_refusals_round_trip() {
    let events = round_trip(Route::ChatCompletions, &chat_tools_and_refusal(), true);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data_of).collect();
    let heads: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]
                .get("id")
                .map(|_| &c["choices"][0]["delta"]["tool_calls"][0])
        })
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(
        heads[0],
        &json!({"index": 0, "id": "call_a1", "type": "function", "function": {"name": "lookup", "arguments": ""}})
    );
    let arg_pieces = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
                && c["choices"][0]["delta"]["tool_calls"][0]
                    .get("id")
                    .is_none()
        })
        .count();
    assert!(arg_pieces > 3, "arguments arrive in several pieces");
    let (asm, _) = assemble(Route::ChatCompletions, &events);
    assert_eq!(asm.usage().map(|u| u.cache_write_tokens), Some(64));
}

#[test]
fn legacy_function_call_and_audio_round_trip() {
    let stored = json!({
        "id": "chatcmpl-D3", "object": "chat.completion", "created": 1733200002, "model": "gpt-4o-audio-preview",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                "function_call": {"name": "get_stock", "arguments": "{\"ticker\": \"ACME\"}"}},
             "logprobs": null, "finish_reason": "function_call"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": null,
                "audio": {"id": "audio_1", "data": "UklGRiQAAABXQVZF", "expires_at": 1733203602, "transcript": "Hi there."}},
             "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
        "system_fingerprint": "fp_1"
    });
    round_trip(Route::ChatCompletions, &stored, true);
    round_trip(Route::ChatCompletions, &stored, false);
}

#[test]
fn legacy_completions_round_trip_with_logprobs() {
    let stored = json!({
        "id": "cmpl-E1", "object": "text_completion", "created": 1733200003, "model": "gpt-3.5-turbo-instruct",
        "choices": [
            {"text": "\n\nThis is a test.", "index": 0, "finish_reason": "length",
             "logprobs": {"tokens": ["\n\n", "This", " is", " a", " test", "."], "token_logprobs": [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6],
                 "top_logprobs": [{"\n\n": -0.1}, {"This": -0.2}, {" is": -0.3}, {" a": -0.4}, {" test": -0.5}, {".": -0.6}],
                 "text_offset": [7, 9, 13, 16, 18, 23]}},
            {"text": "", "index": 1, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    });
    let events = round_trip(Route::Completions, &stored, true);
    let first = data_of(&events[0]);
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "\n\nThis");
    assert_eq!(
        first["choices"][0]["logprobs"]["tokens"],
        json!(["\n\n", "This"])
    );
    round_trip(Route::Completions, &stored, false);
}

fn stored_response() -> Value {
    json!({
        "id": "resp_9f", "object": "response", "created_at": 1733200004, "status": "completed", "background": false,
        "error": null, "incomplete_details": null, "instructions": null, "model": "gpt-5-mini-2025-08-07",
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {"id": "fc_1", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Oslo\",\"days\":3}", "call_id": "call_x", "name": "forecast"},
            {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": "Three days of rain in Oslo, sadly."},
                {"type": "refusal", "refusal": "No more."}]}],
        "parallel_tool_calls": true, "previous_response_id": null, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "usage": {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1408}, "output_tokens": 80,
                  "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 1580},
        "user": null, "metadata": {}
    })
}

#[test]
fn responses_render_as_typed_events_and_round_trip() {
    let events = round_trip(Route::Responses, &stored_response(), false);
    let mut kinds = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let parsed = split_all(ev, false);
        let name = parsed[0].event_str().unwrap().to_owned();
        let d = data_of(ev);
        assert_eq!(d["type"], name.as_str(), "event name and type agree");
        assert_eq!(d["sequence_number"], i, "sequence numbers count from 0");
        kinds.push(name);
    }
    assert_eq!(kinds[0], "response.created");
    assert_eq!(kinds[1], "response.in_progress");
    assert_eq!(kinds.last().unwrap(), "response.completed");
    let created = data_of(&events[0]);
    assert_eq!(created["response"]["status"], "in_progress");
    assert_eq!(created["response"]["output"], json!([]));
    assert_eq!(created["response"]["usage"], Value::Null);
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(pos("response.content_part.added") < pos("response.output_text.delta"));
    assert!(
        pos("response.function_call_arguments.delta")
            < pos("response.function_call_arguments.done")
    );
    assert!(
        kinds
            .iter()
            .filter(|k| *k == "response.output_text.delta")
            .count()
            >= 5
    );
    assert!(kinds.contains(&"response.refusal.delta".to_owned()));
    let text: String = events
        .iter()
        .map(data_of)
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Three days of rain in Oslo, sadly.");
    let added_call = events
        .iter()
        .map(data_of)
        .find(|d| d["type"] == "response.output_item.added" && d["item"]["type"] == "function_call")
        .unwrap();
    assert_eq!(added_call["item"]["arguments"], "");
    assert_eq!(added_call["item"]["status"], "in_progress");
}

#[test]
fn incomplete_responses_render_their_own_terminal_event() {
    let mut r = stored_response();
    r["status"] = json!("incomplete");
    r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    let events = json_to_sse(Route::Responses, &serde_json::to_vec(&r).unwrap(), true).unwrap();
    let (asm, kinds) = assemble(Route::Responses, &events);
    assert_eq!(*kinds.last().unwrap(), EventKind::Failed);
    assert!(!asm.is_complete());
    assert!(!wire::json_is_complete(
        Route::Responses,
        &serde_json::to_vec(&r).unwrap()
    ));
}

#[test]
fn annotated_rendered_events_stay_valid() {
    let events = json_to_sse(
        Route::ChatCompletions,
        &serde_json::to_vec(&chat_text()).unwrap(),
        true,
    )
    .unwrap();
    for ev in &events {
        let out = annotate_sse_event(ev, true, "00ff");
        if ev.as_ref() == b"data: [DONE]\n\n" {
            assert_eq!(&out, ev);
            continue;
        }
        let d = data_of(&out);
        assert_eq!(d["_cached"], true);
        assert_eq!(d["_cache_key"], "00ff");
    }
    let body = serde_json::to_vec(&chat_text()).unwrap();
    let annotated: Value =
        serde_json::from_slice(&wire::annotate_json(&body, false, "ab").unwrap()).unwrap();
    let mut want = chat_text();
    want["_cached"] = json!(false);
    want["_cache_key"] = json!("ab");
    assert_eq!(annotated, want);
}

/// Text with a token split of its own: arbitrary Unicode, whitespace runs, quotes.
fn arb_text_and_tokens() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        "[a-zé😀 \n\t\"\\\\,.]{0,80}",
        prop::collection::vec(1usize..6, 0..40),
    )
        .prop_map(|(text, cuts)| {
            let chars: Vec<char> = text.chars().collect();
            let mut tokens = Vec::new();
            let mut i = 0;
            for c in cuts {
                if i >= chars.len() {
                    break;
                }
                let j = (i + c).min(chars.len());
                tokens.push(chars[i..j].iter().collect());
                i = j;
            }
            if i < chars.len() {
                tokens.push(chars[i..].iter().collect());
            }
            (text, tokens)
        })
}

proptest! {
    #[test]
    fn chat_round_trips(
        choices in prop::collection::vec((arb_text_and_tokens(), any::<bool>(), prop::option::of("[a-z{}\":, ]{0,50}")), 1..4),
        include_usage in any::<bool>(),
    ) {
        let choices: Vec<Value> = choices.into_iter().enumerate().map(|(i, ((text, tokens), with_lp, args))| {
            let logprobs = if with_lp {
                json!({"content": tokens.iter().map(|t| lp(t, -0.5)).collect::<Vec<_>>(), "refusal": null})
            } else {
                Value::Null
            };
            let mut message = json!({"role": "assistant", "content": text, "refusal": null, "annotations": []});
            if let Some(a) = args {
                message["tool_calls"] = json!([{"id": format!("call_{i}"), "type": "function", "function": {"name": "f", "arguments": a}}]);
            }
            json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": "stop"})
        }).collect();
        let stored = json!({"id": "chatcmpl-P", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, "system_fingerprint": null});
        round_trip(Route::ChatCompletions, &stored, include_usage);
    }

    #[test]
    fn completions_round_trip((text, tokens) in arb_text_and_tokens(), with_lp in any::<bool>()) {
        let logprobs = if with_lp {
            json!({"tokens": tokens, "token_logprobs": tokens.iter().map(|_| -0.1).collect::<Vec<_>>(),
                   "top_logprobs": null, "text_offset": (0..tokens.len()).collect::<Vec<_>>()})
        } else {
            Value::Null
        };
        let stored = json!({"id": "cmpl-P", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        round_trip(Route::Completions, &stored, true);
    }

    #[test]
    fn responses_round_trip(text in "[a-z😀 \n\"]{0,60}", args in "[a-z{}\":, ]{0,40}") {
        let mut r = stored_response();
        r["output"][1]["arguments"] = json!(args);
        r["output"][2]["content"][0]["text"] = json!(text);
        round_trip(Route::Responses, &r, false);
    }
}
