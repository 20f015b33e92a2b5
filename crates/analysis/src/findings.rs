//! Lint findings over many requests, summarized: one entry per (rule, kind) of a
//! strategy with how many requests had it and where it was first seen, so a log of a
//! million requests with the same request id at the start reports one finding, not a
//! million. The rules themselves are `prefixcache_core::lint`'s.

use std::collections::BTreeMap;

use prefixcache_core::lint::{Finding, Rule, Severity};
use serde::{Deserialize, Serialize};

/// One rule's findings in one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingSummary {
    pub rule: String,
    pub severity: String,
    /// What was found (`uuid`, `timestamp`, `key-order`, ...).
    pub kind: String,
    /// Requests (or templates) it was found in.
    pub count: u64,
    /// Line (of the log or file) of the first.
    pub first_line: u64,
    /// The first finding's message.
    pub message: String,
    /// The first finding's offending text, bounded and escaped.
    pub excerpt: String,
    /// Token span of the first, `[start, end)`.
    pub token_span: [usize; 2],
    pub fix: String,
}

/// Accumulates findings by (rule, kind), keeping the first of each.
#[derive(Debug, Default)]
pub struct Summary {
    by: BTreeMap<(Rule, &'static str), (Severity, u64, u64, Finding)>,
}

impl Summary {
    /// Counts `finding`, seen at `line`.
    pub fn add(&mut self, finding: &Finding, line: u64) {
        self.add_many(finding, line, 1);
    }

    /// Counts `finding` for `count` requests at once (a strategy-wide finding).
    pub fn add_many(&mut self, finding: &Finding, line: u64, count: u64) {
        self.by
            .entry((finding.rule, finding.kind))
            .and_modify(|(sev, n, first, f)| {
                *n += count;
                *sev = (*sev).max(finding.severity);
                if line < *first {
                    *first = line;
                    *f = finding.clone();
                }
            })
            .or_insert_with(|| (finding.severity, count, line, finding.clone()));
    }

    /// The summaries, most severe first, then by rule.
    pub fn finish(self) -> Vec<FindingSummary> {
        let mut v: Vec<FindingSummary> = self
            .by
            .into_iter()
            .map(
                |((rule, kind), (sev, count, first_line, f))| FindingSummary {
                    rule: rule.as_str().to_string(),
                    severity: sev.as_str().to_string(),
                    kind: kind.to_string(),
                    count,
                    first_line,
                    message: f.message,
                    excerpt: f.excerpt,
                    token_span: [f.token_span.start, f.token_span.end],
                    fix: f.fix.to_string(),
                },
            )
            .collect();
        v.sort_by(|a, b| {
            severity_rank(&b.severity)
                .cmp(&severity_rank(&a.severity))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.kind.cmp(&b.kind))
        });
        v
    }
}

/// `info` < `warning` < `error`; unknown names rank lowest.
pub fn severity_rank(s: &str) -> u8 {
    match Severity::parse(s) {
        Some(Severity::Error) => 3,
        Some(Severity::Warning) => 2,
        Some(Severity::Info) => 1,
        None => 0,
    }
}
