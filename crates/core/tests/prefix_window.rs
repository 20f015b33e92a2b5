//! The claim prefix families stand on: tokens taken from a cut of a text, holding back
//! its last two pre-tokenizer pieces, are the first tokens of every continuation.
//! Checked exhaustively on short strings over alphabets that exercise each branch of
//! both encodings' split patterns, and by property tests on longer, whitespace-heavy and
//! adversarial text.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use prefixcache_core::tokenizer::{Encoding, FirstTokens};
use proptest::prelude::*;

/// Characters that reach every alternative of the split patterns: spaces and line
/// breaks (the `\s+(?!\S)` and `\s*[\r\n]+` trap), lower/upper/title case, a combining
/// mark, an ideograph, digits, apostrophes and contraction letters, `/` (o200k's
/// punctuation tail), other punctuation and a non-ASCII space.
const ALPHABET_A: &[char] = &[' ', '\n', 'a', 'A', '\'', 's', '1', '.', '\r', '\t'];
const ALPHABET_B: &[char] = &[
    ' ', 'r', 'E', '\'', '/', '\u{301}', '日', '\u{a0}', 'ǅ', '\n',
];

fn pieces(enc: Encoding, text: &str) -> Vec<&str> {
    enc.pieces(text).collect()
}

/// Every cut of `text` at a char boundary: all pieces but the last two of the cut are
/// the first pieces of the whole text.
fn check_all_cuts(enc: Encoding, text: &str) {
    let whole = pieces(enc, text);
    for (c, _) in text.char_indices().skip(1) {
        let cut = pieces(enc, &text[..c]);
        let settled = cut.len().saturating_sub(2);
        assert_eq!(
            cut[..settled],
            whole[..settled],
            "{enc:?}: cut {c} of {text:?}: {cut:?} vs {whole:?}"
        );
    }
}

fn for_all_strings(alphabet: &[char], max_len: usize, mut f: impl FnMut(&str)) {
    let mut idx = vec![0usize; max_len];
    for len in 1..=max_len {
        idx[..len].fill(0);
        loop {
            let s: String = idx[..len].iter().map(|&i| alphabet[i]).collect();
            f(&s);
            // odometer increment
            let mut pos = 0;
            loop {
                if pos == len {
                    break;
                }
                idx[pos] += 1;
                if idx[pos] < alphabet.len() {
                    break;
                }
                idx[pos] = 0;
                pos += 1;
            }
            if pos == len {
                break;
            }
        }
    }
}

#[test]
fn settled_pieces_of_every_cut_are_exact_exhaustive_a() {
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        for_all_strings(ALPHABET_A, 6, |s| check_all_cuts(enc, s));
    }
}

#[test]
fn settled_pieces_of_every_cut_are_exact_exhaustive_b() {
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        for_all_strings(ALPHABET_B, 6, |s| check_all_cuts(enc, s));
    }
}

/// Why two pieces are held back, not one: a cut can change the split of the piece
/// before its last one.
#[test]
fn holding_back_one_piece_is_not_enough() {
    // "\n \n" is one piece; its cut "\n " is "\n" + " ", and "\n" is not a piece of
    // the whole text.
    let enc = Encoding::O200kBase;
    assert_eq!(pieces(enc, "\n \n"), vec!["\n \n"]);
    assert_eq!(pieces(enc, "\n "), vec!["\n", " "]);
    // An uppercase run before a combining mark and lowercase letters.
    assert_eq!(pieces(enc, "\u{301}Er"), vec!["\u{301}Er"]);
    assert_eq!(pieces(enc, "\u{301}E"), vec!["\u{301}", "E"]);
}

/// Text made of fragments that stress the split patterns: whitespace runs of every
/// kind (the trap), contractions, case changes, digits, marks, CJK, emoji.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            " ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n ", "\u{a0}", "\u{3000}",
            "a", "the", " word", "Word", "WORD", "don't", "'s", "'RE", "'ll",
            "1", "12345", ".", ",", "/", "//", "?!", "\"", "{", "}", ":",
            "é", "e\u{301}", "日本語", "ǅ", "🧑\u{200d}🚀", "👍🏽", "مرحبا", "नमस्ते",
        ])
        .prop_map(str::to_string),
        1 => (0usize..400).prop_map(|n| " ".repeat(n)),
        1 => (0usize..50).prop_map(|n| "\n ".repeat(n)),
        1 => "\\PC{0,12}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..80).prop_map(|v| v.concat())
}

fn char_cut(t: &str, at: usize) -> usize {
    let mut c = at.min(t.len());
    while !t.is_char_boundary(c) {
        c -= 1;
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Tokens settled on a cut are the first tokens of the whole text, and resuming
    /// on the whole text gives exactly `encode(text)[..n]`.
    #[test]
    fn cut_then_resume_equals_full_encoding(
        t in text(),
        cuts in prop::collection::vec(0usize..4000, 1..4),
        n in 0usize..300,
        o200k in any::<bool>(),
    ) {
        let enc = if o200k { Encoding::O200kBase } else { Encoding::Cl100kBase };
        let full = enc.encode(&t);
        let want = &full[..n.min(full.len())];
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| char_cut(&t, c)).collect();
        cuts.sort_unstable();
        let mut acc = FirstTokens::default();
        for c in cuts {
            let done = enc.extend_first(&mut acc, &t[..c], n, c < t.len());
            prop_assert_eq!(&acc.tokens[..], &full[..acc.tokens.len()]);
            if done {
                prop_assert_eq!(&acc.tokens[..], want);
            }
        }
        prop_assert!(enc.extend_first(&mut acc, &t, n, false));
        prop_assert_eq!(&acc.tokens[..], want);
        prop_assert_eq!(acc.bytes, enc.decode_bytes(want).len());
    }

    /// `encode_first` and `count_up_to` agree with the full encoding.
    #[test]
    fn encode_first_is_a_prefix_of_encode(t in text(), n in 0usize..300) {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let full = enc.encode(&t);
            prop_assert_eq!(enc.encode_first(&t, n), &full[..n.min(full.len())]);
            prop_assert_eq!(enc.count_up_to(&t, n), n.min(full.len()));
            prop_assert_eq!(enc.count(&t), full.len());
            let pieces: Vec<u32> = enc.pieces(&t).flat_map(|p| enc.encode_piece(p)).collect();
            prop_assert_eq!(pieces, full);
        }
    }
}

#[test]
fn pathological_inputs_do_not_panic() {
    for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
        for t in [
            " ".repeat(1 << 20),
            "\n".repeat(1 << 20),
            "a".repeat(1 << 20),
            "日".repeat(300_000),
            "x".repeat(1 << 19) + &" ".repeat(1 << 19) + "y",
        ] {
            let n = enc.count(&t);
            assert!(n > 0);
            assert_eq!(enc.encode_first(&t, 50), enc.encode(&t)[..50.min(n)]);
        }
    }
}
