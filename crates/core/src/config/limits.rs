//! `[limits]`: how much of the proxy one client, and all clients together, may hold
//! (connections, requests, body bytes, time), so a slow or hostile client is cut off
//! or refused early instead of exhausting memory, file descriptors or workers.
//!
//! Every bound has a default; `docs/security.md` lists them with the reasoning.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Scalar, opt};

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_MIN_RATE: u64 = 64 * 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 1024;
/// Default budget of request-body bytes in flight, in bodies of `max_body_bytes`.
pub const DEFAULT_BODIES_IN_FLIGHT: u64 = 4;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    header_read_timeout: Option<Scalar>,
    body_read_timeout: Option<Scalar>,
    body_min_rate: Option<Scalar>,
    idle_timeout: Option<Scalar>,
    http2_keep_alive_interval: Option<Scalar>,
    http2_keep_alive_timeout: Option<Scalar>,
    max_connections: Option<Scalar>,
    max_requests_in_flight: Option<Scalar>,
    max_body_bytes_in_flight: Option<Scalar>,
    max_response_bytes: Option<Scalar>,
}

/// The validated `[limits]`.
///
/// ```
/// use prefixcache_core::config::{Config, Layers};
///
/// let toml = "[limits]\nheader_read_timeout = \"5s\"\nmax_connections = 100";
/// let config = Config::load(Layers { file: Some(toml.into()), ..Default::default() }).unwrap();
/// assert_eq!(config.limits.header_read_timeout.as_secs(), 5);
/// assert_eq!(config.limits.max_connections, 100);
/// // Four bodies of `max_body_bytes` (32 MiB) may be in flight by default.
/// assert_eq!(config.limits.max_body_bytes_in_flight, 4 * config.max_body_bytes);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive within this, counted from when the connection is
    /// ready for a request (accepted, or done with the previous response).
    pub header_read_timeout: Duration,
    /// Grace period for a request body; past it, the body must have arrived at
    /// `body_min_rate` on average (see [`Limits::body_deadline`]).
    pub body_read_timeout: Duration,
    /// Minimum average rate of a request body after the grace period, bytes per second.
    pub body_min_rate: u64,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// HTTP/2: a PING is sent after this long without a frame from the client...
    pub http2_keep_alive_interval: Duration,
    /// ...and the connection is closed when its answer takes longer than this.
    pub http2_keep_alive_timeout: Duration,
    /// Open client connections; beyond it a new connection is answered `503`.
    pub max_connections: usize,
    /// Requests being served at once (API routes); beyond it `503`.
    pub max_requests_in_flight: usize,
    /// Request-body bytes held at once (being received, analysed or sent upstream);
    /// a request that would exceed it is answered `503`.
    pub max_body_bytes_in_flight: u64,
    /// Responses larger than this stream through to the caller and are not cached
    /// (nor shared with identical requests that have not started reading them).
    pub max_response_bytes: u64,
}

impl Limits {
    /// How long a body may have taken when `received` bytes of it have arrived:
    /// the grace period plus the time `received` bytes take at the minimum rate. A body
    /// that sends one byte every few seconds is cut at the grace period; a large body
    /// on a slow but honest link gets the time its size needs.
    pub fn body_deadline(&self, received: u64) -> Duration {
        let rate = self.body_min_rate.max(1);
        self.body_read_timeout + Duration::from_secs_f64(received as f64 / rate as f64)
    }
}

impl RawLimits {
    pub(super) fn validate(&self, max_body_bytes: u64) -> Result<Limits, ConfigError> {
        let positive = |d: Duration, key: &str| {
            if d.is_zero() {
                Err(ConfigError::key(key, "must be greater than 0"))
            } else {
                Ok(d)
            }
        };
        let count = |v: &Option<Scalar>, key: &str, default: usize| {
            let n = opt(v, key, Scalar::usize, default)?;
            if n == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
            Ok(n)
        };
        let duration = |v: &Option<Scalar>, key: &str, default: Duration| {
            positive(opt(v, key, Scalar::duration, default)?, key)
        };
        let limits = Limits {
            header_read_timeout: duration(
                &self.header_read_timeout,
                "limits.header_read_timeout",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            body_read_timeout: duration(
                &self.body_read_timeout,
                "limits.body_read_timeout",
                DEFAULT_BODY_READ_TIMEOUT,
            )?,
            body_min_rate: opt(
                &self.body_min_rate,
                "limits.body_min_rate",
                Scalar::size,
                DEFAULT_BODY_MIN_RATE,
            )?,
            idle_timeout: duration(
                &self.idle_timeout,
                "limits.idle_timeout",
                DEFAULT_IDLE_TIMEOUT,
            )?,
            http2_keep_alive_interval: duration(
                &self.http2_keep_alive_interval,
                "limits.http2_keep_alive_interval",
                DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
            )?,
            http2_keep_alive_timeout: duration(
                &self.http2_keep_alive_timeout,
                "limits.http2_keep_alive_timeout",
                DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            )?,
            max_connections: count(
                &self.max_connections,
                "limits.max_connections",
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_requests_in_flight: count(
                &self.max_requests_in_flight,
                "limits.max_requests_in_flight",
                DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            )?,
            max_body_bytes_in_flight: opt(
                &self.max_body_bytes_in_flight,
                "limits.max_body_bytes_in_flight",
                Scalar::size,
                max_body_bytes.saturating_mul(DEFAULT_BODIES_IN_FLIGHT),
            )?,
            max_response_bytes: opt(
                &self.max_response_bytes,
                "limits.max_response_bytes",
                Scalar::size,
                DEFAULT_MAX_RESPONSE_BYTES,
            )?,
        };
        if limits.body_min_rate == 0 {
            return Err(ConfigError::key(
                "limits.body_min_rate",
                "must be at least 1 byte per second",
            ));
        }
        if limits.max_body_bytes_in_flight < max_body_bytes {
            return Err(ConfigError::key(
                "limits.max_body_bytes_in_flight",
                format!(
                    "must be at least max_body_bytes ({max_body_bytes}), or a body of the \
                     largest allowed size could never be admitted"
                ),
            ));
        }
        if limits.max_response_bytes == 0 {
            return Err(ConfigError::key(
                "limits.max_response_bytes",
                "must be greater than 0",
            ));
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Layers};

    fn load(file: &str) -> Result<Config, ConfigError> {
        Config::load(Layers {
            file: Some(file.to_string()),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_bound_every_resource() {
        let l = Config::defaults().limits;
        assert_eq!(l.header_read_timeout, Duration::from_secs(30));
        assert_eq!(l.idle_timeout, Duration::from_secs(30));
        assert_eq!(l.max_connections, 4096);
        assert_eq!(l.max_requests_in_flight, 1024);
        assert_eq!(l.max_body_bytes_in_flight, 128 * 1024 * 1024);
        assert_eq!(l.max_response_bytes, 32 * 1024 * 1024);
        // One byte every few seconds is cut at the grace period...
        assert!(l.body_deadline(10) < Duration::from_secs(31));
        // ...a 32 MiB body gets the time 32 MiB takes at 64 KiB/s.
        assert_eq!(l.body_deadline(32 << 20), Duration::from_secs(30 + 512));
    }

    #[test]
    fn limits_come_from_the_file_and_the_environment() {
        let c = Config::load(Layers {
            file: Some("[limits]\nmax_connections = 10\nbody_min_rate = \"1KiB\"".into()),
            env: vec![("PREFIXCACHE_LIMITS_HEADER_READ_TIMEOUT".into(), "2s".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.body_min_rate, 1024);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(2));
        assert!(c.ignored_env.is_empty());
    }

    #[test]
    fn a_bound_cannot_be_switched_off() {
        for (toml, key) in [
            (
                "[limits]\nheader_read_timeout = 0",
                "limits.header_read_timeout",
            ),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            ("[limits]\nbody_min_rate = 0", "limits.body_min_rate"),
            (
                "[limits]\nmax_response_bytes = 0",
                "limits.max_response_bytes",
            ),
            (
                "max_body_bytes = \"8MiB\"\n[limits]\nmax_body_bytes_in_flight = \"4MiB\"",
                "limits.max_body_bytes_in_flight",
            ),
            ("[limits]\nnot_a_limit = 1", "not_a_limit"),
        ] {
            let e = load(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        // The in-flight budget follows a raised max_body_bytes.
        let c = load("max_body_bytes = \"64MiB\"").unwrap();
        assert_eq!(c.limits.max_body_bytes_in_flight, 256 << 20);
    }
}
