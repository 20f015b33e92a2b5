//! The headers of the interface contract (`docs/headers.md`): what callers may send to steer
//! the cache, what the proxy answers with, and which headers never cross a proxy.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, header};

use crate::error::ApiError;

pub const STATUS: HeaderName = HeaderName::from_static("x-prefixcache-status");
pub const KEY: HeaderName = HeaderName::from_static("x-prefixcache-key");
pub const FAMILY: HeaderName = HeaderName::from_static("x-prefixcache-family");
pub const AGE: HeaderName = HeaderName::from_static("x-prefixcache-age");
pub const WARNING: HeaderName = HeaderName::from_static("x-prefixcache-warning");
pub const TTL: HeaderName = HeaderName::from_static("x-prefixcache-ttl");
pub const STRATEGY: HeaderName = HeaderName::from_static("x-prefixcache-strategy");
/// Why a request was forwarded without the cache (`BYPASS` only).
/// Where an automatic prompt-cache breakpoint was placed, or why none was.
pub const BREAKPOINT: HeaderName = HeaderName::from_static("x-prefixcache-breakpoint");
pub const BYPASS: HeaderName = HeaderName::from_static("x-prefixcache-bypass");
pub const OPENAI_ORGANIZATION: HeaderName = HeaderName::from_static("openai-organization");
pub const OPENAI_PROJECT: HeaderName = HeaderName::from_static("openai-project");

/// What the caller asked of the cache through request headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// `Cache-Control: no-cache`: skip the lookup, store the fresh response.
    pub no_cache: bool,
    /// `Cache-Control: no-store`: do not store the response.
    pub no_store: bool,
    /// `x-prefixcache-ttl`, before capping by the strategy's `max_ttl`.
    pub ttl: Option<Duration>,
    /// `x-prefixcache-strategy`.
    pub strategy: Option<String>,
}

impl CacheDirectives {
    /// Reads the directives; a malformed value is a 400 that names the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<CacheDirectives, ApiError> {
        let mut d = CacheDirectives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let text = value.to_str().map_err(|_| ApiError::BadHeader {
                header: "cache-control",
                message: "Cache-Control is not valid ASCII".into(),
            })?;
            for directive in text.split(',') {
                match directive.trim().to_ascii_lowercase().as_str() {
                    "no-cache" => d.no_cache = true,
                    "no-store" => d.no_store = true,
                    // Other directives (max-age, ...) have no meaning for this cache; HTTP
                    // says unknown directives are ignored.
                    _ => {}
                }
            }
        }
        if let Some(v) = headers.get(&TTL) {
            let secs = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadHeader {
                    header: "x-prefixcache-ttl",
                    message: format!(
                        "x-prefixcache-ttl must be a whole number of seconds, got {:?}",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                })?;
            d.ttl = Some(Duration::from_secs(secs));
        }
        if let Some(v) = headers.get(&STRATEGY) {
            let name = v.to_str().map_err(|_| ApiError::BadHeader {
                header: "x-prefixcache-strategy",
                message: "x-prefixcache-strategy is not valid ASCII".into(),
            })?;
            d.strategy = Some(name.trim().to_string());
        }
        Ok(d)
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// ones the HTTP client recomputes. They are never forwarded in either direction.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The headers a message's own `Connection` header names (RFC 9110 §7.6.1): like the
/// hop-by-hop headers, they describe that one connection and must not be forwarded.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// The end-to-end headers of a message, for forwarding it in either direction: without
/// the hop-by-hop headers, the headers its `Connection` header names, and those `drop`
/// selects.
pub fn end_to_end(headers: &HeaderMap, drop: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let named = connection_options(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_hop_by_hop(name) || named.contains(name) || drop(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// What an upstream response's `Cache-Control` lets a shared cache do with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCaching {
    /// `no-store`: never stored. `no-cache` is treated the same: it allows storing only
    /// with revalidation before every reuse, which a POST cache cannot do.
    pub no_store: bool,
    /// `private`: stored only in a namespace that is the caller's alone.
    pub private: bool,
}

impl UpstreamCaching {
    pub fn from_headers(headers: &HeaderMap) -> UpstreamCaching {
        let mut c = UpstreamCaching::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            // A value that is not text is not understood: the safe reading is no-store.
            let Ok(text) = value.to_str() else {
                c.no_store = true;
                continue;
            };
            for directive in text.split(',') {
                // `private="set-cookie"` (with field names) is still private.
                let name = directive.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                    c.no_store = true;
                } else if name.eq_ignore_ascii_case("private") {
                    c.private = true;
                }
            }
        }
        c
    }

    /// Why a response may not be stored (or shared with a coalesced request) for a
    /// caller, if it may not: a metric label.
    pub fn refusal(self, own_namespace: bool) -> Option<&'static str> {
        if self.no_store {
            Some("upstream_no_store")
        } else if self.private && !own_namespace {
            Some("upstream_private")
        } else {
            None
        }
    }
}

/// Headers the proxy consumes and strips before forwarding (`docs/headers.md`).
pub fn is_proxy_directive(name: &HeaderName) -> bool {
    name == header::CACHE_CONTROL || name == TTL || name == STRATEGY
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cache_control_directives_combine() {
        let d = CacheDirectives::from_headers(&headers(&[
            ("cache-control", "max-age=0, No-Cache"),
            ("cache-control", "no-store"),
        ]))
        .unwrap();
        assert!(d.no_cache && d.no_store);
        let d = CacheDirectives::from_headers(&headers(&[])).unwrap();
        assert_eq!(d, CacheDirectives::default());
    }

    #[test]
    fn connection_named_headers_are_not_end_to_end() {
        let h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "3"),
        ]);
        let out = end_to_end(&h, |n| n == "x-dropped");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-kept"], "3");
    }

    #[test]
    fn upstream_cache_control() {
        let c = |v: &str| UpstreamCaching::from_headers(&headers(&[("cache-control", v)]));
        assert_eq!(c("max-age=60"), UpstreamCaching::default());
        assert!(c("No-Store").no_store);
        assert!(c("no-cache=\"x\", max-age=0").no_store);
        assert!(c("private=\"set-cookie\"").private);
        assert_eq!(c("no-store").refusal(true), Some("upstream_no_store"));
        assert_eq!(c("private").refusal(false), Some("upstream_private"));
        assert_eq!(c("private").refusal(true), None);
        assert_eq!(c("public").refusal(false), None);
    }

    #[test]
    fn ttl_must_be_seconds() {
        let d = CacheDirectives::from_headers(&headers(&[("x-prefixcache-ttl", " 60 ")])).unwrap();
        assert_eq!(d.ttl, Some(Duration::from_secs(60)));
        let e =
            CacheDirectives::from_headers(&headers(&[("x-prefixcache-ttl", "1h")])).unwrap_err();
        assert!(e.to_string().contains("x-prefixcache-ttl"), "{e}");
    }
}
