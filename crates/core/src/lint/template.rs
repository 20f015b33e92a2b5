//! Template rules: placeholders inside the prefix window (`template-placeholder`), a
//! static part too short for the provider's cache (`short-prefix`), and whitespace that
//! differs from the normalized form in ways that drift between services
//! (`whitespace-unnormalized`). Run at startup on configured strategy templates and by
//! `prefixcache lint` on template and prompt files; not on the request path.

use std::ops::Range;

use super::{Finding, Rule, Severity, TokenOffsets, excerpt};
use crate::prefix::FamilyParams;

/// The provider caches prompts only from this many shared leading tokens (then in
/// 128-token steps): OpenAI's prompt-caching guide.
pub const PROVIDER_MIN_CACHEABLE_TOKENS: usize = 1024;

/// A placeholder in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Bytes of the whole placeholder (`{name}`, `%(name)s`, ...).
    pub span: Range<usize>,
    /// The name inside it.
    pub name: String,
    /// The syntax: `{name}`, `{{name}}`, `${name}`, `%(name)s` or `<<name>>`.
    pub syntax: &'static str,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// An identifier (or a positional index) at `j`, after optional spaces; returns its range.
fn ident(b: &[u8], mut j: usize, spaces: bool) -> Option<Range<usize>> {
    if spaces {
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
    }
    let start = j;
    let first = *b.get(j)?;
    if is_ident_start(first) {
        while b.get(j).is_some_and(|&c| is_ident(c)) {
            j += 1;
        }
    } else if first.is_ascii_digit() {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
    } else {
        return None;
    }
    Some(start..j)
}

fn skip_spaces(b: &[u8], mut j: usize) -> usize {
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    j
}

/// The placeholders of a template, in order: Python `str.format` (`{name}`, `{0}`,
/// `{name!r}`, `{name:>10}`), Jinja/Mustache/Handlebars (`{{ name }}`, `{{name|upper}}`),
/// shell/JS (`${name}`), printf-style (`%(name)s`) and `<<name>>`. `{{`/`}}` that
/// enclose no identifier (escaped braces, JSON examples like `{"a": 1}`) are not
/// placeholders.
pub fn placeholders(template: &str) -> Vec<Placeholder> {
    let b = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let name_of = |r: &Range<usize>| template[r.clone()].to_string();
    while i < b.len() {
        let found: Option<(usize, Range<usize>, &'static str)> = match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => ident(b, i + 2, true).and_then(|r| {
                // {{ name }} / {{ name | filter }} / {{ name.attr }}
                let mut j = skip_spaces(b, r.end);
                if b.get(j) == Some(&b'|') {
                    while b.get(j).is_some_and(|&c| c != b'}' && c != b'\n') {
                        j += 1;
                    }
                }
                (b.get(j) == Some(&b'}') && b.get(j + 1) == Some(&b'}')).then_some((
                    j + 2,
                    r,
                    "{{name}}",
                ))
            }),
            b'{' => ident(b, i + 1, false).and_then(|r| {
                let mut j = r.end;
                // conversion and format spec: {name!r:>10}
                if matches!(b.get(j), Some(b'!' | b':')) {
                    while b
                        .get(j)
                        .is_some_and(|&c| c != b'}' && c != b'{' && c != b'\n')
                    {
                        j += 1;
                    }
                }
                (b.get(j) == Some(&b'}')).then_some((j + 1, r, "{name}"))
            }),
            b'$' if b.get(i + 1) == Some(&b'{') => ident(b, i + 2, false)
                .and_then(|r| (b.get(r.end) == Some(&b'}')).then_some((r.end + 1, r, "${name}"))),
            b'%' if b.get(i + 1) == Some(&b'(') => ident(b, i + 2, false).and_then(|r| {
                let j = r.end;
                (b.get(j) == Some(&b')') && b.get(j + 1).is_some_and(u8::is_ascii_alphabetic))
                    .then_some((j + 2, r, "%(name)s"))
            }),
            b'<' if b.get(i + 1) == Some(&b'<') => ident(b, i + 2, true).and_then(|r| {
                let j = skip_spaces(b, r.end);
                (b.get(j) == Some(&b'>') && b.get(j + 1) == Some(&b'>')).then_some((
                    j + 2,
                    r,
                    "<<name>>",
                ))
            }),
            _ => None,
        };
        match found {
            Some((end, name, syntax)) => {
                out.push(Placeholder {
                    span: i..end,
                    name: name_of(&name),
                    syntax,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// Lint findings for a strategy template under the strategy's family parameters:
/// placeholders inside the first `granularity` tokens, a static part (before the first
/// placeholder) under [`PROVIDER_MIN_CACHEABLE_TOKENS`], and whitespace that differs from
/// the normalized form in ways that drift. Token positions are those of the template's
/// text with placeholders as written: a value may tokenize differently, but the static
/// text before it does not, up to the piece that touches the placeholder.
pub fn template_findings(template: &str, params: &FamilyParams) -> Vec<Finding> {
    let enc = params.encoding;
    let tokens = enc.encode(template);
    let offsets = TokenOffsets::new(enc, &tokens);
    let mut out = Vec::new();
    let holes = placeholders(template);

    for p in &holes {
        let token_span = offsets.token_span(p.span.clone());
        if token_span.start >= params.granularity {
            break;
        }
        out.push(Finding {
            rule: Rule::TemplatePlaceholder,
            severity: Severity::Warning,
            kind: "placeholder",
            message: format!(
                "placeholder {} starts at token {} of {}: it is inside the prefix family \
                 (prefix_granularity = {}), so every value starts a new family",
                &template[p.span.clone()],
                token_span.start,
                tokens.len(),
                params.granularity
            ),
            excerpt: excerpt(template, p.span.clone()),
            span: p.span.clone(),
            token_span,
            fix: "move the placeholder after the static instructions, or lower \
                  prefix_granularity below its token position",
        });
    }

    let static_end = holes.first().map_or(template.len(), |p| p.span.start);
    let static_tokens = offsets.token_span(0..static_end).end;
    if static_tokens < PROVIDER_MIN_CACHEABLE_TOKENS {
        let before = holes
            .first()
            .map_or(String::from("the whole template"), |p| {
                format!("the part before {}", &template[p.span.clone()])
            });
        out.push(Finding {
            rule: Rule::ShortPrefix,
            severity: Severity::Info,
            kind: "short-prefix",
            message: format!(
                "{before} is {static_tokens} tokens; the provider caches a prompt only when its \
                 first {PROVIDER_MIN_CACHEABLE_TOKENS} tokens repeat, so this template gets no \
                 provider cache discount"
            ),
            excerpt: excerpt(template, 0..static_end),
            span: 0..static_end,
            token_span: 0..static_tokens,
            fix: "put more of the static content (instructions, examples, tool schemas) \
                  first, to reach 1024 tokens, or accept no provider discount",
        });
    }

    for (kind, severity, span, count, what, fix) in whitespace_issues(template) {
        let token_span = offsets.token_span(span.clone());
        let times = if count > 1 {
            format!(" ({count} places; first shown)")
        } else {
            String::new()
        };
        let pos = crate::boundary::Position::of(template, span.start);
        out.push(Finding {
            rule: Rule::WhitespaceUnnormalized,
            severity,
            kind,
            message: format!("{what} at line {}, column {}{times}", pos.line, pos.column),
            excerpt: excerpt(template, span.clone()),
            span,
            token_span,
            fix,
        });
    }
    out.sort_by_key(|f| (f.span.start, f.rule));
    out
}

type WsIssue = (
    &'static str,
    Severity,
    Range<usize>,
    usize,
    &'static str,
    &'static str,
);

/// Whitespace that is worth a finding: each kind once, at its first place, with a count.
/// Single newlines, single spaces and consistent indentation are normal and not
/// reported (the normalized form would flag every line break: noise).
fn whitespace_issues(t: &str) -> Vec<WsIssue> {
    let mut out: Vec<WsIssue> = Vec::new();
    let mut add = |kind, sev, span: Range<usize>, what, fix| {
        if let Some(e) = out.iter_mut().find(|e| e.0 == kind) {
            e.3 += 1;
        } else {
            out.push((kind, sev, span, 1, what, fix));
        }
    };

    // Leading whitespace of the whole template (a triple-quoted string's first newline):
    // one service strips it, another does not.
    let lead = t.len() - t.trim_start().len();
    if lead > 0 {
        add(
            "leading-whitespace",
            Severity::Info,
            0..lead,
            "the template starts with whitespace",
            "start the template with its first word; services that strip() and those that \
             do not then send the same prefix",
        );
    }
    // Trailing whitespace beyond one final newline.
    let body = t.strip_suffix('\n').unwrap_or(t);
    let trail = body.len() - body.trim_end().len();
    if trail > 0 && !t.trim().is_empty() {
        add(
            "trailing-whitespace",
            Severity::Info,
            body.len() - trail..t.len(),
            "the template ends with whitespace",
            "end the template with its last word (and at most one newline)",
        );
    }

    let mut tab_indent = None;
    let mut space_indent = None;
    let mut line_start = 0usize;
    let mut blank_run = 0usize;
    let mut blank_run_start = 0usize;
    for (line_no, line) in t.split_inclusive('\n').enumerate() {
        let content = line.strip_suffix('\n').unwrap_or(line);
        let (content, crlf) = match content.strip_suffix('\r') {
            Some(c) => (c, true),
            None => (content, false),
        };
        if crlf {
            let at = line_start + content.len();
            add(
                "crlf",
                Severity::Warning,
                at..at + 2,
                "a CRLF line ending",
                "save the template with LF line endings: Windows and Unix checkouts otherwise \
                 send different prefixes",
            );
        }
        if content.trim().is_empty() {
            if blank_run == 0 {
                blank_run_start = line_start;
            }
            blank_run += 1;
        } else {
            if blank_run >= 2 && line_no > blank_run {
                add(
                    "blank-lines",
                    Severity::Info,
                    blank_run_start..line_start,
                    "a run of blank lines",
                    "use at most one blank line: services that collapse blank lines send a \
                     different prefix",
                );
            }
            blank_run = 0;
            let trimmed = content.trim_end();
            if trimmed.len() < content.len() {
                add(
                    "trailing-spaces",
                    Severity::Info,
                    line_start + trimmed.len()..line_start + content.len(),
                    "trailing whitespace on a line",
                    "remove trailing whitespace (editors and formatters strip it, so copies \
                     of the template drift)",
                );
            }
            let indent: &str = &content[..content.len() - content.trim_start().len()];
            if indent.contains('\t') && indent.contains(' ') {
                add(
                    "mixed-indentation",
                    Severity::Info,
                    line_start..line_start + indent.len(),
                    "tabs and spaces mixed in one indentation",
                    "indent with spaces only (or tabs only)",
                );
            } else if indent.starts_with('\t') {
                tab_indent.get_or_insert(line_start..line_start + indent.len());
            } else if indent.starts_with(' ') {
                space_indent.get_or_insert(line_start..line_start + indent.len());
            }
            // Runs of 2+ spaces inside a line (after the indentation).
            let inner_from = indent.len();
            let cb = content.as_bytes();
            let mut k = inner_from;
            while k + 1 < cb.len() {
                if cb[k] == b' ' && cb[k + 1] == b' ' {
                    let mut e = k;
                    while e < cb.len() && cb[e] == b' ' {
                        e += 1;
                    }
                    if e < cb.len() {
                        add(
                            "double-space",
                            Severity::Info,
                            line_start + k..line_start + e,
                            "two or more spaces inside a line",
                            "use single spaces between words",
                        );
                    }
                    k = e;
                } else {
                    k += 1;
                }
            }
        }
        line_start += line.len();
    }
    if let (Some(tabs), Some(_)) = (tab_indent, &space_indent) {
        add(
            "mixed-indentation",
            Severity::Info,
            tabs,
            "some lines are indented with tabs, others with spaces",
            "indent with spaces only (or tabs only)",
        );
    }

    for (i, c) in t.char_indices() {
        if matches!(
            c,
            '\u{00A0}' | '\u{2000}'
                ..='\u{200D}' | '\u{202F}' | '\u{205F}' | '\u{2060}' | '\u{3000}' | '\u{FEFF}'
        ) {
            add(
                "invisible-space",
                Severity::Warning,
                i..i + c.len_utf8(),
                "an invisible or non-breaking space character",
                "replace it with a plain space (or remove it): it looks the same but is \
                 different tokens",
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Encoding;

    fn params(granularity: usize) -> FamilyParams {
        let mut p = FamilyParams::new(Encoding::O200kBase);
        p.granularity = granularity;
        p
    }

    fn kinds(fs: &[Finding]) -> Vec<&'static str> {
        fs.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_every_placeholder_syntax() {
        let t = "A {name} B {{ other }} C ${shell} D %(printf)s E <<angle>> F {0} G {x!r:>10} H {{j|upper}}";
        let p = placeholders(t);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["name", "other", "shell", "printf", "angle", "0", "x", "j"]
        );
        let texts: Vec<&str> = p.iter().map(|p| &t[p.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "{name}",
                "{{ other }}",
                "${shell}",
                "%(printf)s",
                "<<angle>>",
                "{0}",
                "{x!r:>10}",
                "{{j|upper}}"
            ]
        );
        let syntaxes: Vec<&str> = p.iter().map(|p| p.syntax).collect();
        assert_eq!(
            syntaxes[..5],
            ["{name}", "{{name}}", "${name}", "%(name)s", "<<name>>"]
        );
    }

    #[test]
    fn braces_that_are_not_placeholders() {
        for t in [
            r#"Return JSON like {"score": 1} or {} when empty."#,
            "Use {{ for a literal brace; a set {1, 2}; 50% (roughly) done.",
            "Compare a << b and c >> d; ${ not an ident }; { spaced }",
        ] {
            assert!(placeholders(t).is_empty(), "{t:?}: {:?}", placeholders(t));
        }
    }

    #[test]
    fn the_articles_templates() {
        // document_analysis: placeholder in the first line, inside 100 tokens.
        let doc = "You are a document analyzer.\nAnalyze the following {doc_type} and extract:\n\
                   1. Key entities\n2. Main topics\n3. Sentiment score (-1 to 1)\nDocument: {content}";
        let f = template_findings(doc, &params(100));
        let ph: Vec<&Finding> = f
            .iter()
            .filter(|f| f.rule == Rule::TemplatePlaceholder)
            .collect();
        assert_eq!(ph.len(), 2);
        assert_eq!(ph[0].excerpt, "{doc_type}");
        assert!(ph[0].token_span.start < 15, "{:?}", ph[0].token_span);
        assert_eq!(ph[0].severity, Severity::Warning);
        let short: Vec<&Finding> = f.iter().filter(|f| f.rule == Rule::ShortPrefix).collect();
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].severity, Severity::Info);
        assert_eq!(short[0].span, 0..doc.find("{doc_type}").unwrap());
        assert!(short[0].message.contains("{doc_type}"));
        // With a window ending before the first placeholder: no placeholder finding.
        let first = ph[0].token_span.start;
        let f = template_findings(doc, &params(first));
        assert!(
            f.iter().all(|f| f.rule != Rule::TemplatePlaceholder),
            "{f:#?}"
        );
    }

    #[test]
    fn a_long_static_prefix_is_provider_cacheable() {
        let long = "Follow these rules carefully. ".repeat(250) + "Question: {question}";
        let f = template_findings(&long, &params(100));
        assert!(f.is_empty(), "{:?}", kinds(&f));
        let no_holes = "Follow these rules. ".repeat(50);
        let f = template_findings(no_holes.trim_end(), &params(100));
        assert_eq!(kinds(&f), ["short-prefix"]);
        assert!(f[0].message.contains("the whole template"));
    }

    #[test]
    fn whitespace_worth_reporting() {
        let t = "\nYou are helpful.  Be brief. \nRules:\n\n\n\t- one\n    - two\r\nText\u{00A0}here: {text}\n\n";
        let f = template_findings(t, &params(1));
        let ws: Vec<&Finding> = f
            .iter()
            .filter(|f| f.rule == Rule::WhitespaceUnnormalized)
            .collect();
        let mut k: Vec<&str> = ws.iter().map(|f| f.kind).collect();
        k.sort_unstable();
        assert_eq!(
            k,
            [
                "blank-lines",
                "crlf",
                "double-space",
                "invisible-space",
                "leading-whitespace",
                "mixed-indentation",
                "trailing-spaces",
                "trailing-whitespace"
            ]
        );
        let by = |kind: &str| ws.iter().find(|f| f.kind == kind).unwrap();
        assert_eq!(&t[by("leading-whitespace").span.clone()], "\n");
        assert_eq!(&t[by("double-space").span.clone()], "  ");
        assert_eq!(&t[by("trailing-spaces").span.clone()], " ");
        assert_eq!(&t[by("crlf").span.clone()], "\r\n");
        assert_eq!(&t[by("invisible-space").span.clone()], "\u{00A0}");
        assert_eq!(by("crlf").severity, Severity::Warning);
        assert_eq!(by("invisible-space").severity, Severity::Warning);
        assert!(
            by("trailing-spaces").message.contains("line 2"),
            "{}",
            by("trailing-spaces").message
        );
        // findings are in text order
        assert!(f.windows(2).all(|w| w[0].span.start <= w[1].span.start));
    }

    #[test]
    fn ordinary_formatting_is_quiet() {
        let t = "You are a reviewer.\n\nReview this code for:\n- security\n- performance\n\n    fn main() {}\n\nCode:\n{code}\n";
        let f = template_findings(t, &params(1));
        let ws: Vec<&str> = f
            .iter()
            .filter(|f| f.rule == Rule::WhitespaceUnnormalized)
            .map(|f| f.kind)
            .collect();
        assert!(ws.is_empty(), "{ws:?}");
    }

    #[test]
    fn counts_repeated_issues_once() {
        let t = "a  b\nc  d\ne  f\n{x}";
        let f = template_findings(t, &params(1));
        let d: Vec<&Finding> = f.iter().filter(|f| f.kind == "double-space").collect();
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("3 places"), "{}", d[0].message);
    }
}
