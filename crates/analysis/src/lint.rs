//! `prefixcache lint PATH...`: the core lint rules (`prefixcache_core::lint`) applied to
//! what a team has: strategy templates in a config file (`[strategies.*].template`),
//! prompt and template files, and request logs (grouped by strategy or service, through
//! [`crate::analyze`]). Templates and prompt files of one run are also compared with
//! each other for whitespace drift. Findings come out like a compiler's: file and line,
//! rule and severity, the message, the offending text and one line of advice.

use std::path::{Path, PathBuf};

use prefixcache_core::boundary::Position;
use prefixcache_core::config::{
    Config, DEFAULT_MIN_PREFIX_TOKENS, DEFAULT_PREFIX_GRANULARITY, Layers,
};
use prefixcache_core::lint::{self, Finding, Severity, WhitespaceDrift};
use prefixcache_core::prefix::FamilyParams;
use prefixcache_core::tokenizer::{Encoding, encoding_for_model};
use serde::Serialize;

use crate::analyze::{AnalyzeOptions, analyze};
use crate::error::AnalysisError;
use crate::findings::severity_rank;
use crate::input::{LogInput, parse_line};
use crate::progress::Progress;
use crate::traffic::Traffic;

/// Version of the `--json` schema.
pub const SCHEMA: &str = "prefixcache.lint/1";

/// How to lint.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// `--model`: the encoding of prompt files and templates (else each strategy's
    /// matcher's model, else `o200k_base`); for logs, of every request.
    pub model: Option<String>,
    /// `--granularity`: the prefix window (else each strategy's `prefix_granularity`,
    /// else 50).
    pub granularity: Option<usize>,
    /// `--config` for logs: which strategy a request belongs to.
    pub config: Option<Config>,
    pub max_bad_lines: u64,
    pub threads: usize,
}

/// What a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A `prefixcache.toml`: its strategies' templates.
    Config,
    /// A request log.
    Log,
    /// A prompt or template file.
    Prompt,
}

/// One finding, located.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LintFinding {
    pub path: String,
    /// 1-based line in the file (for logs: of the first request with it).
    pub line: u64,
    /// 1-based column in characters, for templates and prompt files.
    pub column: Option<usize>,
    pub source: Source,
    /// The strategy of a template or of logged requests.
    pub strategy: Option<String>,
    pub rule: String,
    pub severity: String,
    pub kind: String,
    pub message: String,
    pub excerpt: String,
    pub token_span: [usize; 2],
    /// Requests (logs) or places (templates) with the same rule and kind.
    pub count: u64,
    pub fix: String,
}

/// What `lint --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub schema: &'static str,
    pub files: Vec<FileSummary>,
    pub findings: Vec<LintFinding>,
    pub errors: u64,
    pub warnings: u64,
    pub infos: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub source: Source,
    /// Templates (config), requests (log) or 1 (prompt file) examined.
    pub items: u64,
    /// Malformed log lines skipped.
    pub bad_lines: u64,
}

impl LintReport {
    /// The most severe finding's severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings
            .iter()
            .filter_map(|f| Severity::parse(&f.severity))
            .max()
    }

    /// Findings for people, compiler style.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        for f in &self.findings {
            let at = match f.column {
                Some(c) => format!("{}:{}:{c}", f.path, f.line),
                None => format!("{}:{}", f.path, f.line),
            };
            let mut context = Vec::new();
            if let Some(s) = &f.strategy {
                context.push(format!("strategy {s}"));
            }
            if f.source == Source::Log {
                context.push(format!(
                    "{} request{}",
                    f.count,
                    if f.count == 1 { "" } else { "s" }
                ));
            } else if f.count > 1 {
                context.push(format!("{} places", f.count));
            }
            let context = if context.is_empty() {
                String::new()
            } else {
                format!(" [{}]", context.join(", "))
            };
            let _ = writeln!(o, "{at}: {} {}: {}{context}", f.rule, f.severity, f.message);
            if !f.excerpt.is_empty() {
                let _ = writeln!(o, "    | {}", f.excerpt);
            }
            let _ = writeln!(o, "    = fix: {}", f.fix);
        }
        let _ = writeln!(
            o,
            "{} finding{} ({} error{}, {} warning{}, {} info) in {} file{}",
            self.findings.len(),
            plural(self.findings.len() as u64),
            self.errors,
            plural(self.errors),
            self.warnings,
            plural(self.warnings),
            self.infos,
            self.files.len(),
            plural(self.files.len() as u64)
        );
        o
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Lints every path (directories recursively, hidden entries skipped). Returns the
/// report and warnings for stderr (skipped log lines).
pub fn lint(
    paths: &[PathBuf],
    opts: &LintOptions,
) -> Result<(LintReport, Vec<String>), AnalysisError> {
    let mut files = Vec::new();
    for p in paths {
        expand(p, &mut files)?;
    }
    let drift = WhitespaceDrift::default();
    let mut findings = Vec::new();
    let mut summaries = Vec::new();
    let mut warnings = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let (source, items, bad) = match sniff(&path)? {
            Source::Config => (
                Source::Config,
                lint_config(&path, opts, &drift, &mut findings)?,
                0,
            ),
            Source::Prompt => {
                let text = LogInput::open(&path)?.read_text()?;
                let params = params(opts.model.as_deref(), opts.granularity, None);
                let mut fs = lint::template_findings(&text, &params);
                fs.extend(lint::dynamic_in_text(
                    &text,
                    params.encoding,
                    params.granularity,
                ));
                fs.extend(drift.observe_text("templates", &text));
                push_located(&mut findings, &shown, Source::Prompt, None, &text, None, fs);
                (Source::Prompt, 1, 0)
            }
            Source::Log => {
                let traffic =
                    Traffic::new(opts.config.clone(), opts.granularity, opts.model.as_deref());
                let done = analyze(
                    &path,
                    &AnalyzeOptions {
                        traffic,
                        max_bad_lines: opts.max_bad_lines,
                        threads: opts.threads,
                    },
                    &Progress::for_terminal(
                        std::fs::metadata(&path).ok().map(|m| m.len()),
                        "linting",
                    ),
                )?;
                warnings.extend(done.bad.warnings(&path));
                for s in &done.report.strategies {
                    for f in &s.findings {
                        findings.push(LintFinding {
                            path: shown.clone(),
                            line: f.first_line,
                            column: None,
                            source: Source::Log,
                            strategy: Some(s.name.clone()),
                            rule: f.rule.clone(),
                            severity: f.severity.clone(),
                            kind: f.kind.clone(),
                            message: f.message.clone(),
                            excerpt: f.excerpt.clone(),
                            token_span: f.token_span,
                            count: f.count,
                            fix: f.fix.clone(),
                        });
                    }
                }
                (Source::Log, done.report.input.requests, done.bad.count)
            }
        };
        summaries.push(FileSummary {
            path: shown,
            source,
            items,
            bad_lines: bad,
        });
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s.as_str()).count() as u64;
    let (errors, warnings_n, infos) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
    );
    findings.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then(a.line.cmp(&b.line))
            .then(severity_rank(&b.severity).cmp(&severity_rank(&a.severity)))
    });
    Ok((
        LintReport {
            schema: SCHEMA,
            files: summaries,
            findings,
            errors,
            warnings: warnings_n,
            infos,
        },
        warnings,
    ))
}

/// Files under a path, sorted; hidden entries skipped inside directories.
fn expand(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), AnalysisError> {
    let meta = std::fs::metadata(p).map_err(|e| AnalysisError::io(p, e))?;
    if !meta.is_dir() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| AnalysisError::io(p, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|e| {
            !e.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for e in entries {
        expand(&e, out)?;
    }
    Ok(())
}

/// `.toml` is a config; a file whose first non-blank lines are requests is a log; the
/// rest are prompt or template files.
fn sniff(path: &Path) -> Result<Source, AnalysisError> {
    if path.extension().and_then(|e| e.to_str()) == Some("toml") {
        return Ok(Source::Config);
    }
    let mut input = LogInput::open(path)?;
    let mut buf = Vec::new();
    // The first non-blank line decides. An unreadable file (binary, invalid UTF-8) is
    // reported by `read_text` as a prompt file.
    while let Ok(Some(n)) = input.next_line(&mut buf) {
        match parse_line(&buf, n) {
            Ok(None) => continue,
            Ok(Some(_)) => return Ok(Source::Log),
            Err(_) => return Ok(Source::Prompt),
        }
    }
    Ok(Source::Prompt)
}

/// Family parameters for a template: `--granularity`, else the strategy's; encoding
/// from `--model`, else the strategy's model matcher (its literal start), else o200k.
fn params(
    model: Option<&str>,
    granularity: Option<usize>,
    strategy: Option<&prefixcache_core::config::Strategy>,
) -> FamilyParams {
    let encoding = match (model, strategy.and_then(|s| s.match_model.as_deref())) {
        (Some(m), _) => encoding_for_model(m).encoding,
        (None, Some(glob)) => {
            let literal: String = glob
                .chars()
                .take_while(|c| *c != '*' && *c != '?')
                .collect();
            if literal.is_empty() {
                Encoding::O200kBase
            } else {
                encoding_for_model(&literal).encoding
            }
        }
        (None, None) => Encoding::O200kBase,
    };
    FamilyParams {
        encoding,
        granularity: granularity
            .or(strategy.map(|s| s.prefix_granularity))
            .unwrap_or(DEFAULT_PREFIX_GRANULARITY),
        min_tokens: strategy.map_or(DEFAULT_MIN_PREFIX_TOKENS, |s| s.min_prefix_tokens),
        normalize_whitespace: strategy.is_some_and(|s| s.normalize_whitespace),
    }
}

fn lint_config(
    path: &Path,
    opts: &LintOptions,
    drift: &WhitespaceDrift,
    out: &mut Vec<LintFinding>,
) -> Result<u64, AnalysisError> {
    let text = std::fs::read_to_string(path).map_err(|e| AnalysisError::io(path, e))?;
    let config = Config::load(Layers {
        file: Some(text.clone()),
        env: Vec::new(),
        flags: Vec::new(),
    })
    .map_err(|e| AnalysisError::Config(format!("{}: {e}", path.display())))?;
    let shown = path.display().to_string();
    let mut templates = 0;
    for s in &config.strategies {
        let Some(t) = &s.template else { continue };
        templates += 1;
        let params = params(opts.model.as_deref(), opts.granularity, Some(s));
        let mut fs = lint::template_findings(t, &params);
        fs.extend(lint::dynamic_in_text(
            t,
            params.encoding,
            params.granularity,
        ));
        fs.extend(drift.observe_text("templates", t));
        let at = template_position(&text, &s.name);
        push_located(out, &shown, Source::Config, Some(&s.name), t, at, fs);
    }
    Ok(templates)
}

/// Where a strategy's template text starts in the config file: (line, column) of its
/// first character, 1-based. TOML drops the newline right after `"""`; escapes inside
/// basic strings are not undone (a `\n` escape keeps later lines one off).
fn template_position(file: &str, strategy: &str) -> Option<(usize, usize)> {
    let headers = [
        format!("[strategies.{strategy}]"),
        format!("[strategies.\"{strategy}\"]"),
        format!("[strategies.'{strategy}']"),
    ];
    let mut offset = 0;
    let mut in_section = false;
    for line in file.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = headers.iter().any(|h| trimmed.starts_with(h.as_str()));
        } else if in_section
            && let Some(rest) = trimmed.strip_prefix("template")
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            let value = value.trim_start();
            let value_at =
                offset + (line.len() - line.trim_start().len()) + (trimmed.len() - value.len());
            let skip = if value.starts_with("\"\"\"") || value.starts_with("'''") {
                let after = value_at + 3;
                if file[after..].starts_with("\r\n") {
                    after + 2
                } else if file[after..].starts_with('\n') {
                    after + 1
                } else {
                    after
                }
            } else {
                value_at + 1
            };
            let p = Position::of(file, skip);
            return Some((p.line, p.column));
        }
        offset += line.len();
    }
    None
}

/// Adds findings of a text, placing each at its line and column: in the file itself
/// (`at = None`), or inside a template that starts at `at`.
fn push_located(
    out: &mut Vec<LintFinding>,
    path: &str,
    source: Source,
    strategy: Option<&str>,
    text: &str,
    at: Option<(usize, usize)>,
    findings: Vec<Finding>,
) {
    for f in findings {
        let p = Position::of(text, f.span.start);
        let (line, column) = match at {
            None => (p.line, p.column),
            Some((l, c)) if p.line == 1 => (l, c + p.column - 1),
            Some((l, _)) => (l + p.line - 1, p.column),
        };
        out.push(LintFinding {
            path: path.to_string(),
            line: line as u64,
            column: Some(column),
            source,
            strategy: strategy.map(str::to_string),
            rule: f.rule.as_str().to_string(),
            severity: f.severity.as_str().to_string(),
            kind: f.kind.to_string(),
            message: f.message,
            excerpt: f.excerpt,
            token_span: [f.token_span.start, f.token_span.end],
            count: 1,
            fix: f.fix.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_positions_in_a_config() {
        let file = "listen = \"x\"\n[strategies.a]\nttl = \"1h\"\ntemplate = \"\"\"\nline one\nline two\"\"\"\n[strategies.b]\n  template = \"inline {x}\"\n";
        assert_eq!(template_position(file, "a"), Some((5, 1)));
        assert_eq!(template_position(file, "b"), Some((8, 15)));
        assert_eq!(template_position(file, "c"), None);
    }
}
