//! The deploy gate (`analyze --baseline OLD.json --max-shift 0.10`): compare new traffic
//! with an earlier report and fail, saying why, when for some strategy
//!
//! - **(a) a stable prefix lost traffic**: the share of the strategy's requests that
//!   start with one of the baseline's stable prefixes (the strategy's, and each listed
//!   family's) fell by more than `max_shift`. A changed template means the response
//!   cache and the provider cache both start cold; the report shows where the prefix
//!   changed (token index, line and column, the tokens on both sides, as `diff` does).
//!   New user content does not move it: the stable prefix is what most requests share.
//! - **(b) the recommended granularity moved** by more than `max_shift` (relative).
//!
//! The article's gate (`optimal_granularity` moved more than 10%) is computed alongside
//! for comparison: it cannot see a one-word change in a long prompt, which moves the
//! average length by a token. Definitions: `docs/analysis.md`.

use std::collections::HashMap;
use std::fmt::Write as _;

use prefixcache_core::boundary::{CONTEXT_TOKENS, Position};
use prefixcache_core::tokenizer::Encoding;
use serde::{Deserialize, Serialize};

use crate::analyze::{Analysis, Corpus, CorpusGroup, PrefixReport, StrategyReport, ratio};
use crate::prefixes::lcp;

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub passed: bool,
    pub max_shift: f64,
    pub baseline: String,
    /// One line per failed check.
    pub reasons: Vec<String>,
    pub strategies: Vec<StrategyGate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyGate {
    pub name: String,
    pub passed: bool,
    pub baseline_requests: u64,
    pub current_requests: u64,
    /// "missing" (no new traffic: not checked), "new" (no baseline), or "checked".
    pub state: String,
    pub prefixes: Vec<PrefixCheck>,
    #[serde(default)]
    pub granularity: Option<GranularityCheck>,
    /// What the article's own gate would say.
    #[serde(default)]
    pub article: Option<GranularityCheck>,
}

/// (a) for one stable prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixCheck {
    /// `strategy`, or `family <id>`.
    pub scope: String,
    pub length: usize,
    /// Share of the strategy's baseline requests that started with it.
    pub baseline_share: f64,
    /// Share of its new requests that do.
    pub current_share: f64,
    /// `baseline_share − current_share`.
    pub lost: f64,
    pub passed: bool,
    #[serde(default)]
    pub divergence: Option<DivergenceReport>,
}

/// Where most of the new requests that no longer start with a stable prefix leave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivergenceReport {
    /// Index of the first token that differs from the baseline's prefix.
    pub token_index: usize,
    /// New requests that diverge at that token (with the same token there).
    pub requests: u64,
    /// Where that token starts in the baseline prefix's text (1-based line and column,
    /// byte offset), the request's prefix text as `docs/tokenizer.md` renders it.
    pub byte_offset: usize,
    pub line: usize,
    pub column: usize,
    /// Up to three shared tokens before the boundary, decoded.
    pub before: Vec<String>,
    /// Up to three tokens from the boundary on: the baseline's and the new traffic's.
    pub baseline: Vec<String>,
    pub current: Vec<String>,
    pub before_ids: Vec<u32>,
    pub baseline_ids: Vec<u32>,
    pub current_ids: Vec<u32>,
}

/// (b), or the article's gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GranularityCheck {
    pub baseline: u64,
    pub current: u64,
    /// `|current − baseline| / baseline`.
    pub shift: f64,
    pub passed: bool,
}

fn granularity_check(old: u64, new: u64, max_shift: f64) -> GranularityCheck {
    let shift = if old == 0 {
        if new == 0 { 0.0 } else { f64::INFINITY }
    } else {
        (new as f64 - old as f64).abs() / old as f64
    };
    GranularityCheck {
        baseline: old,
        current: new,
        shift,
        passed: shift <= max_shift,
    }
}

/// Runs the gate of `current` (with its token sequences) against `baseline`.
pub fn gate(
    baseline: &Analysis,
    baseline_name: &str,
    current: &Analysis,
    corpus: &Corpus,
    max_shift: f64,
) -> GateReport {
    let mut strategies = Vec::new();
    let mut reasons = Vec::new();
    let now: HashMap<&str, &StrategyReport> = current
        .strategies
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    for old in &baseline.strategies {
        let (Some(new), Some(group)) = (now.get(old.name.as_str()), corpus.groups.get(&old.name))
        else {
            strategies.push(StrategyGate {
                name: old.name.clone(),
                passed: true,
                baseline_requests: old.requests,
                current_requests: 0,
                state: "missing".into(),
                prefixes: Vec::new(),
                granularity: None,
                article: None,
            });
            continue;
        };
        let enc = group
            .encoding
            .or_else(|| Encoding::from_name(&new.encoding))
            .unwrap_or(Encoding::O200kBase);
        let mut prefixes = vec![check_prefix(
            "strategy".into(),
            &old.stable_prefix,
            old.stable_prefix.share,
            group,
            enc,
            max_shift,
        )];
        for f in &old.families {
            // The strategy's own prefix (a strategy of one family): the check and its
            // verdict would repeat.
            if f.stable_prefix.tokens == old.stable_prefix.tokens {
                continue;
            }
            // Requests starting with a family's stable prefix (at least the family's
            // first tokens) are that family's: its share of the strategy times the share
            // of the family that starts with it.
            prefixes.push(check_prefix(
                format!("family {}", f.id),
                &f.stable_prefix,
                f.share * f.stable_prefix.share,
                group,
                enc,
                max_shift,
            ));
        }
        let granularity = granularity_check(
            old.recommended_granularity as u64,
            new.recommended_granularity as u64,
            max_shift,
        );
        let article =
            granularity_check(old.optimal_granularity, new.optimal_granularity, max_shift);
        for p in prefixes.iter().filter(|p| !p.passed) {
            let mut r = format!(
                "strategy {}: {:.1}% of requests started with the baseline's {} stable prefix ({} tokens), now {:.1}% (lost {:.1} points > {:.1})",
                old.name,
                p.baseline_share * 100.0,
                p.scope,
                p.length,
                p.current_share * 100.0,
                p.lost * 100.0,
                max_shift * 100.0
            );
            if let Some(d) = &p.divergence {
                let _ = write!(
                    r,
                    "; it changed at token {} (line {}, column {}): {} | {} -> {}",
                    d.token_index,
                    d.line,
                    d.column,
                    quoted(&d.before),
                    quoted(&d.baseline),
                    quoted(&d.current)
                );
            }
            reasons.push(r);
        }
        if !granularity.passed {
            reasons.push(format!(
                "strategy {}: the recommended granularity moved from {} to {} tokens ({:.1}% > {:.1}%)",
                old.name,
                granularity.baseline,
                granularity.current,
                granularity.shift * 100.0,
                max_shift * 100.0
            ));
        }
        let passed = granularity.passed && prefixes.iter().all(|p| p.passed);
        strategies.push(StrategyGate {
            name: old.name.clone(),
            passed,
            baseline_requests: old.requests,
            current_requests: new.requests,
            state: "checked".into(),
            prefixes,
            granularity: Some(granularity),
            article: Some(article),
        });
    }
    for s in &current.strategies {
        if !baseline.strategies.iter().any(|o| o.name == s.name) {
            strategies.push(StrategyGate {
                name: s.name.clone(),
                passed: true,
                baseline_requests: 0,
                current_requests: s.requests,
                state: "new".into(),
                prefixes: Vec::new(),
                granularity: None,
                article: None,
            });
        }
    }
    GateReport {
        passed: reasons.is_empty(),
        max_shift,
        baseline: baseline_name.to_string(),
        reasons,
        strategies,
    }
}

fn check_prefix(
    scope: String,
    prefix: &PrefixReport,
    baseline_share: f64,
    group: &CorpusGroup,
    enc: Encoding,
    max_shift: f64,
) -> PrefixCheck {
    let p = &prefix.tokens;
    let n = group.seqs.len() as u64;
    let starting = group.seqs.iter().filter(|s| s.starts_with(p)).count() as u64;
    let current_share = ratio(starting, n);
    let lost = baseline_share - current_share;
    let passed = lost <= max_shift;
    PrefixCheck {
        scope,
        length: p.len(),
        baseline_share,
        current_share,
        lost,
        passed,
        divergence: (!passed).then(|| divergence(p, group, enc)).flatten(),
    }
}

/// The most common place (and token) where new requests leave the prefix `p`.
fn divergence(p: &[u32], group: &CorpusGroup, enc: Encoding) -> Option<DivergenceReport> {
    let mut at: HashMap<(usize, Option<u32>), (u64, usize)> = HashMap::new();
    for (i, s) in group.seqs.iter().enumerate() {
        if s.starts_with(p) {
            continue;
        }
        let d = lcp(p, s);
        at.entry((d, s.get(d).copied())).or_insert((0, i)).0 += 1;
    }
    let ((d, _), (count, example)) = at
        .into_iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.0.0.cmp(&a.0.0)))?;
    let s = &group.seqs[example];
    let before_ids = p[d.saturating_sub(CONTEXT_TOKENS)..d].to_vec();
    let baseline_ids = p[d..(d + CONTEXT_TOKENS).min(p.len())].to_vec();
    let current_ids = s[d..(d + CONTEXT_TOKENS).min(s.len())].to_vec();
    let text = String::from_utf8_lossy(&enc.decode_bytes(p)).into_owned();
    let byte = enc.decode_bytes(&p[..d]).len();
    let pos = Position::of(&text, byte);
    Some(DivergenceReport {
        token_index: d,
        requests: count,
        byte_offset: pos.byte,
        line: pos.line,
        column: pos.column,
        before: enc.decode_each_lossy(&before_ids),
        baseline: enc.decode_each_lossy(&baseline_ids),
        current: enc.decode_each_lossy(&current_ids),
        before_ids,
        baseline_ids,
        current_ids,
    })
}

fn quoted(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "(end)".to_string();
    }
    tokens
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl GateReport {
    /// The verdict for people.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "deploy gate against {} (max shift {:.0}%): {}",
            self.baseline,
            self.max_shift * 100.0,
            if self.passed { "passed" } else { "FAILED" }
        );
        for s in &self.strategies {
            match s.state.as_str() {
                "missing" => {
                    let _ = writeln!(o, "  strategy {}: no new traffic (not checked)", s.name);
                    continue;
                }
                "new" => {
                    let _ = writeln!(o, "  strategy {}: new (no baseline)", s.name);
                    continue;
                }
                _ => {}
            }
            let _ = writeln!(
                o,
                "  strategy {}: {}",
                s.name,
                if s.passed { "ok" } else { "FAILED" }
            );
            for p in &s.prefixes {
                let _ = writeln!(
                    o,
                    "    {} stable prefix ({} tokens): {:.1}% -> {:.1}% of requests{}",
                    p.scope,
                    p.length,
                    p.baseline_share * 100.0,
                    p.current_share * 100.0,
                    if p.passed { "" } else { "  FAILED" }
                );
                if let Some(d) = &p.divergence {
                    let _ = writeln!(
                        o,
                        "      {} requests leave it at token {} (byte {}, line {}, column {}):",
                        d.requests, d.token_index, d.byte_offset, d.line, d.column
                    );
                    let _ = writeln!(o, "        shared    {} |", quoted(&d.before));
                    let _ = writeln!(o, "        baseline  | {}", quoted(&d.baseline));
                    let _ = writeln!(o, "        now       | {}", quoted(&d.current));
                }
            }
            if let Some(g) = &s.granularity {
                let _ = writeln!(
                    o,
                    "    recommended granularity {} -> {} ({:.1}%){}",
                    g.baseline,
                    g.current,
                    g.shift * 100.0,
                    if g.passed { "" } else { "  FAILED" }
                );
            }
            if let Some(a) = &s.article {
                let _ = writeln!(
                    o,
                    "    (the article's gate: optimal_granularity {} -> {} ({:.1}%): it would {})",
                    a.baseline,
                    a.current,
                    a.shift * 100.0,
                    if a.passed { "pass" } else { "fail" }
                );
            }
        }
        for r in &self.reasons {
            let _ = writeln!(o, "reason: {r}");
        }
        o
    }
}
