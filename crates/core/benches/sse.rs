//! Throughput of the streaming hot path: SSE framing, stream assembly and rendering a
//! stored JSON response as SSE, on a 100-chunk chat stream and a Responses stream.
//!
//! `cargo bench -p prefixcache-core --bench sse`; results in docs/BENCHMARKS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prefixcache_core::route::Route;
use prefixcache_core::sse::{SseSplitter, StreamAssembler};
use prefixcache_core::wire;
use serde_json::json;

/// A chat stream as the API sends it: role chunk, 97 one-word content chunks, finish
/// chunk, usage chunk, `[DONE]` (101 events), each with `usage: null` and `obfuscation`.
fn chat_stream() -> Vec<u8> {
    let env = |choices: serde_json::Value, usage: serde_json::Value| {
        let c = json!({"id": "chatcmpl-BENCH0000000000000000000001", "object": "chat.completion.chunk",
            "created": 1733300000, "model": "gpt-4o-2024-08-06", "service_tier": "default",
            "system_fingerprint": "fp_50cad350e4", "choices": choices, "usage": usage, "obfuscation": "Zk3q9"});
        format!("data: {c}\n\n")
    };
    let words = [
        "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    ];
    let mut s = env(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
        serde_json::Value::Null,
    );
    for i in 0..97 {
        s += &env(
            json!([{"index": 0, "delta": {"content": words[i % words.len()]}, "logprobs": null, "finish_reason": null}]),
            serde_json::Value::Null,
        );
    }
    s += &env(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        serde_json::Value::Null,
    );
    s += &env(
        json!([]),
        json!({"prompt_tokens": 1500, "completion_tokens": 97, "total_tokens": 1597,
               "prompt_tokens_details": {"cached_tokens": 1408, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
    );
    s += "data: [DONE]\n\n";
    s.into_bytes()
}

/// Cuts a stream into network-sized reads that do not line up with events.
fn reads(stream: &[u8], size: usize) -> Vec<Bytes> {
    stream.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn bench(c: &mut Criterion) {
    let stream = chat_stream();
    let chunks = reads(&stream, 1000);
    eprintln!("chat stream: {} bytes", stream.len());
    let mut g = c.benchmark_group("sse_chat_100_chunks");
    g.throughput(Throughput::Bytes(stream.len() as u64));

    g.bench_function("split", |b| {
        b.iter(|| {
            let mut s = SseSplitter::new();
            let mut out = Vec::with_capacity(128);
            for ch in &chunks {
                s.push_into(ch.clone(), &mut out);
            }
            black_box(out.len())
        })
    });

    g.bench_function("split_and_assemble", |b| {
        b.iter(|| {
            let mut s = SseSplitter::new();
            let mut a = StreamAssembler::new(Route::ChatCompletions);
            let mut out = Vec::with_capacity(128);
            for ch in &chunks {
                s.push_into(ch.clone(), &mut out);
                for ev in out.drain(..) {
                    black_box(a.push(&ev));
                }
            }
            assert!(a.is_complete());
            black_box(a.into_json().map(|j| j.len()).unwrap_or(0))
        })
    });

    let json = wire::sse_to_json(Route::ChatCompletions, &stream).unwrap_or_default();
    g.bench_function("render_json_to_sse", |b| {
        b.iter(|| {
            black_box(wire::json_to_sse(Route::ChatCompletions, &json, true).map(|v| v.len()))
        })
    });

    g.bench_function("replay_without_usage", |b| {
        b.iter(|| {
            black_box(wire::replay_sse(Route::ChatCompletions, &stream, false).map(|v| v.len()))
        })
    });
    g.finish();

    // A Responses stream rendered from a stored response of the same text.
    let response = json!({"id": "resp_bench", "object": "response", "created_at": 1733300000, "status": "completed",
        "model": "gpt-5-2025-08-07", "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                     "text": "The quick brown fox jumps over the lazy dog. ".repeat(10)}]}],
        "usage": {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1408}, "output_tokens": 97,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1597}});
    let rstream: Vec<u8> = wire::json_to_sse(
        Route::Responses,
        &serde_json::to_vec(&response).unwrap_or_default(),
        false,
    )
    .unwrap_or_default()
    .concat();
    let rchunks = reads(&rstream, 1000);
    eprintln!("responses stream: {} bytes", rstream.len());
    let mut g = c.benchmark_group("sse_responses");
    g.throughput(Throughput::Bytes(rstream.len() as u64));
    g.bench_function("split_and_assemble", |b| {
        b.iter(|| {
            let mut s = SseSplitter::new();
            let mut a = StreamAssembler::new(Route::Responses);
            let mut out = Vec::with_capacity(128);
            for ch in &rchunks {
                s.push_into(ch.clone(), &mut out);
                for ev in out.drain(..) {
                    black_box(a.push(&ev));
                }
            }
            assert!(a.is_complete());
            black_box(a.into_json().map(|j| j.len()).unwrap_or(0))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
