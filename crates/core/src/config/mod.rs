//! `prefixcache.toml`: the raw file as serde reads it, the layering of file, environment
//! and flags, and the validated [`Config`] the rest of the program uses.
//!
//! Precedence is flag > env (`PREFIXCACHE_<KEY>`) > file > default. Layering happens on
//! the TOML table before validation, so every source goes through the same checks and
//! errors name the key the user wrote.
//!
//! ```
//! use prefixcache_core::config::{Config, Layers};
//!
//! let toml = r#"
//! upstream = "http://127.0.0.1:9000"
//! [store]
//! kind = "memory"
//! [strategies.docs]
//! match = { model = "gpt-4o*" }
//! ttl = "48h"
//! "#;
//! let layers = Layers { file: Some(toml.to_string()), env: vec![], flags: vec![] };
//! let config = Config::load(layers).unwrap();
//! assert_eq!(config.upstream.as_str(), "http://127.0.0.1:9000");
//! assert_eq!(config.strategy_for(None, "gpt-4o-mini", "/v1/chat/completions").unwrap().name, "docs");
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod limits;

pub use limits::Limits;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// No delay by default: a process run by hand stops at once; orchestrated deployments
/// set it (the container manifests in `deploy/` use 5 s).
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub const DEFAULT_DATA_DIR: &str = ".prefixcache";
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_DISK_BYTES: u64 = 4 * 1024 * 1024 * 1024;
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_PREFIX_GRANULARITY: usize = 50;
pub const DEFAULT_MIN_PREFIX_TOKENS: usize = 20;
pub const DEFAULT_LOG_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_LOG_KEEP: usize = 5;
pub const DEFAULT_LOG_QUEUE_BYTES: u64 = 64 * 1024 * 1024;
/// Name of the strategy used when no configured one matches.
pub const DEFAULT_STRATEGY: &str = "default";
/// Prefix of every environment variable that sets a config key.
pub const ENV_PREFIX: &str = "PREFIXCACHE_";

/// Sections whose scalar keys can be set from the environment as
/// `PREFIXCACHE_<SECTION>_<KEY>`. Strategies are tables of tables and are file-only.
const ENV_SECTIONS: [&str; 6] = ["store", "cache", "log", "admin", "pricing", "limits"];

/// Every scalar key an environment variable may set. Other `PREFIXCACHE_*` variables
/// belong to other tools (`PREFIXCACHE_PYTHON` of the test suite, `PREFIXCACHE_REPLAY_*`
/// of `replay --live`): they are reported in [`Config::ignored_env`], not rejected.
pub const ENV_KEYS: [&str; 43] = [
    "listen",
    "upstream",
    "upstream_api_key",
    "upstream_timeout",
    "connect_timeout",
    "upstream_proxy",
    "upstream_ca_file",
    "upstream_native_roots",
    "upstream_client_cert",
    "upstream_client_key",
    "drain_timeout",
    "shutdown_delay",
    "max_body_bytes",
    "store.kind",
    "store.data_dir",
    "store.memory_bytes",
    "store.memory_ttl",
    "store.disk_bytes",
    "store.redis_url",
    "store.timeout",
    "cache.tenant",
    "cache.tenant_secret",
    "cache.tenant_headers",
    "cache.default_ttl",
    "cache.stream_finish_timeout",
    "log.path",
    "log.max_bytes",
    "log.keep",
    "log.format",
    "log.queue_bytes",
    "admin.listen",
    "admin.token",
    "pricing.file",
    "limits.header_read_timeout",
    "limits.body_read_timeout",
    "limits.body_min_rate",
    "limits.idle_timeout",
    "limits.http2_keep_alive_interval",
    "limits.http2_keep_alive_timeout",
    "limits.max_connections",
    "limits.max_requests_in_flight",
    "limits.max_body_bytes_in_flight",
    "limits.max_response_bytes",
];

/// A configuration problem, phrased so the user knows which key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file is not valid TOML: {0}")]
    Toml(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("`{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::Toml(_) => "toml",
            ConfigError::Invalid(_) => "invalid",
            ConfigError::Key { .. } => "key",
        }
    }
}

/// The sources of configuration, lowest precedence first within each field:
/// the file's text, then `(KEY, value)` environment pairs, then `(dotted.key, value)` flags.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// Contents of the config file, if one was found.
    pub file: Option<String>,
    /// Environment variables (all of them, or a filtered list); only `PREFIXCACHE_*` are read.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as dotted keys, e.g. `("store.kind", "memory")`.
    pub flags: Vec<(String, String)>,
}

/// A number or a string in TOML; sizes and durations accept both (`32MiB`, `33554432`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Str(String),
}

impl Scalar {
    fn size(&self, key: &str) -> Result<u64, ConfigError> {
        match self {
            Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
            Scalar::Int(_) => Err(ConfigError::key(key, "must not be negative")),
            Scalar::Str(s) => parse_size(s).map_err(|m| ConfigError::key(key, m)),
        }
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            Scalar::Int(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
            Scalar::Int(_) => Err(ConfigError::key(key, "must not be negative")),
            Scalar::Str(s) => parse_duration(s).map_err(|m| ConfigError::key(key, m)),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        match self {
            Scalar::Int(n) if *n >= 0 => Ok(*n as usize),
            Scalar::Int(_) => Err(ConfigError::key(key, "must not be negative")),
            Scalar::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| ConfigError::key(key, format!("expected a whole number, got {s:?}"))),
        }
    }
}

/// A list of strings in TOML, or one comma-separated string (as an environment variable
/// gives it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StringList {
    List(Vec<String>),
    Str(String),
}

impl StringList {
    fn items(&self) -> Vec<String> {
        let raw: Vec<&str> = match self {
            StringList::List(v) => v.iter().map(String::as_str).collect(),
            StringList::Str(s) => s.split(',').collect(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `32MiB`, `4GiB`, `1.5 GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("expected a size like \"32MiB\" or a number of bytes, got {s:?}"))
}

/// Parses a duration: `50ms`, `24h`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("expected a duration like \"50ms\", \"24h\" or seconds, got {s:?}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    upstream: Option<String>,
    upstream_api_key: Option<String>,
    upstream_timeout: Option<Scalar>,
    connect_timeout: Option<Scalar>,
    upstream_proxy: Option<String>,
    upstream_ca_file: Option<String>,
    upstream_native_roots: Option<bool>,
    upstream_client_cert: Option<String>,
    upstream_client_key: Option<String>,
    drain_timeout: Option<Scalar>,
    shutdown_delay: Option<Scalar>,
    max_body_bytes: Option<Scalar>,
    store: RawStore,
    cache: RawCache,
    log: RawLog,
    admin: RawAdmin,
    pricing: RawPricing,
    limits: limits::RawLimits,
    strategies: BTreeMap<String, RawStrategy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    data_dir: Option<String>,
    memory_bytes: Option<Scalar>,
    memory_ttl: Option<Scalar>,
    disk_bytes: Option<Scalar>,
    redis_url: Option<String>,
    timeout: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCache {
    tenant: Option<String>,
    tenant_secret: Option<String>,
    tenant_headers: Option<StringList>,
    default_ttl: Option<Scalar>,
    stream_finish_timeout: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    path: Option<String>,
    max_bytes: Option<Scalar>,
    keep: Option<Scalar>,
    format: Option<String>,
    queue_bytes: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
}

/// `[pricing]`: a pricing file and/or inline models, both overriding the built-in table.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPricing {
    file: Option<String>,
    models: std::collections::HashMap<String, crate::pricing::RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStrategy {
    #[serde(rename = "match")]
    matcher: Option<RawMatch>,
    prefix_granularity: Option<Scalar>,
    min_prefix_tokens: Option<Scalar>,
    ttl: Option<Scalar>,
    max_ttl: Option<Scalar>,
    key_mode: Option<String>,
    cache_sampled: Option<bool>,
    prompt_cache_key: Option<String>,
    breakpoints: Option<String>,
    normalize_whitespace: Option<bool>,
    annotate_body: Option<bool>,
    template: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMatch {
    model: Option<String>,
    path: Option<String>,
}

/// Which backend holds the cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In-process only (moka); lost on restart.
    Memory,
    /// Embedded redb file under `data_dir`, with a memory tier in front (the default).
    Disk,
    /// Redis or Redis Cluster, shared by replicas, with a memory tier in front.
    Redis,
}

impl StoreKind {
    pub fn parse(s: &str) -> Result<StoreKind, String> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "disk" => Ok(StoreKind::Disk),
            "redis" => Ok(StoreKind::Redis),
            other => Err(format!("expected memory, disk or redis, got {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Disk => "disk",
            StoreKind::Redis => "redis",
        }
    }
}

/// Whose entries a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantMode {
    /// Entries are private to the caller's credential (the default).
    ApiKey,
    /// One namespace for everyone: only when the proxy authenticates callers itself.
    Shared,
}

/// How a strategy turns a request into a cache slot (`docs/design.md`, "Cache keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// One entry per canonical request (the default).
    Exact,
    /// The article's design: one slot per prefix family, full-hash check, overwrite on miss.
    Prefix,
}

impl KeyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Exact => "exact",
            KeyMode::Prefix => "prefix",
        }
    }
}

/// What `prompt_cache_key` the proxy adds to forwarded requests that carry none
/// (`docs/design.md`, "The provider's routing key").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptCacheKeyMode {
    /// Per family, from its observed shape (the default): `Conversation` for busy
    /// families of growing conversations, `Family` otherwise
    /// (`breakpoint::learn::KeyShape`).
    Auto,
    /// Derived from tools + system/developer messages + the first user message.
    Conversation,
    /// Derived from the prefix family.
    Family,
    /// None added.
    Off,
}

impl PromptCacheKeyMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PromptCacheKeyMode::Auto),
            "conversation" => Ok(PromptCacheKeyMode::Conversation),
            "family" => Ok(PromptCacheKeyMode::Family),
            "off" => Ok(PromptCacheKeyMode::Off),
            other => Err(format!(
                "expected auto, conversation, family or off, got {other:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PromptCacheKeyMode::Auto => "auto",
            PromptCacheKeyMode::Conversation => "conversation",
            PromptCacheKeyMode::Family => "family",
            PromptCacheKeyMode::Off => "off",
        }
    }
}

/// Whether the proxy places prompt-cache breakpoints on requests that carry none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakpointsMode {
    /// Where the family's learned boundary pays for its writes, on models that accept
    /// explicit breakpoints (the default; other models are never touched).
    Auto,
    /// Never.
    Off,
}

impl BreakpointsMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BreakpointsMode::Auto),
            "off" => Ok(BreakpointsMode::Off),
            other => Err(format!("expected auto or off, got {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakpointsMode::Auto => "auto",
            BreakpointsMode::Off => "off",
        }
    }
}

/// Log line format for the server's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A strategy: a named caching policy for one kind of traffic (`docs/configuration.md`).
#[derive(Debug, Clone)]
pub struct Strategy {
    pub name: String,
    /// Glob on the request's `model` (`*` and `?`), if any.
    pub match_model: Option<String>,
    /// Glob on the request path, if any.
    pub match_path: Option<String>,
    pub prefix_granularity: usize,
    pub min_prefix_tokens: usize,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub key_mode: KeyMode,
    /// Cache requests that sample (temperature absent or > 0). Default true.
    pub cache_sampled: bool,
    pub prompt_cache_key: PromptCacheKeyMode,
    pub breakpoints: BreakpointsMode,
    pub normalize_whitespace: bool,
    pub annotate_body: bool,
    pub template: Option<String>,
}

impl Strategy {
    /// The built-in `default` strategy, with the cache's default TTL.
    pub fn default_with_ttl(ttl: Duration) -> Strategy {
        Strategy {
            name: DEFAULT_STRATEGY.to_string(),
            match_model: None,
            match_path: None,
            prefix_granularity: DEFAULT_PREFIX_GRANULARITY,
            min_prefix_tokens: DEFAULT_MIN_PREFIX_TOKENS,
            ttl,
            max_ttl: DEFAULT_MAX_TTL.max(ttl),
            key_mode: KeyMode::Exact,
            cache_sampled: true,
            prompt_cache_key: PromptCacheKeyMode::Auto,
            breakpoints: BreakpointsMode::Auto,
            normalize_whitespace: false,
            annotate_body: false,
            template: None,
        }
    }

    /// Whether this strategy's matcher accepts the request. A strategy with no matcher
    /// is chosen only by name (header) or as `default`.
    pub fn matches(&self, model: &str, path: &str) -> bool {
        if self.match_model.is_none() && self.match_path.is_none() {
            return false;
        }
        self.match_model
            .as_deref()
            .is_none_or(|g| glob_match(g, model))
            && self
                .match_path
                .as_deref()
                .is_none_or(|g| glob_match(g, path))
    }

    /// TTL for one entry: the caller's `x-prefixcache-ttl` if given, capped by `max_ttl`.
    pub fn effective_ttl(&self, requested: Option<Duration>) -> Duration {
        requested.unwrap_or(self.ttl).min(self.max_ttl)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base URL of the upstream API, without a trailing slash.
    pub upstream: Upstream,
    /// Sent as `Authorization: Bearer ...` when the caller sends no credential.
    pub upstream_api_key: Option<String>,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    /// How the upstream is reached: HTTP(S) proxy, trusted CAs, client certificate.
    pub egress: Egress,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long the proxy keeps serving with `/readyz` failing before it
    /// stops accepting: the time a load balancer needs to stop sending it traffic.
    pub shutdown_delay: Duration,
    pub max_body_bytes: u64,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub pricing: PricingConfig,
    /// `[limits]`: connections, requests, bytes and time a client may hold.
    pub limits: Limits,
    /// Configured strategies in name order, then `default` (always present).
    pub strategies: Vec<Strategy>,
    /// `PREFIXCACHE_*` environment variables that set no config key (shown as a warning
    /// by `serve`: a typo such as `PREFIXCACHE_STORE_KIDN` is ignored, not fatal).
    pub ignored_env: Vec<String>,
}

/// The upstream base URL, validated to be http(s) with no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream(String);

impl Upstream {
    pub fn parse(s: &str) -> Result<Upstream, String> {
        let t = s.trim().trim_end_matches('/');
        let rest = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
            .ok_or_else(|| format!("expected an http:// or https:// URL, got {s:?}"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("URL has no host: {s:?}"));
        }
        Ok(Upstream(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL for logs and messages: user information (`user:password@`) replaced by
    /// `***`, query string and fragment dropped, since either may carry a credential.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// A URL with its user information masked and its query and fragment removed.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// Which HTTP(S) proxy, if any, upstream calls go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamProxy {
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (or their lower-case forms) and
    /// `NO_PROXY` from the environment, as curl reads them (the default).
    FromEnv,
    /// Direct connections, whatever the environment says (`upstream_proxy = "none"`).
    Off,
    /// This proxy for every upstream call but the hosts `NO_PROXY` names.
    Url(String),
}

/// How the proxy reaches its upstream: the proxy in between, whose certificates it
/// trusts, and the certificate it presents. The files are read when the upstream client
/// is built (at start-up), not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub proxy: UpstreamProxy,
    /// Extra trusted CA certificates (PEM bundle), beside the bundled Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Also trust the operating system's certificate store.
    pub native_roots: bool,
    /// Client certificate chain (PEM) for an mTLS upstream, with its key.
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Egress {
    fn validate(raw: &RawConfig) -> Result<Egress, ConfigError> {
        let proxy = match raw.upstream_proxy.as_deref().map(str::trim) {
            None | Some("") => UpstreamProxy::FromEnv,
            Some("none") => UpstreamProxy::Off,
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::key(
                        "upstream_proxy",
                        format!(
                            "expected an http:// or https:// proxy URL, or \"none\", got {:?}",
                            redact_url(url)
                        ),
                    ));
                }
                UpstreamProxy::Url(url.to_string())
            }
        };
        let path = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        let client_cert = path(&raw.upstream_client_cert);
        let client_key = path(&raw.upstream_client_key);
        match (&client_cert, &client_key) {
            (Some(_), None) => {
                return Err(ConfigError::key(
                    "upstream_client_key",
                    "is required with upstream_client_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    "upstream_client_cert",
                    "is required with upstream_client_key",
                ));
            }
            _ => {}
        }
        Ok(Egress {
            proxy,
            ca_file: path(&raw.upstream_ca_file),
            native_roots: raw.upstream_native_roots.unwrap_or(false),
            client_cert,
            client_key,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub data_dir: PathBuf,
    pub memory_bytes: u64,
    /// Freshness bound of the memory tier in front of a shared (Redis) store.
    pub memory_ttl: Duration,
    pub disk_bytes: u64,
    pub redis_url: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub tenant: TenantMode,
    /// Secret for the keyed hash of credentials; generated into `data_dir` when absent.
    pub tenant_secret: Option<String>,
    /// Extra request headers that carry a credential (lower-case names), added to the
    /// built-in list when deriving a caller's namespace.
    pub tenant_headers: Vec<String>,
    pub default_ttl: Duration,
    /// After a client disconnects mid-stream, how long the proxy keeps reading the
    /// upstream response so it can be stored.
    pub stream_finish_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Request log (JSON lines, `docs/request-log.md`), if enabled.
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub keep: usize,
    pub format: LogFormat,
    /// Bytes of lines waiting for the writer thread; beyond it lines are dropped
    /// (counted) rather than held.
    pub queue_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
}

/// `[pricing]`: where prices come from. The built-in table, then `file` (read by the
/// binary: this crate does no I/O), then the inline `models`, later ones replacing whole
/// entries of earlier ones.
#[derive(Debug, Clone, Default)]
pub struct PricingConfig {
    /// A pricing file in the format of the built-in `pricing.toml`.
    pub file: Option<PathBuf>,
    /// Inline `[pricing.models."name"]` entries, validated.
    pub models: crate::pricing::PriceTable,
}

impl PricingConfig {
    /// The effective table, given the text of `file` (when one is configured).
    pub fn table(
        &self,
        file_text: Option<&str>,
    ) -> Result<crate::pricing::PriceTable, crate::pricing::PricingError> {
        let builtin = crate::pricing::PriceTable::builtin();
        let with_file = match file_text {
            Some(text) => builtin.merged(&crate::pricing::PriceTable::from_toml(text)?),
            None => builtin.clone(),
        };
        Ok(with_file.merged(&self.models))
    }
}

impl Config {
    /// Merges the layers, then validates.
    pub fn load(layers: Layers) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match &layers.file {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?,
            None => toml::Table::new(),
        };
        let mut ignored_env = Vec::new();
        for (name, value) in &layers.env {
            match env_key_path(name) {
                Some(path) if ENV_KEYS.contains(&path.as_str()) => {
                    set_dotted(&mut table, &path, value)?;
                }
                Some(_) => ignored_env.push(name.clone()),
                None => {}
            }
        }
        for (dotted, value) in &layers.flags {
            set_dotted(&mut table, dotted, value)?;
        }
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        let mut config = raw.validate()?;
        config.ignored_env = ignored_env;
        Ok(config)
    }

    /// The defaults, as `serve` runs with no file, env or flags.
    pub fn defaults() -> Config {
        #[allow(clippy::expect_used)] // the empty layering is covered by a unit test
        Config::load(Layers::default()).expect("defaults are valid")
    }

    /// Picks the strategy for a request: by name (header) if given, else the first
    /// configured matcher, else `default`. An unknown name is an error (400 upstream).
    pub fn strategy_for(
        &self,
        by_name: Option<&str>,
        model: &str,
        path: &str,
    ) -> Result<&Strategy, String> {
        if let Some(name) = by_name {
            return self.strategy(name).ok_or_else(|| {
                let known: Vec<&str> = self.strategies.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "unknown strategy {name:?}; configured: {}",
                    known.join(", ")
                )
            });
        }
        Ok(self
            .strategies
            .iter()
            .find(|s| s.matches(model, path))
            .unwrap_or_else(|| self.default_strategy()))
    }

    /// A strategy by name.
    pub fn strategy(&self, name: &str) -> Option<&Strategy> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// The `default` strategy (always present after validation).
    pub fn default_strategy(&self) -> &Strategy {
        // validate() guarantees `default` is last.
        &self.strategies[self.strategies.len() - 1]
    }
}

/// Maps `PREFIXCACHE_STORE_REDIS_URL` to `store.redis_url`, `PREFIXCACHE_LISTEN` to `listen`.
fn env_key_path(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
    if rest.is_empty() || rest == "config" {
        return None;
    }
    for section in ENV_SECTIONS {
        if let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            return Some(format!("{section}.{key}"));
        }
    }
    Some(rest)
}

/// Sets `a.b = value` in the table; the value is kept as a string, or as an integer when
/// it is one (sizes, durations and counts accept both).
fn set_dotted(table: &mut toml::Table, dotted: &str, value: &str) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else {
        return Err(ConfigError::Invalid(format!("empty key {dotted:?}")));
    };
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            ConfigError::key(
                dotted,
                format!("`{part}` is not a table in the config file"),
            )
        })?;
    }
    let v = match value.parse::<i64>() {
        Ok(n) => toml::Value::Integer(n),
        Err(_) => match value {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => toml::Value::String(value.to_string()),
        },
    };
    cur.insert(last.to_string(), v);
    Ok(())
}

fn opt<T>(
    v: &Option<Scalar>,
    key: &str,
    f: impl Fn(&Scalar, &str) -> Result<T, ConfigError>,
    default: T,
) -> Result<T, ConfigError> {
    match v {
        Some(s) => f(s, key),
        None => Ok(default),
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen_s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            ConfigError::key(
                "listen",
                format!("expected host:port like 127.0.0.1:8080, got {listen_s:?}"),
            )
        })?;
        let upstream = Upstream::parse(self.upstream.as_deref().unwrap_or(DEFAULT_UPSTREAM))
            .map_err(|m| ConfigError::key("upstream", m))?;
        let upstream_timeout = opt(
            &self.upstream_timeout,
            "upstream_timeout",
            Scalar::duration,
            DEFAULT_UPSTREAM_TIMEOUT,
        )?;
        let connect_timeout = opt(
            &self.connect_timeout,
            "connect_timeout",
            Scalar::duration,
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let drain_timeout = opt(
            &self.drain_timeout,
            "drain_timeout",
            Scalar::duration,
            DEFAULT_DRAIN_TIMEOUT,
        )?;
        let shutdown_delay = opt(
            &self.shutdown_delay,
            "shutdown_delay",
            Scalar::duration,
            DEFAULT_SHUTDOWN_DELAY,
        )?;
        let egress = Egress::validate(&self)?;
        let max_body_bytes = opt(
            &self.max_body_bytes,
            "max_body_bytes",
            Scalar::size,
            DEFAULT_MAX_BODY_BYTES,
        )?;
        if max_body_bytes == 0 {
            return Err(ConfigError::key("max_body_bytes", "must be greater than 0"));
        }

        let s = &self.store;
        let store = StoreConfig {
            kind: StoreKind::parse(s.kind.as_deref().unwrap_or("disk"))
                .map_err(|m| ConfigError::key("store.kind", m))?,
            data_dir: PathBuf::from(s.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)),
            memory_bytes: opt(
                &s.memory_bytes,
                "store.memory_bytes",
                Scalar::size,
                DEFAULT_MEMORY_BYTES,
            )?,
            memory_ttl: opt(
                &s.memory_ttl,
                "store.memory_ttl",
                Scalar::duration,
                Duration::from_secs(10),
            )?,
            disk_bytes: opt(
                &s.disk_bytes,
                "store.disk_bytes",
                Scalar::size,
                DEFAULT_DISK_BYTES,
            )?,
            redis_url: s
                .redis_url
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string()),
            timeout: opt(
                &s.timeout,
                "store.timeout",
                Scalar::duration,
                DEFAULT_STORE_TIMEOUT,
            )?,
        };
        if store.timeout.is_zero() {
            return Err(ConfigError::key("store.timeout", "must be greater than 0"));
        }
        if !(store.redis_url.starts_with("redis://")
            || store.redis_url.starts_with("rediss://")
            || store.redis_url.starts_with("redis+cluster://")
            || store.redis_url.starts_with("rediss+cluster://"))
        {
            return Err(ConfigError::key(
                "store.redis_url",
                "expected redis://, rediss://, redis+cluster:// or rediss+cluster://",
            ));
        }

        let c = &self.cache;
        let cache = CacheConfig {
            tenant: match c.tenant.as_deref().unwrap_or("api_key") {
                "api_key" => TenantMode::ApiKey,
                "shared" => TenantMode::Shared,
                other => {
                    return Err(ConfigError::key(
                        "cache.tenant",
                        format!("expected api_key or shared, got {other:?}"),
                    ));
                }
            },
            // Trimmed here, as the key is derived from the trimmed text.
            tenant_secret: c
                .tenant_secret
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            tenant_headers: c
                .tenant_headers
                .as_ref()
                .map(StringList::items)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            default_ttl: opt(
                &c.default_ttl,
                "cache.default_ttl",
                Scalar::duration,
                DEFAULT_TTL,
            )?,
            stream_finish_timeout: opt(
                &c.stream_finish_timeout,
                "cache.stream_finish_timeout",
                Scalar::duration,
                Duration::from_secs(120),
            )?,
        };
        if let Some(h) = cache.tenant_headers.iter().find(|h| !is_header_name(h)) {
            return Err(ConfigError::key(
                "cache.tenant_headers",
                format!("{h:?} is not a valid header name"),
            ));
        }
        if let Some(secret) = &cache.tenant_secret
            && secret.chars().count() < 16
        {
            return Err(ConfigError::key(
                "cache.tenant_secret",
                "must be at least 16 characters (use 32+ random bytes, hex-encoded)",
            ));
        }

        let l = &self.log;
        let log = LogConfig {
            path: l
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            max_bytes: opt(
                &l.max_bytes,
                "log.max_bytes",
                Scalar::size,
                DEFAULT_LOG_MAX_BYTES,
            )?,
            keep: opt(&l.keep, "log.keep", Scalar::usize, DEFAULT_LOG_KEEP)?,
            queue_bytes: opt(
                &l.queue_bytes,
                "log.queue_bytes",
                Scalar::size,
                DEFAULT_LOG_QUEUE_BYTES,
            )?,
            format: match l.format.as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::key(
                        "log.format",
                        format!("expected text or json, got {other:?}"),
                    ));
                }
            },
        };

        let admin = AdminConfig {
            listen: match self.admin.listen.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    ConfigError::key("admin.listen", format!("expected host:port, got {a:?}"))
                })?),
            },
            token: self.admin.token.clone().filter(|t| !t.is_empty()),
        };
        if let Some(addr) = admin.listen
            && admin.token.is_none()
            && !addr.ip().is_loopback()
        {
            // Purge and the dashboard (which shows every tenant's families) must not be
            // open to the network; on loopback only this host can reach them.
            return Err(ConfigError::key(
                "admin.listen",
                format!(
                    "{addr} is reachable from other hosts, and admin.token is not set: \
                     set admin.token (PREFIXCACHE_ADMIN_TOKEN), or bind the admin listener \
                     to 127.0.0.1 or [::1]"
                ),
            ));
        }

        let pricing = PricingConfig {
            file: self
                .pricing
                .file
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            models: crate::pricing::PriceTable::from_raw(self.pricing.models).map_err(
                |e| match e {
                    crate::pricing::PricingError::Invalid { model, message } => {
                        ConfigError::key(format!("pricing.models.\"{model}\""), message)
                    }
                    other => ConfigError::key("pricing.models", other.to_string()),
                },
            )?,
        };

        let limits = self.limits.validate(max_body_bytes)?;

        let mut strategies = Vec::with_capacity(self.strategies.len() + 1);
        let mut default = Strategy::default_with_ttl(cache.default_ttl);
        for (name, raw) in self.strategies {
            let strategy = raw.validate(&name, cache.default_ttl)?;
            if name == DEFAULT_STRATEGY {
                // `[strategies.default]` overrides the built-in default's settings.
                default = strategy;
            } else {
                strategies.push(strategy);
            }
        }
        strategies.push(default);

        Ok(Config {
            listen,
            upstream,
            upstream_api_key: self.upstream_api_key.filter(|k| !k.is_empty()),
            upstream_timeout,
            connect_timeout,
            egress,
            drain_timeout,
            shutdown_delay,
            max_body_bytes,
            store,
            cache,
            log,
            admin,
            pricing,
            limits,
            strategies,
            ignored_env: Vec::new(),
        })
    }
}

impl RawStrategy {
    fn validate(self, name: &str, default_ttl: Duration) -> Result<Strategy, ConfigError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(ConfigError::key(
                format!("strategies.{name}"),
                "strategy names may use letters, digits, '_', '-' and '.'",
            ));
        }
        let k = |field: &str| format!("strategies.{name}.{field}");
        let ttl = opt(&self.ttl, &k("ttl"), Scalar::duration, default_ttl)?;
        let max_ttl = opt(
            &self.max_ttl,
            &k("max_ttl"),
            Scalar::duration,
            DEFAULT_MAX_TTL.max(ttl),
        )?;
        if ttl > max_ttl {
            return Err(ConfigError::key(k("ttl"), "is longer than max_ttl"));
        }
        let prefix_granularity = opt(
            &self.prefix_granularity,
            &k("prefix_granularity"),
            Scalar::usize,
            DEFAULT_PREFIX_GRANULARITY,
        )?;
        if prefix_granularity == 0 {
            return Err(ConfigError::key(
                k("prefix_granularity"),
                "must be at least 1 token",
            ));
        }
        let (match_model, match_path) = match self.matcher {
            Some(m) => (m.model, m.path),
            None => (None, None),
        };
        Ok(Strategy {
            name: name.to_string(),
            match_model,
            match_path,
            prefix_granularity,
            min_prefix_tokens: opt(
                &self.min_prefix_tokens,
                &k("min_prefix_tokens"),
                Scalar::usize,
                DEFAULT_MIN_PREFIX_TOKENS,
            )?,
            ttl,
            max_ttl,
            key_mode: match self.key_mode.as_deref().unwrap_or("exact") {
                "exact" => KeyMode::Exact,
                "prefix" => KeyMode::Prefix,
                other => {
                    return Err(ConfigError::key(
                        k("key_mode"),
                        format!("expected exact or prefix, got {other:?}"),
                    ));
                }
            },
            cache_sampled: self.cache_sampled.unwrap_or(true),
            prompt_cache_key: PromptCacheKeyMode::parse(
                self.prompt_cache_key.as_deref().unwrap_or("auto"),
            )
            .map_err(|m| ConfigError::key(k("prompt_cache_key"), m))?,
            breakpoints: BreakpointsMode::parse(self.breakpoints.as_deref().unwrap_or("auto"))
                .map_err(|m| ConfigError::key(k("breakpoints"), m))?,
            normalize_whitespace: self.normalize_whitespace.unwrap_or(false),
            annotate_body: self.annotate_body.unwrap_or(false),
            template: self.template,
        })
    }
}

/// An HTTP header name (RFC 9110 token characters).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Glob with `*` (any run) and `?` (one character); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str) -> Result<Config, ConfigError> {
        Config::load(Layers {
            file: Some(file.to_string()),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.upstream.as_str(), DEFAULT_UPSTREAM);
        assert_eq!(c.store.kind, StoreKind::Disk);
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.cache.tenant, TenantMode::ApiKey);
        assert_eq!(c.cache.default_ttl, Duration::from_secs(86400));
        assert_eq!(c.strategies.len(), 1);
        assert_eq!(c.default_strategy().name, "default");
        assert_eq!(c.default_strategy().prefix_granularity, 50);
        assert_eq!(c.default_strategy().min_prefix_tokens, 20);
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let c = Config::load(Layers {
            file: Some(
                "listen = \"127.0.0.1:1\"\n[store]\nkind = \"redis\"\ntimeout = \"10ms\"".into(),
            ),
            env: vec![
                ("PREFIXCACHE_LISTEN".into(), "127.0.0.1:2".into()),
                ("PREFIXCACHE_STORE_KIND".into(), "memory".into()),
                ("PREFIXCACHE_CACHE_DEFAULT_TTL".into(), "1h".into()),
                ("UNRELATED".into(), "x".into()),
            ],
            flags: vec![("listen".into(), "127.0.0.1:3".into())],
        })
        .unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.store.kind, StoreKind::Memory);
        assert_eq!(c.store.timeout, Duration::from_millis(10));
        assert_eq!(c.cache.default_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn other_tools_prefixcache_variables_are_reported_not_rejected() {
        let c = Config::load(Layers {
            env: vec![
                ("PREFIXCACHE_PYTHON".into(), "/usr/bin/python3".into()),
                ("PREFIXCACHE_STORE_KIDN".into(), "memory".into()),
                ("PREFIXCACHE_CONFIG".into(), "x.toml".into()),
                ("PREFIXCACHE_STORE_KIND".into(), "memory".into()),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.store.kind, StoreKind::Memory);
        assert_eq!(
            c.ignored_env,
            vec!["PREFIXCACHE_PYTHON", "PREFIXCACHE_STORE_KIDN"]
        );
    }

    #[test]
    fn every_env_key_is_a_config_key() {
        // A value each key accepts; the loader must take every one of them.
        let sample = |key: &str| match key {
            "listen" | "admin.listen" => "127.0.0.1:9",
            "upstream" => "http://127.0.0.1:9",
            "store.kind" => "memory",
            "store.redis_url" => "redis://127.0.0.1:6379",
            "cache.tenant" => "shared",
            "cache.tenant_secret" => "0123456789abcdef-0123",
            "log.format" => "json",
            "log.keep" => "3",
            "limits.max_body_bytes_in_flight" => "1GiB",
            "limits.body_min_rate" => "1KiB",
            "limits.max_connections" | "limits.max_requests_in_flight" => "8",
            "limits.http2_keep_alive_interval" => "5s",
            "upstream_proxy" => "http://127.0.0.1:3128",
            "upstream_native_roots" => "true",
            "shutdown_delay" => "5s",
            k if k.ends_with("bytes") => "1MiB",
            k if k.ends_with("timeout") || k.ends_with("ttl") => "5s",
            _ => "some-value",
        };
        let var_of =
            |key: &str| format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase());
        for key in ENV_KEYS {
            let var = var_of(key);
            let mut env = vec![(var.clone(), sample(key).to_string())];
            // A client certificate and its key only make sense together.
            let partner = match key {
                "upstream_client_cert" => Some("upstream_client_key"),
                "upstream_client_key" => Some("upstream_client_cert"),
                _ => None,
            };
            if let Some(p) = partner {
                env.push((var_of(p), sample(p).to_string()));
            }
            let c = Config::load(Layers {
                env,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{var}: {e}"));
            assert!(c.ignored_env.is_empty(), "{var} was ignored");
        }
    }

    #[test]
    fn sizes_and_durations_accept_strings_and_numbers() {
        let c = load("max_body_bytes = \"1MiB\"\n[store]\nmemory_bytes = 1024\ntimeout = \"1s\"")
            .unwrap();
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.store.memory_bytes, 1024);
        assert_eq!(c.store.timeout, Duration::from_secs(1));
        let c = Config::load(Layers {
            env: vec![("PREFIXCACHE_MAX_BODY_BYTES".into(), "2048".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.max_body_bytes, 2048);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[store]\nkind = \"mysql\"").unwrap_err().to_string();
        assert!(e.contains("store.kind"), "{e}");
        let e = load("[store]\ntimeout = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("store.timeout"), "{e}");
        let e = load("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load("[strategies.a]\nkey_mode = \"fuzzy\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("strategies.a.key_mode"), "{e}");
        let e = load("upstream = \"ftp://x\"").unwrap_err().to_string();
        assert!(e.contains("upstream"), "{e}");
    }

    #[test]
    fn strategies_match_by_header_then_glob_then_default() {
        let c = load(
            r#"
[strategies.docs]
match = { model = "gpt-4o*" }
ttl = "48h"
[strategies.emb]
match = { path = "/v1/embeddings" }
[strategies.manual]
cache_sampled = false
"#,
        )
        .unwrap();
        assert_eq!(
            c.strategy_for(None, "gpt-4o-mini", "/v1/chat/completions")
                .unwrap()
                .name,
            "docs"
        );
        assert_eq!(
            c.strategy_for(None, "text-embedding-3-small", "/v1/embeddings")
                .unwrap()
                .name,
            "emb"
        );
        assert_eq!(
            c.strategy_for(None, "gpt-5", "/v1/chat/completions")
                .unwrap()
                .name,
            "default"
        );
        assert_eq!(
            c.strategy_for(Some("manual"), "gpt-4o", "/v1/chat/completions")
                .unwrap()
                .name,
            "manual"
        );
        let err = c.strategy_for(Some("nope"), "gpt-4o", "/").unwrap_err();
        assert!(err.contains("nope") && err.contains("docs"), "{err}");
        assert_eq!(
            c.strategy("docs").unwrap().ttl,
            Duration::from_secs(48 * 3600)
        );
    }

    #[test]
    fn default_strategy_can_be_overridden() {
        let c =
            load("[strategies.default]\nprefix_granularity = 100\nkey_mode = \"prefix\"").unwrap();
        assert_eq!(c.strategies.len(), 1);
        assert_eq!(c.default_strategy().prefix_granularity, 100);
        assert_eq!(c.default_strategy().key_mode, KeyMode::Prefix);
    }

    #[test]
    fn ttl_is_capped() {
        let s = load("[strategies.a]\nttl = \"1h\"\nmax_ttl = \"2h\"").unwrap();
        let a = s.strategy("a").unwrap();
        assert_eq!(a.effective_ttl(None), Duration::from_secs(3600));
        assert_eq!(
            a.effective_ttl(Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            a.effective_ttl(Some(Duration::from_secs(99999))),
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn pricing_section_overrides_the_builtin() {
        let c = load(
            r#"
[pricing]
file = "my-pricing.toml"
[pricing.models."my-model"]
input = 1
cached_input = 0.25
output = 4.0
[pricing.models."gpt-4o"]
input = 2.0
output = 8.0
"#,
        )
        .unwrap();
        assert_eq!(c.pricing.file, Some(PathBuf::from("my-pricing.toml")));
        let file = "[models.\"my-model\"]\ninput = 9.0\noutput = 9.0\n[models.\"from-file\"]\ninput = 3.0\noutput = 3.0";
        let t = c.pricing.table(Some(file)).unwrap();
        // inline beats file beats builtin
        assert_eq!(t.lookup("my-model").unwrap().1.base.input, 1.0);
        assert_eq!(t.lookup("from-file").unwrap().1.base.input, 3.0);
        assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().1.base.input, 2.0);
        assert_eq!(t.lookup("gpt-4.1").unwrap().1.base.input, 2.0);
        let e = c
            .pricing
            .table(Some("[models.x]\ninput = 1.0"))
            .unwrap_err();
        assert_eq!(e.metric_label(), "toml");
        // No section: the builtin alone.
        let d = Config::defaults();
        assert_eq!(d.pricing.file, None);
        assert_eq!(
            d.pricing.table(None).unwrap().len(),
            crate::pricing::PriceTable::builtin().len()
        );
    }

    #[test]
    fn pricing_file_comes_from_env_and_errors_name_the_model() {
        let c = Config::load(Layers {
            file: Some("[pricing]\nfile = \"a.toml\"".into()),
            env: vec![("PREFIXCACHE_PRICING_FILE".into(), "b.toml".into())],
            flags: vec![],
        })
        .unwrap();
        assert_eq!(c.pricing.file, Some(PathBuf::from("b.toml")));
        let e = load("[pricing.models.\"m\"]\ninput = -1.0\noutput = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pricing.models.\"m\""), "{e}");
        let e = load("[pricing.models.\"m\"]\ninput = 1.0\noutput = 1.0\ncached = 0.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cached"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("gpt-4o*", "gpt-4o"));
        assert!(glob_match("gpt-4o*", "gpt-4o-2024-08-06"));
        assert!(!glob_match("gpt-4o*", "gpt-4"));
        assert!(glob_match("*mini", "o4-mini"));
        assert!(glob_match("o?-mini", "o4-mini"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b*c", "abx"));
    }

    #[test]
    fn tenant_secret_length_is_checked_after_trimming() {
        let padded = format!("[cache]\ntenant_secret = \"{}short\"", " ".repeat(20));
        let e = load(&padded).unwrap_err().to_string();
        assert!(e.contains("cache.tenant_secret"), "{e}");
        let c = load("[cache]\ntenant_secret = \"  0123456789abcdef  \"").unwrap();
        assert_eq!(c.cache.tenant_secret.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn tenant_headers_take_a_list_or_a_comma_separated_string() {
        let c = load("[cache]\ntenant_headers = [\"X-Team-Key\", \"x-user\"]").unwrap();
        assert_eq!(c.cache.tenant_headers, vec!["x-team-key", "x-user"]);
        let c = Config::load(Layers {
            env: vec![("PREFIXCACHE_CACHE_TENANT_HEADERS".into(), "x-a, x-b".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.cache.tenant_headers, vec!["x-a", "x-b"]);
        let e = load("[cache]\ntenant_headers = [\"bad header\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.tenant_headers"), "{e}");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let e = load("[admin]\nlisten = \"0.0.0.0:9090\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin.listen") && e.contains("admin.token"),
            "{e}"
        );
        assert!(load("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t0ken\"").is_ok());
        let c = load("[admin]\nlisten = \"127.0.0.1:9090\"").unwrap();
        assert!(c.admin.listen.is_some() && c.admin.token.is_none());
        assert!(load("[admin]\nlisten = \"[::1]:9090\"").is_ok());
    }

    #[test]
    fn egress_settings_are_validated() {
        let d = Config::defaults();
        assert_eq!(d.egress.proxy, UpstreamProxy::FromEnv);
        assert!(!d.egress.native_roots && d.egress.ca_file.is_none());
        assert_eq!(d.shutdown_delay, Duration::ZERO);
        let c = load(
            "upstream_proxy = \"http://user:pw@proxy.corp:3128\"\nupstream_ca_file = \"/etc/ca.pem\"\n\
             upstream_native_roots = true\nupstream_client_cert = \"c.pem\"\nupstream_client_key = \"k.pem\"\n\
             shutdown_delay = \"5s\"",
        )
        .unwrap();
        assert_eq!(
            c.egress.proxy,
            UpstreamProxy::Url("http://user:pw@proxy.corp:3128".into())
        );
        assert_eq!(c.egress.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(c.egress.native_roots);
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        assert_eq!(
            load("upstream_proxy = \"none\"").unwrap().egress.proxy,
            UpstreamProxy::Off
        );
        let e = load("upstream_proxy = \"socks5://u:secret@h:1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream_proxy") && !e.contains("secret"), "{e}");
        let e = load("upstream_client_cert = \"c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream_client_key"), "{e}");
        let e = load("upstream_client_key = \"k.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream_client_cert"), "{e}");
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        let u = Upstream::parse("https://user:s3cret@gw.internal:8443/openai?api-key=k#x").unwrap();
        assert_eq!(u.redacted(), "https://***@gw.internal:8443/openai");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        assert_eq!(redact_url("redis://:pw@r:6379/0"), "redis://***@r:6379/0");
        assert_eq!(redact_url("http://h/p?x=1"), "http://h/p");
    }
}
