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

fn chat_function_call_and_audio() -> Value {
    json!({
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
    })
}

#[test]
fn legacy_function_call_and_audio_round_trip() {
    let stored = chat_function_call_and_audio();
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

/// The chat stream accumulator, completion chunks and the Responses stream state of the
/// official `openai` SDK, fed every rendered shape: what the SDK's users get must be the
/// stored answer, independently of our own assembler.
const SDK_SCRIPT: &str = r#"
import json, sys
from openai._models import construct_type
from openai._types import omit
from openai._streaming import SSEDecoder
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

out = []
for case in json.load(sys.stdin):
    events = list(SSEDecoder().iter_bytes(iter([case["sse"].encode()])))
    if case["route"] == "chat":
        state = ChatCompletionStreamState()
        for e in events:
            if e.data == "[DONE]":
                break
            # What the SDK's Stream does with each event: construct, not validate.
            state.handle_chunk(construct_type(type_=ChatCompletionChunk, value=json.loads(e.data)))
        out.append(state.get_final_completion().model_dump(mode="json"))
    elif case["route"] == "completions":
        choices = {}
        usage = None
        for e in events:
            if e.data == "[DONE]":
                break
            chunk = construct_type(type_=Completion, value=json.loads(e.data))
            usage = chunk.usage.model_dump(mode="json") if chunk.usage else usage
            for c in chunk.choices:
                got = choices.setdefault(c.index, {"text": "", "finish_reason": None, "tokens": None})
                got["text"] += c.text
                got["finish_reason"] = c.finish_reason or got["finish_reason"]
                if c.logprobs is not None:
                    got["tokens"] = (got["tokens"] or []) + list(c.logprobs.tokens or [])
        out.append({"choices": [choices[i] for i in sorted(choices)], "usage": usage})
    else:
        state = ResponseStreamState(input_tools=omit, text_format=omit)
        texts, arguments, completed = {}, {}, None
        for e in events:
            event = construct_type(type_=ResponseStreamEvent, value=json.loads(e.data))
            for typed in state.handle_event(event):
                if typed.type == "response.output_text.delta":
                    texts[typed.output_index] = texts.get(typed.output_index, "") + typed.delta
                elif typed.type == "response.function_call_arguments.delta":
                    arguments[typed.output_index] = arguments.get(typed.output_index, "") + typed.delta
                elif typed.type == "response.completed":
                    completed = typed.response.model_dump(mode="json")
        out.append({"texts": texts, "arguments": arguments, "completed": completed})
print(json.dumps(out))
"#;

fn sdk_parse(python: &std::path::Path, cases: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .args(["-c", SDK_SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(cases).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `v` without object fields whose value is null (the SDK's models add them for
/// optional fields the stored answer leaves out).
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Every field the stored value has, as the SDK gave it (`sdk` may have more).
fn assert_covers(sdk: &Value, stored: &Value, what: &str) {
    match (sdk, stored) {
        (Value::Object(s), Value::Object(w)) => {
            for (k, v) in w {
                if v.is_null() {
                    continue;
                }
                assert_covers(&s[k], v, &format!("{what}.{k}"));
            }
        }
        (Value::Array(s), Value::Array(w)) => {
            assert_eq!(s.len(), w.len(), "{what}: length");
            for (i, (a, b)) in s.iter().zip(w).enumerate() {
                assert_covers(a, b, &format!("{what}[{i}]"));
            }
        }
        // The SDK's models type some integers as floats (`created_at`).
        (Value::Number(s), Value::Number(w)) => assert_eq!(s.as_f64(), w.as_f64(), "{what}"),
        _ => assert_eq!(strip_nulls(sdk), strip_nulls(stored), "{what}"),
    }
}

#[test]
fn the_openai_sdk_parses_every_rendered_shape_to_the_stored_answer() {
    let Some(python) = prefixcache_testkit::require_python(
        "the_openai_sdk_parses_every_rendered_shape_to_the_stored_answer",
        &["openai"],
    ) else {
        return;
    };
    let legacy_completion = json!({
        "id": "cmpl-E1", "object": "text_completion", "created": 1733200003, "model": "gpt-3.5-turbo-instruct",
        "choices": [
            {"text": "\n\nThis is a test.", "index": 0, "finish_reason": "length",
             "logprobs": {"tokens": ["\n\n", "This", " is", " a", " test", "."], "token_logprobs": [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6],
                 "top_logprobs": [{"\n\n": -0.1}, {"This": -0.2}, {" is": -0.3}, {" a": -0.4}, {" test": -0.5}, {".": -0.6}],
                 "text_offset": [7, 9, 13, 16, 18, 23]}},
            {"text": "Another one.", "index": 1, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    });
    let chats = [
        chat_text(),
        chat_tools_and_refusal(),
        chat_function_call_and_audio(),
    ];
    let mut cases = Vec::new();
    let render = |route: Route, v: &Value, usage: bool| {
        let sse = json_to_sse(route, &serde_json::to_vec(v).unwrap(), usage)
            .unwrap()
            .concat();
        String::from_utf8(sse).unwrap()
    };
    for c in &chats {
        for usage in [true, false] {
            cases.push(json!({"route": "chat", "sse": render(Route::ChatCompletions, c, usage), "usage": usage}));
        }
    }
    cases.push(json!({"route": "completions", "sse": render(Route::Completions, &legacy_completion, true)}));
    cases.push(
        json!({"route": "responses", "sse": render(Route::Responses, &stored_response(), false)}),
    );
    let got = sdk_parse(&python, &cases);
    assert_eq!(got.len(), cases.len());

    // Chat: the SDK's final completion is the stored one (usage only when asked for).
    for (i, stored) in chats.iter().enumerate() {
        for (j, usage) in [true, false].into_iter().enumerate() {
            let sdk = &got[2 * i + j];
            let mut want = stored.clone();
            if !usage {
                want.as_object_mut().unwrap().remove("usage");
                assert!(sdk["usage"].is_null(), "no usage without include_usage");
            }
            // The SDK's parsed message adds `parsed`; every stored field must match.
            assert_covers(sdk, &want, &format!("chat case {i}, usage {usage}"));
        }
    }
    // Legacy completions: text, finish reason and logprob tokens per choice.
    let sdk = &got[6];
    for (i, stored) in legacy_completion["choices"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let c = &sdk["choices"][i];
        assert_eq!(c["text"], stored["text"]);
        assert_eq!(c["finish_reason"], stored["finish_reason"]);
        assert_eq!(c["tokens"], stored["logprobs"]["tokens"]);
    }
    assert_covers(
        &sdk["usage"],
        &legacy_completion["usage"],
        "completions usage",
    );
    // Responses: the text and arguments the SDK accumulated from the deltas, and the
    // completed response, are the stored ones.
    let sdk = &got[7];
    let stored = stored_response();
    assert_eq!(sdk["texts"]["2"], stored["output"][2]["content"][0]["text"]);
    assert_eq!(sdk["arguments"]["1"], stored["output"][1]["arguments"]);
    assert_covers(&sdk["completed"], &stored, "responses");
}
