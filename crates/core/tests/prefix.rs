//! Families of requests: the bounded computation equals the family of the full prefix
//! text, the memo never answers differently from the uncached computation, and the
//! family depends on the first N tokens and nothing else.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use prefixcache_core::key::normalize_whitespace;
use prefixcache_core::prefix::{
    Family, FamilyMemo, FamilyParams, PrefixScope, count_prefix_tokens, family, prefix_text,
    scoped_text,
};
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::Encoding;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Message text heavy in what moves token boundaries: whitespace runs (short and far
/// longer than a first window), newlines, contractions, digits, non-Latin scripts.
fn content() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        4 => prop::sample::select(vec![
            " ", "  ", "\n", "\n\n", "\r\n", "\t", "\u{a0}", "You", " are", " a", " helpful",
            " assistant", ".", " Don't", " it's", "JSON", "{", "}", "\"key\"", ":", "12345",
            "日本語", "e\u{301}", "🧑\u{200d}🚀", " {content}", "Summarize", ":\n\n",
        ])
        .prop_map(str::to_string),
        1 => (0usize..3000).prop_map(|n| " ".repeat(n)),
        1 => (0usize..200).prop_map(|n| "\n".repeat(n)),
        1 => "\\PC{0,10}",
    ];
    prop::collection::vec(frag, 0..60).prop_map(|v| v.concat())
}

fn chat_body() -> impl Strategy<Value = Map<String, Value>> {
    (
        content(),
        prop::collection::vec(content(), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(system, users, tools, image)| {
            let mut messages = vec![json!({"role": "system", "content": system})];
            for (i, u) in users.into_iter().enumerate() {
                if i == 0 && image {
                    messages.push(json!({"role": "user", "content": [
                        {"type": "text", "text": u},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
                    ]}));
                } else {
                    messages.push(json!({"role": "user", "content": u}));
                }
            }
            let mut body = json!({"model": "gpt-4o", "messages": messages});
            if tools {
                body["tools"] = json!([{"type": "function", "function": {
                    "name": "lookup", "description": "Look  up\n a record",
                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}
                }}]);
            }
            obj(body)
        })
}

fn params() -> impl Strategy<Value = FamilyParams> {
    (1usize..200, 0usize..60, any::<bool>(), any::<bool>()).prop_map(|(g, m, norm, o200k)| {
        FamilyParams {
            encoding: if o200k {
                Encoding::O200kBase
            } else {
                Encoding::Cl100kBase
            },
            granularity: g,
            min_tokens: m,
            normalize_whitespace: norm,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The bounded computation (windowed rendering, cut-safe tokens) gives the family
    /// of the whole prefix text.
    #[test]
    fn bounded_family_equals_family_of_the_full_text(body in chat_body(), p in params()) {
        let full = prefix_text(Route::ChatCompletions, &body);
        let want = Family::of_text(&full, &p);
        let got = family(Route::ChatCompletions, &body, &p);
        prop_assert_eq!(&got, &want);
        // The family's text is the start of the (normalized) prefix text.
        let text = if p.normalize_whitespace { normalize_whitespace(&full).into_owned() } else { full };
        prop_assert!(text.starts_with(&*got.text));
        prop_assert!(got.prefix_bytes <= got.text.len());
    }

    /// Token counts of a scope, bounded by a limit, agree with counting the full text.
    #[test]
    fn bounded_counts_equal_full_counts(body in chat_body(), limit in 0usize..1500, norm in any::<bool>()) {
        let enc = Encoding::O200kBase;
        for scope in [PrefixScope::Full, PrefixScope::Conversation, PrefixScope::Static] {
            let text = scoped_text(Route::ChatCompletions, &body, scope).unwrap();
            let text = if norm { normalize_whitespace(&text).into_owned() } else { text };
            prop_assert_eq!(
                count_prefix_tokens(Route::ChatCompletions, &body, scope, enc, norm, limit),
                enc.count(&text).min(limit)
            );
        }
    }

    /// The memo answers exactly as the uncached computation, on requests that share
    /// system prompts (so it hits), through evictions (small budget).
    #[test]
    fn memo_equals_uncached(
        systems in prop::collection::vec(content(), 1..4),
        requests in prop::collection::vec((0usize..4, content(), 0usize..3), 1..40),
        budget in 1usize..200_000,
    ) {
        let memo = FamilyMemo::new(budget);
        let all_params = [
            FamilyParams::new(Encoding::O200kBase),
            FamilyParams { granularity: 5, min_tokens: 2, ..FamilyParams::new(Encoding::Cl100kBase) },
            FamilyParams { normalize_whitespace: true, ..FamilyParams::new(Encoding::O200kBase) },
        ];
        for (s, user, pi) in requests {
            let system = &systems[s % systems.len()];
            let body = obj(json!({"messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user}
            ]}));
            let p = &all_params[pi];
            prop_assert_eq!(
                memo.family(Route::ChatCompletions, &body, p),
                family(Route::ChatCompletions, &body, p)
            );
        }
    }
}

fn chat(system: &str, user: &str) -> Map<String, Value> {
    obj(json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": user}
    ]}))
}

const SYSTEM: &str = "You are a document analyzer for Acme Corp. Read the document the user \
    provides, identify its type (contract, invoice, report or letter), extract the parties, \
    dates and amounts, and answer in JSON with the keys type, parties, dates and amounts. \
    Never invent values that are not in the document.";

#[test]
fn same_first_n_tokens_same_family_else_different() {
    let p = FamilyParams::new(Encoding::O200kBase);
    let a = family(Route::ChatCompletions, &chat(SYSTEM, "Invoice #1"), &p);
    let b = family(Route::ChatCompletions, &chat(SYSTEM, "Letter from Bob"), &p);
    assert!(!a.whole);
    assert_eq!(a.tokens.len(), 50);
    assert_eq!(a.id, b.id);
    // One word changed inside the first 50 tokens.
    let edited = SYSTEM.replace("document analyzer", "document analyser");
    let c = family(Route::ChatCompletions, &chat(&edited, "Invoice #1"), &p);
    assert_ne!(a.id, c.id);
    // A different encoding is a different family.
    let d = family(
        Route::ChatCompletions,
        &chat(SYSTEM, "Invoice #1"),
        &FamilyParams::new(Encoding::Cl100kBase),
    );
    assert_ne!(a.id, d.id);
}

#[test]
fn normalize_whitespace_merges_spacing_variants() {
    let p = FamilyParams {
        normalize_whitespace: true,
        ..FamilyParams::new(Encoding::O200kBase)
    };
    let spaced = SYSTEM.replace(". ", ".\n\n   ");
    let a = family(Route::ChatCompletions, &chat(SYSTEM, "x"), &p);
    let b = family(Route::ChatCompletions, &chat(&spaced, "x"), &p);
    assert_eq!(a.id, b.id);
    let raw = FamilyParams::new(Encoding::O200kBase);
    assert_ne!(
        family(Route::ChatCompletions, &chat(SYSTEM, "x"), &raw).id,
        family(Route::ChatCompletions, &chat(&spaced, "x"), &raw).id
    );
}

/// Regression guard for the memo: two requests whose first windows are equal (a
/// whitespace run longer than the window) but which differ after it must not share a
/// memoized family.
#[test]
fn memo_does_not_confuse_requests_that_share_only_the_first_window() {
    let memo = FamilyMemo::default();
    let p = FamilyParams {
        granularity: 100,
        ..FamilyParams::new(Encoding::O200kBase)
    };
    let run = " ".repeat(5_000);
    // Precondition: the run is longer than the first window (8 * 100 + 256 bytes) but
    // only a few tokens, so the words after it are among the first 100 tokens.
    assert!(Encoding::O200kBase.count(&run) < 60);
    let a = chat(&format!("Intro{run}alpha beta"), "q");
    let b = chat(&format!("Intro{run}gamma delta"), "q");
    let fa = memo.family(Route::ChatCompletions, &a, &p);
    let fb = memo.family(Route::ChatCompletions, &b, &p);
    assert_eq!(fa, family(Route::ChatCompletions, &a, &p));
    assert_eq!(fb, family(Route::ChatCompletions, &b, &p));
    assert_ne!(fa.id, fb.id);
    // and hits still work for both
    assert_eq!(memo.family(Route::ChatCompletions, &a, &p), fa);
    assert_eq!(memo.family(Route::ChatCompletions, &b, &p), fb);
    assert_eq!(memo.family(Route::ChatCompletions, &b, &p), fb);
    assert_eq!(
        memo.stats().hits,
        1,
        "a was evicted by b (same first window), b hit once"
    );
}

#[test]
fn memo_stays_within_its_budget() {
    let memo = FamilyMemo::new(64 * 1024);
    let p = FamilyParams::new(Encoding::O200kBase);
    for i in 0..2000 {
        let body = chat(&format!("{i} {SYSTEM}"), "q");
        memo.family(Route::ChatCompletions, &body, &p);
    }
    let st = memo.stats();
    assert!(st.bytes <= 64 * 1024, "{st:?}");
    assert!(st.entries > 0);
    assert_eq!(st.misses, 2000);
}

#[test]
fn family_text_maps_tokens_back_to_the_prompt() {
    let p = FamilyParams {
        granularity: 10,
        ..FamilyParams::new(Encoding::O200kBase)
    };
    let body = chat(SYSTEM, "x");
    let f = family(Route::ChatCompletions, &body, &p);
    let full = prefix_text(Route::ChatCompletions, &body);
    assert_eq!(f.tokens.len(), 10);
    assert_eq!(
        Encoding::O200kBase.decode_bytes(&f.tokens),
        full.as_bytes()[..f.prefix_bytes]
    );
    assert!(full.starts_with(&*f.text));
}

#[test]
fn responses_completions_and_embeddings_have_families() {
    let p = FamilyParams::new(Encoding::O200kBase);
    let r = obj(json!({"model": "gpt-4o", "instructions": SYSTEM, "input": "hi"}));
    let c = obj(json!({"model": "gpt-4o", "prompt": SYSTEM}));
    let e = obj(json!({"model": "text-embedding-3-small", "input": [SYSTEM, "second"]}));
    let fr = family(Route::Responses, &r, &p);
    let fc = family(Route::Completions, &c, &p);
    let fe = family(Route::Embeddings, &e, &p);
    assert!(!fr.whole && !fc.whole && !fe.whole);
    assert_ne!(fr.id, fc.id); // the responses prefix starts with "developer\n"
    assert_eq!(fc.id, fe.id); // both start with the bare prompt text
}
