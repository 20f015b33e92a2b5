//! Whose entries a request may see: the caller's namespace from every credential it
//! sends, and the secret that keys it (configured, or generated once into the data
//! directory).

use std::io::Write;
use std::path::Path;

use axum::http::{HeaderMap, HeaderName, header};
use prefixcache_core::config::TenantMode;
use prefixcache_core::key::{Namespace, TenantSecret, hex};
use prefixcache_store::private;

/// Name of the generated secret file inside `store.data_dir`.
pub const SECRET_FILE: &str = "tenant.secret";

/// Headers that carry a credential, or select what a credential may see, with the
/// providers that use them. Their values (all of them, in order) enter the namespace.
const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",       // OpenAI, most compatible APIs
    "api-key",             // Azure OpenAI
    "x-api-key",           // Anthropic and many gateways
    "x-goog-api-key",      // Google Gemini
    "openai-organization", // selects the organization the key acts for
    "openai-project",      // selects the project (its own limits and data)
];

/// Query parameters that carry a credential (`?key=` for Gemini, `?api-key=` for some
/// gateways, OAuth's `access_token`, signed-URL signatures). Compared without case.
const CREDENTIAL_PARAMS: [&str; 8] = [
    "key",
    "api-key",
    "api_key",
    "apikey",
    "access_token",
    "token",
    "sig",
    "signature",
];

/// Who a caller is, for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub namespace: Namespace,
    /// The namespace is the caller's alone: tenants are separated (`api_key`) and the
    /// caller sent a secret credential of its own (not only the proxy's fallback key,
    /// nor only an organization or project id).
    /// Responses marked `Cache-Control: private` are stored only then.
    pub own: bool,
}

/// How callers are told apart: the tenant mode, the secret, the proxy's fallback key
/// and the configured extra credential headers.
#[derive(Debug)]
pub struct Tenancy {
    mode: TenantMode,
    secret: TenantSecret,
    /// `Bearer <upstream_api_key>`: the credential of callers that send none.
    fallback_authorization: Option<Vec<u8>>,
    /// `cache.tenant_headers`.
    extra_headers: Vec<HeaderName>,
}

impl Tenancy {
    pub fn new(
        mode: TenantMode,
        secret: TenantSecret,
        fallback_authorization: Option<Vec<u8>>,
        extra_headers: Vec<HeaderName>,
    ) -> Tenancy {
        Tenancy {
            mode,
            secret,
            fallback_authorization,
            extra_headers,
        }
    }

    /// The caller of a request. With `api_key`, a keyed hash of every credential it
    /// sends: the [`CREDENTIAL_HEADERS`] (the proxy's fallback key standing in for a
    /// missing `Authorization`), `cache.tenant_headers`, and the credential query
    /// parameters. The raw credentials are never stored.
    pub fn caller(&self, headers: &HeaderMap, query: Option<&str>) -> Caller {
        if self.mode == TenantMode::Shared {
            return Caller {
                namespace: Namespace::shared(),
                own: false,
            };
        }
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(CREDENTIAL_HEADERS.len() + 2);
        let mut own = false;
        let names = CREDENTIAL_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n))
            .chain(self.extra_headers.iter().cloned());
        for name in names {
            // Organization and project select what a key may see; they are no secret,
            // so they alone do not make a namespace the caller's own.
            let secret = name != "openai-organization" && name != "openai-project";
            let mut part = Vec::new();
            for value in headers.get_all(&name) {
                // Length-prefixed, so ["ab"] and ["a", "b"] differ.
                part.extend_from_slice(&(value.len() as u64).to_le_bytes());
                part.extend_from_slice(value.as_bytes());
                own |= secret;
            }
            if part.is_empty()
                && name == header::AUTHORIZATION
                && let Some(fallback) = &self.fallback_authorization
            {
                part.extend_from_slice(&(fallback.len() as u64).to_le_bytes());
                part.extend_from_slice(fallback);
            }
            parts.push(part);
        }
        let mut params: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                CREDENTIAL_PARAMS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name))
            })
            .collect();
        // The order of parameters does not change who the caller is.
        params.sort_unstable();
        own |= !params.is_empty();
        let mut query_part = Vec::new();
        for p in params {
            query_part.extend_from_slice(&(p.len() as u64).to_le_bytes());
            query_part.extend_from_slice(p.as_bytes());
        }
        parts.push(query_part);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Caller {
            namespace: Namespace::for_credential(&self.secret, &refs),
            own,
        }
    }
}

/// Reads `<data_dir>/tenant.secret`, creating it (32 random bytes, hex, mode 0600, in a
/// 0700 directory) on first start; an existing file is narrowed to 0600. Runs before
/// the server starts, so blocking file I/O is fine here.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => {
            private::create_dir(data_dir)?;
            private::restrict(&path)?;
            return Ok(s.trim().to_string());
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than 16 characters", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    private::create_dir(data_dir)?;
    let secret = hex(&rand::random::<[u8; 32]>());
    match private::options().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret)
        }
        // Another process created it between our read and create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_string())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn secret_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    fn tenancy(extra: &[&'static str]) -> Tenancy {
        Tenancy::new(
            TenantMode::ApiKey,
            TenantSecret::from_text("0123456789abcdef-secret"),
            Some(b"Bearer sk-proxy".to_vec()),
            extra.iter().map(|h| HeaderName::from_static(h)).collect(),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn every_credential_separates_callers() {
        let t = tenancy(&["x-my-key"]);
        let ns = |pairs: &[(&'static str, &'static str)], q: Option<&str>| {
            t.caller(&headers(pairs), q).namespace
        };
        let base = ns(&[("authorization", "Bearer sk-a")], None);
        assert_ne!(base, ns(&[("authorization", "Bearer sk-b")], None));
        for name in [
            "api-key",
            "x-api-key",
            "x-goog-api-key",
            "openai-organization",
            "openai-project",
            "x-my-key",
        ] {
            let one = ns(&[("authorization", "Bearer sk-a"), (name, "1")], None);
            let two = ns(&[("authorization", "Bearer sk-a"), (name, "2")], None);
            assert_ne!(one, base, "{name}");
            assert_ne!(one, two, "{name}");
        }
        // a header that is no credential does not split callers
        assert_eq!(
            base,
            ns(
                &[("authorization", "Bearer sk-a"), ("x-request-id", "1")],
                None
            )
        );
        // the same value under another credential header is another caller
        assert_ne!(
            ns(&[("x-api-key", "k")], None),
            ns(&[("api-key", "k")], None)
        );
        // query credentials, in any order and case; other parameters do not count
        let q = |s| ns(&[("authorization", "Bearer sk-a")], Some(s));
        assert_ne!(q("key=1"), q("key=2"));
        assert_ne!(q("api-key=1"), base);
        assert_eq!(q("api-version=1"), base);
        assert_eq!(q("KEY=1&api-version=2"), q("api-version=2&KEY=1"));
        // repeated header values are all part of the credential
        assert_ne!(
            ns(&[("x-api-key", "a"), ("x-api-key", "b")], None),
            ns(&[("x-api-key", "a")], None)
        );
    }

    #[test]
    fn the_fallback_key_stands_in_but_is_not_the_callers_own() {
        let t = tenancy(&[]);
        let none = t.caller(&HeaderMap::new(), None);
        let explicit = t.caller(&headers(&[("authorization", "Bearer sk-proxy")]), None);
        assert_eq!(none.namespace, explicit.namespace);
        assert!(!none.own && explicit.own);
        assert!(t.caller(&HeaderMap::new(), Some("key=abc")).own);
        assert!(
            !t.caller(&headers(&[("openai-project", "proj_1")]), None)
                .own,
            "a project id is no secret"
        );
        let shared = Tenancy::new(
            TenantMode::Shared,
            TenantSecret::from_text("0123456789abcdef-secret"),
            None,
            vec![],
        );
        let a = shared.caller(&headers(&[("authorization", "Bearer sk-a")]), None);
        let b = shared.caller(&headers(&[("authorization", "Bearer sk-b")]), None);
        assert_eq!(a, b);
        assert!(!a.own, "a shared namespace is nobody's own");
    }
}
