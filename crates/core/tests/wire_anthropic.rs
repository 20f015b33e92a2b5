//! Anthropic Messages streams: assembly of the SDK's own fixtures and the documentation's
//! examples into messages, the completeness rules, rendering a message as a stream and
//! back, and the round trip checked by the real SDK's stream accumulator.

// Test helpers: a failed expectation should panic with its message, like in a #[test].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use prefixcache_core::sse::split_all;
use prefixcache_core::usage::Usage;
use prefixcache_core::wire::anthropic::{
    self, ErrorType, EventKind, MessageAssembler, error_body, json_summary, json_to_sse,
    sse_to_json,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assemble(sse: &[u8]) -> (MessageAssembler, Vec<EventKind>) {
    let mut asm = MessageAssembler::new();
    let kinds = split_all(&Bytes::copy_from_slice(sse), false)
        .iter()
        .map(|e| asm.push(e))
        .collect();
    (asm, kinds)
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn the_sdk_basic_fixture_assembles_to_its_message() {
    let (asm, kinds) = assemble(&fixture("sdk_basic_response.sse"));
    assert_eq!(
        kinds,
        [
            EventKind::MessageStart,
            EventKind::Block,
            EventKind::Ping,
            EventKind::Block,
            EventKind::Block,
            EventKind::Block,
            EventKind::Block,
            EventKind::MessageDelta,
            EventKind::MessageStop
        ]
    );
    assert!(asm.is_complete());
    assert_eq!(asm.model().as_deref(), Some("claude-3-opus-latest"));
    // message_start's input (11) and message_delta's cumulative output (6).
    assert_eq!(
        asm.usage(),
        Some(Usage {
            prompt_tokens: 11,
            completion_tokens: 6,
            ..Usage::default()
        })
    );
    let bytes = asm.into_json().unwrap();
    // Field order of message_start kept, content and stop reason filled in.
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[{"type":"text","text":"Hello there!"}],"model":"claude-3-opus-latest","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":6}}"#
    );
}

#[test]
fn the_sdk_tool_use_fixture_parses_its_input_json() {
    let json = sse_to_json(&fixture("sdk_tool_use_response.sse")).unwrap();
    let m = json_of(&json);
    assert_eq!(
        m["content"],
        json!([
            {"type": "text", "text": "I'll check the current weather in Paris for you."},
            {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
             "caller": {"type": "direct"}, "input": {"location": "Paris"}}
        ])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 377, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0, "output_tokens": 65, "service_tier": "standard"})
    );
    // The tool input keeps the bytes the fragments spelled (with the model's space).
    assert!(
        std::str::from_utf8(&json)
            .unwrap()
            .contains(r#""input":{"location": "Paris"}"#)
    );
    let s = json_summary(&json);
    assert!(s.complete);
    assert_eq!(s.model.as_deref(), Some("claude-sonnet-4-20250514"));
    assert_eq!(
        s.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((377, 65))
    );
}

#[test]
fn thinking_and_signature_deltas_assemble_into_a_thinking_block() {
    let (asm, _) = assemble(&fixture("thinking_response.sse"));
    assert!(asm.is_complete());
    // 2048 uncached + 1900 written (all for an hour) + 0 read.
    assert_eq!(
        asm.usage(),
        Some(Usage {
            prompt_tokens: 3948,
            completion_tokens: 109,
            cached_tokens: 0,
            cache_write_tokens: 1900,
            cache_write_long_tokens: 1900,
        })
    );
    let m = json_of(&asm.into_json().unwrap());
    assert_eq!(
        m["content"][0],
        json!({"type": "thinking",
               "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3",
               "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"})
    );
    assert_eq!(
        m["content"][1],
        json!({"type": "text", "text": "27 * 453 = 12,231"})
    );
    // cache_creation survives from message_start: message_delta does not carry it.
    assert_eq!(
        m["usage"]["cache_creation"]["ephemeral_1h_input_tokens"],
        1900
    );
}

#[test]
fn an_error_event_fails_the_stream() {
    let (asm, kinds) = assemble(&fixture("overloaded_mid_stream.sse"));
    assert_eq!(kinds.last(), Some(&EventKind::Error));
    assert!(asm.failed());
    assert!(!asm.is_complete());
    assert!(sse_to_json(&fixture("overloaded_mid_stream.sse")).is_err());
}

/// The basic fixture with one event changed (or removed).
fn basic_with(edit: impl Fn(&str) -> String) -> Vec<u8> {
    edit(std::str::from_utf8(&fixture("sdk_basic_response.sse")).unwrap()).into_bytes()
}

#[test]
fn completeness_needs_message_stop_a_stop_reason_and_stopped_blocks() {
    let cases: [(&str, Vec<u8>); 7] = [
        (
            "no message_stop",
            basic_with(|s| {
                s.replace(
                    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                    "",
                )
            }),
        ),
        (
            "stop_reason null",
            basic_with(|s| s.replace("\"stop_reason\":\"end_turn\"", "\"stop_reason\":null")),
        ),
        (
            "no message_delta",
            basic_with(|s| {
                s.replace(
                    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}}\n\n",
                    "",
                )
            }),
        ),
        (
            "block never stopped",
            basic_with(|s| {
                s.replace(
                    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                    "",
                )
            }),
        ),
        (
            "cut mid-event",
            basic_with(|s| s[..s.len() - 10].to_string()),
        ),
        (
            "event name disagrees with the data",
            basic_with(|s| s.replace("event: message_stop\n", "event: message_delta\n")),
        ),
        (
            "delta for a block that never started",
            basic_with(|s| s.replace("\"index\":0,\"delta\"", "\"index\":3,\"delta\"")),
        ),
    ];
    for (what, sse) in cases {
        let (asm, _) = assemble(&sse);
        assert!(
            !asm.is_complete(),
            "{what}: {}",
            String::from_utf8_lossy(&sse)
        );
        assert!(sse_to_json(&sse).is_err(), "{what}");
    }
    // Tool input that is not JSON once concatenated: {"location": "Par"is"}.
    let bad = std::str::from_utf8(&fixture("sdk_tool_use_response.sse"))
        .unwrap()
        .replace("\"partial_json\":\"ar\"", "\"partial_json\":\"ar\\\"\"");
    assert!(bad.contains(r#""partial_json":"ar\"""#));
    let (asm, _) = assemble(bad.as_bytes());
    assert!(!asm.is_complete());
}

#[test]
fn unknown_deltas_are_stored_but_not_converted() {
    let sse = basic_with(|s| {
        s.replace(
            "event: content_block_stop\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"compaction_delta\",\"content\":\"x\"}}\n\nevent: content_block_stop\n",
        )
    });
    let (asm, _) = assemble(&sse);
    // Replayed byte for byte it is a fine answer; as JSON it would lose the delta.
    assert!(asm.is_complete());
    assert!(asm.has_unknown());
    assert!(asm.into_json().is_err());
}

/// Rendering a message and assembling the rendered stream gives the message back.
fn round_trip(message: &Value) {
    let bytes = serde_json::to_vec(message).unwrap();
    let events = json_to_sse(&bytes).unwrap();
    let sse: Vec<u8> = events.concat();
    // Every event names its type on an `event:` line, as the SDK dispatches on it.
    for e in split_all(&Bytes::from(sse.clone()), false) {
        let data: Value = serde_json::from_slice(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(e.event_str(), data["type"].as_str());
    }
    let (asm, kinds) = assemble(&sse);
    assert!(asm.is_complete(), "{}", String::from_utf8_lossy(&sse));
    assert_eq!(kinds.first(), Some(&EventKind::MessageStart));
    assert_eq!(kinds.last(), Some(&EventKind::MessageStop));
    let back = asm.into_json().unwrap();
    assert_eq!(
        &json_of(&back),
        message,
        "{}",
        String::from_utf8_lossy(&sse)
    );
    // The same bytes, in fact: field order kept.
    assert_eq!(back.as_ref(), &bytes[..]);
}

fn messages() -> Vec<Value> {
    vec![
        json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-opus-5",
            "content": [{"type": "text", "text": "Hi, I'm Claude. A longer sentence with unusually-long-hyphenated-words-that-exceed-the-piece-limit and ünïcödé."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188086,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 188086},
                "output_tokens": 393, "service_tier": "standard"}}),
        json!({"id": "msg_tool", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris", "units": ["c", "f"], "nested": {"z": 1, "a": null}}},
                {"type": "tool_use", "id": "toolu_02", "name": "noop", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 40}}),
        json!({"id": "msg_think", "type": "message", "role": "assistant", "model": "claude-opus-4-5",
            "content": [
                {"type": "thinking", "thinking": "Let me think.\n\nStep one.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "text", "text": "Answer", "citations": [
                    {"type": "char_location", "cited_text": "x", "document_index": 0,
                     "document_title": null, "start_char_index": 0, "end_char_index": 1}]}
            ],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 1, "cache_read_input_tokens": 4096,
                      "cache_creation_input_tokens": 0, "output_tokens": 0}}),
        json!({"id": "msg_stop", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": ""}],
            "stop_reason": "stop_sequence", "stop_sequence": "###", "stop_details": null,
            "usage": {"input_tokens": 3, "output_tokens": 1}}),
        json!({"id": "msg_empty", "type": "message", "role": "assistant", "model": "m",
            "content": [], "stop_reason": "refusal", "stop_sequence": null,
            "stop_details": {"type": "refusal", "category": "cyber"},
            "usage": {"input_tokens": 3, "output_tokens": 0}}),
    ]
}

#[test]
fn rendered_messages_assemble_back_to_the_same_bytes() {
    for m in messages() {
        round_trip(&m);
    }
    // And a message assembled from the SDK's fixture.
    let json = sse_to_json(&fixture("sdk_tool_use_response.sse")).unwrap();
    round_trip(&json_of(&json));
}

#[test]
fn rendering_refuses_what_is_not_a_finished_message() {
    for body in [
        &br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#[..],
        br#"{"type":"message","content":[],"stop_reason":null}"#,
        br#"{"type":"message","content":{},"stop_reason":"end_turn"}"#,
        br#"{"type":"message","content":[{"text":"no type"}],"stop_reason":"end_turn"}"#,
        br#"[1]"#,
        b"not json",
    ] {
        assert!(
            json_to_sse(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [
        &br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#[..],
        br#"{"type":"message","content":[],"stop_reason":null}"#,
        br#"{"type":"message","content":{},"stop_reason":"end_turn"}"#,
        br#"{"type":"message","stop_reason":"end_turn"}"#,
    ] {
        assert!(
            !json_summary(body).complete,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn rendered_text_comes_in_word_pieces_and_thinking_ends_with_its_signature() {
    let m = &messages()[2];
    let events = json_to_sse(&serde_json::to_vec(m).unwrap()).unwrap();
    let types: Vec<String> = events
        .iter()
        .map(|e| {
            let ev = &split_all(e, false)[0];
            let d: Value = serde_json::from_slice(ev.data.as_deref().unwrap()).unwrap();
            match d["delta"]["type"].as_str() {
                Some(t) if d["type"] == "content_block_delta" => t.to_string(),
                _ => d["type"].as_str().unwrap().to_string(),
            }
        })
        .collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "ping",
            // "Let", " me", " think.", "\n\nStep", " one."
            "thinking_delta",
            "thinking_delta",
            "thinking_delta",
            "thinking_delta",
            "thinking_delta",
            "signature_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_stop",
            "content_block_start",
            "citations_delta",
            "text_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // message_start has the input counters, no content, no stop reason.
    let start: Value =
        serde_json::from_slice(split_all(&events[0], false)[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 4096);
}

#[test]
fn summary_reads_usage_the_anthropic_way() {
    let body = serde_json::to_vec(&messages()[0]).unwrap();
    let s = json_summary(&body);
    assert!(s.complete);
    assert_eq!(
        s.usage,
        Some(Usage {
            prompt_tokens: 188107,
            completion_tokens: 393,
            cached_tokens: 0,
            cache_write_tokens: 188086,
            cache_write_long_tokens: 188086,
        })
    );
    assert_eq!(s.model.as_deref(), Some("claude-opus-5"));
}

#[test]
fn request_flags_and_error_bodies() {
    let f = anthropic::request_flags(
        br#"{"model":"claude-opus-5","stream":true,"cache_control":{"type":"ephemeral"},"messages":[]}"#,
    )
    .unwrap();
    assert!(f.stream && f.automatic_cache);
    assert_eq!(f.model.as_deref(), Some("claude-opus-5"));
    assert!(
        !anthropic::request_flags(br#"{"model":"m"}"#)
            .unwrap()
            .stream
    );
    assert!(anthropic::request_flags(b"[").is_err());

    let e = error_body(
        ErrorType::Overloaded,
        "Overloaded",
        Some("req_011CSHoEeqs5C35K2UUqR7Fy"),
    );
    assert_eq!(
        json_of(&e),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
               "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
    );
    assert_eq!(
        json_of(&error_body(
            ErrorType::InvalidRequest,
            "a \"quoted\" thing",
            None
        )),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "a \"quoted\" thing"}})
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let t = ErrorType::for_status(status);
        assert_eq!(t.as_str(), kind, "{status}");
        if !matches!(status, 422 | 502) {
            assert_eq!(t.status(), status);
        }
    }
}

/// The round trip, checked by the official SDK: rendered events fed to the SDK's own
/// stream accumulator (`anthropic.lib.streaming._messages.accumulate_event`, what
/// `client.messages.stream(...).get_final_message()` runs) give the stored message.
#[test]
fn the_anthropic_sdk_accumulates_rendered_streams_to_the_stored_message() {
    let Some(python) = prefixcache_testkit::require_python(
        "the_anthropic_sdk_accumulates_rendered_streams_to_the_stored_message",
        &["anthropic"],
    ) else {
        return;
    };
    let mut cases = Vec::new();
    for m in messages() {
        let sse = json_to_sse(&serde_json::to_vec(&m).unwrap())
            .unwrap()
            .concat();
        cases.push(json!({"sse": String::from_utf8(sse).unwrap(), "message": m}));
    }
    // The SDK's own fixture, assembled by us, rendered, and accumulated by the SDK.
    let ours = json_of(&sse_to_json(&fixture("sdk_tool_use_response.sse")).unwrap());
    let sse = json_to_sse(&serde_json::to_vec(&ours).unwrap())
        .unwrap()
        .concat();
    cases.push(json!({"sse": String::from_utf8(sse).unwrap(), "message": ours}));
    let script = r#"
import json, sys
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event

cases = json.load(sys.stdin)
out = []
for case in cases:
    snapshot = None
    bufs = {}
    for sse in SSEDecoder().iter_bytes(iter([case["sse"].encode()])):
        if sse.event in ("ping", None):
            continue
        if sse.event == "error":
            raise SystemExit("error event")
        snapshot = accumulate_event(event=sse.json(), current_snapshot=snapshot, json_bufs=bufs)
    out.append(snapshot.to_dict(exclude_none=False))
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&serde_json::to_vec(&cases).unwrap())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.len(), cases.len());
    for (sdk, case) in got.iter().zip(&cases) {
        // The SDK's model fills absent optional fields with null; compare what the
        // stored message has, field by field.
        let want = &case["message"];
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(
                &strip_nulls(&sdk[k]),
                &strip_nulls(v),
                "field {k} of {want}"
            );
        }
    }
}

/// `v` without object fields whose value is null (the SDK adds them for optional fields).
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        v => v.clone(),
    }
}

mod properties {
    use super::*;
    use prefixcache_core::wire::anthropic::fuzzing::messages_assemble;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_block() -> impl Strategy<Value = Value> {
        prop_oneof![
            "(?s).{0,60}".prop_map(|t| json!({"type": "text", "text": t})),
            ("(?s).{0,40}", "[A-Za-z0-9+/=]{0,20}")
                .prop_map(|(t, s)| json!({"type": "thinking", "thinking": t, "signature": s})),
            (arb_json(), "[a-z_]{1,10}").prop_map(|(input, name)| {
                let input = match input {
                    Value::Object(_) => input,
                    other => json!({"v": other}),
                };
                json!({"type": "tool_use", "id": "toolu_01x", "name": name, "input": input})
            }),
            "[A-Za-z0-9]{0,20}".prop_map(|d| json!({"type": "redacted_thinking", "data": d})),
        ]
    }

    proptest! {
        #[test]
        fn any_message_renders_and_assembles_back(
            blocks in prop::collection::vec(arb_block(), 0..5),
            stop in prop_oneof![Just("end_turn"), Just("tool_use"), Just("max_tokens")],
            input in 0u64..100_000, read in 0u64..100_000, output in 0u64..5_000,
        ) {
            let m = json!({"id": "msg_01p", "type": "message", "role": "assistant", "model": "m",
                "content": blocks, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": input, "cache_read_input_tokens": read,
                          "cache_creation_input_tokens": 0, "output_tokens": output}});
            let bytes = serde_json::to_vec(&m).unwrap();
            let sse = json_to_sse(&bytes).unwrap().concat();
            let back = sse_to_json(&sse).unwrap();
            prop_assert_eq!(back.as_ref(), &bytes[..]);
            messages_assemble(&sse);
        }

        #[test]
        fn assembling_any_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
            messages_assemble(&data);
        }

        #[test]
        fn assembling_mangled_fixtures_never_panics(cut in 0usize..2000, flip in 0usize..2000) {
            let mut f = fixture("sdk_tool_use_response.sse");
            let n = f.len();
            f[flip % n] ^= 0x20;
            f.truncate(cut % (n + 1));
            messages_assemble(&f);
        }
    }
}
