//! The mock "model": deterministic output derived from a request hash. Prose is written
//! with single-token words (so its token count is known exactly and it streams one token
//! per delta); JSON (structured outputs, tool arguments) follows the given schema and is
//! tokenized to count it.

use prefixcache_core::tokenizer::Encoding;
use serde_json::{Map, Value, json};

use crate::rng::SplitMix64;
use crate::words::{SPACED_STARTERS, STARTERS, WORDS};

/// A text cut into the pieces it streams as (one token each, or a few tokens when a
/// token alone is not valid UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces {
    pub text: String,
    /// End offset of each piece in `text`.
    ends: Vec<usize>,
    /// Tokens of each piece.
    tokens: Vec<u32>,
}

impl Pieces {
    fn push(&mut self, piece: &str, tokens: u32) {
        self.text.push_str(piece);
        self.ends.push(self.text.len());
        self.tokens.push(tokens);
    }

    /// The pieces, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let piece = &self.text[start..end];
            start = end;
            piece
        })
    }

    pub fn pieces(&self) -> usize {
        self.ends.len()
    }

    /// Tokens of the whole text.
    pub fn token_count(&self) -> u64 {
        self.tokens.iter().map(|t| u64::from(*t)).sum()
    }

    /// Keeps at most `max_tokens` tokens (whole pieces); says whether anything was cut.
    pub fn truncate_tokens(&mut self, max_tokens: u64) -> bool {
        let mut total = 0u64;
        let keep = self
            .tokens
            .iter()
            .take_while(|t| {
                total += u64::from(**t);
                total <= max_tokens
            })
            .count();
        if keep == self.ends.len() {
            return false;
        }
        let end = if keep == 0 { 0 } else { self.ends[keep - 1] };
        self.text.truncate(end);
        self.ends.truncate(keep);
        self.tokens.truncate(keep);
        true
    }
}

/// `n` tokens of prose: sentences of single-token words ending in full stops.
pub fn prose(rng: &mut SplitMix64, n: u64) -> Pieces {
    let mut p = Pieces::default();
    let mut since_stop = 0u64;
    let mut sentence_len = rng.range(6, 14);
    for i in 0..n {
        let remaining = n - i;
        let word = if i == 0 {
            STARTERS[rng.below(STARTERS.len() as u64) as usize]
        } else if since_stop > 0 && (remaining == 1 || since_stop >= sentence_len) {
            // Texts end with a full stop, and sentences after 6-14 words; never two stops
            // in a row (".." is one token).
            since_stop = 0;
            sentence_len = rng.range(6, 14);
            p.push(".", 1);
            continue;
        } else if since_stop == 0 {
            SPACED_STARTERS[rng.below(SPACED_STARTERS.len() as u64) as usize]
        } else {
            WORDS[rng.below(WORDS.len() as u64) as usize]
        };
        since_stop += 1;
        p.push(word, 1);
    }
    p
}

/// Cuts `text` into its tokens, merging a token that is not valid UTF-8 on its own with
/// the following ones.
pub fn tokenized(enc: Encoding, text: &str) -> Pieces {
    let mut p = Pieces::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_tokens = 0u32;
    for t in enc.encode(text) {
        pending.extend(enc.decode_bytes(&[t]));
        pending_tokens += 1;
        if let Ok(s) = std::str::from_utf8(&pending) {
            p.push(s, pending_tokens);
            pending.clear();
            pending_tokens = 0;
        }
    }
    if !pending.is_empty() {
        p.push(&String::from_utf8_lossy(&pending), pending_tokens);
    }
    p
}

/// A few words for a JSON string value.
fn phrase(rng: &mut SplitMix64) -> String {
    let n = rng.range(1, 4);
    let mut s = String::new();
    for i in 0..n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        s.push_str(if i == 0 { w.trim_start() } else { w });
    }
    s
}

/// A JSON value valid under the common subset of JSON Schema that structured outputs
/// allow (objects with properties, arrays, scalars, `enum`, `const`, `anyOf`, `$ref` to
/// `$defs`). Unknown or missing schemas give a small object.
pub fn value_for_schema(rng: &mut SplitMix64, schema: Option<&Value>) -> Value {
    match schema {
        Some(s) => value_at(rng, s, s, 0),
        None => json!({ "answer": phrase(rng) }),
    }
}

fn value_at(rng: &mut SplitMix64, s: &Value, root: &Value, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|path| path.split('/').try_fold(root, |v, k| v.get(k)))
            .unwrap_or(Some(root));
        return match target {
            Some(t) if !std::ptr::eq(t, s) => value_at(rng, t, root, depth + 1),
            _ => Value::Null,
        };
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(e) = s
        .get("enum")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        return e[rng.below(e.len() as u64) as usize].clone();
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = s
            .get(combinator)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return value_at(rng, first, root, depth + 1);
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // `["string", "null"]`: the first non-null type.
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.get("properties").is_some() => "object",
        _ => "object",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), value_at(rng, v, root, depth + 1));
                }
            } else if depth == 0 {
                out.insert("answer".into(), Value::String(phrase(rng)));
            }
            Value::Object(out)
        }
        "array" => {
            let n = rng.range(1, 3);
            let item = s.get("items").cloned().unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..n)
                    .map(|_| value_at(rng, &item, root, depth + 1))
                    .collect(),
            )
        }
        "string" => Value::String(phrase(rng)),
        "integer" => json!(rng.range(0, 100)),
        "number" => json!(rng.range(0, 10_000) as f64 / 100.0),
        "boolean" => Value::Bool(rng.below(2) == 1),
        _ => Value::Null,
    }
}

/// A deterministic log probability for a generated token, and `k` alternatives
/// (the token itself first, then other vocabulary words, each less likely).
pub fn logprobs(rng: &mut SplitMix64, token: &str, k: usize) -> (f64, Vec<(String, f64)>) {
    let lp = -(rng.unit() * 2.0).powi(2) / 2.0;
    let lp = (lp * 1e6).round() / 1e6;
    let mut top = Vec::with_capacity(k);
    if k > 0 {
        top.push((token.to_string(), lp));
    }
    let mut next = lp;
    while top.len() < k {
        next -= 0.5 + rng.unit() * 2.0;
        next = (next * 1e6).round() / 1e6;
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        if top.iter().any(|(t, _)| t == w) {
            continue;
        }
        top.push((w.to_string(), next));
    }
    (lp, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_has_exactly_the_requested_tokens() {
        for seed in 0..300 {
            let mut rng = SplitMix64::new(seed);
            let n = rng.range(1, 200);
            let p = prose(&mut rng, n);
            assert_eq!(p.token_count(), n);
            assert_eq!(p.pieces() as u64, n);
            for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
                assert_eq!(enc.count(&p.text) as u64, n, "seed {seed}: {:?}", p.text);
            }
            assert!(!p.text.contains(".."));
        }
    }

    #[test]
    fn tokenized_pieces_rebuild_the_text() {
        let text = "{\"city\":\"Zürich\",\"emoji\":\"🦀\"}";
        let p = tokenized(Encoding::O200kBase, text);
        assert_eq!(p.iter().collect::<String>(), text);
        assert_eq!(p.token_count() as usize, Encoding::O200kBase.count(text));
    }

    #[test]
    fn truncation_keeps_whole_tokens() {
        let mut rng = SplitMix64::new(1);
        let mut p = prose(&mut rng, 30);
        assert!(p.truncate_tokens(10));
        assert_eq!(p.token_count(), 10);
        assert_eq!(p.iter().count(), 10);
        assert!(!p.truncate_tokens(10));
    }

    #[test]
    fn schema_values_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "unit": {"enum": ["c", "f"]},
                "home": {"$ref": "#/$defs/place"},
                "maybe": {"type": ["number", "null"]}
            },
            "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}}}
        });
        let v = value_for_schema(&mut SplitMix64::new(3), Some(&schema));
        assert!(v["name"].is_string());
        assert!(v["age"].is_u64());
        assert!(
            v["tags"]
                .as_array()
                .is_some_and(|a| !a.is_empty() && a[0].is_string())
        );
        assert!(v["unit"] == "c" || v["unit"] == "f");
        assert!(v["home"]["city"].is_string());
        assert!(v["maybe"].is_number());
    }
}
