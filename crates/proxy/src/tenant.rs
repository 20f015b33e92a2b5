//! Whose entries a request may see: the caller's namespace from its credentials, and the
//! secret that keys it (configured, or generated once into the data directory).

use std::io::Write;
use std::path::Path;

use axum::http::{HeaderMap, header};
use prefixcache_core::config::TenantMode;
use prefixcache_core::key::{Namespace, TenantSecret, hex};

use crate::headers::{OPENAI_ORGANIZATION, OPENAI_PROJECT};

/// Name of the generated secret file inside `store.data_dir`.
pub const SECRET_FILE: &str = "tenant.secret";

/// The caller's namespace. With `api_key`, a keyed hash of everything that identifies
/// the caller to the provider: `Authorization` (or the proxy's own key when the caller
/// sent none), Azure-style `api-key`, `OpenAI-Organization` and `OpenAI-Project`.
pub fn namespace(
    mode: TenantMode,
    secret: &TenantSecret,
    headers: &HeaderMap,
    fallback_authorization: Option<&[u8]>,
) -> Namespace {
    match mode {
        TenantMode::Shared => Namespace::shared(),
        TenantMode::ApiKey => {
            let get = |name| headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
            let authorization = headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .or(fallback_authorization)
                .unwrap_or_default();
            Namespace::for_credential(
                secret,
                &[
                    authorization,
                    get("api-key"),
                    get(OPENAI_ORGANIZATION.as_str()),
                    get(OPENAI_PROJECT.as_str()),
                ],
            )
        }
    }
}

/// Reads `<data_dir>/tenant.secret`, creating it (32 random bytes, hex, mode 0600) on
/// first start. Runs before the server starts, so blocking file I/O is fine here.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => return Ok(s.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than 16 characters", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = hex(&rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
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

    #[test]
    fn namespaces_follow_credentials() {
        let secret = TenantSecret::from_text("0123456789abcdef-secret");
        let mut a = HeaderMap::new();
        a.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-a"),
        );
        let mut b = HeaderMap::new();
        b.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-b"),
        );
        let ns = |h: &HeaderMap| namespace(TenantMode::ApiKey, &secret, h, None);
        assert_ne!(ns(&a), ns(&b));
        let mut a_proj = a.clone();
        a_proj.insert("openai-project", HeaderValue::from_static("proj_x"));
        assert_ne!(ns(&a), ns(&a_proj));
        // The proxy's own key stands in for a missing one.
        let none = HeaderMap::new();
        assert_eq!(
            namespace(TenantMode::ApiKey, &secret, &none, Some(b"Bearer sk-a")),
            ns(&a)
        );
        assert_eq!(
            namespace(TenantMode::Shared, &secret, &a, None),
            namespace(TenantMode::Shared, &secret, &b, None)
        );
    }
}
