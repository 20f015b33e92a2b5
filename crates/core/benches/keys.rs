//! Cost of a canonical cache key by request size (1 KiB to 1 MiB): the JSON parse the
//! proxy does once per request (for the fields that steer it), the key from the raw
//! bytes (`canonicalize` + `compute_keys`: canonical form + two BLAKE3 hashes), both
//! together (what a request pays before its store lookup), and the key with whitespace
//! normalization. Two body shapes: a document (one long user message, the article's
//! `document_analysis`) and a conversation (many short turns: many small strings and
//! objects to sort and escape).
//!
//! `cargo bench -p prefixcache-core --bench keys`; results in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prefixcache_core::canonical::canonicalize;
use prefixcache_core::config::KeyMode;
use prefixcache_core::key::{FamilyId, KeyInput, Namespace, TenantSecret, compute_keys};
use prefixcache_core::route::Route;
use serde_json::{Map, Value};

const SYSTEM: &str = "You are a document analyzer for Acme Corp. Read the document the user \
    provides, identify its type (contract, invoice, report or letter), extract the parties, \
    dates and amounts, and answer in JSON with the keys type, parties, dates and amounts. \
    Never invent values that are not in the document.";

const PARAGRAPH: &str = "The parties agree that the supplier shall deliver the goods described \
    in Schedule A no later than thirty (30) days after the purchase order date, and that \
    title passes on delivery. Invoices are payable within 45 days; late payments accrue \
    interest at 1.5% per month.\n\n";

const SIZES: [(usize, &str); 5] = [
    (1 << 10, "1KiB"),
    (10 << 10, "10KiB"),
    (100 << 10, "100KiB"),
    (500 << 10, "500KiB"),
    (1 << 20, "1MiB"),
];

/// A body written as the SDKs write it (members in the order the caller's code builds
/// them: `role` before `content`), not in serde_json's sorted order.
fn envelope(messages: &[(&str, String)]) -> Vec<u8> {
    let mut s = String::from(r#"{"model":"gpt-4o","messages":["#);
    for (i, (role, content)) in messages.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let content = serde_json::to_string(content).unwrap_or_default();
        s.push_str(&format!(r#"{{"role":"{role}","content":{content}}}"#));
    }
    s.push_str(
        r#"],"temperature":0.7,"max_tokens":512,"stream":false,"user":"bench","tools":[{"type":"function","function":{"name":"lookup_party","description":"Look up a company by name","parameters":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}]}"#,
    );
    s.into_bytes()
}

/// One long user message: a body of about `size` bytes.
fn document(size: usize) -> Vec<u8> {
    let mut doc = String::with_capacity(size);
    while doc.len() + PARAGRAPH.len() < size.saturating_sub(SYSTEM.len() + 420) {
        doc.push_str(PARAGRAPH);
    }
    envelope(&[
        ("system", SYSTEM.to_string()),
        ("user", format!("Document:\n{doc}")),
    ])
}

/// Many short turns: a body of about `size` bytes.
fn conversation(size: usize) -> Vec<u8> {
    let mut messages = vec![("system", SYSTEM.to_string())];
    let mut len = SYSTEM.len() + 420;
    let mut turn = 0usize;
    while len < size.saturating_sub(120) {
        let (role, content) = if turn.is_multiple_of(2) {
            (
                "user",
                format!("Question {turn}: what does clause {turn} say about late payment?"),
            )
        } else {
            (
                "assistant",
                format!("Clause {turn} says invoices are payable within 45 days."),
            )
        };
        len += content.len() + 34;
        messages.push((role, content));
        turn += 1;
    }
    envelope(&messages)
}

fn parse(raw: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn keys(c: &mut Criterion) {
    let ns = Namespace::for_credential(&TenantSecret::from_text("bench secret"), &[b"Bearer sk-x"]);
    let family = FamilyId([7; 32]);
    let input = |raw: &[u8], normalize: bool| {
        let body = canonicalize(Route::ChatCompletions, raw, normalize).ok()?;
        let input = KeyInput {
            namespace: &ns,
            strategy: "default",
            method: "POST",
            route: Route::ChatCompletions,
            query: "",
            body: &body,
            key_mode: KeyMode::Exact,
            family: Some(&family),
        };
        compute_keys(&input).ok()
    };
    for (shape, make) in [
        ("document", document as fn(usize) -> Vec<u8>),
        ("conversation", conversation),
    ] {
        let mut g = c.benchmark_group(format!("keys/{shape}"));
        g.sample_size(30);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        for (size, label) in SIZES {
            let raw = make(size);
            g.throughput(Throughput::Bytes(raw.len() as u64));
            g.bench_with_input(BenchmarkId::new("parse", label), &raw, |b, raw| {
                b.iter(|| black_box(parse(black_box(raw))))
            });
            g.bench_with_input(BenchmarkId::new("compute_keys", label), &raw, |b, raw| {
                b.iter(|| black_box(input(black_box(raw), false)))
            });
            g.bench_with_input(
                BenchmarkId::new("parse+compute_keys", label),
                &raw,
                |b, raw| {
                    b.iter(|| {
                        let parsed = parse(black_box(raw));
                        black_box((input(raw, false), parsed))
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new("compute_keys_normalized", label),
                &raw,
                |b, raw| b.iter(|| black_box(input(black_box(raw), true))),
            );
        }
        g.finish();
    }
}

criterion_group!(benches, keys);
criterion_main!(benches);
