//! Golden vectors for key derivation: fixed requests → canonical bytes, request hash and
//! cache key, pinned as literals. Any change to the canonical form, the hashing or the
//! namespace derivation changes a key, which silently cold-starts every deployed cache
//! and splits replicas running two versions over one Redis. Such a change must fail
//! here, and then bump `CACHE_VERSION` (asserted below) and these vectors in the same
//! commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use prefixcache_core::canonical::canonicalize;
use prefixcache_core::config::KeyMode;
use prefixcache_core::key::{
    CACHE_VERSION, FamilyId, KeyInput, Namespace, TenantSecret, compute_keys,
};
use prefixcache_core::route::Route;

/// The version these vectors were computed under. Bump both together.
const PINNED_VERSION: u32 = 3;

struct Vector {
    what: &'static str,
    route: Route,
    query: &'static str,
    strategy: &'static str,
    normalize_whitespace: bool,
    key_mode: KeyMode,
    raw: &'static str,
    canonical: &'static str,
    request_hash: &'static str,
    key: &'static str,
}

fn namespace() -> Namespace {
    let secret = TenantSecret::from_text("golden-vector-secret");
    Namespace::for_credential(&secret, &[b"Bearer sk-golden", b"org-golden"])
}

fn family() -> FamilyId {
    FamilyId([0x5a; 32])
}

const VECTORS: &[Vector] = &[
    Vector {
        what: "chat: fixed structs sorted, caller's order kept elsewhere, non-semantic fields dropped",
        route: Route::ChatCompletions,
        query: "",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Exact,
        raw: r#"{"stream":true,"model":"gpt-4o-mini","temperature":0,"user":"u-1","messages":[{"content":"Hello","role":"user"}],"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{"b":1,"a":2}}}}"#,
        canonical: r#"{"temperature":0,"response_format":{"type":"json_schema","json_schema":{"schema":{"b":1,"a":2},"name":"r"}},"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}"#,
        request_hash: "82b8a4553830ce6d80456e152e639e6a2bf7c27d3c7f908e1bf10aa1d26b29bc",
        key: "339a3c8b5715e817eafa8649df793cfe4eb65b939d26f073282ef972141e5f67",
    },
    Vector {
        what: "chat: numbers keep their spelling's value and kind, escapes normalized",
        route: Route::ChatCompletions,
        query: "",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Exact,
        raw: "{ \"model\" : \"gpt-4o\", \"temperature\": 1.0, \"top_p\": 1e0, \"seed\": 12345678901234567890123,\n \"messages\": [{\"role\":\"system\",\"content\":\"caf\\u00e9 \\/ \\\"q\\\"\"},{\"role\":\"user\",\"content\":\"x\",\"name\":\"n\"}] }",
        canonical: r#"{"top_p":1e0,"temperature":1e0,"seed":12345678901234567890123,"model":"gpt-4o","messages":[{"role":"system","content":"café / \"q\""},{"role":"user","name":"n","content":"x"}]}"#,
        request_hash: "c23dd45c9d31c292b97198371d7153b755a9e4152f1bb0e072b3253cb504e8fa",
        key: "76631bc6a4dcff211e9c76b68c4b987806aed5877a14d9e785da87040efc071e",
    },
    Vector {
        what: "chat: whitespace normalized under normalize_whitespace",
        route: Route::ChatCompletions,
        query: "",
        strategy: "docs",
        normalize_whitespace: true,
        key_mode: KeyMode::Exact,
        raw: r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"  many   spaces\n\nhere "}]}"#,
        canonical: r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"many spaces here"}]}"#,
        request_hash: "ad6b730b60f167d023d5c4dc523f1970f195902114afd55306217d396e1a090e",
        key: "d261066fb16e2ab8ff3627d2bb8b33190425a7e0027ef55ad862a118cb80184b",
    },
    Vector {
        what: "chat: prefix key mode keys the slot by family",
        route: Route::ChatCompletions,
        query: "",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Prefix,
        raw: r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"slot"}]}"#,
        canonical: r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"slot"}]}"#,
        request_hash: "ca1e2e3994d292c02e5a8182ab70e421cecddd61902801401ee1308574661952",
        key: "e7e2cd007ac0884cb65ae45092a89b5823c5add413c72a3bbba5d5a9aabb21cb",
    },
    Vector {
        what: "responses, with tools and a query string",
        route: Route::Responses,
        query: "api-version=2025-01-01",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Exact,
        raw: r#"{"model":"gpt-4.1","input":"Weather?","tools":[{"type":"function","name":"w","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}],"store":false}"#,
        canonical: r#"{"tools":[{"type":"function","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"name":"w"}],"store":false,"model":"gpt-4.1","input":"Weather?"}"#,
        request_hash: "1edf8b3425228afa92f7f321bfa41aa53e301303da92d77ca4a5e1433caaa5f2",
        key: "675731079188a2f275ad8d7ce318b279bb26b6d90767459e6692961dddaed7b1",
    },
    Vector {
        what: "legacy completions",
        route: Route::Completions,
        query: "",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Exact,
        raw: r#"{"prompt":["a","b"],"model":"gpt-3.5-turbo-instruct","max_tokens":16}"#,
        canonical: r#"{"prompt":["a","b"],"model":"gpt-3.5-turbo-instruct","max_tokens":16}"#,
        request_hash: "2ce34313663704bd73323c53465b61753b2036f30d5641f746e138038079f028",
        key: "4e1f8f32ba00b738c78f708299b2166c711b2a3538108f59bb8a53a0752f995b",
    },
    Vector {
        what: "embeddings",
        route: Route::Embeddings,
        query: "",
        strategy: "default",
        normalize_whitespace: false,
        key_mode: KeyMode::Exact,
        raw: r#"{"input":"embed me","model":"text-embedding-3-small","dimensions":256,"encoding_format":"float"}"#,
        canonical: r#"{"model":"text-embedding-3-small","input":"embed me","encoding_format":"float","dimensions":256}"#,
        request_hash: "7845a21c0f2450066107ef13756016e2981b5162d76938fb99fcc0ddc870f9e9",
        key: "7d6fb302052854449711fde74464e9aa7349706717ab75d643e4a60ddcd7b399",
    },
];

fn compute(v: &Vector) -> (String, String, String) {
    let body = canonicalize(v.route, v.raw.as_bytes(), v.normalize_whitespace).unwrap();
    let keys = compute_keys(&KeyInput {
        namespace: &namespace(),
        strategy: v.strategy,
        method: "POST",
        route: v.route,
        query: v.query,
        body: &body,
        key_mode: v.key_mode,
        family: Some(&family()),
    })
    .unwrap();
    (
        String::from_utf8(body.to_vec()).unwrap(),
        keys.request_hash.to_hex(),
        keys.key.to_hex(),
    )
}

#[test]
fn cache_version_is_the_one_the_vectors_were_computed_under() {
    assert_eq!(
        CACHE_VERSION, PINNED_VERSION,
        "CACHE_VERSION changed: recompute the vectors below (and say so in the commit)"
    );
}

#[test]
fn namespaces_are_pinned() {
    assert_eq!(
        namespace().to_hex(),
        "1d820c10490ec816b0ce1a617d60ee4c05897a89912c84d2bfc93219743f81c4"
    );
    assert_eq!(
        Namespace::shared().to_hex(),
        "cc1686f594e88c6524b37b2d68bde071a2c656cc97c7158a8cdfb47e92da840f"
    );
}

#[test]
fn keys_are_pinned() {
    let mut report = String::new();
    for v in VECTORS {
        let (canonical, request_hash, key) = compute(v);
        if (canonical.as_str(), request_hash.as_str(), key.as_str())
            != (v.canonical, v.request_hash, v.key)
        {
            report.push_str(&format!(
                "{}:\n  canonical: {canonical}\n  request_hash: {request_hash}\n  key: {key}\n",
                v.what
            ));
        }
    }
    assert!(
        report.is_empty(),
        "key derivation changed; if intended, bump CACHE_VERSION and pin:\n{report}"
    );
}
