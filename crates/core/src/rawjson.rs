//! JSON text as the caller wrote it: validation, value spans and string decoding over the
//! raw bytes, without building a tree. The canonical key form ([`crate::canonical`]) and
//! the byte-level splices of forwarded bodies ([`crate::wire`]) both read bodies here.
//!
//! It accepts exactly what `serde_json::from_slice::<Value>` accepts (same grammar, same
//! UTF-8 and surrogate rules, same nesting limit, numbers that overflow `f64` rejected),
//! so a body the proxy parsed is always readable here; a fuzz target and a proptest
//! hold the two to that.

use std::ops::Range;

/// A body that is not JSON, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {what}")]
pub struct SyntaxError {
    pub at: usize,
    pub what: &'static str,
}

fn err<T>(at: usize, what: &'static str) -> Result<T, SyntaxError> {
    Err(SyntaxError { at, what })
}

/// Deepest nesting of arrays and objects accepted: serde_json's recursion limit (128
/// levels fail, 127 parse).
pub const MAX_DEPTH: usize = 127;

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// A string token: `content` is the text between the quotes as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrTok {
    pub content: Range<usize>,
    /// Whether the text contains a backslash escape (else it is the string itself).
    pub escaped: bool,
    /// Every escape is the one serde_json writes for its character (`\"`, `\\`, `\n`,
    /// `\u001f`, ...), so the text as written is already the canonical spelling.
    pub canonical_escapes: bool,
}

/// Reads the string that opens at `b[i] == b'"'`; returns it and the index after it.
pub fn scan_string(b: &[u8], i: usize) -> Result<(StrTok, usize), SyntaxError> {
    debug_assert_eq!(b.get(i), Some(&b'"'));
    let start = i + 1;
    let mut pos = start;
    // The text between escapes is checked whole from `plain`.
    let mut plain = start;
    let mut escaped = false;
    let mut canonical_escapes = true;
    loop {
        let Some(off) = memchr::memchr2(b'"', b'\\', &b[pos..]) else {
            return err(b.len(), "unterminated string");
        };
        let stop = pos + off;
        check_plain(b, plain, stop)?;
        if b[stop] == b'"' {
            return Ok((
                StrTok {
                    content: start..stop,
                    escaped,
                    canonical_escapes,
                },
                stop + 1,
            ));
        }
        escaped = true;
        let next = scan_escape(b, stop)?;
        canonical_escapes &= is_canonical_escape(&b[stop..next]);
        pos = next;
        plain = next;
    }
}

/// Whether an escape is the one serde_json writes: the short forms but `\/`, and
/// `\u00XX` in lower-case hex only for the other control characters.
fn is_canonical_escape(e: &[u8]) -> bool {
    match e {
        [b'\\', b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't'] => true,
        [b'\\', b'u', b'0', b'0', hi @ (b'0' | b'1'), lo] => {
            let lo_val = match lo {
                b'0'..=b'9' => lo - b'0',
                b'a'..=b'f' => lo - b'a' + 10,
                _ => return false,
            };
            let c = (hi - b'0') << 4 | lo_val;
            !matches!(c, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
        }
        _ => false,
    }
}

/// Text between escapes: no control characters, valid UTF-8 (an escape is ASCII, so a
/// character never straddles one).
fn check_plain(b: &[u8], from: usize, to: usize) -> Result<(), SyntaxError> {
    let seg = &b[from..to];
    let (control, ascii) = classify(seg);
    if control {
        let at = from + seg.iter().position(|&c| c < 0x20).unwrap_or(0);
        return err(at, "control character in string");
    }
    if ascii {
        return Ok(());
    }
    match std::str::from_utf8(seg) {
        Ok(_) => Ok(()),
        Err(e) => err(from + e.valid_up_to(), "invalid UTF-8 in string"),
    }
}

/// Whether any byte is below 0x20, and whether all are ASCII, in one pass of eight
/// bytes at a time (this runs over nearly every byte of every request body).
fn classify(bytes: &[u8]) -> (bool, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut high = 0u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        high |= v;
        // Flags every byte below 0x20 (and, through borrows, maybe others: checked).
        if v.wrapping_sub(ONES * 0x20) & !v & HIGH != 0 && chunk.iter().any(|&c| c < 0x20) {
            return (true, false);
        }
    }
    let rest = chunks.remainder();
    let control = rest.iter().any(|&c| c < 0x20);
    let ascii = high & HIGH == 0 && rest.is_ascii();
    (control, ascii)
}

/// Validates the escape at `b[i] == b'\\'`; returns the index after it.
fn scan_escape(b: &[u8], i: usize) -> Result<usize, SyntaxError> {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let (_, next) = read_unicode_escape(b, i)?;
            Ok(next)
        }
        Some(_) => err(i + 1, "invalid escape"),
        None => err(b.len(), "unterminated string"),
    }
}

fn hex4(b: &[u8], at: usize) -> Result<u32, SyntaxError> {
    let Some(digits) = b.get(at..at + 4) else {
        return err(b.len(), "unterminated unicode escape");
    };
    let mut n = 0u32;
    for (k, &d) in digits.iter().enumerate() {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return err(at + k, "invalid unicode escape"),
        };
        n = n << 4 | u32::from(v);
    }
    Ok(n)
}

/// `\uXXXX` at `b[i]` (a high surrogate must be followed by `\u` and a low one, as
/// serde_json requires); returns the character and the index after the escape(s).
fn read_unicode_escape(b: &[u8], i: usize) -> Result<(char, usize), SyntaxError> {
    let n = hex4(b, i + 2)?;
    let after = i + 6;
    if (0xDC00..=0xDFFF).contains(&n) {
        return err(after, "lone trailing surrogate in unicode escape");
    }
    if !(0xD800..=0xDBFF).contains(&n) {
        return match char::from_u32(n) {
            Some(c) => Ok((c, after)),
            None => err(i, "invalid unicode escape"),
        };
    }
    if b.get(after..after + 2) != Some(b"\\u") {
        return err(after, "lone leading surrogate in unicode escape");
    }
    let low = hex4(b, after + 2)?;
    if !(0xDC00..=0xDFFF).contains(&low) {
        return err(after + 6, "lone leading surrogate in unicode escape");
    }
    let c = 0x1_0000 + ((n - 0xD800) << 10 | (low - 0xDC00));
    match char::from_u32(c) {
        Some(c) => Ok((c, after + 6)),
        None => err(i, "invalid unicode escape"),
    }
}

/// Appends the decoded text of a string token (validated by [`scan_string`]).
pub fn decode_string(b: &[u8], tok: &StrTok, out: &mut String) {
    let s = &b[tok.content.clone()];
    if !tok.escaped {
        out.push_str(&String::from_utf8_lossy(s));
        return;
    }
    let mut pos = 0;
    while pos < s.len() {
        let Some(off) = memchr::memchr(b'\\', &s[pos..]) else {
            out.push_str(&String::from_utf8_lossy(&s[pos..]));
            return;
        };
        out.push_str(&String::from_utf8_lossy(&s[pos..pos + off]));
        let e = pos + off;
        let (c, next) = match s.get(e + 1) {
            Some(b'"') => ('"', e + 2),
            Some(b'\\') => ('\\', e + 2),
            Some(b'/') => ('/', e + 2),
            Some(b'b') => ('\u{8}', e + 2),
            Some(b'f') => ('\u{c}', e + 2),
            Some(b'n') => ('\n', e + 2),
            Some(b'r') => ('\r', e + 2),
            Some(b't') => ('\t', e + 2),
            // `\u`: validated by scan_string, so this cannot fail; be total anyway.
            _ => read_unicode_escape(s, e).unwrap_or(('\u{fffd}', s.len())),
        };
        out.push(c);
        pos = next;
    }
}

/// A number token as written: `-? int (. frac)? ([eE] [+-]? exp)?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumTok {
    pub span: Range<usize>,
    pub negative: bool,
    pub int: Range<usize>,
    pub frac: Option<Range<usize>>,
    /// Exponent sign (true for `-`) and digits.
    pub exp: Option<(bool, Range<usize>)>,
}

impl NumTok {
    /// Written without fraction or exponent: an integer to every JSON parser that
    /// distinguishes (Python's `json`, serde_json).
    pub fn is_integer(&self) -> bool {
        self.frac.is_none() && self.exp.is_none()
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Reads the number at `b[i]`; returns it and the index after it. Numbers whose value
/// overflows `f64` are rejected, as serde_json rejects them.
pub fn scan_number(b: &[u8], i: usize) -> Result<(NumTok, usize), SyntaxError> {
    let mut pos = i;
    let negative = b.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let int_start = pos;
    match b.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos = digits(b, pos + 1),
        _ => return err(pos, "invalid number"),
    }
    let int = int_start..pos;
    let mut frac = None;
    if b.get(pos) == Some(&b'.') {
        let end = digits(b, pos + 1);
        if end == pos + 1 {
            return err(end, "invalid number: no digit after the decimal point");
        }
        frac = Some(pos + 1..end);
        pos = end;
    }
    let mut exp = None;
    if matches!(b.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        let neg = b.get(pos) == Some(&b'-');
        if matches!(b.get(pos), Some(b'-' | b'+')) {
            pos += 1;
        }
        let end = digits(b, pos);
        if end == pos {
            return err(end, "invalid number: no digit in the exponent");
        }
        exp = Some((neg, pos..end));
        pos = end;
    }
    let tok = NumTok {
        span: i..pos,
        negative,
        int,
        frac,
        exp,
    };
    // Integers up to 19 digits fit i64/u64 or f64 comfortably; others are read as f64
    // by serde_json, which rejects an infinite result.
    if (!tok.is_integer() || tok.int.len() > 19) && overflows_f64(&b[tok.span.clone()]) {
        return err(i, "number out of range");
    }
    Ok((tok, pos))
}

fn overflows_f64(text: &[u8]) -> bool {
    // ASCII by construction.
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_none_or(f64::is_infinite)
}

/// Reads (and validates) any value at `b[i]` (no leading whitespace); returns the index
/// after it. `depth` is the nesting of the enclosing containers.
pub fn skip_value(b: &[u8], i: usize, depth: usize) -> Result<usize, SyntaxError> {
    match b.get(i) {
        Some(b'"') => Ok(scan_string(b, i)?.1),
        Some(b'{') => {
            let (_, end) = members_at(b, i, depth, |_, _| Ok(()))?;
            Ok(end)
        }
        Some(b'[') => {
            if depth + 1 > MAX_DEPTH {
                return err(i, "nesting too deep");
            }
            let mut pos = skip_ws(b, i + 1);
            if b.get(pos) == Some(&b']') {
                return Ok(pos + 1);
            }
            loop {
                pos = skip_value(b, pos, depth + 1)?;
                pos = skip_ws(b, pos);
                match b.get(pos) {
                    Some(b',') => pos = skip_ws(b, pos + 1),
                    Some(b']') => return Ok(pos + 1),
                    _ => return err(pos, "expected ',' or ']' in array"),
                }
            }
        }
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(b'-' | b'0'..=b'9') => Ok(scan_number(b, i)?.1),
        Some(_) => err(i, "expected a value"),
        None => err(i, "unexpected end of input"),
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, SyntaxError> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        err(i, "expected a value")
    }
}

/// One member of an object as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: StrTok,
    /// The value's bytes, without surrounding whitespace.
    pub value: Range<usize>,
}

impl Member {
    /// Whether the (decoded) key is `name`.
    pub fn key_is(&self, b: &[u8], name: &str) -> bool {
        if !self.key.escaped {
            return &b[self.key.content.clone()] == name.as_bytes();
        }
        let mut s = String::new();
        decode_string(b, &self.key, &mut s);
        s == name
    }
}

/// Walks the object that opens at `b[i] == b'{'`, calling `each` for every member after
/// its value was validated; returns the members' count and the index after the object.
fn members_at(
    b: &[u8],
    i: usize,
    depth: usize,
    mut each: impl FnMut(&[u8], Member) -> Result<(), SyntaxError>,
) -> Result<(usize, usize), SyntaxError> {
    if depth + 1 > MAX_DEPTH {
        return err(i, "nesting too deep");
    }
    let mut pos = skip_ws(b, i + 1);
    if b.get(pos) == Some(&b'}') {
        return Ok((0, pos + 1));
    }
    let mut n = 0;
    loop {
        if b.get(pos) != Some(&b'"') {
            return err(pos, "expected a string key");
        }
        let (key, after_key) = scan_string(b, pos)?;
        pos = skip_ws(b, after_key);
        if b.get(pos) != Some(&b':') {
            return err(pos, "expected ':' after a key");
        }
        let value_start = skip_ws(b, pos + 1);
        let value_end = skip_value(b, value_start, depth + 1)?;
        each(
            b,
            Member {
                key,
                value: value_start..value_end,
            },
        )?;
        n += 1;
        pos = skip_ws(b, value_end);
        match b.get(pos) {
            Some(b',') => pos = skip_ws(b, pos + 1),
            Some(b'}') => return Ok((n, pos + 1)),
            _ => return err(pos, "expected ',' or '}' in object"),
        }
    }
}

/// The members of the object whose `{` is at `b[open]`, at nesting `depth` (0 for the
/// top level), in written order.
pub fn members(b: &[u8], open: usize, depth: usize) -> Result<Vec<Member>, SyntaxError> {
    let mut out = Vec::new();
    members_at(b, open, depth, |_, m| {
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}

/// Where the top-level value of a whole document starts, after checking that the
/// document is exactly one valid value with optional surrounding whitespace.
pub fn document(b: &[u8]) -> Result<usize, SyntaxError> {
    let start = skip_ws(b, 0);
    let end = skip_value(b, start, 0)?;
    let rest = skip_ws(b, end);
    if rest != b.len() {
        return err(rest, "trailing characters");
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accepts(s: &[u8]) -> bool {
        document(s).is_ok()
    }

    fn serde_accepts(s: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(s).is_ok()
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"{}",
            b" [1, 2 ,3] ",
            b"1e400",
            b"1e-400",
            b"-0",
            b"01",
            b"1.",
            b"1e",
            b"+1",
            b".5",
            b"1.7976931348623158e308",
            b"1.7976931348623159e308",
            b"0e99999999999999999999999",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\ud83d\\ude00\"",
            b"\"\x7f\"",
            b"\"\x01\"",
            b"\"\xff\"",
            b"\"\xc3\xa9\"",
            b"\"\\x\"",
            b"1\xc2\xa0",
            b"\xef\xbb\xbf{}",
            b"{\"a\":1,\"a\":2}",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"[1,]",
            b"tru",
            b"nul",
            b"",
            b"   ",
            b"{} {}",
        ];
        for c in cases {
            assert_eq!(
                accepts(c),
                serde_accepts(c),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let big = "9".repeat(400);
        assert_eq!(accepts(big.as_bytes()), serde_accepts(big.as_bytes()));
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        for d in [126usize, 127, 128, 129] {
            let arrays = format!("{}{}", "[".repeat(d), "]".repeat(d));
            assert_eq!(accepts(arrays.as_bytes()), serde_accepts(arrays.as_bytes()));
            let objects = format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d));
            assert_eq!(
                accepts(objects.as_bytes()),
                serde_accepts(objects.as_bytes())
            );
        }
    }

    #[test]
    fn members_give_value_spans_as_written() {
        let b = br#" { "a" : [1, {"x":2}] , "b\u0020c":null,"d":"s" } "#;
        let open = document(b).unwrap();
        let m = members(b, open, 0).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(&b[m[0].value.clone()], br#"[1, {"x":2}]"#);
        assert!(m[1].key_is(b, "b c"));
        assert_eq!(&b[m[1].value.clone()], b"null");
        assert!(m[2].key_is(b, "d") && !m[2].key_is(b, "e"));
    }

    #[test]
    fn canonical_escapes_are_the_ones_serde_json_writes() {
        for c in 0u32..0x80 {
            let ch = char::from_u32(c).unwrap();
            let written = serde_json::to_string(&ch.to_string()).unwrap();
            let (tok, _) = scan_string(written.as_bytes(), 0).unwrap();
            assert!(tok.canonical_escapes, "{written}");
        }
        for other in [
            r#""\/""#,
            r#""\u0041""#,
            r#""\u001F""#,
            r#""\u000a""#,
            r#""\u00e9""#,
        ] {
            let (tok, _) = scan_string(other.as_bytes(), 0).unwrap();
            assert!(tok.escaped && !tok.canonical_escapes, "{other}");
        }
    }

    #[test]
    fn strings_decode_as_serde_json_does() {
        let b = br#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00z""#;
        let (tok, _) = scan_string(b, 0).unwrap();
        let mut s = String::new();
        decode_string(b, &tok, &mut s);
        assert_eq!(s, serde_json::from_slice::<String>(b).unwrap());
    }

    fn json_like() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b",".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\"k\"".to_vec()),
            Just(b"\"\\u00e9\\ud83d\\ude00\"".to_vec()),
            Just(b"\"\\ud800\"".to_vec()),
            Just(b"-0.5e-3".to_vec()),
            Just(b"18446744073709551617".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"true".to_vec()),
            Just(b"null".to_vec()),
            prop::collection::vec(any::<u8>(), 1..3),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn accepts_exactly_what_serde_json_accepts(b in json_like()) {
            prop_assert_eq!(accepts(&b), serde_accepts(&b), "{:?}", String::from_utf8_lossy(&b));
        }

        #[test]
        fn classify_agrees_with_the_byte_loop(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let (control, ascii) = classify(&bytes);
            prop_assert_eq!(control, bytes.iter().any(|&c| c < 0x20));
            if !control {
                prop_assert_eq!(ascii, bytes.is_ascii());
            }
        }

        #[test]
        fn accepts_what_serde_json_writes(v in crate::canonical::tests_support::arb_json()) {
            let text = serde_json::to_vec_pretty(&v).unwrap();
            prop_assert!(accepts(&text));
        }
    }
}
