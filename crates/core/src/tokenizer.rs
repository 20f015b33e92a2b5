//! tiktoken-exact tokenization (`o200k_base`, `cl100k_base`, `o200k_harmony`) over
//! `bpe-openai`, and the model-name table that picks an encoding for a model.
//!
//! Vocabularies load once per process on first use (~45 ms, ~70 MB for o200k); call
//! [`Encoding::preload`] at startup to keep that off the first request.

/// A tiktoken encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
    /// `gpt-oss-*`: o200k's vocabulary and pattern plus special tokens; ordinary text
    /// (all a prompt is encoded as) tokenizes exactly as `o200k_base`.
    O200kHarmony,
}

/// The encoding chosen for a model, and whether the model was in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelEncoding {
    pub encoding: Encoding,
    /// False when the model is unknown and `o200k_base` was used as the fallback.
    pub known: bool,
}

impl Encoding {
    /// tiktoken's name of the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kHarmony => "o200k_harmony",
        }
    }

    /// Parses a tiktoken encoding name.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "o200k_base" => Some(Encoding::O200kBase),
            "cl100k_base" => Some(Encoding::Cl100kBase),
            "o200k_harmony" => Some(Encoding::O200kHarmony),
            _ => None,
        }
    }

    fn bpe(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Encoding::O200kBase | Encoding::O200kHarmony => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }

    /// Loads the vocabulary now rather than on the first request.
    pub fn preload(self) {
        let _ = self.bpe();
    }

    /// Token ids of `text`, as tiktoken's `encode_ordinary`.
    pub fn encode(self, text: &str) -> Vec<u32> {
        self.bpe().encode(text)
    }

    /// Number of tokens in `text`.
    pub fn count(self, text: &str) -> usize {
        self.bpe().count(text)
    }

    /// The first `n` token ids of `text`, equal to `encode(text)[..n]`, at a cost that
    /// grows with `n`, not with the length of `text`: pre-tokenizer pieces are encoded in
    /// order and the loop stops once `n` tokens exist. (Cutting the text and encoding the
    /// cut is not exact: a whitespace run splits differently when it ends the text.)
    pub fn encode_first(self, text: &str, n: usize) -> Vec<u32> {
        let tok = self.bpe();
        let mut out = Vec::with_capacity(n.min(4096));
        if n == 0 {
            return out;
        }
        for piece in tok.split(text) {
            out.extend(tok.bpe.encode_via_backtracking(piece.as_bytes()));
            if out.len() >= n {
                out.truncate(n);
                break;
            }
        }
        out
    }

    /// The bytes of the given tokens (may be invalid UTF-8 when cut inside a character).
    pub fn decode_bytes(self, tokens: &[u32]) -> Vec<u8> {
        self.bpe().bpe.decode_tokens(tokens)
    }
}

/// tiktoken's `encoding_for_model`: exact names first, then prefixes; unknown models
/// fall back to `o200k_base` with `known = false`.
pub fn encoding_for_model(model: &str) -> ModelEncoding {
    // Fine-tunes are named `ft:<base>:<org>::<id>`; they use the base model's encoding.
    let model = model
        .strip_prefix("ft:")
        .map(|rest| rest.split(':').next().unwrap_or(rest))
        .unwrap_or(model);
    if let Some((_, enc)) = MODEL_TO_ENCODING.iter().find(|(name, _)| *name == model) {
        return ModelEncoding {
            encoding: *enc,
            known: true,
        };
    }
    if let Some((_, enc)) = MODEL_PREFIX_TO_ENCODING
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
    {
        return ModelEncoding {
            encoding: *enc,
            known: true,
        };
    }
    ModelEncoding {
        encoding: Encoding::O200kBase,
        known: false,
    }
}

use Encoding::{Cl100kBase, O200kBase, O200kHarmony};

/// Exact model names (tiktoken's `MODEL_TO_ENCODING`, restricted to the chat and
/// embedding encodings this crate has).
const MODEL_TO_ENCODING: &[(&str, Encoding)] = &[
    ("o1", O200kBase),
    ("o3", O200kBase),
    ("o4-mini", O200kBase),
    ("gpt-5", O200kBase),
    ("gpt-4.1", O200kBase),
    ("gpt-4o", O200kBase),
    ("gpt-4", Cl100kBase),
    ("gpt-3.5-turbo", Cl100kBase),
    ("gpt-3.5", Cl100kBase),
    ("gpt-35-turbo", Cl100kBase),
    ("davinci-002", Cl100kBase),
    ("babbage-002", Cl100kBase),
    ("text-embedding-ada-002", Cl100kBase),
    ("text-embedding-3-small", Cl100kBase),
    ("text-embedding-3-large", Cl100kBase),
];

/// Model-name prefixes (tiktoken's `MODEL_PREFIX_TO_ENCODING`), checked in order.
const MODEL_PREFIX_TO_ENCODING: &[(&str, Encoding)] = &[
    ("o1-", O200kBase),
    ("o3-", O200kBase),
    ("o4-mini-", O200kBase),
    ("gpt-5-", O200kBase),
    ("gpt-4.5-", O200kBase),
    ("gpt-4.1-", O200kBase),
    ("chatgpt-4o-", O200kBase),
    ("gpt-4o-", O200kBase),
    ("gpt-oss-", O200kHarmony),
    ("gpt-4-", Cl100kBase),
    ("gpt-3.5-turbo-", Cl100kBase),
    ("gpt-35-turbo-", Cl100kBase),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        // tiktoken: enc.encode_ordinary("hello world")
        assert_eq!(Encoding::O200kBase.encode("hello world"), vec![24912, 2375]);
        assert_eq!(
            Encoding::Cl100kBase.encode("hello world"),
            vec![15339, 1917]
        );
    }

    #[test]
    fn first_n_equals_prefix_of_full_encoding() {
        let text = "Summarize:   \n\n   the   following   text    please";
        let full = Encoding::O200kBase.encode(text);
        for n in 0..=full.len() + 2 {
            assert_eq!(
                Encoding::O200kBase.encode_first(text, n),
                full[..n.min(full.len())]
            );
        }
    }

    #[test]
    fn model_table() {
        assert_eq!(encoding_for_model("gpt-4o-2024-08-06").encoding, O200kBase);
        assert_eq!(encoding_for_model("gpt-4").encoding, Cl100kBase);
        assert_eq!(encoding_for_model("gpt-oss-120b").encoding, O200kHarmony);
        assert_eq!(
            encoding_for_model("ft:gpt-3.5-turbo:acme::abc").encoding,
            Cl100kBase
        );
        let unknown = encoding_for_model("my-local-model");
        assert_eq!(
            unknown,
            ModelEncoding {
                encoding: O200kBase,
                known: false
            }
        );
    }
}
