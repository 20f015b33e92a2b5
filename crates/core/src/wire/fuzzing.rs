//! Invariant checks over arbitrary bytes, shared by the `cargo fuzz` targets in `fuzz/`
//! and the proptests here, so both exercise the same properties. Each function panics
//! (via `assert!`) when an invariant breaks and returns normally otherwise.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{
    Injections, apply_splices, json_to_sse, plan_splices, prepare_upstream_body, request_flags,
};
use crate::canonical::canonicalize;
use crate::config::KeyMode;
use crate::key::{FamilyId, KeyInput, Namespace, compute_keys};
use crate::route::Route;
use crate::sse::{SseEvent, SseSplitter, SseTail, StreamAssembler};

/// Feeds `stream` to a splitter in chunks of the given sizes (cycled; 0 is read as 1).
pub fn split_in_chunks(stream: &[u8], sizes: &[usize]) -> (Vec<SseEvent>, Option<SseTail>) {
    let mut s = SseSplitter::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < stream.len() {
        let n = sizes
            .get(k % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        let end = pos.saturating_add(n).min(stream.len());
        s.push_into(Bytes::copy_from_slice(&stream[pos..end]), &mut out);
        pos = end;
        k += 1;
    }
    (out, s.finish())
}

/// SSE framing: any chunking of `data[2..]` (chunk sizes derived from `data[..2]`)
/// yields the events of feeding it whole, and the events' raw bytes (plus any tail)
/// concatenate back to the input.
pub fn sse_split(data: &[u8]) {
    let (seed, stream) = match data {
        [a, b, rest @ ..] => ((*a as usize) << 8 | *b as usize, rest),
        _ => (1, data),
    };
    let sizes: Vec<usize> = (0..8).map(|i| 1 + ((seed >> i) & 0x1f) * (i + 1)).collect();
    let whole = split_in_chunks(stream, &[usize::MAX]);
    let parts = split_in_chunks(stream, &sizes);
    let bytewise = split_in_chunks(stream, &[1]);
    assert_eq!(whole, parts, "chunking changed the events");
    assert_eq!(whole, bytewise, "byte-by-byte feeding changed the events");
    let mut raw: Vec<u8> = whole.0.iter().flat_map(|e| e.raw.iter().copied()).collect();
    if let Some(t) = &whole.1 {
        raw.extend_from_slice(t.raw());
    }
    assert_eq!(raw, stream, "raw bytes must concatenate to the input");
}

/// Stream assembly: for every streaming route, pushing the events never panics; a
/// stream that is complete assembles to a JSON object, and rendering that object back
/// to SSE and assembling it again gives the same object.
pub fn sse_assemble(data: &[u8]) {
    let (events, _) = split_in_chunks(data, &[usize::MAX]);
    for route in [Route::ChatCompletions, Route::Completions, Route::Responses] {
        let mut asm = StreamAssembler::new(route);
        for ev in &events {
            asm.push(ev);
        }
        let _ = asm.usage();
        let _ = asm.model();
        let complete = asm.is_complete();
        let Ok(json) = asm.into_json() else {
            assert!(
                !complete || route == Route::Responses,
                "a complete stream must assemble"
            );
            continue;
        };
        let first: Value = match serde_json::from_slice(&json) {
            Ok(v) => v,
            Err(e) => panic!("assembled body is not JSON ({e}): {json:?}"),
        };
        if !complete {
            continue;
        }
        let rendered = match json_to_sse(route, &json, true) {
            Ok(r) => r,
            Err(e) => panic!("assembled body does not render ({e}): {json:?}"),
        };
        let mut again = StreamAssembler::new(route);
        for chunk in &rendered {
            for ev in split_in_chunks(chunk, &[usize::MAX]).0 {
                again.push(&ev);
            }
        }
        assert!(
            again.is_complete(),
            "a rendered complete stream is complete"
        );
        let second: Value = match again.into_json().map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => v,
            other => panic!("re-assembly failed: {other:?}"),
        };
        assert_eq!(first, second, "render + assemble must round-trip");
    }
}

/// Whether some object in `data` (valid JSON) has a key twice, decided by serde (an
/// oracle independent of [`crate::rawjson`]).
fn serde_sees_duplicates(data: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Dup(bool);
    impl<'de> Deserialize<'de> for Dup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dup, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Dup;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any JSON")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_str<E>(self, _: &str) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_unit<E>(self) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Dup, A::Error> {
                    let mut dup = false;
                    while let Some(Dup(d)) = a.next_element()? {
                        dup |= d;
                    }
                    Ok(Dup(dup))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Dup, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut dup = false;
                    while let Some(k) = a.next_key::<String>()? {
                        dup |= !seen.insert(k);
                        let Dup(d) = a.next_value()?;
                        dup |= d;
                    }
                    Ok(Dup(dup))
                }
            }
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Dup>(data).is_ok_and(|d| d.0)
}

/// The canonical form and the key: the raw reader accepts exactly what serde_json
/// accepts; for an object body, canonicalization is idempotent, means the same request
/// (equal to serde's reading, non-semantic fields aside), finds duplicate keys exactly
/// when serde sees them, and gives a deterministic key on every route.
pub fn canonical_key(data: &[u8]) {
    let parsed = serde_json::from_slice::<Value>(data);
    assert_eq!(
        crate::rawjson::document(data).is_ok(),
        parsed.is_ok(),
        "raw reader and serde_json disagree on validity"
    );
    let Ok(Value::Object(mut body)) = parsed else {
        for route in Route::ALL {
            assert!(canonicalize(route, data, false).is_err());
        }
        return;
    };
    let duplicates = serde_sees_duplicates(data);
    for name in crate::canonical::NON_SEMANTIC_FIELDS {
        body.remove(name);
    }
    let ns = Namespace::shared();
    let family = FamilyId([1; 32]);
    for route in Route::ALL {
        for normalize in [false, true] {
            let canon = match canonicalize(route, data, normalize) {
                Ok(c) => c,
                Err(e) => panic!("a body serde_json parsed has no canonical form: {e}"),
            };
            assert_eq!(
                canon.has_duplicate_keys(),
                duplicates,
                "duplicate detection"
            );
            let bytes = canon.to_vec();
            let again = match canonicalize(route, &bytes, normalize) {
                Ok(c) => c.to_vec(),
                Err(e) => panic!("canonical form does not re-read ({e}): {bytes:?}"),
            };
            assert_eq!(bytes, again, "canonicalization must be idempotent");
            if !normalize {
                let reread: Value = match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => panic!("canonical form is not JSON ({e}): {bytes:?}"),
                };
                assert_eq!(
                    reread,
                    Value::Object(body.clone()),
                    "canonical form changed the request"
                );
            }
            let keys = |mode: KeyMode| {
                compute_keys(&KeyInput {
                    namespace: &ns,
                    strategy: "fuzz",
                    method: "POST",
                    route,
                    query: "",
                    body: &canon,
                    key_mode: mode,
                    family: Some(&family),
                })
            };
            assert_eq!(keys(KeyMode::Exact).ok(), keys(KeyMode::Exact).ok());
            assert!(keys(KeyMode::Prefix).is_ok());
        }
    }
}

/// The request splicer: for a body without duplicate keys, the bytes prepared for
/// upstream are the caller's with only the documented splices (insertions right after a
/// `{`, replacements of exactly one value), they mean the same request (same canonical
/// form: both fields are non-semantic), and they carry the injected fields.
pub fn request_splice(data: &[u8]) {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(canon_in) = canonicalize(Route::ChatCompletions, data, false) else {
        panic!("a body serde_json parsed has no canonical form");
    };
    let original = Bytes::copy_from_slice(data);
    for route in Route::ALL {
        let flags = request_flags(route, &body);
        let inject = Injections {
            include_usage: true,
            prompt_cache_key: Some("fuzz-key"),
            breakpoint: None,
        };
        let splices = match plan_splices(data, route, &inject) {
            Ok(s) => s,
            Err(e) => panic!("splicing failed on a parsed body: {e}"),
        };
        for (i, s) in splices.iter().enumerate() {
            if s.at.is_empty() {
                let before = data[..s.at.start]
                    .iter()
                    .rev()
                    .find(|b| !b.is_ascii_whitespace());
                assert_eq!(
                    data.get(s.at.start.wrapping_sub(1)),
                    Some(&b'{'),
                    "insertion not right after a brace"
                );
                assert_eq!(before, Some(&b'{'));
            } else {
                assert!(
                    crate::rawjson::document(&data[s.at.clone()]).is_ok(),
                    "a replacement must cover exactly one value"
                );
            }
            if let Some(next) = splices.get(i + 1) {
                assert!(
                    s.at.end <= next.at.start,
                    "splices overlap or are out of order"
                );
            }
        }
        let prepared = apply_splices(&original, &splices);
        assert_eq!(
            prepared,
            prepare_upstream_body(&original, route, &inject).unwrap_or_default()
        );
        let sent: Map<String, Value> = match serde_json::from_slice(&prepared) {
            Ok(m) => m,
            Err(e) => panic!("prepared body is not a JSON object ({e}): {prepared:?}"),
        };
        if canon_in.has_duplicate_keys() {
            continue;
        }
        let canon_out = match canonicalize(Route::ChatCompletions, &prepared, false) {
            Ok(c) => c,
            Err(e) => panic!("prepared body has no canonical form: {e}"),
        };
        assert!(!canon_out.has_duplicate_keys(), "a splice duplicated a key");
        assert_eq!(
            canon_in.to_vec(),
            canon_out.to_vec(),
            "splicing must not change the request's meaning"
        );
        let after = request_flags(route, &sent);
        if flags.has_prompt_cache_key {
            assert_eq!(sent.get("prompt_cache_key"), body.get("prompt_cache_key"));
        } else if matches!(route, Route::ChatCompletions | Route::Responses) {
            assert_eq!(sent.get("prompt_cache_key"), Some(&Value::from("fuzz-key")));
        }
        let options_usable = matches!(
            body.get("stream_options"),
            None | Some(Value::Null | Value::Object(_))
        );
        if flags.stream
            && options_usable
            && matches!(route, Route::ChatCompletions | Route::Completions)
        {
            assert!(
                after.include_usage,
                "include_usage must be on after injection"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_sse() -> impl Strategy<Value = Vec<u8>> {
        let data = prop_oneof![
            Just(br#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"tool_calls"}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[{"text":" yes","index":0,"logprobs":null,"finish_reason":"length"}]}"#.to_vec()),
            Just(br#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#.to_vec()),
            Just(br#"{"type":"response.completed","response":{"id":"r","status":"completed","output":[],"usage":{"input_tokens":1,"output_tokens":1}}}"#.to_vec()),
            Just(br#"{"error":{"message":"boom"}}"#.to_vec()),
            Just(b"[DONE]".to_vec()),
            "[ -~]{0,16}".prop_map(String::into_bytes),
        ];
        prop::collection::vec(data, 0..10).prop_map(|evs| {
            let mut out = Vec::new();
            for d in evs {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\n\n");
            }
            out
        })
    }

    proptest! {
        #[test]
        fn split_invariants_hold(data in prop::collection::vec(any::<u8>(), 0..256)) {
            sse_split(&data);
        }

        #[test]
        fn split_invariants_hold_on_sse_like_input(seed in any::<[u8; 2]>(), stream in arb_sse()) {
            let mut data = seed.to_vec();
            data.extend_from_slice(&stream);
            sse_split(&data);
        }

        #[test]
        fn assembly_invariants_hold(stream in arb_sse()) {
            sse_assemble(&stream);
        }

        #[test]
        fn assembly_survives_noise(data in prop::collection::vec(any::<u8>(), 0..256)) {
            sse_assemble(&data);
        }

        #[test]
        fn canonical_invariants_hold(body in arb_body()) {
            canonical_key(&body);
        }

        #[test]
        fn splice_invariants_hold(body in arb_body()) {
            request_splice(&body);
        }

        #[test]
        fn canonical_invariants_survive_noise(data in prop::collection::vec(any::<u8>(), 0..64)) {
            canonical_key(&data);
            request_splice(&data);
        }
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            Just(r#""model":"gpt-4o""#.to_string()),
            Just(r#""stream":true"#.to_string()),
            Just(r#""stream":false"#.to_string()),
            Just(r#""stream_options":{"include_usage":false}"#.to_string()),
            Just(r#""stream_options":null"#.to_string()),
            Just(r#""stream_options":{"include_usage":true}"#.to_string()),
            Just(r#""prompt_cache_key":"mine""#.to_string()),
            Just(r#""prompt_cache_key":null"#.to_string()),
            Just(r#""temperature":0.7"#.to_string()),
            Just(r#""messages":[{"role":"user","content":"hi \u00e9"}]"#.to_string()),
            Just(r#""stream_options":{"include_obfuscation":true}"#.to_string()),
            Just(r#""seed":18446744073709551617"#.to_string()),
            Just(r#""response_format":{"json_schema":{"schema":{"b":1.50,"a":2e3}},"type":"json_schema"}"#.to_string()),
            Just(r#""x":{"k":1,"k":2}"#.to_string()),
            "\"[a-z]{1,4}\":[0-9]{1,3}",
        ];
        (prop::collection::vec(field, 0..6), "[ \n]{0,2}").prop_map(|(fields, ws)| {
            format!("{ws}{{{}}}", fields.join(&format!(",{ws}"))).into_bytes()
        })
    }
}
