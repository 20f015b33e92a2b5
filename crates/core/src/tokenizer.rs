//! tiktoken-exact tokenization (`o200k_base`, `cl100k_base`, `o200k_harmony`) over
//! `bpe-openai`, the first-N-tokens encoder that prefix families stand on, and the
//! model-name table (tiktoken 0.14's) that picks an encoding for a model.
//!
//! Vocabularies load once per process on first use (~45 ms, ~70 MB for o200k); call
//! [`Encoding::preload`] at startup to keep that off the first request.
//!
//! Text is always encoded as ordinary text (tiktoken's `encode_ordinary`): a prompt
//! that contains `<|endoftext|>` is that many ordinary tokens, as the API counts it.

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
    /// False when `o200k_base` was used as a fallback: the model is unknown, or it uses
    /// an encoding this build does not ship (see `unsupported`).
    pub known: bool,
    /// tiktoken's encoding for a model it knows but whose encoding is not shipped here
    /// (`p50k_base`, `r50k_base`, `p50k_edit`, `gpt2`: deprecated completion models).
    pub unsupported: Option<&'static str>,
}

/// Tokens from the start of a text, as [`Encoding::extend_first`] accumulates them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstTokens {
    /// The token ids, at most the `n` asked for.
    pub tokens: Vec<u32>,
    /// Bytes of the text that `tokens` decode to (a token may end inside a character).
    pub bytes: usize,
    /// Bytes of the text consumed in whole pre-tokenizer pieces; encoding resumes here.
    pub consumed: usize,
    /// Token count of the consumed pieces (>= `tokens.len()` once `n` is reached).
    pub consumed_tokens: usize,
}

impl Encoding {
    /// Every encoding, for tests and `--encoding` help.
    pub const ALL: [Encoding; 3] = [
        Encoding::O200kBase,
        Encoding::Cl100kBase,
        Encoding::O200kHarmony,
    ];

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

    /// `min(count(text), limit)`, at a cost that grows with `limit`, not with the text.
    pub fn count_up_to(self, text: &str, limit: usize) -> usize {
        let mut acc = FirstTokens::default();
        self.extend_first(&mut acc, text, limit, false);
        acc.tokens.len()
    }

    /// The first `n` token ids of `text`, equal to `encode(text)[..n]`, at a cost that
    /// grows with `n`, not with the length of `text`: pre-tokenizer pieces are encoded in
    /// order and the loop stops once `n` tokens exist. (Cutting the text and encoding the
    /// cut is not exact: a whitespace run splits differently when it ends the text.)
    pub fn encode_first(self, text: &str, n: usize) -> Vec<u32> {
        let mut acc = FirstTokens::default();
        self.extend_first(&mut acc, text, n, false);
        acc.tokens
    }

    /// Extends `acc` (built by earlier calls on shorter cuts of the same text, or empty)
    /// with the tokens of `text[acc.consumed..]` until it holds `n` tokens. Returns true
    /// when the answer is final: `n` tokens were found, or the text ended.
    ///
    /// With `cut = true`, `text` is only the start of a longer text whose rest is not
    /// known yet, and only tokens that every continuation shares are taken: those of all
    /// pre-tokenizer pieces but the last two. A piece can depend on what follows it
    /// (a greedy letter run, a contraction, a whitespace run that ends the text or is
    /// followed by a word), but the pre-tokenizer of both encodings only looks past a
    /// piece's end while the characters it reads could still belong to the next piece;
    /// so once a second piece ends before the cut, the piece before it is settled. The
    /// caller then provides a longer cut and calls again; nothing is re-encoded.
    /// `docs/tokenizer.md` gives the argument; the exhaustive and property tests in
    /// `tests/prefix_window.rs` check it.
    pub fn extend_first(self, acc: &mut FirstTokens, text: &str, n: usize, cut: bool) -> bool {
        if acc.tokens.len() >= n {
            return true;
        }
        let Some(rest) = text.get(acc.consumed..) else {
            // Not a cut of the text `acc` was built from; nothing sensible to add.
            return !cut;
        };
        let tok = self.bpe();
        // Pieces seen but not yet settled (at most two when `cut`).
        let mut pending: [&str; 2] = ["", ""];
        let mut held = 0usize;
        for piece in tok.split(rest) {
            if cut {
                if held < 2 {
                    pending[held] = piece;
                    held += 1;
                    continue;
                }
                let settled = pending[0];
                pending = [pending[1], piece];
                if self.take_piece(acc, settled, n) {
                    return true;
                }
            } else if self.take_piece(acc, piece, n) {
                return true;
            }
        }
        !cut
    }

    /// Encodes one settled piece into `acc`; true once `acc` holds `n` tokens.
    fn take_piece(self, acc: &mut FirstTokens, piece: &str, n: usize) -> bool {
        let tok = self.bpe();
        let ids = tok.bpe.encode_via_backtracking(piece.as_bytes());
        acc.consumed += piece.len();
        acc.consumed_tokens += ids.len();
        let room = n - acc.tokens.len();
        if ids.len() < room {
            acc.bytes += piece.len();
            acc.tokens.extend_from_slice(&ids);
            false
        } else {
            acc.bytes += ids[..room]
                .iter()
                .map(|&t| tok.bpe.token_len(t))
                .sum::<usize>();
            acc.tokens.extend_from_slice(&ids[..room]);
            true
        }
    }

    /// The tokens of one pre-tokenizer piece (as [`Encoding::pieces`] yields it):
    /// byte-pair encoding only, no further split. `encode(text)` is the concatenation
    /// of `encode_piece` over `pieces(text)`.
    pub fn encode_piece(self, piece: &str) -> Vec<u32> {
        self.bpe().bpe.encode_via_backtracking(piece.as_bytes())
    }

    /// The pre-tokenizer pieces of `text`, in order (tiktoken's regex split).
    pub fn pieces(self, text: &str) -> impl Iterator<Item = &str> {
        self.bpe().split(text)
    }

    /// Number of ids in the vocabulary (ordinary tokens only); valid ids are below it.
    pub fn vocab_size(self) -> usize {
        self.bpe().bpe.num_tokens()
    }

    /// The bytes of one token, or `None` for an id outside the vocabulary.
    pub fn token_bytes(self, token: u32) -> Option<&'static [u8]> {
        let bpe = &self.bpe().bpe;
        ((token as usize) < bpe.num_tokens()).then(|| bpe.token_bytes(token))
    }

    /// The bytes of the given tokens (may be invalid UTF-8 when cut inside a character).
    /// Ids outside the vocabulary contribute nothing; see [`Encoding::token_bytes`].
    pub fn decode_bytes(self, tokens: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tokens.len() * 4);
        for &t in tokens {
            if let Some(b) = self.token_bytes(t) {
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// Each token decoded on its own, lossily where a token holds part of a character
    /// (shown as U+FFFD): what a person reads in `diff` output.
    pub fn decode_each_lossy(self, tokens: &[u32]) -> Vec<String> {
        tokens
            .iter()
            .map(|&t| String::from_utf8_lossy(self.token_bytes(t).unwrap_or_default()).into_owned())
            .collect()
    }
}

/// tiktoken's `encoding_for_model`: exact names first, then prefixes; unknown models
/// fall back to `o200k_base` with `known = false`.
///
/// One deliberate difference: a fine-tune `ft:<base>:<org>::<id>` is first resolved by
/// its base model, and tiktoken's `ft:` prefixes are used only when the base is unknown.
/// tiktoken maps `ft:gpt-4.1-mini-…` to `cl100k_base` through its `ft:gpt-4` prefix, but
/// the API tokenizes gpt-4.1 fine-tunes with `o200k_base` like their base model.
pub fn encoding_for_model(model: &str) -> ModelEncoding {
    if let Some(rest) = model.strip_prefix("ft:") {
        let base = rest.split(':').next().unwrap_or(rest);
        if let Some(found) = lookup(base, false) {
            return found;
        }
    }
    lookup(model, true).unwrap_or(ModelEncoding {
        encoding: Encoding::O200kBase,
        known: false,
        unsupported: None,
    })
}

fn lookup(model: &str, with_ft_prefixes: bool) -> Option<ModelEncoding> {
    let name = MODEL_TO_ENCODING
        .iter()
        .find(|(m, _)| *m == model)
        .or_else(|| {
            MODEL_PREFIX_TO_ENCODING
                .iter()
                .filter(|(p, _)| with_ft_prefixes || !p.starts_with("ft:"))
                .find(|(p, _)| model.starts_with(p))
        })
        .map(|(_, name)| *name)?;
    Some(match Encoding::from_name(name) {
        Some(encoding) => ModelEncoding {
            encoding,
            known: true,
            unsupported: None,
        },
        None => ModelEncoding {
            encoding: Encoding::O200kBase,
            known: false,
            unsupported: Some(name),
        },
    })
}

/// tiktoken 0.14 `MODEL_PREFIX_TO_ENCODING`, in its order (first match wins).
const MODEL_PREFIX_TO_ENCODING: &[(&str, &str)] = &[
    ("o1-", "o200k_base"),
    ("o3-", "o200k_base"),
    ("o4-mini-", "o200k_base"),
    // chat
    ("gpt-5", "o200k_base"),
    ("gpt-4.5-", "o200k_base"),
    ("gpt-4.1-", "o200k_base"),
    ("chatgpt-4o-", "o200k_base"),
    ("gpt-4o-", "o200k_base"),
    ("gpt-4-", "cl100k_base"),
    ("gpt-3.5-turbo-", "cl100k_base"),
    ("gpt-35-turbo-", "cl100k_base"),
    ("gpt-oss-", "o200k_harmony"),
    // fine-tuned
    ("ft:gpt-4o", "o200k_base"),
    ("ft:gpt-4", "cl100k_base"),
    ("ft:gpt-3.5-turbo", "cl100k_base"),
    ("ft:davinci-002", "cl100k_base"),
    ("ft:babbage-002", "cl100k_base"),
];

/// tiktoken 0.14 `MODEL_TO_ENCODING`, deprecated models included so they are reported
/// as known-but-unsupported rather than unknown.
const MODEL_TO_ENCODING: &[(&str, &str)] = &[
    // reasoning
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4-mini", "o200k_base"),
    // chat
    ("gpt-5", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35-turbo", "cl100k_base"),
    // base
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
    // embeddings
    ("text-embedding-ada-002", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"),
    ("text-embedding-3-large", "cl100k_base"),
    // text (deprecated)
    ("text-davinci-003", "p50k_base"),
    ("text-davinci-002", "p50k_base"),
    ("text-davinci-001", "r50k_base"),
    ("text-curie-001", "r50k_base"),
    ("text-babbage-001", "r50k_base"),
    ("text-ada-001", "r50k_base"),
    ("davinci", "r50k_base"),
    ("curie", "r50k_base"),
    ("babbage", "r50k_base"),
    ("ada", "r50k_base"),
    // code (deprecated)
    ("code-davinci-002", "p50k_base"),
    ("code-davinci-001", "p50k_base"),
    ("code-cushman-002", "p50k_base"),
    ("code-cushman-001", "p50k_base"),
    ("davinci-codex", "p50k_base"),
    ("cushman-codex", "p50k_base"),
    // edit (deprecated)
    ("text-davinci-edit-001", "p50k_edit"),
    ("code-davinci-edit-001", "p50k_edit"),
    // old embeddings (deprecated)
    ("text-similarity-davinci-001", "r50k_base"),
    ("text-similarity-curie-001", "r50k_base"),
    ("text-similarity-babbage-001", "r50k_base"),
    ("text-similarity-ada-001", "r50k_base"),
    ("text-search-davinci-doc-001", "r50k_base"),
    ("text-search-curie-doc-001", "r50k_base"),
    ("text-search-babbage-doc-001", "r50k_base"),
    ("text-search-ada-doc-001", "r50k_base"),
    ("code-search-babbage-code-001", "r50k_base"),
    ("code-search-ada-code-001", "r50k_base"),
    // open source
    ("gpt2", "gpt2"),
    ("gpt-2", "gpt2"),
];

#[cfg(test)]
mod tests {
    use super::Encoding::{Cl100kBase, O200kBase, O200kHarmony};
    use super::*;

    #[test]
    fn known_ids() {
        // tiktoken: enc.encode_ordinary("hello world")
        assert_eq!(O200kBase.encode("hello world"), vec![24912, 2375]);
        assert_eq!(Cl100kBase.encode("hello world"), vec![15339, 1917]);
    }

    #[test]
    fn first_n_equals_prefix_of_full_encoding() {
        let text = "Summarize:   \n\n   the   following   text    please";
        for enc in Encoding::ALL {
            let full = enc.encode(text);
            for n in 0..=full.len() + 2 {
                assert_eq!(enc.encode_first(text, n), full[..n.min(full.len())]);
                assert_eq!(enc.count_up_to(text, n), n.min(full.len()));
            }
        }
    }

    #[test]
    fn first_tokens_report_the_bytes_they_cover() {
        let text = "naïve café ☕ and 日本語のテキスト";
        let enc = O200kBase;
        let full = enc.encode(text);
        for n in 0..=full.len() {
            let mut acc = FirstTokens::default();
            assert!(enc.extend_first(&mut acc, text, n, false));
            assert_eq!(acc.bytes, enc.decode_bytes(&full[..n]).len());
        }
    }

    #[test]
    fn cut_text_holds_back_the_last_two_pieces() {
        // The trap: "a   " alone ends in one whitespace piece, but "a   b" splits the
        // run as "  " + " b". A cut must not settle the run.
        let enc = O200kBase;
        let full = "a    b c";
        let mut acc = FirstTokens::default();
        assert!(!enc.extend_first(&mut acc, &full[..4], 10, true));
        assert_eq!(acc.tokens, Vec::<u32>::new());
        assert!(!enc.extend_first(&mut acc, &full[..7], 10, true));
        assert_eq!(acc.tokens, enc.encode("a   "));
        assert!(enc.extend_first(&mut acc, full, 10, false));
        assert_eq!(acc.tokens, enc.encode(full));
    }

    #[test]
    fn invalid_ids_do_not_panic() {
        assert_eq!(O200kBase.token_bytes(u32::MAX), None);
        assert_eq!(
            O200kBase.decode_bytes(&[24912, u32::MAX, 2375]),
            b"hello world"
        );
        assert_eq!(
            O200kBase.decode_each_lossy(&[u32::MAX]),
            vec![String::new()]
        );
        assert!(O200kBase.vocab_size() > 199_000);
        assert!(Cl100kBase.vocab_size() > 100_000);
    }

    #[test]
    fn model_table() {
        let enc = |m: &str| encoding_for_model(m).encoding;
        assert_eq!(enc("gpt-4o-2024-08-06"), O200kBase);
        assert_eq!(enc("gpt-4o"), O200kBase);
        assert_eq!(enc("gpt-4"), Cl100kBase);
        assert_eq!(enc("gpt-4-0613"), Cl100kBase);
        assert_eq!(enc("gpt-5.1-codex"), O200kBase);
        assert_eq!(enc("gpt-4.1-nano"), O200kBase);
        assert_eq!(enc("o3-mini"), O200kBase);
        assert_eq!(enc("chatgpt-4o-latest"), O200kBase);
        assert_eq!(enc("text-embedding-3-small"), Cl100kBase);
        assert_eq!(enc("gpt-oss-120b"), O200kHarmony);
        assert_eq!(enc("ft:gpt-3.5-turbo:acme::abc"), Cl100kBase);
        assert_eq!(enc("ft:gpt-4o-mini-2024-07-18:acme::abc"), O200kBase);
        // deliberate deviation from tiktoken (its "ft:gpt-4" prefix says cl100k)
        assert_eq!(enc("ft:gpt-4.1-mini-2025-04-14:acme::abc"), O200kBase);
        // an unknown base still gets tiktoken's ft: prefixes
        assert_eq!(enc("ft:gpt-4-custom:acme::abc"), Cl100kBase);
        let unknown = encoding_for_model("my-local-model");
        assert_eq!(
            unknown,
            ModelEncoding {
                encoding: O200kBase,
                known: false,
                unsupported: None
            }
        );
        let old = encoding_for_model("text-davinci-003");
        assert_eq!(
            old,
            ModelEncoding {
                encoding: O200kBase,
                known: false,
                unsupported: Some("p50k_base")
            }
        );
    }

    #[test]
    fn every_table_encoding_is_a_tiktoken_name() {
        let tiktoken = [
            "o200k_base",
            "cl100k_base",
            "o200k_harmony",
            "p50k_base",
            "r50k_base",
            "p50k_edit",
            "gpt2",
        ];
        for (_, name) in MODEL_TO_ENCODING.iter().chain(MODEL_PREFIX_TO_ENCODING) {
            assert!(tiktoken.contains(name), "{name}");
        }
    }
}
