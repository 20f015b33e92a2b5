//! Simulated-cache specs of `replay --strategy`:
//!
//! ```text
//! SPEC    = KIND *("," OPTION)
//! KIND    = "none" | "exact" | "prefix:" N        N = tokens in the family (>= 1)
//! OPTION  = "ttl=" DURATION                       "90s", "1h", "24h", "1h30m", or seconds
//!         | "capacity=" COUNT                     entries, "10000", "10k", "2M"; LRU beyond
//! ```
//!
//! `none` never hits; `exact` keys the whole canonical request (the proxy's default);
//! `prefix:N` is the article's slot keying: one slot per (tenant, strategy, family of
//! the first N tokens), a hit only when the slot's full request hash matches, a miss
//! overwrites the slot. Without `ttl=` an entry lives as long as its strategy's `ttl`
//! (from `--config`, else 24 h); without `capacity=` the cache is unbounded.

use std::fmt;
use std::time::Duration;

use prefixcache_core::config::parse_duration;

use crate::error::AnalysisError;

/// What a simulated cache keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimKind {
    None,
    Exact,
    /// The article's slot per prefix family of this many tokens.
    Prefix(usize),
}

/// One simulated cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SimSpec {
    pub kind: SimKind,
    /// Entry lifetime; `None`: each strategy's configured TTL.
    pub ttl: Option<Duration>,
    /// Most entries kept (LRU eviction); `None`: unbounded.
    pub capacity: Option<u64>,
}

/// The specs `replay` runs when none is given: no cache, the proxy's exact keys, and
/// the article's prefix slots at several granularities (the chart's x axis).
pub const DEFAULT_SPECS: [&str; 7] = [
    "none",
    "exact",
    "prefix:25",
    "prefix:50",
    "prefix:100",
    "prefix:200",
    "prefix:500",
];

impl SimSpec {
    pub fn parse(spec: &str) -> Result<SimSpec, AnalysisError> {
        let err = |message: String| AnalysisError::Spec {
            spec: spec.to_string(),
            message,
        };
        let mut parts = spec.split(',').map(str::trim);
        let kind = match parts.next().unwrap_or("") {
            "none" => SimKind::None,
            "exact" => SimKind::Exact,
            k => match k.strip_prefix("prefix:") {
                Some(n) => match n.trim().parse::<usize>() {
                    Ok(n) if n >= 1 => SimKind::Prefix(n),
                    _ => return Err(err(format!("prefix:N needs N >= 1 tokens, got {n:?}"))),
                },
                None => {
                    return Err(err(format!(
                        "unknown kind {k:?}; expected none, exact or prefix:N"
                    )));
                }
            },
        };
        let mut out = SimSpec {
            kind,
            ttl: None,
            capacity: None,
        };
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| err(format!("option {opt:?} is not KEY=VALUE")))?;
            match k.trim() {
                "ttl" => out.ttl = Some(parse_duration(v).map_err(err)?),
                "capacity" => out.capacity = Some(parse_count(v).map_err(err)?),
                other => {
                    return Err(err(format!(
                        "unknown option {other:?}; expected ttl= or capacity="
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The granularity of a `prefix:N` spec.
    pub fn granularity(&self) -> Option<usize> {
        match self.kind {
            SimKind::Prefix(n) => Some(n),
            _ => None,
        }
    }

    /// `none`, `exact` or `prefix`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SimKind::None => "none",
            SimKind::Exact => "exact",
            SimKind::Prefix(_) => "prefix",
        }
    }
}

/// The canonical spelling, used as the `strategy` label of results.
impl fmt::Display for SimSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SimKind::None => f.write_str("none")?,
            SimKind::Exact => f.write_str("exact")?,
            SimKind::Prefix(n) => write!(f, "prefix:{n}")?,
        }
        if let Some(t) = self.ttl {
            write!(f, ",ttl={}", humanize(t))?;
        }
        if let Some(c) = self.capacity {
            write!(f, ",capacity={c}")?;
        }
        Ok(())
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `10000`, `10_000`, `10k`, `2M`.
fn parse_count(v: &str) -> Result<u64, String> {
    let t = v.trim().replace('_', "");
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        _ => (t.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("capacity must be a positive count of entries, got {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_canonically() {
        let s = SimSpec::parse("exact,ttl=1h,capacity=10k").unwrap();
        assert_eq!(s.kind, SimKind::Exact);
        assert_eq!(s.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(s.capacity, Some(10_000));
        assert_eq!(s.to_string(), "exact,ttl=1h,capacity=10000");
        assert_eq!(
            SimSpec::parse(" prefix:50 , ttl=90 ").unwrap().to_string(),
            "prefix:50,ttl=90s"
        );
        assert_eq!(SimSpec::parse("none").unwrap().kind, SimKind::None);
        for d in DEFAULT_SPECS {
            assert_eq!(SimSpec::parse(d).unwrap().to_string(), d);
        }
        for bad in [
            "",
            "lru",
            "prefix:0",
            "prefix:x",
            "exact,ttl=soon",
            "exact,capacity=0",
            "exact,size=3",
            "exact,ttl",
        ] {
            assert!(SimSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
