//! Cost of the live lint rules on one request's prefix window: `dynamic_prefix` on a
//! typical 50- and 100-token window (clean, and with a request id in it), and
//! `WhitespaceDrift::observe` on the same windows. The claim it checks: both run in a
//! few microseconds, small next to tokenizing the window, so the proxy can run them on
//! every request.
//!
//! `cargo bench -p prefixcache-core --bench lint`; results in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prefixcache_core::lint::{WhitespaceDrift, dynamic_prefix, header_value};
use prefixcache_core::prefix::{Family, FamilyParams};
use prefixcache_core::tokenizer::Encoding;

/// What the proxy renders for a chat request: role lines and contents.
const CLEAN: &str = "system\nYou are a document analyzer for Acme Corp. Read the document the \
    user provides, identify its type (contract, invoice, report or letter), extract the \
    parties, dates and amounts, and answer in JSON with the keys type, parties, dates and \
    amounts. Never invent values that are not in the document. If a value is ambiguous, list \
    every reading and say which one you consider most likely and why.\nuser\nDocument:\nThe \
    parties agree that the supplier shall deliver the goods described in Schedule A no later \
    than thirty (30) days after the purchase order date, and that title passes on delivery.";

/// The article's pitfall: a request id first.
const DIRTY: &str = "system\n[RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b] sent \
    2024-05-01T12:30:00Z. You are a document analyzer for Acme Corp. Read the document the \
    user provides, identify its type (contract, invoice, report or letter), extract the \
    parties, dates and amounts, and answer in JSON with the keys type, parties, dates and \
    amounts. Never invent values that are not in the document.\nuser\nDocument:\nThe parties \
    agree that the supplier shall deliver the goods described in Schedule A no later than \
    thirty (30) days after the purchase order date, and that title passes on delivery.";

fn family(text: &str, granularity: usize) -> Family {
    let mut params = FamilyParams::new(Encoding::O200kBase);
    params.granularity = granularity;
    Family::of_text(text, &params)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dynamic_prefix");
    for tokens in [50usize, 100] {
        for (name, text) in [("clean", CLEAN), ("request-id", DIRTY)] {
            let fam = family(text, tokens);
            assert_eq!(
                fam.tokens.len(),
                tokens,
                "window shorter than {tokens} tokens"
            );
            let found = dynamic_prefix(&fam).len();
            assert_eq!(found > 0, name != "clean");
            g.bench_with_input(
                BenchmarkId::new(name, format!("{tokens}tok")),
                &fam,
                |b, fam| b.iter(|| black_box(dynamic_prefix(black_box(fam)))),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("whitespace_drift_observe");
    for tokens in [50usize, 100] {
        let fam = family(CLEAN, tokens);
        let drift = WhitespaceDrift::default();
        g.bench_with_input(
            BenchmarkId::new("same-window", format!("{tokens}tok")),
            &fam,
            |b, fam| b.iter(|| black_box(drift.observe("docs", black_box(fam)))),
        );
    }
    g.finish();

    let findings = dynamic_prefix(&family(DIRTY, 100));
    c.bench_function("header_value/2-findings", |b| {
        b.iter(|| black_box(header_value(black_box(&findings))))
    });

    // For scale: tokenizing the same window (what the proxy already pays per request
    // on a memo miss).
    let mut g = c.benchmark_group("tokenize_window");
    for tokens in [50usize, 100] {
        g.bench_with_input(
            BenchmarkId::new("encode_first", format!("{tokens}tok")),
            &tokens,
            |b, &n| b.iter(|| black_box(Encoding::O200kBase.encode_first(black_box(CLEAN), n))),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
