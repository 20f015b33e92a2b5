//! Where two prompts' tokens first diverge, and the tokens around that point: the logic
//! behind `prefixcache diff`.
//!
//! The provider's prompt cache matches whole tokens, so what matters is not where two
//! texts first differ but where their *tokens* do: a change inside a word, or one more
//! newline after `Summarize:`, replaces the token that holds it, which can start bytes
//! earlier. [`first_divergence`] reports both points and the tokens around the token
//! boundary, decoded, so a person sees why.
//!
//! The cost is the tokens of the shared start plus a few pieces past the difference:
//! the shared start is encoded once with the cut rule of
//! [`Encoding::extend_first`](crate::tokenizer::Encoding::extend_first), and the two
//! tails piece by piece only until they disagree.

use crate::tokenizer::{Encoding, FirstTokens};

/// Tokens shown on each side of the boundary.
pub const CONTEXT_TOKENS: usize = 3;

/// A place in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    /// Byte offset from the start.
    pub byte: usize,
    /// 1-based line (lines end at `\n`).
    pub line: usize,
    /// 1-based column, in characters (Unicode scalar values) from the line start. A byte
    /// offset inside a character counts that character as not yet reached.
    pub column: usize,
}

impl Position {
    /// The line and column of `byte` in `text`.
    pub fn of(text: &str, byte: usize) -> Position {
        let byte = byte.min(text.len());
        let head = &text.as_bytes()[..byte];
        let line_start = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + head.iter().filter(|&&b| b == b'\n').count();
        // Count characters by their first bytes: correct even if `byte` is mid-character.
        let column = 1 + head[line_start..]
            .iter()
            .filter(|&&b| (b as i8) >= -0x40)
            .count();
        // A partial character at the end was counted by its first byte; it is not
        // reached yet, so step back.
        let column = if text.is_char_boundary(byte) {
            column
        } else {
            column - 1
        };
        Position { byte, line, column }
    }
}

/// One text's view of the divergence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Side {
    /// Where the first differing token starts (same offset in both texts).
    pub boundary: Position,
    /// Where the text first differs from the other one.
    pub change: Position,
    /// Up to [`CONTEXT_TOKENS`] tokens just before the boundary (shared by both sides).
    pub before: Vec<u32>,
    /// Up to [`CONTEXT_TOKENS`] tokens from the boundary on (this side's).
    pub after: Vec<u32>,
    /// `before` and `after` decoded one token each, lossily where a token holds part
    /// of a character.
    pub before_text: Vec<String>,
    pub after_text: Vec<String>,
}

/// Where two texts' tokens first diverge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Divergence {
    pub encoding: &'static str,
    /// The texts are equal (then `token_index` is the token count and the offsets are
    /// the length: the place a divergence would start if either text went on).
    pub identical: bool,
    /// Index of the first token that differs: the number of tokens both share.
    pub token_index: usize,
    /// Byte offset at which that token starts, the same in both texts.
    pub byte_offset: usize,
    /// Byte offset of the first differing byte (`>= byte_offset`).
    pub text_byte_offset: usize,
    pub a: Side,
    pub b: Side,
}

impl Divergence {
    /// Tokens the provider's prompt cache could reuse between the two prompts: the
    /// shared tokens, counted only from 1024 on and in steps of 128.
    pub fn provider_cacheable_tokens(&self) -> usize {
        cacheable(self.token_index)
    }
}

/// What OpenAI's prompt cache can serve of a shared prefix of `shared` tokens: nothing
/// under 1024, then whole 128-token steps.
pub fn cacheable(shared: usize) -> usize {
    if shared < 1024 {
        0
    } else {
        1024 + (shared - 1024) / 128 * 128
    }
}

/// Where the tokens of `a` and `b` first diverge (see the module docs).
pub fn first_divergence(enc: Encoding, a: &str, b: &str) -> Divergence {
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    if common == a.len() && common == b.len() {
        let tokens = enc.encode(a);
        let before = tail(&tokens, CONTEXT_TOKENS).to_vec();
        let side = |t: &str| Side {
            boundary: Position::of(t, t.len()),
            change: Position::of(t, t.len()),
            before_text: enc.decode_each_lossy(&before),
            before: before.clone(),
            after: Vec::new(),
            after_text: Vec::new(),
        };
        return Divergence {
            encoding: enc.as_str(),
            identical: true,
            token_index: tokens.len(),
            byte_offset: a.len(),
            text_byte_offset: a.len(),
            a: side(a),
            b: side(b),
        };
    }

    // The shared start, cut at a character boundary of both texts; its settled tokens
    // are the first tokens of both.
    let cut = (0..=common)
        .rev()
        .find(|&i| a.is_char_boundary(i) && b.is_char_boundary(i))
        .unwrap_or(0);
    let mut shared = FirstTokens::default();
    enc.extend_first(&mut shared, &a[..cut], usize::MAX, true);

    let (ta, tb) = (&a[shared.consumed..], &b[shared.consumed..]);
    let mut pa = Tail::new(enc, ta);
    let mut pb = Tail::new(enc, tb);
    let mut want = 16;
    let m = loop {
        pa.fill(want);
        pb.fill(want);
        let n = pa.tokens.len().min(pb.tokens.len());
        if let Some(i) = (0..n).find(|&i| pa.tokens[i] != pb.tokens[i]) {
            break i;
        }
        if n < want {
            // One side ended and agrees with the other so far: it ends where they part.
            break n;
        }
        want *= 2;
    };
    pa.fill(m + CONTEXT_TOKENS);
    pb.fill(m + CONTEXT_TOKENS);

    let token_index = shared.tokens.len() + m;
    let byte_offset = shared.consumed
        + pa.tokens[..m]
            .iter()
            .map(|&t| enc.token_bytes(t).map_or(0, <[u8]>::len))
            .sum::<usize>();
    let mut before: Vec<u32> = tail(&shared.tokens, CONTEXT_TOKENS).to_vec();
    before.extend_from_slice(&pa.tokens[..m]);
    let before = tail(&before, CONTEXT_TOKENS).to_vec();

    let side = |text: &str, t: &Tail<'_>| {
        let after: Vec<u32> = t.tokens[m..(m + CONTEXT_TOKENS).min(t.tokens.len())].to_vec();
        Side {
            boundary: Position::of(text, byte_offset),
            change: Position::of(text, common),
            before_text: enc.decode_each_lossy(&before),
            before: before.clone(),
            after_text: enc.decode_each_lossy(&after),
            after,
        }
    };
    Divergence {
        encoding: enc.as_str(),
        identical: false,
        token_index,
        byte_offset,
        text_byte_offset: common,
        a: side(a, &pa),
        b: side(b, &pb),
    }
}

fn tail<T>(v: &[T], n: usize) -> &[T] {
    &v[v.len().saturating_sub(n)..]
}

/// A text's tokens, encoded piece by piece on demand.
struct Tail<'a> {
    enc: Encoding,
    pieces: Box<dyn Iterator<Item = &'a str> + 'a>,
    tokens: Vec<u32>,
}

impl<'a> Tail<'a> {
    fn new(enc: Encoding, text: &'a str) -> Tail<'a> {
        Tail {
            enc,
            pieces: Box::new(enc.pieces(text)),
            tokens: Vec::new(),
        }
    }

    fn fill(&mut self, want: usize) {
        while self.tokens.len() < want {
            match self.pieces.next() {
                Some(p) => self.tokens.extend(self.enc.encode_piece(p)),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENC: Encoding = Encoding::O200kBase;

    /// The divergence found by encoding both texts in full.
    fn naive(a: &str, b: &str) -> (usize, usize) {
        let (ta, tb) = (ENC.encode(a), ENC.encode(b));
        let i = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
        (i, ENC.decode_bytes(&ta[..i]).len())
    }

    fn check(a: &str, b: &str) -> Divergence {
        let d = first_divergence(ENC, a, b);
        assert_eq!(
            (d.token_index, d.byte_offset),
            naive(a, b),
            "{a:?} vs {b:?}"
        );
        let (ta, tb) = (ENC.encode(a), ENC.encode(b));
        let i = d.token_index;
        assert_eq!(d.a.after, ta[i..(i + CONTEXT_TOKENS).min(ta.len())]);
        assert_eq!(d.b.after, tb[i..(i + CONTEXT_TOKENS).min(tb.len())]);
        assert_eq!(d.a.before, ta[i.saturating_sub(CONTEXT_TOKENS)..i]);
        assert!(d.byte_offset <= d.text_byte_offset);
        d
    }

    fn pos(byte: usize, line: usize, column: usize) -> Position {
        Position { byte, line, column }
    }

    #[test]
    fn request_id_at_the_start() {
        let d = check(
            "Request 8f14e45f: Summarize the attached contract.",
            "Request 1679091c: Summarize the attached contract.",
        );
        assert!(!d.identical);
        // Digits are pieces of their own, so the space before the id is a token by
        // itself and the tokens part exactly where the texts do.
        assert_eq!(d.text_byte_offset, 8);
        assert_eq!(d.byte_offset, 8);
        assert_eq!(d.token_index, 2);
        assert_eq!(d.a.boundary, pos(8, 1, 9));
        assert_eq!(d.a.before_text, vec!["Request", " "]);
        assert_eq!(d.a.after_text[0], "8");
        assert_eq!(d.b.after_text[0], "167");
    }

    #[test]
    fn extra_newline_after_summarize() {
        let d = check(
            "Summarize:\n\nThe quarterly report shows growth.",
            "Summarize:\n\n\nThe quarterly report shows growth.",
        );
        // The texts differ at the third newline, but the colon and the newlines are
        // one token, which starts right after "Summarize".
        assert_eq!(d.text_byte_offset, 12);
        assert_eq!(d.byte_offset, 9);
        assert_eq!(d.a.before_text, vec!["Summ", "ar", "ize"]);
        assert_eq!(d.a.after_text[0], ":\n\n");
        assert_eq!(d.b.after_text[0], ":\n\n\n");
        assert_eq!(d.b.change, pos(12, 3, 1));
        assert_eq!(d.b.boundary, pos(9, 1, 10));
    }

    #[test]
    fn one_word_added_to_a_system_prompt() {
        let base = "You are a helpful assistant for Acme Corp. Answer in English.";
        let d = check(base, &base.replace("a helpful", "a very helpful"));
        assert_eq!(d.token_index, 3);
        assert_eq!(d.a.after_text[0], " helpful");
        assert_eq!(d.b.after_text[0], " very");
        assert_eq!(d.provider_cacheable_tokens(), 0);
    }

    #[test]
    fn identical_and_prefix_texts() {
        let d = check("same text", "same text");
        assert!(d.identical);
        assert_eq!(d.token_index, 2);
        assert_eq!(d.byte_offset, 9);
        let d = check("hello", "hello world");
        assert_eq!((d.token_index, d.byte_offset), (1, 5));
        assert!(d.a.after.is_empty());
        assert_eq!(d.b.after_text, vec![" world"]);
        let d = check("hello", "hellos");
        assert_eq!(d.token_index, 0);
        check("", "x");
        check("", "");
    }

    #[test]
    fn differences_inside_characters_and_whitespace_runs() {
        check("caf\u{e9} au lait", "caf\u{e8} au lait");
        check("🧑‍🚀 launch", "🧑‍🔬 launch");
        check("a      b", "a       b");
        check("line\r\nnext", "line\nnext");
        let long = "word ".repeat(5000);
        check(&format!("{long}end"), &format!("{long}End"));
        check(&format!("{long}   x"), &format!("{long}  x"));
    }

    #[test]
    fn positions() {
        let t = "ab\ncdé\nf";
        assert_eq!(Position::of(t, 0), pos(0, 1, 1));
        assert_eq!(Position::of(t, 3), pos(3, 2, 1));
        assert_eq!(Position::of(t, 5), pos(5, 2, 3));
        // inside "é": the character is not reached yet
        assert_eq!(Position::of(t, 6), pos(6, 2, 3));
        assert_eq!(Position::of(t, 7), pos(7, 2, 4));
        assert_eq!(Position::of(t, 100), pos(9, 3, 2));
    }

    #[test]
    fn cacheable_steps() {
        assert_eq!(cacheable(1023), 0);
        assert_eq!(cacheable(1024), 1024);
        assert_eq!(cacheable(1151), 1024);
        assert_eq!(cacheable(1152), 1152);
    }
}
