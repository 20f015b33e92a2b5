//! `prefixcache replay LOG`: the what-if simulator (simulated response caches side by
//! side, the provider prompt cache per `prompt_cache_key` policy, dollars under the
//! pricing table; `--json`, `--report FILE.html`), or with `--live URL` the same
//! traffic sent to a running proxy. The work is in `prefixcache_analysis::{replay,
//! live}`; the spec grammar and output schemas in `docs/analysis.md`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use prefixcache_analysis::live::{LiveOptions, live};
use prefixcache_analysis::parallel::default_threads;
use prefixcache_analysis::progress::Progress;
use prefixcache_analysis::replay::spec::{DEFAULT_SPECS, SimSpec};
use prefixcache_analysis::replay::{ReplayOptions, html, replay};
use prefixcache_analysis::traffic::Traffic;
use prefixcache_core::config::parse_duration;
use prefixcache_core::pricing::PriceTable;
use prefixcache_core::provider::cache::{
    DEFAULT_CACHE_MACHINES, DEFAULT_CACHE_OVERFLOW_RPM, PromptCacheConfig,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A simulated cache: none, exact or prefix:N, with ,ttl=DURATION and
    /// ,capacity=ENTRIES (repeat the flag for several). Default: none, exact,
    /// prefix:25, prefix:50, prefix:100, prefix:200, prefix:500.
    #[arg(long = "strategy", value_name = "SPEC")]
    strategies: Vec<String>,
    /// Print the results as one JSON object (schema in docs/analysis.md).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts and the table.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// A prefixcache.toml: strategies for requests the log does not name, their TTL,
    /// prompt_cache_key policy, sampling policy, and [pricing].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Count tokens with this model's encoding for every request.
    #[arg(long, short)]
    model: Option<String>,
    /// A pricing file (the format of the built-in pricing.toml) over the built-in table.
    #[arg(long)]
    pricing: Option<PathBuf>,
    /// Do not simulate the provider's prompt cache (dollars then use the logged
    /// cached_tokens).
    #[arg(long)]
    no_provider: bool,
    /// Simulated provider machines.
    #[arg(long, default_value_t = DEFAULT_CACHE_MACHINES)]
    cache_machines: usize,
    /// Requests per minute per (prompt start, prompt_cache_key) past which the provider
    /// overflows to other machines.
    #[arg(long, default_value_t = DEFAULT_CACHE_OVERFLOW_RPM)]
    cache_overflow_rpm: u32,
    /// How long the provider keeps an idle cached prefix.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    cache_idle_ttl: Duration,
    /// Seed of the provider simulation's overflow routing.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Malformed lines skipped (and reported) before the run fails.
    #[arg(long, default_value_t = 100)]
    max_bad_lines: u64,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Send the log's requests to this running proxy instead of simulating.
    #[arg(long, value_name = "URL")]
    live: Option<String>,
    /// --live: requests in flight at once.
    #[arg(long, default_value_t = 8, requires = "live")]
    concurrency: usize,
    /// --live: sent as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "PREFIXCACHE_REPLAY_API_KEY",
        hide_env_values = true,
        requires = "live"
    )]
    api_key: Option<String>,
    /// --live: requests started per second at most.
    #[arg(long, requires = "live")]
    rate: Option<f64>,
    /// --live: per request, to the last byte.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "live")]
    timeout: Duration,
    /// --live: send the logged strategy as x-prefixcache-strategy.
    #[arg(long, requires = "live")]
    send_strategy: bool,
    /// --live: send at most this many requests.
    #[arg(long, requires = "live")]
    limit: Option<u64>,
    /// The request log (JSON lines, plain or gzip; `-` for standard input).
    log: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(default_threads);
    if let Some(url) = &args.live {
        let (report, bad) = live(
            &args.log,
            &LiveOptions {
                url: url.clone(),
                concurrency: args.concurrency,
                api_key: args.api_key.clone(),
                rate: args.rate,
                timeout: args.timeout,
                send_strategy: args.send_strategy,
                limit: args.limit,
                max_bad_lines: args.max_bad_lines,
                threads,
            },
        )?;
        for w in bad.warnings(&args.log) {
            eprintln!("{w}");
        }
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report.to_text())?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }

    let specs = if args.strategies.is_empty() {
        DEFAULT_SPECS
            .iter()
            .map(|s| SimSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args.strategies
            .iter()
            .map(|s| SimSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let config = args
        .config
        .as_deref()
        .map(Traffic::load_config)
        .transpose()?;
    let mut prices = match &config {
        Some(c) => {
            let text = c
                .pricing
                .file
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read the pricing file {}", p.display()))
                })
                .transpose()?;
            c.pricing.table(text.as_deref())?
        }
        None => PriceTable::builtin().clone(),
    };
    if let Some(p) = &args.pricing {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the pricing file {}", p.display()))?;
        prices = prices.merged(&PriceTable::from_toml(&text)?);
    }
    let provider = (!args.no_provider).then(|| PromptCacheConfig {
        machines: args.cache_machines.max(1),
        overflow_rpm: args.cache_overflow_rpm,
        idle_ttl: args.cache_idle_ttl,
        ..PromptCacheConfig::default()
    });
    let opts = ReplayOptions {
        traffic: Traffic::new(config, None, args.model.as_deref()),
        specs,
        provider,
        prices,
        max_bad_lines: args.max_bad_lines,
        threads,
        seed: args.seed,
    };
    let size = std::fs::metadata(&args.log).ok().map(|m| m.len());
    let progress = Progress::for_terminal(size, "reading");
    let result = replay(&args.log, &opts, &progress);
    progress.finish();
    let (report, bad) = result?;
    for w in bad.warnings(&args.log) {
        eprintln!("{w}");
    }
    if let Some(path) = &args.report {
        std::fs::write(path, html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
        if let Some(path) = &args.report {
            writeln!(out, "\nreport written to {}", path.display())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
