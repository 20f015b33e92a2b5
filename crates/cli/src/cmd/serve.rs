//! `prefixcache serve`: load the config (flag > env > file > default), open the store,
//! and run the proxy until SIGTERM/SIGINT, then drain and exit 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use prefixcache_core::config::{Config, Layers, LogFormat};
use prefixcache_proxy::AppState;
use prefixcache_store::{Clock, SystemClock};

/// Config file read from the working directory when `--config` is not given.
const DEFAULT_CONFIG_FILE: &str = "prefixcache.toml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (TOML). Default: ./prefixcache.toml if it exists.
    #[arg(long, env = "PREFIXCACHE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Upstream API base URL [default: https://api.openai.com].
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Cache store [default: disk].
    #[arg(long, value_parser = ["memory", "disk", "redis"])]
    store: Option<String>,
    /// Redis URL (redis://, rediss://, redis+cluster://host:port,host:port).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Directory of the disk store and the generated tenant secret [default: ./.prefixcache].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format of the server's own logs [default: text].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Append one JSON line per request to FILE (docs/request-log.md).
    #[arg(long, value_name = "FILE")]
    log_requests: Option<PathBuf>,
}

impl Args {
    fn flags(&self) -> Vec<(String, String)> {
        let mut flags = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                flags.push((k.to_string(), v));
            }
        };
        put("listen", self.listen.clone());
        put("upstream", self.upstream.clone());
        put("store.kind", self.store.clone());
        put("store.redis_url", self.redis_url.clone());
        put(
            "store.data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        put("log.format", self.log_format.clone());
        put(
            "log.path",
            self.log_requests.as_ref().map(|p| p.display().to_string()),
        );
        flags
    }
}

/// The configuration as `serve` sees it: `path` (or `./prefixcache.toml` if it exists),
/// then the `PREFIXCACHE_*` environment, then `flags`.
pub fn load_config(
    path: Option<&std::path::Path>,
    flags: Vec<(String, String)>,
) -> anyhow::Result<Config> {
    let file = match path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?,
        ),
        None => match std::fs::read_to_string(DEFAULT_CONFIG_FILE) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(format!("reading {DEFAULT_CONFIG_FILE}")),
        },
    };
    Config::load(Layers {
        file,
        env: std::env::vars().collect(),
        flags,
    })
    .context("loading the configuration")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_deref(), args.flags())?;
    // Held until exit: dropping it flushes the log lines still queued.
    let _log_guard = init_logging(config.log.format);
    for name in &config.ignored_env {
        tracing::warn!(name = %name, "environment variable names no config key; ignored (see docs/configuration.md)");
    }
    if let (Some(addr), None) = (config.admin.listen, &config.admin.token) {
        // Only loopback gets here (the config refuses other addresses without a token).
        tracing::warn!(%addr, "the admin listener has no admin.token: anyone on this host can purge the cache and read the dashboard");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr through a writer thread: a slow or blocked stderr (a full pipe, a
/// stalled log shipper) must never stall the request path. When its queue is full,
/// lines are dropped rather than waited for.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Tokenizer vocabularies load once here rather than on the first request.
    prefixcache_core::tokenizer::Encoding::O200kBase.preload();
    prefixcache_core::tokenizer::Encoding::Cl100kBase.preload();

    let opened = prefixcache_store::open(&config.store, clock.clone())
        .await
        .with_context(|| format!("opening the {} store", config.store.kind.as_str()))?;
    // Replicas sharing a store must share the secret: a configured one wins, else the
    // store's shared one (Redis), else one generated into the data dir.
    let secret = match &config.cache.tenant_secret {
        Some(s) => s.clone(),
        None => match shared_secret(&opened).await? {
            Some(s) => s,
            None => prefixcache_proxy::tenant::load_or_create_secret(&config.store.data_dir)
                .with_context(|| {
                    format!(
                        "reading or creating the tenant secret in {}",
                        config.store.data_dir.display()
                    )
                })?,
        },
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (admin)"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr().context("reading the bound address")?;
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr().context("reading the bound admin address")?),
        None => None,
    };
    // The bound addresses (not port 0) are what the dashboard tells callers to use.
    let mut config = config;
    config.listen = addr;
    config.admin.listen = admin_addr.or(config.admin.listen);
    let state = AppState::new(config.clone(), opened.store.clone(), clock, &secret)?
        .with_guard(opened.guard.clone());
    tracing::info!(
        addr = %addr,
        // Without user information or query: either may carry a credential.
        upstream = %config.upstream.redacted(),
        store = config.store.kind.as_str(),
        data_dir = %config.store.data_dir.display(),
        "prefixcache listening"
    );
    // Machine-readable, for scripts that start us on port 0 (the admin line first).
    #[allow(clippy::print_stdout)]
    {
        if let Some(admin) = admin_addr {
            println!("prefixcache admin listening on http://{admin}/dashboard");
        }
        println!("prefixcache listening on http://{addr}");
    }
    prefixcache_proxy::serve(state, listener, admin_listener, shutdown_signal()).await?;
    Ok(())
}

/// The tenant secret the store's replicas agree on (Redis), if the store has one. Redis
/// may still be starting next to us, so this retries for a while; a secret cannot be
/// invented locally, since other replicas would not share it.
async fn shared_secret(opened: &prefixcache_store::OpenedStore) -> anyhow::Result<Option<String>> {
    let mut wait = std::time::Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match opened.shared_secret().await {
            Ok(secret) => return Ok(secret),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "cannot reach the store to agree on a tenant secret; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot agree on a tenant secret through the store ({e}); set cache.tenant_secret \
                     (PREFIXCACHE_CACHE_TENANT_SECRET) to the same value on every replica to start \
                     while the store is down"
                ));
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
