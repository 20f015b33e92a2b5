//! Cache keys (DESIGN.md §4): the canonical form of a request, the caller's namespace,
//! and the BLAKE3 key and full request hash derived from them.
//!
//! Canonical JSON drops the fields that cannot change the model's output, keeps every
//! other field (unknown ones included: safe by default), sorts object keys and writes
//! each number in one form, so `{"a":1.0,"b":2}` and `{"b":2,"a":1}` are one request.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use serde_json::{Map, Number, Value};

use crate::config::KeyMode;
use crate::route::Route;

/// Bumped when the key derivation or canonical form changes, so old entries stop matching.
/// 2: the exact-mode key is derived from the request hash instead of rehashing the body.
pub const CACHE_VERSION: u32 = 2;

/// Top-level request fields that cannot change the model's output, dropped from the key.
/// `stream`/`stream_options` change only the transport (a hit is rendered in either
/// form); the rest are bookkeeping, routing or billing hints.
pub const NON_SEMANTIC_FIELDS: [&str; 9] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
];

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
    pub route: Route,
    /// The parsed request body (a JSON object).
    pub body: &'a Map<String, Value>,
    pub key_mode: KeyMode,
    /// Required for `KeyMode::Prefix`: the slot is the family.
    pub family: Option<&'a FamilyId>,
    /// Canonicalize string values whitespace-normalized (strategy option).
    pub normalize_whitespace: bool,
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

/// Derives the cache key and the request hash.
///
/// Request hash = BLAKE3(namespace ‖ path ‖ 0 ‖ canonical body), in its own derivation
/// context. Key = BLAKE3(namespace ‖ strategy ‖ 0 ‖ version ‖ path ‖ 0 ‖ mode ‖ 0 ‖
/// request hash or family), in another: the body is hashed once (it is most of the
/// cost of a hit), and the key still depends on every byte of it through the request
/// hash. The entry keeps the request hash, compared on every hit.
pub fn compute_keys(input: &KeyInput<'_>) -> Result<Keys, KeyError> {
    let KeyInput {
        namespace,
        strategy,
        route,
        body,
        key_mode,
        family,
        normalize_whitespace,
    } = *input;

    let mut canonical = Vec::with_capacity(1024);
    write_canonical_object(&mut canonical, body, true, normalize_whitespace);

    let mut rh = blake3::Hasher::new_derive_key("prefixcache request hash v1");
    rh.update(namespace.as_bytes());
    rh.update(route.path().as_bytes());
    rh.update(&[0]);
    rh.update(&canonical);
    let request_hash = RequestHash(*rh.finalize().as_bytes());

    let mut kh = blake3::Hasher::new_derive_key("prefixcache cache key v1");
    kh.update(namespace.as_bytes());
    kh.update(strategy.as_bytes());
    kh.update(&[0]);
    kh.update(&CACHE_VERSION.to_le_bytes());
    kh.update(route.path().as_bytes());
    kh.update(&[0]);
    kh.update(key_mode.as_str().as_bytes());
    kh.update(&[0]);
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

/// The canonical bytes of a request body (the non-semantic fields dropped at top level).
pub fn canonical_json(body: &Map<String, Value>, normalize_whitespace: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical_object(&mut out, body, true, normalize_whitespace);
    out
}

/// Canonical JSON of any value (nothing dropped): sorted keys, one number form.
pub fn canonical_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(&mut out, value, false);
    out
}

fn write_canonical_object(
    out: &mut Vec<u8>,
    map: &Map<String, Value>,
    top_level: bool,
    normalize: bool,
) {
    let keep = |k: &String| !(top_level && NON_SEMANTIC_FIELDS.contains(&k.as_str()));
    out.push(b'{');
    // serde_json's Map is a BTreeMap unless `preserve_order` is enabled somewhere in the
    // dependency graph, so its keys usually come sorted: write them as they are, and sort
    // only when they do not, so the key never depends on a feature flag.
    if map.keys().is_sorted() {
        write_members(out, map.iter().filter(|(k, _)| keep(k)), normalize);
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| keep(k)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_members(out, entries.into_iter(), normalize);
    }
    out.push(b'}');
}

fn write_members<'a>(
    out: &mut Vec<u8>,
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    normalize: bool,
) {
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_canonical(out, v, normalize);
    }
}

fn write_canonical(out: &mut Vec<u8>, value: &Value, normalize: bool) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) if normalize => write_string(out, &normalize_whitespace(s)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item, normalize);
            }
            out.push(b']');
        }
        Value::Object(map) => write_canonical_object(out, map, false, normalize),
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
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn keys_of(v: Value) -> Keys {
        keys_with(v, &Namespace::shared(), "default", KeyMode::Exact)
    }

    fn keys_with(v: Value, ns: &Namespace, strategy: &str, mode: KeyMode) -> Keys {
        let body = obj(v);
        let fam = FamilyId([7; 32]);
        compute_keys(&KeyInput {
            namespace: ns,
            strategy,
            route: Route::ChatCompletions,
            body: &body,
            key_mode: mode,
            family: Some(&fam),
            normalize_whitespace: false,
        })
        .unwrap()
    }

    #[test]
    fn canonical_form_sorts_keys_and_unifies_numbers() {
        let a = obj(json!({"b": 1.0, "a": [ {"y": -0.0, "x": 0.5} ], "stream": true, "user": "u"}));
        assert_eq!(
            String::from_utf8(canonical_json(&a, false)).unwrap(),
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
    fn namespace_strategy_and_route_separate_keys() {
        let body = json!({"model": "m"});
        let s = TenantSecret::from_text("0123456789abcdef0123");
        let a = Namespace::for_credential(&s, &[b"Bearer sk-a"]);
        let b = Namespace::for_credential(&s, &[b"Bearer sk-b"]);
        assert_ne!(a, b);
        let ka = keys_with(body.clone(), &a, "default", KeyMode::Exact);
        assert_ne!(ka, keys_with(body.clone(), &b, "default", KeyMode::Exact));
        assert_ne!(
            ka.key,
            keys_with(body.clone(), &a, "other", KeyMode::Exact).key
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
        let body = obj(json!({}));
        let err = compute_keys(&KeyInput {
            namespace: &ns,
            strategy: "d",
            route: Route::Completions,
            body: &body,
            key_mode: KeyMode::Prefix,
            family: None,
            normalize_whitespace: false,
        });
        assert_eq!(err, Err(KeyError::MissingFamily));
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

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-z \n]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
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
        fn canonicalization_is_idempotent(v in arb_json()) {
            let once = canonical_value(&v);
            let reparsed: Value = serde_json::from_slice(&once).unwrap();
            prop_assert_eq!(canonical_value(&reparsed), once);
        }

        #[test]
        fn key_order_does_not_matter(m in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..8)) {
            let forward: Map<String, Value> = m.clone().into_iter().collect();
            // Re-insert in reverse order; with preserve_order this would change iteration order.
            let mut reverse = Map::new();
            for (k, v) in m.into_iter().rev() {
                reverse.insert(k, v);
            }
            prop_assert_eq!(canonical_json(&forward, false), canonical_json(&reverse, false));
        }

        #[test]
        fn integral_floats_equal_integers(i in -1_000_000i64..1_000_000) {
            let a = canonical_value(&json!({"t": i}));
            let b = canonical_value(&json!({"t": i as f64}));
            prop_assert_eq!(a, b);
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
