//! Tokenizer throughput: o200k_base and cl100k_base on 1 MiB of mixed text (the parity
//! corpus without its 100k repeats, repeated), and on pathological 1 MiB inputs (one
//! character repeated, one whitespace run, no spaces at all) that must stay fast.
//!
//! `cargo bench -p prefixcache-core --bench tokenizer`. The same mixed text feeds
//! `scripts/tiktoken/bench.py` (Python tiktoken) and `scripts/tiktoken/compare-rs`
//! (tiktoken-rs), so the figures in docs/BENCHMARKS.md are side by side.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prefixcache_core::tokenizer::Encoding;

const MIB: usize = 1 << 20;

/// The corpus texts (not the 100k repeats) joined by newlines and repeated to 1 MiB,
/// cut at a character boundary. `scripts/tiktoken/bench.py` builds the same text.
fn mixed_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/corpus.jsonl"
    );
    let corpus = std::fs::read_to_string(path).unwrap_or_default();
    let texts: Vec<String> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            !v["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("repeat-100k/")
        })
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    let unit = texts.join("\n");
    let mut s = String::with_capacity(MIB + unit.len());
    while s.len() < MIB && !unit.is_empty() {
        s.push_str(&unit);
        s.push('\n');
    }
    let mut end = MIB.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// 1 MiB with no whitespace: base64-like letters, digits, `+` and `/`.
fn no_spaces() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

fn throughput(c: &mut Criterion) {
    let text = mixed_text();
    assert!(text.len() > MIB / 2, "corpus fixture missing");
    let mut g = c.benchmark_group("tokenizer/mixed-1MiB");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        enc.preload();
        g.bench_function(format!("{}/encode", enc.as_str()), |b| {
            b.iter(|| black_box(enc.encode(black_box(&text))))
        });
        g.bench_function(format!("{}/count", enc.as_str()), |b| {
            b.iter(|| black_box(enc.count(black_box(&text))))
        });
    }
    g.finish();
}

fn pathological(c: &mut Criterion) {
    let cases = [
        ("one-char-a", "a".repeat(MIB)),
        ("whitespace-run", " ".repeat(MIB)),
        ("newline-run", "\n".repeat(MIB)),
        ("no-spaces", no_spaces()),
    ];
    let mut g = c.benchmark_group("tokenizer/pathological-1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        for (name, text) in &cases {
            g.bench_function(format!("{}/{name}", enc.as_str()), |b| {
                b.iter(|| black_box(enc.encode(black_box(text))))
            });
        }
    }
    g.finish();
}

/// A short prompt: the per-call overhead that dominates the families of small prompts.
fn short(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokenizer/short");
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        enc.preload();
        g.bench_function(format!("{}/encode-50-bytes", enc.as_str()), |b| {
            b.iter(|| {
                black_box(enc.encode(black_box("You are a helpful assistant. Answer briefly.")))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, throughput, pathological, short);
criterion_main!(benches);
