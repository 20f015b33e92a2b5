//! What a mock upstream is told at start: latency, seed, stream pacing, auth, output
//! length and the prompt-cache simulation's parameters.

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, TokioClock};

// The prompt-cache parameters live with the simulation in core; re-exported so the
// mock's users keep one place to configure it.
pub use prefixcache_core::provider::cache::{
    DEFAULT_CACHE_IDLE_TTL, DEFAULT_CACHE_LRU_ENTRIES, DEFAULT_CACHE_MACHINES,
    DEFAULT_CACHE_OVERFLOW_RPM, EXTENDED_CACHE_TTL, PromptCacheConfig,
};
/// Requests remembered per route for assertions (`/mock/requests`).
pub const DEFAULT_RECORD_REQUESTS: usize = 16;
/// Generated output length in tokens (before `max_tokens` cuts it).
pub const DEFAULT_OUTPUT_TOKENS: RangeInclusive<u32> = 16..=64;

/// The mock's configuration. Every field has a default; tests change the few they need.
///
/// ```
/// use prefixcache_mock::{Latency, MockConfig};
/// let config = MockConfig {
///     latency: "lognormal:mean=1247ms,p99=3421ms".parse::<Latency>().unwrap(),
///     seed: 42,
///     ..MockConfig::default()
/// };
/// assert_eq!(config.prompt_cache.min_tokens, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Time before a response (for streams: before the first byte).
    pub latency: Latency,
    /// Seeds content and latency samples: same seed, same run.
    pub seed: u64,
    /// Pause between two SSE events of a stream (the first one is not delayed).
    pub chunk_delay: Duration,
    /// Reject requests without `Authorization: Bearer ...` (and `sk-invalid*` keys) with 401.
    pub require_auth: bool,
    /// Length range of generated text, in tokens.
    pub output_tokens: RangeInclusive<u32>,
    /// Requests remembered per route (0 disables recording).
    pub record_requests: usize,
    /// Identical request bodies remembered with their prepared answer (0 disables).
    pub plan_cache_entries: usize,
    pub prompt_cache: PromptCacheConfig,
    /// Time for the prompt-cache simulation.
    pub clock: Arc<dyn Clock>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Latency::Zero,
            seed: 0,
            chunk_delay: Duration::ZERO,
            require_auth: false,
            output_tokens: DEFAULT_OUTPUT_TOKENS,
            record_requests: DEFAULT_RECORD_REQUESTS,
            plan_cache_entries: 4096,
            prompt_cache: PromptCacheConfig::default(),
            clock: Arc::new(TokioClock::new()),
        }
    }
}

/// How long the mock waits before answering: `0`, a fixed time (`20ms`), or
/// `lognormal:mean=1247ms,p99=3421ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Zero,
    Fixed(Duration),
    /// `ln(latency in ms) ~ Normal(mu, sigma)`, derived from the mean and the 99th
    /// percentile (see [`Latency::lognormal`]).
    LogNormal {
        mu: f64,
        sigma: f64,
    },
}

/// The standard normal's 99th percentile, Φ⁻¹(0.99).
const Z99: f64 = 2.326_347_874_040_841;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid latency {spec:?}: {reason} (expected 0, a time like 20ms, or lognormal:mean=1247ms,p99=3421ms)"
)]
pub struct LatencyError {
    spec: String,
    reason: String,
}

impl Latency {
    /// The log-normal with the given mean and 99th percentile.
    ///
    /// With `ln X ~ N(mu, sigma²)`: `mean = exp(mu + sigma²/2)` and
    /// `p99 = exp(mu + z·sigma)`, `z = Φ⁻¹(0.99)`. Subtracting the logs gives
    /// `sigma²/2 - z·sigma + ln(p99/mean) = 0`, so `sigma = z - sqrt(z² - 2·ln(p99/mean))`
    /// (the smaller root; the larger one, ≈ 2z, describes a distribution whose median is a
    /// tiny fraction of its mean, which is not what anyone means by these two numbers),
    /// and `mu = ln(mean) - sigma²/2`. A solution needs `mean < p99 ≤ mean·e^(z²/2)`
    /// (≈ 15× the mean).
    pub fn lognormal(mean: Duration, p99: Duration) -> Result<Latency, String> {
        let m = mean.as_secs_f64() * 1000.0;
        let q = p99.as_secs_f64() * 1000.0;
        if m <= 0.0 || q <= m {
            return Err("p99 must be greater than the mean, and the mean above 0".into());
        }
        let d = Z99 * Z99 - 2.0 * (q / m).ln();
        if d < 0.0 {
            return Err(format!(
                "p99 may be at most {:.1}x the mean for a log-normal",
                (Z99 * Z99 / 2.0).exp()
            ));
        }
        let sigma = Z99 - d.sqrt();
        let mu = m.ln() - sigma * sigma / 2.0;
        Ok(Latency::LogNormal { mu, sigma })
    }

    /// The latency for two independent uniforms in `[0, 1)` (Box-Muller for the normal).
    pub fn sample(&self, u1: f64, u2: f64) -> Duration {
        match *self {
            Latency::Zero => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::LogNormal { mu, sigma } => {
                let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let ms = (mu + sigma * z).exp();
                // Caps a 1-in-10^9 tail at an hour, so a bad draw cannot hang a benchmark.
                Duration::from_secs_f64((ms / 1000.0).min(3600.0))
            }
        }
    }

    /// The distribution's mean (for docs and tests).
    pub fn mean(&self) -> Duration {
        match *self {
            Latency::Zero => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::LogNormal { mu, sigma } => {
                Duration::from_secs_f64((mu + sigma * sigma / 2.0).exp() / 1000.0)
            }
        }
    }
}

impl FromStr for Latency {
    type Err = LatencyError;

    fn from_str(s: &str) -> Result<Latency, LatencyError> {
        let err = |reason: &str| LatencyError {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim();
        if let Some(params) = t.strip_prefix("lognormal:") {
            let (mut mean, mut p99) = (None, None);
            for kv in params.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| err("expected key=value"))?;
                let d = parse_duration(v).map_err(|e| err(&e))?;
                match k.trim() {
                    "mean" => mean = Some(d),
                    "p99" => p99 = Some(d),
                    other => return Err(err(&format!("unknown parameter {other:?}"))),
                }
            }
            let (Some(mean), Some(p99)) = (mean, p99) else {
                return Err(err("lognormal needs mean= and p99="));
            };
            return Latency::lognormal(mean, p99).map_err(|e| err(&e));
        }
        let d = parse_duration(t).map_err(|e| err(&e))?;
        Ok(if d.is_zero() {
            Latency::Zero
        } else {
            Latency::Fixed(d)
        })
    }
}

/// `0`, `20ms`, `1.5s`, `5m`: humantime units; a bare number is milliseconds here,
/// as latencies are written in ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<f64>()
        && ms.is_finite()
        && ms >= 0.0
    {
        return Ok(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(secs) = t.strip_suffix('s').and_then(|n| n.parse::<f64>().ok())
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    prefixcache_core::config::parse_duration(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("0".parse::<Latency>().unwrap(), Latency::Zero);
        assert_eq!(
            "20ms".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_millis(20))
        );
        assert_eq!(
            "1.5s".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_millis(1500))
        );
        let Latency::LogNormal { mu, sigma } = "lognormal:mean=1247ms,p99=3421ms"
            .parse::<Latency>()
            .unwrap()
        else {
            panic!("not a lognormal")
        };
        // Hand-computed from the formulas in `Latency::lognormal`.
        assert!((sigma - 0.4841).abs() < 1e-3, "sigma {sigma}");
        assert!((mu - 7.0113).abs() < 1e-3, "mu {mu}");
        for bad in [
            "fast",
            "lognormal:mean=3s,p99=1s",
            "lognormal:mean=1s",
            "lognormal:mean=1ms,p99=1h",
        ] {
            assert!(bad.parse::<Latency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lognormal_samples_have_the_requested_mean_and_p99() {
        let lat: Latency = "lognormal:mean=1247ms,p99=3421ms".parse().unwrap();
        let mut rng = crate::rng::SplitMix64::new(1);
        let mut xs: Vec<f64> = (0..200_000)
            .map(|_| lat.sample(rng.unit(), rng.unit()).as_secs_f64() * 1000.0)
            .collect();
        xs.sort_by(f64::total_cmp);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let p99 = xs[xs.len() * 99 / 100];
        assert!((mean - 1247.0).abs() < 15.0, "mean {mean}");
        assert!((p99 - 3421.0).abs() < 80.0, "p99 {p99}");
        assert!((lat.mean().as_secs_f64() * 1000.0 - 1247.0).abs() < 0.5);
    }
}
