//! Cost of a prefix family by prompt size (1 KiB to 1 MiB): uncached, on a memo hit,
//! with whitespace normalization, and with a long whitespace run at the start (the one
//! case whose window must grow). The claim it checks: the family of a 500 KiB prompt
//! costs within 2x of a 2 KiB one, and a memo hit costs under a microsecond.
//!
//! `cargo bench -p prefixcache-core --bench family`; results in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prefixcache_core::prefix::{FamilyMemo, FamilyParams, family};
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::Encoding;
use serde_json::{Map, Value, json};

const SYSTEM: &str = "You are a document analyzer for Acme Corp. Read the document the user \
    provides, identify its type (contract, invoice, report or letter), extract the parties, \
    dates and amounts, and answer in JSON with the keys type, parties, dates and amounts. \
    Never invent values that are not in the document. If a value is ambiguous, list every \
    reading and say which one you consider most likely and why.";

const PARAGRAPH: &str = "The parties agree that the supplier shall deliver the goods described \
    in Schedule A no later than thirty (30) days after the purchase order date, and that \
    title passes on delivery. Invoices are payable within 45 days; late payments accrue \
    interest at 1.5% per month.\n\n";

/// A chat request whose total body is about `size` bytes: tools, the system prompt, and
/// a user message carrying the document.
fn request(size: usize) -> Map<String, Value> {
    let mut doc = String::with_capacity(size);
    while doc.len() + PARAGRAPH.len() < size.saturating_sub(SYSTEM.len() + 400) {
        doc.push_str(PARAGRAPH);
    }
    let body = json!({
        "model": "gpt-4o",
        "tools": [{"type": "function", "function": {"name": "lookup_party",
            "description": "Look up a company by name",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": format!("Document:\n{doc}")}
        ]
    });
    match body {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const SIZES: [(usize, &str); 7] = [
    (1 << 10, "1KiB"),
    (2 << 10, "2KiB"),
    (10 << 10, "10KiB"),
    (100 << 10, "100KiB"),
    (500 << 10, "500KiB"),
    (1 << 20, "1MiB"),
    (8 << 20, "8MiB"),
];

fn families(c: &mut Criterion) {
    let params = FamilyParams::new(Encoding::O200kBase);
    let normalized = FamilyParams {
        normalize_whitespace: true,
        ..params
    };
    Encoding::O200kBase.preload();
    let mut g = c.benchmark_group("family");
    g.sample_size(50);
    g.measurement_time(Duration::from_secs(3));
    for (size, label) in SIZES {
        let body = request(size);
        g.bench_with_input(BenchmarkId::new("uncached", label), &body, |b, body| {
            b.iter(|| black_box(family(Route::ChatCompletions, black_box(body), &params)))
        });
        g.bench_with_input(BenchmarkId::new("normalized", label), &body, |b, body| {
            b.iter(|| black_box(family(Route::ChatCompletions, black_box(body), &normalized)))
        });
        let memo = FamilyMemo::default();
        memo.family(Route::ChatCompletions, &body, &params);
        g.bench_with_input(BenchmarkId::new("memo-hit", label), &body, |b, body| {
            b.iter(|| black_box(memo.family(Route::ChatCompletions, black_box(body), &params)))
        });
    }
    g.finish();
}

fn pathological(c: &mut Criterion) {
    // A 1 MiB whitespace run right after "system\n": the first 50 tokens depend on what
    // ends the run, so the window must grow to cover it.
    let params = FamilyParams::new(Encoding::O200kBase);
    let run =
        json!({"messages": [{"role": "system", "content": format!("{}x", " ".repeat(1 << 20))}]});
    let run = run.as_object().cloned().unwrap_or_default();
    let mut g = c.benchmark_group("family/pathological");
    g.sample_size(10);
    g.bench_function("leading-1MiB-space-run", |b| {
        b.iter(|| black_box(family(Route::ChatCompletions, black_box(&run), &params)))
    });
    // A 30 MB system prompt of one word: one pre-tokenizer piece, so no token of it is
    // settled before its end. Bounded by the largest window since that bound exists.
    let word = json!({"messages": [
        {"role": "system", "content": "a".repeat(30_000_000)},
        {"role": "user", "content": "hi"},
    ]});
    let word = word.as_object().cloned().unwrap_or_default();
    g.bench_function("one-word-30MB-system-prompt", |b| {
        b.iter(|| black_box(family(Route::ChatCompletions, black_box(&word), &params)))
    });
    g.finish();
}

criterion_group!(benches, families, pathological);
criterion_main!(benches);
