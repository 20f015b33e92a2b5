//! `prefixcache analyze LOG`: per strategy and prefix family, prompt lengths, the shared
//! and stable prefixes, the article's `optimal_granularity` and the recommended one,
//! the provider-cacheable share and the lint findings; with `--baseline OLD.json`, the
//! deploy gate (exit 1 with the reasons when it fails). The work is in
//! `prefixcache_analysis::{analyze, gate}`; definitions in `docs/analysis.md`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use prefixcache_analysis::analyze::{Analysis, AnalyzeOptions, SCHEMA, analyze};
use prefixcache_analysis::gate::gate;
use prefixcache_analysis::parallel::default_threads;
use prefixcache_analysis::progress::Progress;
use prefixcache_analysis::traffic::Traffic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Count tokens with this model's encoding for every request (default: each
    /// request's own model; unknown models use o200k_base).
    #[arg(long, short)]
    model: Option<String>,
    /// Use this prefix_granularity for every strategy's families (default: each
    /// strategy's from --config, else 50).
    #[arg(long)]
    granularity: Option<usize>,
    /// A prefixcache.toml: strategies for requests the log does not name, and their
    /// settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as one JSON object (schema in docs/analysis.md; also the
    /// --baseline format).
    #[arg(long)]
    json: bool,
    /// An earlier `analyze --json` output to gate against: exit 1 when the traffic's
    /// stable prefixes or recommended granularity moved more than --max-shift.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The gate's tolerance: share of traffic that may leave a stable prefix, and
    /// relative change of the recommended granularity.
    #[arg(long, default_value_t = 0.10)]
    max_shift: f64,
    /// Malformed lines skipped (and reported) before the run fails.
    #[arg(long, default_value_t = 100)]
    max_bad_lines: u64,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// The request log (JSON lines, plain or gzip; `-` for standard input).
    log: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.max_shift) {
        anyhow::bail!(
            "--max-shift must be between 0 and 1, got {}",
            args.max_shift
        );
    }
    let config = args
        .config
        .as_deref()
        .map(Traffic::load_config)
        .transpose()?;
    // Read the baseline first: a bad one should fail before a long analysis.
    let baseline = args
        .baseline
        .as_ref()
        .map(|p| -> anyhow::Result<Analysis> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the baseline {}", p.display()))?;
            let b: Analysis = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an `analyze --json` report", p.display()))?;
            if b.schema != SCHEMA {
                anyhow::bail!(
                    "{} has schema {:?}; this build reads {SCHEMA:?}",
                    p.display(),
                    b.schema
                );
            }
            Ok(b)
        })
        .transpose()?;
    let opts = AnalyzeOptions {
        traffic: Traffic::new(config, args.granularity, args.model.as_deref()),
        max_bad_lines: args.max_bad_lines,
        threads: args.threads.unwrap_or_else(default_threads),
    };
    let size = std::fs::metadata(&args.log).ok().map(|m| m.len());
    let progress = Progress::for_terminal(size, "analyzing");
    let done = analyze(&args.log, &opts, &progress);
    progress.finish();
    let done = done?;
    for w in done.bad.warnings(&args.log) {
        eprintln!("{w}");
    }
    let mut report = done.report;
    if let (Some(b), Some(path)) = (&baseline, &args.baseline) {
        report.gate = Some(gate(
            b,
            &path.display().to_string(),
            &report,
            &done.corpus,
            args.max_shift,
        ));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    Ok(match &report.gate {
        Some(g) if !g.passed => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
