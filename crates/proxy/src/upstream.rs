//! The upstream client: one pooled reqwest client, the URL and header rules for
//! forwarding a caller's request, and the timeouts that turn into 502/504.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use prefixcache_core::config::Config;

use crate::headers::{is_hop_by_hop, is_proxy_directive};

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Unreachable(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    /// Label for `upstream_errors_total{code}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout(_) => "timeout",
        }
    }
}

impl From<UpstreamError> for crate::error::ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unreachable(m) => crate::error::ApiError::UpstreamUnreachable(m),
            UpstreamError::Timeout(d) => crate::error::ApiError::UpstreamTimeout(d),
        }
    }
}

/// Connection-pooled client for the configured upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: reqwest::Client,
    /// The base URL, parsed once: each request only sets path and query.
    base: reqwest::Url,
    /// The base's path without a trailing slash (`""` for an origin).
    base_path: String,
    /// `Bearer <upstream_api_key>`, used when the caller sends no credential.
    fallback_auth: Option<HeaderValue>,
    /// Time allowed until response headers, and between two body chunks.
    timeout: Duration,
}

impl UpstreamClient {
    pub fn new(config: &Config) -> Result<UpstreamClient, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            // A proxy passes redirects through to the caller rather than following them.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("building the HTTP client: {e}")))?;
        let fallback_auth = match &config.upstream_api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    UpstreamError::Unreachable(
                        "upstream_api_key is not a valid header value".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let base = reqwest::Url::parse(config.upstream.as_str())
            .map_err(|e| UpstreamError::Unreachable(format!("upstream URL: {e}")))?;
        let base_path = base.path().trim_end_matches('/').to_string();
        Ok(UpstreamClient {
            client,
            base,
            base_path,
            fallback_auth,
            timeout: config.upstream_timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The upstream URL for a request's path and query. A base that already ends in
    /// `/v1` (as SDK `base_url`s do) is not doubled.
    pub fn url(&self, path_and_query: &str) -> reqwest::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let prefix = match self.base_path.strip_suffix("/v1") {
            Some(p) if path.starts_with("/v1/") || path == "/v1" => p,
            _ => self.base_path.as_str(),
        };
        let mut url = self.base.clone();
        if prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{prefix}{path}"));
        }
        url.set_query(query);
        url
    }

    /// The caller's headers as they go upstream: hop-by-hop headers and the proxy's own
    /// directives removed, the caller's credentials untouched, the proxy's key added when
    /// the caller sent none. `identity_encoding` asks upstream for an uncompressed body,
    /// which the proxy must parse on cached routes.
    pub fn forward_headers(&self, incoming: &HeaderMap, identity_encoding: bool) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(incoming.len() + 1);
        for (name, value) in incoming {
            if is_hop_by_hop(name) || is_proxy_directive(name) {
                continue;
            }
            if identity_encoding && name == header::ACCEPT_ENCODING {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        if !out.contains_key(header::AUTHORIZATION)
            && let Some(auth) = &self.fallback_auth
        {
            out.insert(header::AUTHORIZATION, auth.clone());
        }
        out
    }

    /// Sends a request and waits for the response headers (bounded by the timeout).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, UpstreamError> {
        let request = self
            .client
            .request(method, self.url(path_and_query))
            .headers(headers)
            .body(body);
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefixcache_core::config::Layers;

    fn client(upstream: &str, key: Option<&str>) -> UpstreamClient {
        let mut flags = vec![("upstream".to_string(), upstream.to_string())];
        if let Some(k) = key {
            flags.push(("upstream_api_key".into(), k.into()));
        }
        let config = Config::load(Layers {
            flags,
            ..Default::default()
        })
        .unwrap();
        UpstreamClient::new(&config).unwrap()
    }

    #[test]
    fn urls_do_not_double_v1() {
        let c = client("https://api.openai.com", None);
        assert_eq!(
            c.url("/v1/models?x=1").as_str(),
            "https://api.openai.com/v1/models?x=1"
        );
        let c = client("https://api.openai.com/v1/", None);
        assert_eq!(
            c.url("/v1/chat/completions").as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        let c = client("http://host/openai", None);
        assert_eq!(c.url("/v1/models").as_str(), "http://host/openai/v1/models");
        assert_eq!(
            c.url("/other?a=1&b").as_str(),
            "http://host/openai/other?a=1&b"
        );
    }

    #[test]
    fn forwarded_headers_keep_credentials_and_drop_directives() {
        let c = client("http://127.0.0.1:1", Some("sk-proxy"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-caller"),
        );
        h.insert("openai-project", HeaderValue::from_static("proj_1"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-prefixcache-ttl", HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let out = c.forward_headers(&h, true);
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-caller");
        assert_eq!(out["openai-project"], "proj_1");
        for gone in [
            "cache-control",
            "x-prefixcache-ttl",
            "connection",
            "accept-encoding",
        ] {
            assert!(!out.contains_key(gone), "{gone} must not be forwarded");
        }
        assert!(
            c.forward_headers(&h, false)
                .contains_key(header::ACCEPT_ENCODING)
        );
        let out = c.forward_headers(&HeaderMap::new(), true);
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-proxy");
    }
}
