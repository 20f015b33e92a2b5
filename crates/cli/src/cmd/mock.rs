//! `prefixcache mock-upstream`: runs the mock upstream of OpenAI's and Anthropic's APIs
//! (`docs/mock-upstream.md`) until SIGINT/SIGTERM, printing its address first so scripts
//! can use `--listen 127.0.0.1:0`.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prefixcache_mock::config::{
    DEFAULT_CACHE_LRU_ENTRIES, DEFAULT_CACHE_MACHINES, DEFAULT_CACHE_OVERFLOW_RPM,
};
use prefixcache_mock::{Latency, Mock, MockConfig, PromptCacheConfig};

/// Where the mock listens unless told otherwise (the proxy's default is 8080).
pub const DEFAULT_MOCK_LISTEN: &str = "127.0.0.1:8090";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = DEFAULT_MOCK_LISTEN)]
    listen: String,
    /// Time before each answer (for streams: before the first byte): `0`, `20ms`, or
    /// `lognormal:mean=1247ms,p99=3421ms`.
    #[arg(long, default_value = "0", value_parser = parse_latency)]
    latency: Latency,
    /// Seed for generated content and latency draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pause between two events of a stream, e.g. `15ms`.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    chunk_delay: Duration,
    /// Answer 401 without `Authorization: Bearer ...` or with an `sk-invalid*` key.
    #[arg(long)]
    require_auth: bool,
    /// Simulated provider machines for the prompt cache.
    #[arg(long, default_value_t = DEFAULT_CACHE_MACHINES)]
    cache_machines: usize,
    /// Requests per minute for one prefix+key past which requests overflow to random machines.
    #[arg(long, default_value_t = DEFAULT_CACHE_OVERFLOW_RPM)]
    cache_overflow_rpm: u32,
    /// Idle time after which a cached prefix is dropped, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    cache_idle_ttl: Duration,
    /// Cached prefixes per simulated machine.
    #[arg(long, default_value_t = DEFAULT_CACHE_LRU_ENTRIES)]
    cache_lru_entries: usize,
    /// Turn the prompt-cache simulation off (`cached_tokens` is always 0).
    #[arg(long)]
    no_prompt_cache: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse::<Latency>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    prefixcache_mock::config::parse_duration(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = MockConfig {
        latency: args.latency,
        seed: args.seed,
        chunk_delay: args.chunk_delay,
        require_auth: args.require_auth,
        prompt_cache: PromptCacheConfig {
            enabled: !args.no_prompt_cache,
            machines: args.cache_machines.max(1),
            overflow_rpm: args.cache_overflow_rpm,
            idle_ttl: args.cache_idle_ttl,
            lru_entries: args.cache_lru_entries.max(1),
            ..PromptCacheConfig::default()
        },
        ..MockConfig::default()
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        // Built inside the runtime: the default clock is tokio's.
        let mock = Arc::new(Mock::new(config));
        // Scripts read this line to learn the port; flush so a pipe sees it at once.
        #[allow(clippy::print_stdout)]
        {
            println!("mock-upstream listening on http://{addr}");
        }
        std::io::stdout().flush()?;
        prefixcache_mock::serve(listener, mock, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed here, before
/// the address is printed, so a script that signals right after reading it is heard.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let ctrl_c = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}
