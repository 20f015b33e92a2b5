//! Cache keys: the caller's namespace, and the BLAKE3 key and full request hash derived
//! from the namespace, the request line (method, path, query) and the canonical body
//! ([`crate::canonical`]).
//!
//! Also [`canonical_value`], an order-insensitive digest form of a parsed JSON value
//! for fingerprints that are not keys (tool definitions, embedding inputs).

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use serde_json::{Map, Number, Value};

use crate::canonical::CanonicalBody;
use crate::config::KeyMode;
use crate::route::Route;

/// Bumped when the key derivation or canonical form changes, so old entries stop matching.
/// 2: the exact-mode key is derived from the request hash instead of rehashing the body.
/// 3: the canonical form is read from the raw bytes (member order kept outside fixed
/// structs, exact numbers, `store` semantic), and method and query string are keyed.
pub const CACHE_VERSION: u32 = 3;

pub use crate::canonical::NON_SEMANTIC_FIELDS;

macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// All 64 hex characters.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// The first 16 hex characters, as shown in response headers and logs.
            pub fn short_hex(&self) -> String {
                hex(&self.0[..8])
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Option<Self> {
                let bytes = unhex(s)?;
                Some($name(bytes.try_into().ok()?))
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hash_newtype!(
    /// Where an entry lives in a store: 256 bits of BLAKE3.
    CacheKey
);
hash_newtype!(
    /// Hash of the full canonical request; stored in the entry and compared on every hit.
    RequestHash
);
hash_newtype!(
    /// A prefix family: hash of the encoding and the first N tokens of the prefix text.
    FamilyId
);
hash_newtype!(
    /// The caller's namespace: a keyed hash of its credential, or the shared namespace.
    Namespace
);

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The secret that keys credential hashes. Replicas sharing a store must share it, or
/// each would put the same caller in a different namespace.
#[derive(Clone)]
pub struct TenantSecret([u8; 32]);

impl TenantSecret {
    /// Derives the 32-byte key from the configured (or generated) secret text.
    pub fn from_text(text: &str) -> TenantSecret {
        TenantSecret(blake3::derive_key(
            "prefixcache tenant secret v1",
            text.trim().as_bytes(),
        ))
    }
}

impl fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantSecret(..)")
    }
}

impl Namespace {
    /// The namespace of a caller identified by credential parts (the `Authorization`
    /// value, organization, project). Each part is length-prefixed so no two
    /// different lists hash alike. The raw credential is never stored.
    pub fn for_credential(secret: &TenantSecret, parts: &[&[u8]]) -> Namespace {
        let mut h = blake3::Hasher::new_keyed(&secret.0);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Namespace(*h.finalize().as_bytes())
    }

    /// The one namespace of `tenant = "shared"`.
    pub fn shared() -> Namespace {
        Namespace(blake3::derive_key("prefixcache shared namespace v1", b""))
    }
}

/// Everything a cache key depends on. Destructured exhaustively in [`compute_keys`], so
/// adding a field here without deciding how it enters the key is a compile error.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub namespace: &'a Namespace,
    pub strategy: &'a str,
    /// The request method (`POST` on every cached route today).
    pub method: &'a str,
    pub route: Route,
    /// The query string exactly as sent, without the `?`; empty when there is none.
    pub query: &'a str,
    /// The canonical request body (whitespace-normalized when the strategy says so).
    pub body: &'a CanonicalBody,
    pub key_mode: KeyMode,
    /// Required for `KeyMode::Prefix`: the slot is the family.
    pub family: Option<&'a FamilyId>,
}

/// The key of the slot and the hash of the full request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub key: CacheKey,
    pub request_hash: RequestHash,
}

/// A key could not be derived.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key_mode = \"prefix\" needs the request's prefix family")]
    MissingFamily,
}

impl KeyError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            KeyError::MissingFamily => "missing_family",
        }
    }
}

/// Hashes a variable-length part with its length first, so no two different lists of
/// parts hash alike.
fn part(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Derives the cache key and the request hash.
///
/// Request hash = BLAKE3(namespace ‖ method ‖ path ‖ query ‖ canonical body), in its own
/// derivation context. Key = BLAKE3(namespace ‖ strategy ‖ version ‖ method ‖ path ‖
/// query ‖ mode ‖ request hash or family), in another: the body is hashed once (it is
/// most of the cost of a hit), and the key still depends on every byte of it through
/// the request hash. Variable-length parts are length-prefixed. The entry keeps the
/// request hash, compared on every hit.
pub fn compute_keys(input: &KeyInput<'_>) -> Result<Keys, KeyError> {
    let KeyInput {
        namespace,
        strategy,
        method,
        route,
        query,
        body,
        key_mode,
        family,
    } = *input;

    let mut rh = blake3::Hasher::new_derive_key("prefixcache request hash v3");
    rh.update(namespace.as_bytes());
    part(&mut rh, method.as_bytes());
    part(&mut rh, route.path().as_bytes());
    part(&mut rh, query.as_bytes());
    body.hash_into(&mut rh);
    let request_hash = RequestHash(*rh.finalize().as_bytes());

    let mut kh = blake3::Hasher::new_derive_key("prefixcache cache key v3");
    kh.update(namespace.as_bytes());
    part(&mut kh, strategy.as_bytes());
    kh.update(&CACHE_VERSION.to_le_bytes());
    part(&mut kh, method.as_bytes());
    part(&mut kh, route.path().as_bytes());
    part(&mut kh, query.as_bytes());
    part(&mut kh, key_mode.as_str().as_bytes());
    match key_mode {
        KeyMode::Exact => {
            kh.update(request_hash.as_bytes());
        }
        KeyMode::Prefix => {
            let family = family.ok_or(KeyError::MissingFamily)?;
            kh.update(family.as_bytes());
        }
    }
    Ok(Keys {
        key: CacheKey(*kh.finalize().as_bytes()),
        request_hash,
    })
}

/// An order-insensitive digest form of a parsed value: sorted keys, integral floats as
/// integers. For fingerprints of parts of a prompt (tool definitions, embedding inputs),
/// never for cache keys: a parsed `Value` has already lost member order and exact
/// numbers, which the key keeps ([`crate::canonical`]).
pub fn canonical_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(&mut out, value);
    out
}

/// [`canonical_value`] of a parsed request body without its [`NON_SEMANTIC_FIELDS`]:
/// a digest that is equal for every two requests with equal keys (the mock upstream
/// derives its generated content from it, so a stored answer and a fresh one agree).
pub fn request_digest_form(body: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical_object(&mut out, body, &NON_SEMANTIC_FIELDS);
    out
}

fn write_canonical_object(out: &mut Vec<u8>, map: &Map<String, Value>, skip: &[&str]) {
    out.push(b'{');
    let keep = |(k, _): &(&String, &Value)| !skip.contains(&k.as_str());
    // serde_json's Map is a BTreeMap unless `preserve_order` is enabled somewhere in the
    // dependency graph, so its keys usually come sorted: write them as they are, and sort
    // only when they do not, so the digest never depends on a feature flag.
    if map.keys().is_sorted() {
        write_members(out, map.iter().filter(keep));
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().filter(keep).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_members(out, entries.into_iter());
    }
    out.push(b'}');
}

fn write_members<'a>(out: &mut Vec<u8>, members: impl Iterator<Item = (&'a String, &'a Value)>) {
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_canonical(out, v);
    }
}

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_canonical_object(out, map, &[]),
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // Most strings need no escaping: copy them in one go. The others take serde_json's
    // escaper, so both paths write exactly what serde_json would.
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether a string has a byte JSON must escape (`"`, `\\`, or below 0x20). Eight bytes
/// at a time (SWAR): this check runs over most of every request body on every request.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero exactly when this has its high bit set (no false positives
    // from borrows: the borrow only travels above a zero byte).
    fn has_zero(v: u64) -> bool {
        v.wrapping_sub(ONES) & !v & HIGH != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // Bytes below 0x20: v - 0x20.. borrows into the high bit of such bytes only when
        // the byte itself has no high bit (ASCII); checked exactly below on a hit.
        let below = v.wrapping_sub(ONES * 0x20) & !v & HIGH != 0;
        if below
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            // The fast test may flag a clean word (borrows); decide byte by byte.
            if chunk.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
                return true;
            }
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// One form per number: integers as integers (also `1.0` and `-0.0`), other floats in
/// Rust's shortest round-trip form.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // 2^53: beyond it not every integer is representable, keep the float form.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:e}");
        }
    }
}

/// Collapses every run of whitespace to one space and trims the ends: the article's
/// `normalize_prefix`. Borrows when the text is already normal.
pub fn normalize_whitespace(s: &str) -> Cow<'_, str> {
    let already = !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
        && !s
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b' ' && w[1] == b' ')
        && !s.chars().any(|c| c.is_whitespace() && c != ' ');
    if already {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonicalize;
    use proptest::prelude::*;
    use serde_json::json;

    fn keys_raw(raw: &[u8], ns: &Namespace, strategy: &str, mode: KeyMode, query: &str) -> Keys {
        let body = canonicalize(Route::ChatCompletions, raw, false).unwrap();
        let fam = FamilyId([7; 32]);
        compute_keys(&KeyInput {
            namespace: ns,
            strategy,
            method: "POST",
            route: Route::ChatCompletions,
            query,
            body: &body,
            key_mode: mode,
            family: Some(&fam),
        })
        .unwrap()
    }

    fn keys_with(v: Value, ns: &Namespace, strategy: &str, mode: KeyMode) -> Keys {
        keys_raw(&serde_json::to_vec(&v).unwrap(), ns, strategy, mode, "")
    }

    fn keys_of(v: Value) -> Keys {
        keys_with(v, &Namespace::shared(), "default", KeyMode::Exact)
    }

    fn keys_of_text(s: &str) -> Keys {
        keys_raw(
            s.as_bytes(),
            &Namespace::shared(),
            "default",
            KeyMode::Exact,
            "",
        )
    }

    #[test]
    fn digest_form_sorts_keys_and_unifies_numbers() {
        let v = json!({"b": 1.0, "a": [ {"y": -0.0, "x": 0.5} ]});
        assert_eq!(
            String::from_utf8(canonical_value(&v)).unwrap(),
            r#"{"a":[{"x":5e-1,"y":0}],"b":1}"#
        );
    }

    #[test]
    fn non_semantic_fields_do_not_change_the_key() {
        let base = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        let mut noisy = base.clone();
        for (i, f) in NON_SEMANTIC_FIELDS.iter().enumerate() {
            noisy[*f] = json!(i);
        }
        assert_eq!(keys_of(base), keys_of(noisy));
    }

    #[test]
    fn semantic_and_unknown_fields_change_the_key() {
        let base = json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
        let k = keys_of(base.clone());
        for (field, value) in [
            ("temperature", json!(0.7)),
            ("model", json!("gpt-4o-mini")),
            ("messages", json!([{"role": "user", "content": "hi!"}])),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("store", json!(true)),
            ("some_future_field", json!(true)),
        ] {
            let mut v = base.clone();
            v[field] = value;
            assert_ne!(keys_of(v), k, "{field} must change the key");
        }
        // nested non-semantic names are data, not bookkeeping
        let mut v = base.clone();
        v["messages"][0]["user"] = json!("x");
        assert_ne!(keys_of(v), k);
    }

    #[test]
    fn request_line_and_namespace_separate_keys() {
        let body = br#"{"model":"m"}"#;
        let s = TenantSecret::from_text("0123456789abcdef0123");
        let a = Namespace::for_credential(&s, &[b"Bearer sk-a"]);
        let b = Namespace::for_credential(&s, &[b"Bearer sk-b"]);
        assert_ne!(a, b);
        let ka = keys_raw(body, &a, "default", KeyMode::Exact, "");
        assert_ne!(ka, keys_raw(body, &b, "default", KeyMode::Exact, ""));
        assert_ne!(ka.key, keys_raw(body, &a, "other", KeyMode::Exact, "").key);
        let v1 = keys_raw(
            body,
            &a,
            "default",
            KeyMode::Exact,
            "api-version=2024-02-01",
        );
        let v2 = keys_raw(
            body,
            &a,
            "default",
            KeyMode::Exact,
            "api-version=2025-04-01-preview",
        );
        assert_ne!(v1, v2);
        assert_ne!(v1, ka);
        // in prefix mode too: different queries do not share a slot
        assert_ne!(
            keys_raw(body, &a, "d", KeyMode::Prefix, "x=1").key,
            keys_raw(body, &a, "d", KeyMode::Prefix, "x=2").key
        );
        // credential parts are length-prefixed: ["ab", ""] != ["a", "b"]
        assert_ne!(
            Namespace::for_credential(&s, &[b"ab", b""]),
            Namespace::for_credential(&s, &[b"a", b"b"])
        );
        // another secret, another namespace
        let s2 = TenantSecret::from_text("another secret, 16+ chars");
        assert_ne!(a, Namespace::for_credential(&s2, &[b"Bearer sk-a"]));
    }

    #[test]
    fn prefix_mode_keys_by_family_but_hashes_the_whole_request() {
        let ns = Namespace::shared();
        let a = keys_with(json!({"m": 1}), &ns, "d", KeyMode::Prefix);
        let b = keys_with(json!({"m": 2}), &ns, "d", KeyMode::Prefix);
        assert_eq!(a.key, b.key);
        assert_ne!(a.request_hash, b.request_hash);
        let body = canonicalize(Route::Completions, b"{}", false).unwrap();
        let err = compute_keys(&KeyInput {
            namespace: &ns,
            strategy: "d",
            method: "POST",
            route: Route::Completions,
            query: "",
            body: &body,
            key_mode: KeyMode::Prefix,
            family: None,
        });
        assert_eq!(err, Err(KeyError::MissingFamily));
    }

    #[test]
    fn huge_integers_and_schema_order_are_kept() {
        assert_ne!(
            keys_of_text(r#"{"model":"m","seed":18446744073709551616}"#),
            keys_of_text(r#"{"model":"m","seed":18446744073709551617}"#)
        );
        let schema = |props: &str| {
            format!(
                r#"{{"model":"m","response_format":{{"type":"json_schema","json_schema":{{"name":"s","schema":{{"type":"object","properties":{props}}}}}}}}}"#
            )
        };
        assert_ne!(
            keys_of_text(&schema(r#"{"a":{"type":"string"},"b":{"type":"string"}}"#)),
            keys_of_text(&schema(r#"{"b":{"type":"string"},"a":{"type":"string"}}"#))
        );
    }

    #[test]
    fn normalize_whitespace_collapses_runs() {
        assert_eq!(
            normalize_whitespace("Summarize:\n\n\n{text}"),
            "Summarize: {text}"
        );
        assert_eq!(normalize_whitespace("  a \t b  "), "a b");
        assert!(matches!(normalize_whitespace("a b"), Cow::Borrowed(_)));
        assert_eq!(normalize_whitespace("a\u{a0}b"), "a b");
    }

    #[test]
    fn hex_round_trips() {
        let k = CacheKey([0xab; 32]);
        assert_eq!(k.short_hex(), "abababababababab");
        assert_eq!(CacheKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }

    /// A member of a generated request and how the API reads it.
    #[derive(Debug, Clone)]
    struct Gen {
        /// Members of the fixed structs (top level, message, content part, tool wrapper).
        model: String,
        text: String,
        temperature: f64,
        /// Properties of a JSON schema (order kept), with their types.
        props: Vec<(String, &'static str)>,
    }

    fn arb_request() -> impl Strategy<Value = Gen> {
        (
            "gpt-[a-z0-9]{1,4}",
            "[a-zA-Z ]{0,16}",
            0u32..200,
            prop::collection::btree_map(
                "[a-z]{1,5}",
                prop::sample::select(vec!["string", "integer", "boolean"]),
                2..6,
            ),
        )
            .prop_map(|(model, text, t, props)| Gen {
                model,
                text,
                temperature: f64::from(t) / 100.0,
                props: props.into_iter().collect(),
            })
    }

    /// Writes a request; `perm` picks the member order of every fixed struct, `swap`
    /// reverses the schema's property order, `number` spells the temperature.
    fn render(g: &Gen, perm: u64, swap: bool, number: &dyn Fn(f64) -> String) -> String {
        fn obj(mut members: Vec<String>, perm: u64) -> String {
            let mut p = perm;
            for i in (1..members.len()).rev() {
                p = p
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                members.swap(i, (p >> 33) as usize % (i + 1));
            }
            format!("{{{}}}", members.join(","))
        }
        let mut props: Vec<String> = g
            .props
            .iter()
            .map(|(k, t)| format!(r#""{k}":{{"type":"{t}"}}"#))
            .collect();
        if swap {
            props.reverse();
        }
        let schema = format!(
            r#"{{"type":"object","properties":{{{}}}}}"#,
            props.join(",")
        );
        let part = obj(
            vec![
                r#""type":"text""#.into(),
                format!(r#""text":{}"#, serde_json::to_string(&g.text).unwrap()),
            ],
            perm ^ 1,
        );
        let message = obj(
            vec![r#""role":"user""#.into(), format!(r#""content":[{part}]"#)],
            perm ^ 2,
        );
        let function = obj(
            vec![
                r#""name":"f""#.into(),
                r#""description":"d""#.into(),
                format!(r#""parameters":{schema}"#),
            ],
            perm ^ 3,
        );
        let tool = obj(
            vec![
                r#""type":"function""#.into(),
                format!(r#""function":{function}"#),
            ],
            perm ^ 4,
        );
        obj(
            vec![
                format!(r#""model":"{}""#, g.model),
                format!(r#""temperature":{}"#, number(g.temperature)),
                format!(r#""messages":[{message}]"#),
                format!(r#""tools":[{tool}]"#),
                r#""stream":false"#.into(),
            ],
            perm,
        )
    }

    proptest! {
        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in "\\PC*|[\"\\\\\n\t a-z\u{1}-\u{1f}]{0,12}") {
            let mut ours = Vec::new();
            write_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn the_escape_scan_agrees_with_the_byte_loop(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let slow = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(&bytes), slow);
        }

        #[test]
        fn integral_floats_equal_integers_in_the_digest_form(i in -1_000_000i64..1_000_000) {
            let a = canonical_value(&json!({"t": i}));
            let b = canonical_value(&json!({"t": i as f64}));
            prop_assert_eq!(a, b);
        }

        /// The key's equality is the rules': reordered fixed-struct members collide;
        /// reordered schema properties, other numbers or a duplicate key do not share.
        #[test]
        fn key_equality_follows_the_rules(g in arb_request(), p1 in any::<u64>(), p2 in any::<u64>(), delta in 1u32..100) {
            let plain = |t: f64| format!("{t:?}");
            let a = render(&g, p1, false, &plain);
            let b = render(&g, p2, false, &plain);
            prop_assert_eq!(keys_of_text(&a), keys_of_text(&b), "struct order must not matter:\n{}\n{}", a, b);
            // an equal value spelled with an exponent
            let exp = |t: f64| format!("{:e}", t);
            prop_assert_eq!(keys_of_text(&a), keys_of_text(&render(&g, p2, false, &exp)));
            // schema property order is the model's output order
            let swapped = render(&g, p1, true, &plain);
            prop_assert_ne!(keys_of_text(&a), keys_of_text(&swapped));
            // another number
            let other = render(&g, p1, false, &|t: f64| format!("{:?}", t + f64::from(delta) / 1000.0));
            prop_assert_ne!(keys_of_text(&a), keys_of_text(&other));
            // a duplicate key is reported (and the proxy never caches it)
            let dup = a.replacen('{', r#"{"model":"x","#, 1);
            let body = canonicalize(Route::ChatCompletions, dup.as_bytes(), false).unwrap();
            prop_assert!(body.has_duplicate_keys());
            prop_assert!(!canonicalize(Route::ChatCompletions, a.as_bytes(), false).unwrap().has_duplicate_keys());
        }

        #[test]
        fn any_semantic_change_changes_the_key(s1 in "[a-z]{1,12}", s2 in "[a-z]{1,12}") {
            prop_assume!(s1 != s2);
            let a = keys_of(json!({"messages": [{"role": "user", "content": s1}]}));
            let b = keys_of(json!({"messages": [{"role": "user", "content": s2}]}));
            prop_assert_ne!(a, b);
        }
    }
}
