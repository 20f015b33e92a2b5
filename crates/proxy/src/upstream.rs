//! The upstream client: one pooled reqwest client, the URL and header rules for
//! forwarding a caller's request (paths stay inside the configured base, connection
//! headers stay behind, the proxy's own key goes only to API routes), the way out
//! (HTTP(S) proxy, private CAs, client certificate), and the timeouts that turn into
//! 502/504. Errors never carry the upstream URL.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use prefixcache_core::config::{Config, Egress, UpstreamProxy};

use crate::headers::{end_to_end, is_proxy_directive};

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Unreachable(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Why the upstream client cannot be built from the configuration (a URL, a CA or key
/// file): a start-up error, never a request's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

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
#[derive(Clone)]
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

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base URL may hold a password: never printed whole.
        f.debug_struct("UpstreamClient")
            .field(
                "base",
                &prefixcache_core::config::redact_url(self.base.as_str()),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Builds the client. It reads `upstream_ca_file` and the client certificate: call
    /// it at start-up, not on the request path.
    pub fn new(config: &Config) -> Result<UpstreamClient, SetupError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            // A proxy passes redirects through to the caller rather than following them.
            .redirect(reqwest::redirect::Policy::none());
        let client = egress(builder, &config.egress)?
            .build()
            .map_err(|e| SetupError(format!("building the HTTP client: {}", error_chain(&e))))?;
        let fallback_auth = match &config.upstream_api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    SetupError("upstream_api_key is not a valid header value".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let base = reqwest::Url::parse(config.upstream.as_str())
            .map_err(|e| SetupError(format!("upstream URL: {e}")))?;
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

    /// The caller's headers as they go upstream: hop-by-hop headers, the headers its
    /// `Connection` header names and the proxy's own directives removed, the caller's
    /// credentials untouched. The proxy's key is added when the caller sent none, and
    /// only for a `path` of the API ([`is_api_path`]): it never goes to another path of
    /// the upstream host. `identity_encoding` asks upstream for an uncompressed body,
    /// which the proxy must parse on cached routes.
    pub fn forward_headers(
        &self,
        incoming: &HeaderMap,
        path: &str,
        identity_encoding: bool,
    ) -> HeaderMap {
        let mut out = end_to_end(incoming, |name| {
            is_proxy_directive(name) || (identity_encoding && name == header::ACCEPT_ENCODING)
        });
        if !out.contains_key(header::AUTHORIZATION)
            && is_api_path(path)
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
            Ok(Err(e)) => Err(UpstreamError::Unreachable(with_hint(error_chain(
                &e.without_url(),
            )))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Applies `[egress]`-style settings (proxy, trust, identity) to the client builder.
/// HTTP/2 is still negotiated by ALPN: only trust and identity are added to the TLS
/// configuration reqwest builds, never a configuration of our own.
fn egress(
    mut builder: reqwest::ClientBuilder,
    egress: &Egress,
) -> Result<reqwest::ClientBuilder, SetupError> {
    builder = match &egress.proxy {
        // reqwest reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (and their
        // lower-case forms) itself, as curl does.
        UpstreamProxy::FromEnv => builder,
        UpstreamProxy::Off => builder.no_proxy(),
        UpstreamProxy::Url(url) => {
            let proxy = reqwest::Proxy::all(url.as_str())
                .map_err(|e| {
                    SetupError(format!(
                        "upstream_proxy {}: {e}",
                        prefixcache_core::config::redact_url(url)
                    ))
                })?
                .no_proxy(reqwest::NoProxy::from_env());
            builder.proxy(proxy)
        }
    };
    builder = builder.tls_built_in_native_certs(egress.native_roots);
    if let Some(path) = &egress.ca_file {
        let pem = read_pem(path, "upstream_ca_file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SetupError(format!("upstream_ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(SetupError(format!(
                "upstream_ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&egress.client_cert, &egress.client_key) {
        let mut pem = read_pem(cert, "upstream_client_cert")?;
        pem.push(b'\n');
        pem.extend(read_pem(key, "upstream_client_key")?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            SetupError(format!(
                "upstream_client_cert {} with upstream_client_key {}: {}",
                cert.display(),
                key.display(),
                error_chain(&e)
            ))
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

fn read_pem(path: &std::path::Path, key: &str) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError(format!("{key} {}: {e}", path.display())))
}

/// A certificate the proxy does not trust is most often a private CA (a corporate
/// gateway, an intercepting proxy): say which setting fixes it.
fn with_hint(message: String) -> String {
    if message.contains("UnknownIssuer") || message.contains("invalid peer certificate") {
        format!(
            "{message} (if the upstream or a proxy in between uses a private CA, set upstream_ca_file \
             or upstream_native_roots)"
        )
    } else {
        message
    }
}

/// The paths of the API the proxy fronts (`/v1/...`): the only ones that get the
/// proxy's fallback key.
pub fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Why a request path is refused before anything is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path has a '.' or '..' segment (also percent-encoded)")]
    DotSegment,
    #[error("the request path has an encoded '/' or '\\', or a '\\'")]
    EncodedSeparator,
}

/// Checks that a path, joined to the upstream base, stays inside it: no `.` or `..`
/// segment (also as `%2e`), no encoded `/` or `\` and no `\` (which some servers read
/// as separators after decoding). The URL library would resolve dot segments against
/// the base path and climb out of it; refusing them is simpler than resolving them, and
/// no client of an HTTP API sends them.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    for segment in lower.split('/') {
        let decoded = segment.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
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
        let out = c.forward_headers(&h, "/v1/chat/completions", true);
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
            c.forward_headers(&h, "/v1/models", false)
                .contains_key(header::ACCEPT_ENCODING)
        );
        let out = c.forward_headers(&HeaderMap::new(), "/v1/models", true);
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-proxy");
        for outside in ["/", "/healthz", "/v2/models", "/v1x", "/admin/v1/"] {
            let out = c.forward_headers(&HeaderMap::new(), outside, true);
            assert!(
                !out.contains_key(header::AUTHORIZATION),
                "the proxy's key must not go to {outside}"
            );
        }
    }

    #[test]
    fn paths_stay_inside_the_base() {
        for bad in [
            "/v1/../../x",
            "/v1/%2e%2e/x",
            "/v1/%2E%2e/x",
            "/v1/.%2e/x",
            "/v1/./models",
            "/v1/..",
            "/v1/a%2f..%2fb",
            "/v1/a%5cb",
            "/v1/a\\..\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/v1/models",
            "/v1/files/file-1.jsonl",
            "/v1/a..b",
            "/v1/...",
            "/",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }
}
