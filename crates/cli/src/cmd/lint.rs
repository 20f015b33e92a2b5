//! `prefixcache lint PATH...`: prompt and template files, strategy templates in a
//! config file and request logs, checked with the core lint rules; compiler-style
//! output (`file:line: rule severity: message`, the offending text, a one-line fix) or
//! `--json`; exit 1 when a finding at or above `--deny` exists. The work is in
//! `prefixcache_analysis::lint`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use prefixcache_analysis::lint::{LintOptions, lint};
use prefixcache_analysis::parallel::default_threads;
use prefixcache_analysis::traffic::Traffic;
use prefixcache_core::lint::Severity;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tokenize with this model's encoding (default: a strategy's model matcher, else
    /// each logged request's model, else o200k_base).
    #[arg(long, short)]
    model: Option<String>,
    /// The prefix window in tokens (default: each strategy's prefix_granularity, else 50).
    #[arg(long)]
    granularity: Option<usize>,
    /// For logs: a prefixcache.toml naming the strategies of requests the log does not
    /// name.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print one JSON object (schema in docs/analysis.md).
    #[arg(long)]
    json: bool,
    /// Exit 1 when a finding of this severity or above exists: info, warning, error,
    /// or never.
    #[arg(long, default_value = "warning")]
    deny: String,
    /// Malformed log lines skipped (and reported) before the run fails.
    #[arg(long, default_value_t = 100)]
    max_bad_lines: u64,
    /// Prompt or template files, prefixcache.toml files, request logs (JSON lines,
    /// plain or gzip), or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let deny = match args.deny.as_str() {
        "never" => None,
        s => Some(Severity::parse(s).ok_or_else(|| {
            anyhow::anyhow!("--deny must be info, warning, error or never, got {s:?}")
        })?),
    };
    let config = args
        .config
        .as_deref()
        .map(Traffic::load_config)
        .transpose()?;
    let opts = LintOptions {
        model: args.model,
        granularity: args.granularity,
        config,
        max_bad_lines: args.max_bad_lines,
        threads: default_threads(),
    };
    let (report, warnings) = lint(&args.paths, &opts)?;
    for w in warnings {
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
    let failed = match (deny, report.worst()) {
        (Some(d), Some(w)) => w >= d,
        _ => false,
    };
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
