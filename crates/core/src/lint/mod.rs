//! Prompt-shape rules: what in a prompt, a template or a stream of requests keeps the
//! response cache and the provider's prompt cache from hitting. Used live by the proxy
//! (on the prefix window only, in microseconds) and offline by `prefixcache lint` and
//! `analyze`.
//!
//! | rule | finds | where |
//! |---|---|---|
//! | `dynamic-prefix` | UUIDs, long hex/base64/numeric ids, ISO-8601 timestamps and dates, epoch seconds/millis, `RequestID:`-style tags inside the first `prefix_granularity` tokens | [`dynamic_prefix`], [`dynamic_in_text`] |
//! | `template-placeholder` | `{name}`, `{{name}}`, `${name}`, `%(name)s`, `<<name>>` inside the first `prefix_granularity` tokens of a template | [`template_findings`] |
//! | `whitespace-unnormalized` | trailing spaces, runs of blank lines, mixed indentation, CRLF, invisible spaces, leading whitespace in a template | [`template_findings`] |
//! | `short-prefix` | a template whose static part (before the first placeholder) is under 1024 tokens: the provider cannot cache it | [`template_findings`] |
//! | `whitespace-drift` | two requests of one strategy whose prefix windows are equal after whitespace normalization but not before | [`WhitespaceDrift`] |
//! | `unstable-tools` | tool definitions (or schemas) equal as JSON but serialized with a different key order across requests | [`unstable_tools`] |
//!
//! Findings carry byte spans into the text examined and token spans into its tokens, a
//! short bounded excerpt of the offending text, and one line of advice. The response
//! header the proxy sends ([`header_value`]) carries rule names, kinds and token spans
//! only, never prompt text: headers are logged by every proxy, CDN and SDK debug log on
//! the way, and a prompt excerpt may hold personal data. `prefixcache lint`/`diff` show
//! the text to the person who owns it.
//!
//! ```
//! use prefixcache_core::lint::{dynamic_in_text, header_value, Rule};
//! use prefixcache_core::tokenizer::Encoding;
//!
//! let bad = "[RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b] Translate to French: hello";
//! let findings = dynamic_in_text(bad, Encoding::O200kBase, 50);
//! assert_eq!(findings[0].rule, Rule::DynamicPrefix);
//! assert_eq!(findings[0].kind, "request-id");
//! assert!(header_value(&findings).starts_with("dynamic-prefix; request-id at tokens 1.."));
//!
//! // The article's fix: dynamic content at the end, after the prefix window.
//! let good = "Translate to French: hello\n[RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b]";
//! let window = Encoding::O200kBase.count("Translate to French: hello\n");
//! assert!(dynamic_in_text(good, Encoding::O200kBase, window).is_empty());
//! ```

mod drift;
mod dynamic;
mod template;
mod tools;

use std::fmt::Write as _;
use std::ops::Range;

pub use drift::{DEFAULT_DRIFT_SLOTS, DriftScope, WhitespaceDrift};
pub use dynamic::{dynamic_in_text, dynamic_prefix};
pub use template::{PROVIDER_MIN_CACHEABLE_TOKENS, Placeholder, placeholders, template_findings};
pub use tools::unstable_tools;

use crate::tokenizer::Encoding;

/// A lint rule. `as_str()` is the metric label (`lint_findings_total{rule}`) and the
/// name used in headers and `prefixcache lint` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    DynamicPrefix,
    TemplatePlaceholder,
    WhitespaceDrift,
    WhitespaceUnnormalized,
    ShortPrefix,
    UnstableTools,
    /// A family's prompts agree past the last whole content block they share: the
    /// stable text ends inside a block, where no breakpoint can sit.
    BreakpointSplit,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::DynamicPrefix,
        Rule::TemplatePlaceholder,
        Rule::WhitespaceDrift,
        Rule::WhitespaceUnnormalized,
        Rule::ShortPrefix,
        Rule::UnstableTools,
        Rule::BreakpointSplit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DynamicPrefix => "dynamic-prefix",
            Rule::TemplatePlaceholder => "template-placeholder",
            Rule::WhitespaceDrift => "whitespace-drift",
            Rule::WhitespaceUnnormalized => "whitespace-unnormalized",
            Rule::ShortPrefix => "short-prefix",
            Rule::UnstableTools => "unstable-tools",
            Rule::BreakpointSplit => "breakpoint-split",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// One line on what the rule protects, for `--help` and docs.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::DynamicPrefix => {
                "content that cannot repeat (ids, timestamps) inside the prefix window"
            }
            Rule::TemplatePlaceholder => {
                "a template placeholder inside the first prefix_granularity tokens"
            }
            Rule::WhitespaceDrift => {
                "requests whose prefixes differ only in whitespace (services format differently)"
            }
            Rule::WhitespaceUnnormalized => {
                "whitespace in a template that differs from the normalized form"
            }
            Rule::ShortPrefix => {
                "a static prefix shorter than the 1024 tokens the provider needs to cache"
            }
            Rule::UnstableTools => {
                "tool definitions or schemas serialized with a different key order across requests"
            }
            Rule::BreakpointSplit => {
                "a prompt's stable text ends inside a content block, where no cache breakpoint can sit"
            }
        }
    }
}

/// How much a finding matters. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; costs little (a date that changes once a day).
    Info,
    /// Costs hits on some or all requests of this shape.
    Warning,
    /// Makes every request unique by construction (a per-request id at the start).
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// What was found, a short ASCII word (`uuid`, `timestamp`, `placeholder`,
    /// `trailing-spaces`, ...): the detail in headers and log lines.
    pub kind: &'static str,
    /// A sentence for people: what, where, and why it costs hits.
    pub message: String,
    /// Byte range in the text examined (the prefix window, the template). May end past
    /// the window when the offending text continues beyond it; empty when the finding is
    /// not about one place (e.g. `unstable-tools` reports the place in its own message).
    pub span: Range<usize>,
    /// Token indices of `span` in that text's tokens (`start..end`, end exclusive);
    /// `0..0` when the examined text came without tokens.
    pub token_span: Range<usize>,
    /// The offending text only, at most [`MAX_EXCERPT_CHARS`] characters, control
    /// characters escaped.
    pub excerpt: String,
    /// One line of advice.
    pub fix: &'static str,
}

/// Bound on [`Finding::excerpt`], in characters.
pub const MAX_EXCERPT_CHARS: usize = 48;
/// Bound on [`header_value`], in bytes.
pub const MAX_HEADER_BYTES: usize = 256;
/// Details shown per rule in [`header_value`].
const HEADER_DETAILS_PER_RULE: usize = 3;

/// The `x-prefixcache-warning` value for some findings: rules in order of first
/// appearance, separated by `, `, each with up to three `KIND at tokens A..B` details
/// separated by `; `, e.g. `dynamic-prefix; uuid at tokens 3..15; timestamp at tokens
/// 20..27, whitespace-drift; whitespace at tokens 12..13`. ASCII only, at most
/// [`MAX_HEADER_BYTES`] bytes, no prompt text. Empty for no findings. The caller
/// chooses which findings to show (the proxy: `Warning` and above).
pub fn header_value(findings: &[Finding]) -> String {
    let mut rules: Vec<Rule> = Vec::new();
    for f in findings {
        if !rules.contains(&f.rule) {
            rules.push(f.rule);
        }
    }
    let mut out = String::new();
    for rule in rules {
        let mut part = String::from(rule.as_str());
        let of_rule: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
        for f in of_rule.iter().take(HEADER_DETAILS_PER_RULE) {
            if f.token_span.is_empty() {
                let _ = write!(part, "; {}", f.kind);
            } else {
                let _ = write!(
                    part,
                    "; {} at tokens {}..{}",
                    f.kind, f.token_span.start, f.token_span.end
                );
            }
        }
        if of_rule.len() > HEADER_DETAILS_PER_RULE {
            let _ = write!(part, "; +{} more", of_rule.len() - HEADER_DETAILS_PER_RULE);
        }
        let sep = if out.is_empty() { 0 } else { 2 };
        if out.len() + sep + part.len() > MAX_HEADER_BYTES {
            if out.is_empty() {
                // Kinds and numbers are ASCII: cutting at any byte keeps it valid.
                part.truncate(MAX_HEADER_BYTES);
                out = part;
            }
            break;
        }
        if sep > 0 {
            out.push_str(", ");
        }
        out.push_str(&part);
    }
    // Kinds are ASCII words of ours; keep the guarantee even if one is not.
    out.retain(|c| c.is_ascii() && !c.is_ascii_control());
    out
}

/// A bounded, printable excerpt of `text[span]` (span clamped to the text and to
/// character boundaries).
pub fn excerpt(text: &str, span: Range<usize>) -> String {
    let start = floor_boundary(text, span.start.min(text.len()));
    let end = floor_boundary(text, span.end.min(text.len())).max(start);
    let s = &text[start..end];
    let truncated = s.chars().count() > MAX_EXCERPT_CHARS;
    let take = if truncated {
        MAX_EXCERPT_CHARS - 1
    } else {
        MAX_EXCERPT_CHARS
    };
    let mut out = String::new();
    for c in s.chars().take(take) {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if truncated {
        out.push('…');
    }
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Byte offsets where each token of a text ends: `ends[i]` is the length of the first
/// `i + 1` tokens' bytes. Maps byte spans found in the text back to token indices.
#[derive(Debug, Clone, Default)]
pub struct TokenOffsets {
    ends: Vec<usize>,
}

impl TokenOffsets {
    pub fn new(encoding: Encoding, tokens: &[u32]) -> TokenOffsets {
        let mut ends = Vec::with_capacity(tokens.len());
        let mut at = 0usize;
        for &t in tokens {
            at += encoding.token_bytes(t).map_or(0, <[u8]>::len);
            ends.push(at);
        }
        TokenOffsets { ends }
    }

    /// Bytes covered by the tokens.
    pub fn bytes(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The tokens that hold any byte of `bytes` (clamped to the tokens there are). An
    /// empty byte range maps to the empty range at the token holding its position.
    pub fn token_span(&self, bytes: Range<usize>) -> Range<usize> {
        let start = self.ends.partition_point(|&e| e <= bytes.start);
        if bytes.is_empty() {
            return start.min(self.ends.len())..start.min(self.ends.len());
        }
        let end = (self.ends.partition_point(|&e| e < bytes.end) + 1).min(self.ends.len());
        start.min(end)..end
    }
}

/// The token span of a byte range of a text whose first tokens are `tokens`.
pub fn token_span(encoding: Encoding, tokens: &[u32], bytes: Range<usize>) -> Range<usize> {
    TokenOffsets::new(encoding, tokens).token_span(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: Rule, kind: &'static str, tokens: Range<usize>) -> Finding {
        Finding {
            rule,
            severity: Severity::Warning,
            kind,
            message: String::new(),
            span: 0..1,
            token_span: tokens,
            excerpt: "secret prompt text".into(),
            fix: "",
        }
    }

    #[test]
    fn rule_names_round_trip_and_are_metric_labels() {
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.as_str()), Some(r));
            assert!(
                r.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-')
            );
            assert!(!r.describe().is_empty());
        }
        assert_eq!(Rule::from_name("nope"), None);
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
        assert_eq!(
            Severity::parse(Severity::Error.as_str()),
            Some(Severity::Error)
        );
    }

    #[test]
    fn header_lists_rules_kinds_and_token_spans_only() {
        assert_eq!(header_value(&[]), "");
        let v = header_value(&[
            finding(Rule::DynamicPrefix, "uuid", 3..15),
            finding(Rule::WhitespaceDrift, "whitespace", 12..13),
            finding(Rule::DynamicPrefix, "timestamp", 20..27),
        ]);
        assert_eq!(
            v,
            "dynamic-prefix; uuid at tokens 3..15; timestamp at tokens 20..27, \
             whitespace-drift; whitespace at tokens 12..13"
        );
        assert!(!v.contains("secret"));
        let v = header_value(&[finding(Rule::UnstableTools, "key-order", 0..0)]);
        assert_eq!(v, "unstable-tools; key-order");
    }

    #[test]
    fn header_is_bounded() {
        let many: Vec<Finding> = (0..100)
            .map(|i| finding(Rule::DynamicPrefix, "hex-id", i..i + 10))
            .collect();
        let v = header_value(&many);
        assert!(v.ends_with("; +97 more"), "{v}");
        let all: Vec<Finding> = Rule::ALL
            .into_iter()
            .flat_map(|r| (0..5).map(move |i| finding(r, "base64-id", 100_000 + i..200_000 + i)))
            .collect();
        let v = header_value(&all);
        assert!(v.len() <= MAX_HEADER_BYTES, "{} {v}", v.len());
        assert!(v.is_ascii());
        assert!(v.starts_with("dynamic-prefix; "));
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        assert_eq!(excerpt("a\tb\nc", 0..5), "a\\tb\\nc");
        let long = "x".repeat(100);
        let e = excerpt(&long, 0..100);
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(&"y".repeat(48), 0..48), "y".repeat(48));
        // out-of-range and mid-character spans are clamped
        assert_eq!(excerpt("héllo", 2..100), "éllo");
        assert_eq!(excerpt("abc", 5..9), "");
        assert_eq!(excerpt("a\u{7}b", 0..3), "a\\u{7}b");
    }

    #[test]
    fn token_spans_cover_the_bytes() {
        let enc = Encoding::O200kBase;
        let text = "hello world, this is a test";
        let tokens = enc.encode(text);
        let offs = TokenOffsets::new(enc, &tokens);
        assert_eq!(offs.bytes(), text.len());
        // "world" is token 1 (" world")
        let at = text.find("world").unwrap();
        assert_eq!(offs.token_span(at..at + 5), 1..2);
        assert_eq!(offs.token_span(0..text.len()), 0..tokens.len());
        assert_eq!(offs.token_span(0..1), 0..1);
        assert_eq!(offs.token_span(3..3), 0..0);
        // past the tokens: clamped
        assert_eq!(offs.token_span(at..10_000), 1..tokens.len());
        assert_eq!(token_span(enc, &tokens[..2], at..10_000), 1..2);
    }
}
