//! Live prefix warnings: each request's prefix window checked for content that cannot
//! repeat and for whitespace drift against earlier requests of its strategy *from the
//! same namespace*, reported in `x-prefixcache-warning`, `lint_findings_total{rule}` and
//! a rate-limited log line. Nothing a caller is told depends on another tenant's traffic.

use std::sync::Arc;

use axum::http::HeaderValue;
use prefixcache_core::config::Strategy;
use prefixcache_core::key::{FamilyId, Namespace};
use prefixcache_core::lint::{self, DriftScope, Finding, Severity};
use prefixcache_core::prefix::Family;

use crate::memo::Memo;
use crate::metrics::RuleLabels;
use crate::state::AppState;

/// At most one log line per rule per this many milliseconds.
const LOG_EVERY_MS: u64 = 10_000;

/// Families whose dynamic-content findings are remembered before the memo is cleared.
pub const MEMO_FAMILIES: usize = 4096;

/// The dynamic-content findings of recent families. They depend only on the family's
/// window, which recurs on every hit of a template, so each is computed once per
/// namespace: keyed by namespace too, so whether a finding was memoized (which shows
/// in latency) never depends on another tenant's requests.
pub type LintMemo = Memo<(Namespace, FamilyId), Arc<[Finding]>>;

impl AppState {
    /// Checks one request's family window; returns the warning header value, if any.
    /// Dynamic content is looked up per namespace and family (see [`LintMemo`]).
    /// Whitespace drift compares the window only with earlier requests of the strategy
    /// in the caller's `namespace` (with `cache.tenant = "shared"` that is everyone's),
    /// and only when `observe_drift`: the proxy skips it on hits, which repeat a window
    /// already observed when they first missed.
    pub fn lint_request(
        &self,
        strategy: &Strategy,
        family: &Family,
        namespace: &Namespace,
        observe_drift: bool,
    ) -> Option<HeaderValue> {
        let dynamic = self.lint_memo.get_or_compute((*namespace, family.id), || {
            lint::dynamic_prefix(family).into()
        });
        // With normalize_whitespace the family ignores whitespace, so drift costs no hits.
        let drift = if observe_drift && !strategy.normalize_whitespace {
            let scope = DriftScope {
                tenant: namespace.as_bytes(),
                strategy: &strategy.name,
            };
            self.drift.observe(scope, family)
        } else {
            None
        };
        if dynamic.is_empty() && drift.is_none() {
            return None;
        }
        let mut findings: Vec<Finding> = dynamic.iter().cloned().chain(drift).collect();
        let strategy = strategy.name.as_str();
        if findings.is_empty() {
            return None;
        }
        for f in &findings {
            self.metrics
                .lint_findings
                .get_or_create(&RuleLabels {
                    rule: f.rule.as_str(),
                })
                .inc();
            self.log_finding(strategy, f);
        }
        let label = self.strategy_label(strategy);
        (self.dashboard.families).findings(family.id, label, &findings, self.now_ms());
        findings.retain(|f| f.severity >= Severity::Warning);
        let value = lint::header_value(&findings);
        if value.is_empty() {
            return None;
        }
        HeaderValue::from_str(&value).ok()
    }

    /// One line per rule per [`LOG_EVERY_MS`]: the strategy and where in the prefix,
    /// never the prompt text.
    fn log_finding(&self, strategy: &str, f: &Finding) {
        let now = self.now_ms();
        {
            let mut last = self.lint_logged.lock().unwrap_or_else(|p| p.into_inner());
            let at = last.entry(f.rule.as_str()).or_insert(0);
            if *at != 0 && now.saturating_sub(*at) < LOG_EVERY_MS {
                return;
            }
            *at = now.max(1);
        }
        tracing::warn!(
            strategy,
            rule = f.rule.as_str(),
            kind = f.kind,
            severity = f.severity.as_str(),
            tokens = %format!("{}..{}", f.token_span.start, f.token_span.end),
            fix = f.fix,
            "prompt prefix will lower the cache hit rate"
        );
    }
}
