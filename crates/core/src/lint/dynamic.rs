//! `dynamic-prefix`: content in the prefix window that cannot repeat between requests
//! (ids, timestamps, request-id tags), found by one pass over the window's bytes.
//!
//! The scanner looks only at word starts (an ASCII alphanumeric not preceded by one) and
//! tries a few anchored matchers there, most specific first; a failed word is skipped
//! whole. No regex engine and no allocation unless something is found: the proxy runs
//! this on every request (`docs/BENCHMARKS.md`, "Lint rules", has the figure).
//!
//! What is deliberately *not* flagged, because it repeats: short numbers ("version 3",
//! "2 apples", "in 2024"), times without seconds ("at 10:30"), words, hex shorter than
//! 16 digits, base64-looking runs without digits or without both cases (camelCase and
//! hyphenated identifiers), and anything after the window.

use std::ops::Range;

use super::{Finding, Rule, Severity, TokenOffsets, excerpt};
use crate::prefix::Family;
use crate::tokenizer::Encoding;

/// One match of the scanner, before token mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    kind: Kind,
    span: Range<usize>,
    /// The match ran into the end of a cut window; only its start was seen.
    cut: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RequestId,
    Uuid,
    Timestamp,
    Date,
    Time,
    Epoch,
    NumericId,
    HexId,
    Base64Id,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::RequestId => "request-id",
            Kind::Uuid => "uuid",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::Epoch => "epoch",
            Kind::NumericId => "numeric-id",
            Kind::HexId => "hex-id",
            Kind::Base64Id => "base64-id",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::RequestId => "a request-id tag with its value",
            Kind::Uuid => "a UUID",
            Kind::Timestamp => "an ISO-8601 timestamp",
            Kind::Date => "a date",
            Kind::Time => "a time of day with seconds",
            Kind::Epoch => "an epoch timestamp",
            Kind::NumericId => "a long numeric id",
            Kind::HexId => "a long hex id",
            Kind::Base64Id => "a base64-like id",
        }
    }

    fn severity(self) -> Severity {
        match self {
            // Named as per-request by the prompt itself.
            Kind::RequestId => Severity::Error,
            // Changes once a day: one cold start per day and prefix.
            Kind::Date => Severity::Info,
            _ => Severity::Warning,
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Kind::RequestId => {
                "move the request id to the end of the prompt (or into request metadata)"
            }
            Kind::Uuid | Kind::NumericId | Kind::HexId | Kind::Base64Id => {
                "move the id to the end of the prompt, after the static instructions"
            }
            Kind::Timestamp | Kind::Time | Kind::Epoch => {
                "move the timestamp to the end of the prompt, or round it (e.g. to the day)"
            }
            Kind::Date => "move the date after the static instructions",
        }
    }
}

/// `dynamic-prefix` findings in a family's prefix window (its first `prefix_granularity`
/// tokens), with token spans into `family.tokens`. A match that starts inside the window
/// and runs past its end is reported (its start already makes the window unique), with
/// the token span clamped to the window.
pub fn dynamic_prefix(family: &Family) -> Vec<Finding> {
    let text: &str = &family.text;
    let limit = family.prefix_bytes.min(text.len());
    // A family of the whole text saw all of it; otherwise the text stops at the window.
    let cut = !family.whole;
    let hits = scan(text, limit, cut);
    if hits.is_empty() {
        return Vec::new();
    }
    let offsets = TokenOffsets::new(family.encoding, &family.tokens);
    findings(text, hits, &offsets, family.tokens.len())
}

/// `dynamic-prefix` findings in the first `window_tokens` tokens of a plain text (a
/// prompt file, a logged prompt). The whole text is available, so a match that starts
/// in the window is measured to its real end.
pub fn dynamic_in_text(text: &str, encoding: Encoding, window_tokens: usize) -> Vec<Finding> {
    let tokens = encoding.encode_first(text, window_tokens);
    let offsets = TokenOffsets::new(encoding, &tokens);
    let hits = scan(text, offsets.bytes().min(text.len()), false);
    if hits.is_empty() {
        return Vec::new();
    }
    findings(text, hits, &offsets, tokens.len())
}

fn findings(text: &str, hits: Vec<Hit>, offsets: &TokenOffsets, window: usize) -> Vec<Finding> {
    hits.into_iter()
        .map(|h| {
            let token_span = offsets.token_span(h.span.clone());
            let cut_note = if h.cut {
                " (cut by the end of the window)"
            } else {
                ""
            };
            Finding {
                rule: Rule::DynamicPrefix,
                severity: h.kind.severity(),
                kind: h.kind.as_str(),
                message: format!(
                    "{}{cut_note} at tokens {}..{} is inside the first {window} tokens: the \
                     prefix family and the provider's cached prefix change with it",
                    h.kind.what(),
                    token_span.start,
                    token_span.end
                ),
                excerpt: excerpt(text, h.span.clone()),
                span: h.span,
                token_span,
                fix: h.kind.fix(),
            }
        })
        .collect()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Matches that start before `limit`. `cut`: the text ends where the window was cut, so
/// a long id running into its end is reported from a shorter start.
fn scan(text: &str, limit: usize, cut: bool) -> Vec<Hit> {
    let b = text.as_bytes();
    let mut hits: Vec<Hit> = Vec::new();
    let mut i = 0;
    while i < limit {
        if !b[i].is_ascii_alphanumeric() || (i > 0 && is_word(b[i - 1])) {
            i += 1;
            continue;
        }
        if let Some(hit) = match_at(b, i, cut) {
            i = hit.span.end.max(i + 1);
            // JWTs and dotted tokens: one finding for `a.b.c` of the same kind.
            if let Some(prev) = hits.last_mut()
                && prev.kind == hit.kind
                && prev.span.end + 1 == hit.span.start
                && b[prev.span.end] == b'.'
            {
                prev.span.end = hit.span.end;
                prev.cut = hit.cut;
                continue;
            }
            hits.push(hit);
            continue;
        }
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
    }
    hits
}

fn match_at(b: &[u8], i: usize, cut: bool) -> Option<Hit> {
    let hit = |kind, end: usize, was_cut| Hit {
        kind,
        span: i..end,
        cut: was_cut,
    };
    if b[i].is_ascii_alphabetic()
        && let Some(end) = request_id_tag(b, i)
    {
        return Some(hit(Kind::RequestId, end, false));
    }
    if let Some((end, was_cut)) = uuid(b, i, cut) {
        return Some(hit(Kind::Uuid, end, was_cut));
    }
    if b[i].is_ascii_digit() {
        if let Some((kind, end)) = datetime(b, i) {
            return Some(hit(kind, end, false));
        }
        if let Some((kind, end)) = number(b, i) {
            return Some(hit(kind, end, false));
        }
    }
    if let Some((end, was_cut)) = hex_id(b, i, cut) {
        return Some(hit(Kind::HexId, end, was_cut));
    }
    if let Some(end) = base64_id(b, i) {
        return Some(hit(Kind::Base64Id, end, false));
    }
    None
}

/// Whether the byte after a match ends the word (end of text counts).
fn ends_word(b: &[u8], j: usize) -> bool {
    j >= b.len() || !is_word(b[j])
}

fn hex_run(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit())
        .count()
}

fn digit_run(b: &[u8], from: usize) -> usize {
    b[from..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `RequestID: x`, `request_id=x`, `X-Request-Id: x`, `trace-id: x`, `"session_id": "x"`
/// and similar: a tag naming a per-request value, a `:`/`=`/`#`, and a value of at least
/// 4 characters with a digit (or at least 12 characters). A tag without a value
/// ("include the request id") or with a placeholder (`{request_id}`) is not a finding.
fn request_id_tag(b: &[u8], i: usize) -> Option<usize> {
    const NAMES: [&[u8]; 8] = [
        b"request",
        b"req",
        b"trace",
        b"correlation",
        b"span",
        b"session",
        b"transaction",
        b"txn",
    ];
    let lower = |j: usize| b.get(j).map(u8::to_ascii_lowercase);
    let mut j = i;
    // optional `x-` (X-Request-ID)
    if lower(j) == Some(b'x') && b.get(j + 1) == Some(&b'-') {
        j += 2;
    }
    let name = NAMES
        .iter()
        .find(|n| n.iter().enumerate().all(|(k, &c)| lower(j + k) == Some(c)))?;
    j += name.len();
    if matches!(b.get(j), Some(b' ' | b'_' | b'-')) {
        j += 1;
    }
    if !(lower(j) == Some(b'i') && lower(j + 1) == Some(b'd')) {
        return None;
    }
    j += 2;
    if matches!(b.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    if !ends_word(b, j) {
        return None;
    }
    while matches!(b.get(j), Some(b' ' | b'\t')) {
        j += 1;
    }
    if !matches!(b.get(j), Some(b':' | b'=' | b'#')) {
        return None;
    }
    j += 1;
    while matches!(b.get(j), Some(b' ' | b'\t')) {
        j += 1;
    }
    if matches!(b.get(j), Some(b'"' | b'\'' | b'[' | b'(' | b'<' | b'`')) {
        j += 1;
    }
    let start = j;
    while let Some(&c) = b.get(j) {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        {
            j += 1;
        } else {
            break;
        }
    }
    // A value does not end in sentence punctuation.
    while j > start && matches!(b[j - 1], b'.' | b':') {
        j -= 1;
    }
    let value = &b[start..j];
    let has_digit = value.iter().any(u8::is_ascii_digit);
    (value.len() >= 4 && (has_digit || value.len() >= 12)).then_some(j)
}

/// `8-4-4-4-12` hex digits. In a cut window, a UUID running into the end is reported once
/// its first 8 digits and a dash are seen.
fn uuid(b: &[u8], i: usize, cut: bool) -> Option<(usize, bool)> {
    let mut j = i;
    for (n, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        let run = hex_run(b, j);
        if run < len {
            let at_end = j + run == b.len();
            return (cut && at_end && n >= 1).then_some((b.len(), true));
        }
        j += len;
        if n < 4 {
            if j == b.len() {
                return (cut && n >= 1).then_some((j, true));
            }
            if b[j] != b'-' {
                return None;
            }
            j += 1;
        }
    }
    ends_word(b, j).then_some((j, false))
}

fn num(b: &[u8], from: usize, len: usize) -> Option<u32> {
    let s = b.get(from..from + len)?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')))
}

fn plausible_date(y: u32, m: u32, d: u32) -> bool {
    (1970..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// `HH:MM` (+ `:SS` + fraction) at `j`; returns the end and whether seconds were given.
fn clock(b: &[u8], j: usize) -> Option<(usize, bool)> {
    let h = num(b, j, 2)?;
    let m = num(b, j + 3, 2)?;
    if b.get(j + 2) != Some(&b':') || h > 23 || m > 59 {
        return None;
    }
    let mut k = j + 5;
    let mut seconds = false;
    if b.get(k) == Some(&b':')
        && let Some(s) = num(b, k + 1, 2)
        && s <= 60
    {
        k += 3;
        seconds = true;
        if matches!(b.get(k), Some(b'.' | b',')) {
            let f = digit_run(b, k + 1);
            if f > 0 {
                k += 1 + f;
            }
        }
    }
    Some((k, seconds))
}

/// A zone after a time: `Z`, `+02:00`, `-0500`, `+02`.
fn zone(b: &[u8], k: usize) -> usize {
    match b.get(k) {
        Some(b'Z' | b'z') => k + 1,
        Some(b'+' | b'-') if num(b, k + 1, 2).is_some() => {
            let mut e = k + 3;
            if b.get(e) == Some(&b':') && num(b, e + 1, 2).is_some() {
                e += 3;
            } else if num(b, e, 2).is_some() {
                e += 2;
            }
            e
        }
        _ => k,
    }
}

/// ISO-8601 dates and timestamps (`2024-05-01`, `2024-05-01T12:30:00.123Z`,
/// `2024-05-01 12:30`, `20240501T123000Z`), `05/01/2024`-style dates, and times of day
/// with seconds (`12:30:45`).
fn datetime(b: &[u8], i: usize) -> Option<(Kind, usize)> {
    // YYYY-MM-DD
    if let (Some(y), Some(m), Some(d)) = (num(b, i, 4), num(b, i + 5, 2), num(b, i + 8, 2))
        && b.get(i + 4) == Some(&b'-')
        && b.get(i + 7) == Some(&b'-')
        && plausible_date(y, m, d)
    {
        let date_end = i + 10;
        if matches!(b.get(date_end), Some(b'T' | b't' | b' '))
            && let Some((k, _)) = clock(b, date_end + 1)
        {
            let end = zone(b, k);
            if ends_word(b, end) {
                return Some((Kind::Timestamp, end));
            }
        }
        return ends_word(b, date_end).then_some((Kind::Date, date_end));
    }
    // YYYYMMDDTHHMMSS(Z)
    if let (Some(y), Some(m), Some(d)) = (num(b, i, 4), num(b, i + 4, 2), num(b, i + 6, 2))
        && plausible_date(y, m, d)
        && matches!(b.get(i + 8), Some(b'T'))
        && digit_run(b, i + 9) >= 4
    {
        let end = zone(b, i + 9 + digit_run(b, i + 9));
        if ends_word(b, end) {
            return Some((Kind::Timestamp, end));
        }
    }
    // DD/MM/YYYY, MM/DD/YYYY, DD.MM.YYYY
    let a = digit_run(b, i);
    if (1..=2).contains(&a)
        && let Some(&sep) = b.get(i + a)
        && (sep == b'/' || sep == b'.')
    {
        let c = digit_run(b, i + a + 1);
        if (1..=2).contains(&c)
            && b.get(i + a + 1 + c) == Some(&sep)
            && let Some(y) = num(b, i + a + 2 + c, 4)
            && (1970..=2100).contains(&y)
            && ends_word(b, i + a + 6 + c)
        {
            return Some((Kind::Date, i + a + 6 + c));
        }
    }
    // HH:MM:SS
    if let Some((k, true)) = clock(b, i) {
        let end = zone(b, k);
        if ends_word(b, end) {
            return Some((Kind::Time, end));
        }
    }
    None
}

/// Epoch seconds (10 digits) or milliseconds (13) between 2000 and 2100, optionally with
/// a fraction; any run of 16+ digits is an id (snowflakes, database keys).
fn number(b: &[u8], i: usize) -> Option<(Kind, usize)> {
    let n = digit_run(b, i);
    let mut end = i + n;
    if !ends_word(b, end) {
        return None;
    }
    const SECONDS: std::ops::Range<u64> = 946_684_800..4_102_444_800;
    let value = || {
        b[i..i + n].iter().fold(0u64, |a, &c| {
            a.saturating_mul(10).saturating_add(u64::from(c - b'0'))
        })
    };
    let kind = match n {
        10 if SECONDS.contains(&value()) => Kind::Epoch,
        13 if (SECONDS.start * 1000..SECONDS.end * 1000).contains(&value()) => Kind::Epoch,
        16.. => Kind::NumericId,
        _ => return None,
    };
    if kind == Kind::Epoch && b.get(end) == Some(&b'.') {
        let f = digit_run(b, end + 1);
        if f > 0 && ends_word(b, end + 1 + f) {
            end += 1 + f;
        }
    }
    Some((kind, end))
}

/// 16+ hex digits with at least one digit and one letter (optionally `0x`-prefixed). In a
/// cut window, 8+ such digits running into the end.
fn hex_id(b: &[u8], i: usize, cut: bool) -> Option<(usize, bool)> {
    let start = if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i + 2
    } else {
        i
    };
    let n = hex_run(b, start);
    let run = &b[start..start + n];
    let mixed = run.iter().any(u8::is_ascii_digit) && run.iter().any(u8::is_ascii_alphabetic);
    let end = start + n;
    if !mixed || !ends_word(b, end) {
        return None;
    }
    if n >= 16 {
        return Some((end, false));
    }
    (cut && end == b.len() && n >= 8).then_some((end, true))
}

/// A run of base64/base64url characters with 20+ letters and digits, all of upper case,
/// lower case and digits, and a character class that changes at least every other
/// character or so: random ids change class at ~60% of positions, camelCase words at
/// ~30%.
fn base64_id(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let (mut alnum, mut upper, mut lower, mut digit, mut changes) = (0usize, 0, 0, 0, 0);
    let mut last_class = 0u8;
    while let Some(&c) = b.get(j) {
        let class = if c.is_ascii_uppercase() {
            upper += 1;
            1
        } else if c.is_ascii_lowercase() {
            lower += 1;
            2
        } else if c.is_ascii_digit() {
            digit += 1;
            3
        } else if matches!(c, b'+' | b'/' | b'-' | b'_') {
            0
        } else {
            break;
        };
        if class != 0 {
            alnum += 1;
            if last_class != 0 && class != last_class {
                changes += 1;
            }
            last_class = class;
        }
        j += 1;
    }
    while b.get(j) == Some(&b'=') && j - i < 4096 {
        j += 1;
    }
    if alnum < 20 || upper == 0 || lower == 0 || digit == 0 || !ends_word(b, j) {
        return None;
    }
    // changes / (alnum - 1) >= 0.45, in integers
    (changes * 100 >= 45 * (alnum - 1)).then_some(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::FamilyParams;

    const ENC: Encoding = Encoding::O200kBase;

    fn kinds(text: &str) -> Vec<&'static str> {
        dynamic_in_text(text, ENC, 10_000)
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    fn only(text: &str) -> Finding {
        let f = dynamic_in_text(text, ENC, 10_000);
        assert_eq!(f.len(), 1, "{text:?}: {f:#?}");
        f.into_iter().next().unwrap()
    }

    #[test]
    fn finds_each_kind_of_dynamic_content() {
        let cases = [
            (
                "id 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b here",
                "uuid",
                "3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b",
            ),
            (
                "ID 3F2B8C1E-9D4A-4B7E-8F6A-1C2D3E4F5A6B.",
                "uuid",
                "3F2B8C1E-9D4A-4B7E-8F6A-1C2D3E4F5A6B",
            ),
            (
                "at 2024-05-01T12:30:00Z now",
                "timestamp",
                "2024-05-01T12:30:00Z",
            ),
            (
                "at 2024-05-01T12:30:00.123+02:00 now",
                "timestamp",
                "2024-05-01T12:30:00.123+02:00",
            ),
            ("at 2024-05-01 12:30 now", "timestamp", "2024-05-01 12:30"),
            ("stamp 20240501T123000Z ok", "timestamp", "20240501T123000Z"),
            ("Today is 2024-05-01.", "date", "2024-05-01"),
            ("Today is 05/01/2024.", "date", "05/01/2024"),
            ("Heute ist 1.5.2024.", "date", "1.5.2024"),
            ("It is 14:03:22 UTC", "time", "14:03:22"),
            ("now=1714567890 ok", "epoch", "1714567890"),
            ("now=1714567890.123 ok", "epoch", "1714567890.123"),
            ("ts 1714567890123 ok", "epoch", "1714567890123"),
            (
                "order 1790000000000000000 ok",
                "numeric-id",
                "1790000000000000000",
            ),
            (
                "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 ok",
                "hex-id",
                "9fceb02d0ae598e95dc970b74767f19372d61af8",
            ),
            ("key 0xdeadbeef12345678 ok", "hex-id", "0xdeadbeef12345678"),
            (
                "token aZ3kQ9pL2mX7vB4nR8tY1w ok",
                "base64-id",
                "aZ3kQ9pL2mX7vB4nR8tY1w",
            ),
            (
                "token aZ3kQ9pL2mX7vB4nR8tY1w== ok",
                "base64-id",
                "aZ3kQ9pL2mX7vB4nR8tY1w==",
            ),
            (
                "[RequestID: abc123] Translate",
                "request-id",
                "RequestID: abc123",
            ),
            (
                "request_id=9f8e7d6c5b4a ok",
                "request-id",
                "request_id=9f8e7d6c5b4a",
            ),
            (
                "X-Request-Id: req_8a7b6c5d4e",
                "request-id",
                "X-Request-Id: req_8a7b6c5d4e",
            ),
            (
                "trace-id: 4bf92f3577b34da6a3ce929d0e0e4736.",
                "request-id",
                "trace-id: 4bf92f3577b34da6a3ce929d0e0e4736",
            ),
            (
                r#"{"session_id": "s-12345678"}"#,
                "request-id",
                r#"session_id": "s-12345678"#,
            ),
        ];
        for (text, kind, matched) in cases {
            let f = only(text);
            assert_eq!(f.kind, kind, "{text:?}");
            assert_eq!(&text[f.span.clone()], matched, "{text:?}");
            assert_eq!(f.rule, Rule::DynamicPrefix);
            assert!(!f.fix.is_empty());
        }
    }

    #[test]
    fn ordinary_text_is_not_flagged() {
        for text in [
            "version 3 of the API, released in 2024, handles 2 apples and 10 pears.",
            "Call me at 10:30 or at 555-123-4567; the score was 3-2.",
            "Use getUserByIdFromDatabaseCache and the well-known-hyphenated-identifier-2024.",
            "Include the request id in your answer; the request_id field is optional.",
            "RequestID: {request_id} Translate: {text}",
            "Numbers: 12345678901 (11 digits), 123456789012345 (15 digits), 999999999 ok.",
            "Price 1234567890123 is out of the epoch range? No: 13 digits, but see 9999999999999.",
            "deadbeefdeadbeefdeadbeef has no digits; 1234567890abcde is 15 hex digits.",
            "SHOUTING_CASE_CONSTANT_NAME_HERE and snake_case_identifier_name_here_2",
            "https://example.com/v1/chat/completions?model=gpt-4o",
            "ISBN 978-3-16-148410-0, dates like 2024-13-45 or 1899-01-01 are not dates.",
            "Café ☕ naïve 日本語のテキスト — unicode is skipped safely.",
        ] {
            let k = kinds(text);
            // 1234567890123 ms = 2009: a real epoch; every other line must be clean.
            if text.starts_with("Price") {
                assert_eq!(k, vec!["epoch"], "{text:?}");
            } else {
                assert!(k.is_empty(), "{text:?}: {k:?}");
            }
        }
    }

    #[test]
    fn a_uuid_after_the_window_is_fine() {
        let static_part = "You are a translator. Translate the user's text to French, keeping \
             the tone and the formatting. Answer with the translation only.\n";
        let text =
            format!("{static_part}Text: hello\n[RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b]");
        let window = ENC.count(static_part);
        assert!(dynamic_in_text(&text, ENC, window).is_empty());
        // ... and inside a bigger window it is found, with its token span.
        let f = dynamic_in_text(&text, ENC, 10_000);
        assert_eq!(f.len(), 1);
        assert!(f[0].token_span.start > window, "{:?}", f[0].token_span);
        // The article's bad prompt: id first.
        let bad = "[RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b] Translate to French: hello";
        let f = dynamic_in_text(bad, ENC, 50);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].token_span.start, 1); // "[" is token 0
        assert!(f[0].excerpt.starts_with("RequestID: 3f2b8c1e"));
    }

    #[test]
    fn token_spans_match_the_tokens_of_the_text() {
        let text = "Session started 2024-05-01T12:30:00Z for user 42. Summarize:";
        let f = only(text);
        let tokens = ENC.encode(text);
        let covered = ENC.decode_bytes(&tokens[f.token_span.clone()]);
        let covered = String::from_utf8(covered).unwrap();
        assert!(covered.contains("2024-05-01T12:30:00Z"), "{covered:?}");
        // the span is tight: dropping a token at either end loses part of the match
        let r = f.token_span.clone();
        let inner = String::from_utf8(ENC.decode_bytes(&tokens[r.start + 1..r.end])).unwrap();
        assert!(!inner.contains("2024-05-01T12:30:00Z"));
    }

    #[test]
    fn family_windows_are_scanned_with_their_tokens() {
        let mut params = FamilyParams::new(ENC);
        params.granularity = 50;
        let id = "9fceb02d0ae598e95dc970b74767f19372d61af8";
        let text = format!(
            "Ticket {id}: the customer writes that the printer is on fire again and asks \
             for help with the following document, which is long"
        );
        let fam = Family::of_text(&text, &params);
        let f = dynamic_prefix(&fam);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, "hex-id");
        assert_eq!(&fam.text[f[0].span.clone()], id);
        let covered = ENC.decode_bytes(&fam.tokens[f[0].token_span.clone()]);
        assert!(String::from_utf8_lossy(&covered).contains(id));
        // The same id after the window: nothing.
        let preamble = "The customer writes that the printer is on fire again and asks for \
                        help with the following document, which is long and detailed and \
                        arrives every morning from the same office in the same format. ";
        assert!(ENC.count(&preamble.repeat(2)) > params.granularity);
        let later = format!("{preamble}{preamble}Ticket {id}");
        assert!(dynamic_prefix(&Family::of_text(&later, &params)).is_empty());
    }

    #[test]
    fn ids_cut_by_the_window_end_are_still_found() {
        // A window that ends inside the UUID: its first part already varies per request.
        let text = "Please handle the following ticket now: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b";
        let uuid_at = text.find("3f2b").unwrap();
        let mut tested = 0;
        for granularity in 4..40 {
            let mut params = FamilyParams::new(ENC);
            params.granularity = granularity;
            params.min_tokens = 4;
            let fam = Family::of_text(text, &params);
            let seen = fam.prefix_bytes.saturating_sub(uuid_at);
            if fam.whole || seen < 9 || fam.prefix_bytes >= text.len() {
                continue; // the window holds too little of the UUID, or all of it
            }
            tested += 1;
            let f = dynamic_prefix(&fam);
            assert_eq!(f.len(), 1, "{:?} {f:#?}", fam.text);
            assert!(f[0].kind == "uuid" || f[0].kind == "hex-id", "{f:#?}");
            assert!(f[0].message.contains("cut by the end of the window"));
            assert!(f[0].token_span.end <= fam.tokens.len());
        }
        assert!(tested >= 2, "no granularity cut the UUID: {tested}");
    }

    #[test]
    fn jwt_segments_are_one_finding() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let text = format!("auth {jwt} ok");
        let f = only(&text);
        assert_eq!(f.kind, "base64-id");
        assert_eq!(&text[f.span.clone()], jwt);
        assert!(f.excerpt.chars().count() <= super::super::MAX_EXCERPT_CHARS);
    }

    #[test]
    fn several_findings_in_order() {
        let text =
            "id=3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b at 2024-05-01T00:00:00Z epoch 1714567890";
        assert_eq!(kinds(text), vec!["uuid", "timestamp", "epoch"]);
    }
}
