//! `unstable-tools`: tool definitions (or response schemas) of one service that are the
//! same JSON but are sent with their keys in a different order.
//!
//! Why key order and not whitespace: the provider parses the request's JSON, so the
//! model never sees the raw bytes' whitespace; but it renders the definitions to text in
//! the order the keys came (a function's parameters in `properties` order), and tools
//! come first in the prompt, so a changed order changes the provider's cached prefix for
//! everything after it. prefixcache's own keys and families use canonical (sorted) JSON
//! and are not affected by either. So whitespace-only differences are not findings.

use std::collections::HashMap;

use serde_json::Value;

use super::{Finding, Rule, Severity};
use crate::key::canonical_value;

/// BLAKE3 of a value's canonical JSON: equal for equal values, whatever the key order.
type Digest = [u8; 32];

/// The JSON with insignificant whitespace removed and everything else as sent: key order
/// and number spelling kept.
fn compact(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &c in raw {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(c);
        }
    }
    out
}

struct Variant {
    compact: Vec<u8>,
    first_request: usize,
    requests: usize,
}

/// `unstable-tools` findings over the raw serializations of one service's tool
/// definitions (the `tools` array of each request, or a response schema), in request
/// order. One finding per set of equal definitions sent in more than one key order; its
/// message names the requests and the first differing place. Items that are not JSON
/// are skipped. Spans are byte ranges into the compact form (whitespace removed) of the
/// later variant; token spans are `0..0` (the definitions are rendered by the provider,
/// not tokenized here).
pub fn unstable_tools<'a>(serializations: impl IntoIterator<Item = &'a [u8]>) -> Vec<Finding> {
    let mut groups: HashMap<Digest, Vec<Variant>> = HashMap::new();
    let mut order: Vec<Digest> = Vec::new();
    for (i, raw) in serializations.into_iter().enumerate() {
        let Ok(value) = serde_json::from_slice::<Value>(raw) else {
            continue;
        };
        let digest: Digest = *blake3::hash(&canonical_value(&value)).as_bytes();
        let c = compact(raw);
        let variants = groups.entry(digest).or_insert_with(|| {
            order.push(digest);
            Vec::new()
        });
        match variants.iter_mut().find(|v| v.compact == c) {
            Some(v) => v.requests += 1,
            None => variants.push(Variant {
                compact: c,
                first_request: i,
                requests: 1,
            }),
        }
    }

    let mut out = Vec::new();
    for digest in order {
        let Some(variants) = groups.get(&digest) else {
            continue;
        };
        if variants.len() < 2 {
            continue;
        }
        let (a, b) = (&variants[0], &variants[1]);
        let at = a
            .compact
            .iter()
            .zip(&b.compact)
            .position(|(x, y)| x != y)
            .unwrap_or(a.compact.len().min(b.compact.len()));
        let show = |v: &[u8]| {
            let from = at.saturating_sub(12);
            let to = (at + 28).min(v.len());
            super::excerpt(&String::from_utf8_lossy(&v[from..to]), 0..usize::MAX)
        };
        let total: usize = variants.iter().map(|v| v.requests).sum();
        out.push(Finding {
            rule: Rule::UnstableTools,
            severity: Severity::Warning,
            kind: "key-order",
            message: format!(
                "the same tool definitions were sent in {} key orders ({total} requests; \
                 first as in request #{}, then as in request #{}); they first differ at \
                 byte {at} of the compact JSON: …{}… vs …{}…: the provider renders them \
                 differently, so its cached prefix breaks there",
                variants.len(),
                a.first_request,
                b.first_request,
                show(&a.compact),
                show(&b.compact),
            ),
            excerpt: show(&b.compact),
            span: at..(at + 1).min(b.compact.len()),
            token_span: 0..0,
            fix: "serialize tool definitions once (a constant) or with a fixed key order in \
                  every service",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string"}}}}}]"#;

    #[test]
    fn key_order_churn_is_a_finding() {
        let b = r#"[{"function":{"name":"get_weather","parameters":{"type":"object","properties":{"unit":{"type":"string"},"city":{"type":"string"}}}},"type":"function"}]"#;
        let items: Vec<&[u8]> = vec![A.as_bytes(), A.as_bytes(), b.as_bytes(), A.as_bytes()];
        let f = unstable_tools(items);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::UnstableTools);
        assert_eq!(f[0].kind, "key-order");
        assert!(f[0].message.contains("request #0") && f[0].message.contains("request #2"));
        assert!(f[0].message.contains("4 requests"), "{}", f[0].message);
        assert_eq!(f[0].span.start, 3); // `[{"t` vs `[{"f`
    }

    #[test]
    fn whitespace_only_differences_are_not_findings() {
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(A).unwrap()).unwrap();
        // serde_json's Value sorts keys: re-create A's order with whitespace by hand.
        let spaced = A.replace(',', ", ").replace(':', ": ");
        let items: Vec<&[u8]> = vec![A.as_bytes(), spaced.as_bytes(), A.as_bytes()];
        assert!(unstable_tools(items).is_empty());
        // (the sorted pretty form has another key order: a finding)
        let items: Vec<&[u8]> = vec![A.as_bytes(), pretty.as_bytes()];
        assert_eq!(unstable_tools(items).len(), 1);
    }

    #[test]
    fn different_tools_and_garbage_are_not_findings() {
        let other = A.replace("get_weather", "get_time");
        let items: Vec<&[u8]> = vec![A.as_bytes(), other.as_bytes(), b"not json", b""];
        assert!(unstable_tools(items).is_empty());
        assert!(unstable_tools(Vec::<&[u8]>::new()).is_empty());
    }

    #[test]
    fn strings_keep_their_spaces() {
        assert_eq!(
            compact(br#"{ "a b" : "c \" d" }"#),
            br#"{"a b":"c \" d"}"#.to_vec()
        );
    }
}
