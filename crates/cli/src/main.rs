//! The `prefixcache` binary: parses the command line and hands each subcommand to its
//! module in `cmd/`. Library crates do the work; this file only wires them.
//!
//! Exit codes: 0 ok, 1 findings or a failed gate (lint, analyze), 2 usage or input error.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "prefixcache",
    version,
    about = "An OpenAI-compatible, token-aware caching proxy for LLM APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the caching proxy.
    Serve(cmd::serve::Args),
    /// Ask a running proxy's /readyz; exit 0 when it is ready (a container HEALTHCHECK).
    Healthcheck(cmd::healthcheck::Args),
    /// Run the mock upstream: OpenAI's routes and Anthropic's Messages API (tests, benchmarks, demos).
    MockUpstream(cmd::mock::Args),
    /// Count (and list) the tokens of a text.
    Tokens(cmd::tokens::Args),
    /// Show where two prompts' tokens diverge, and why.
    Diff(cmd::diff::Args),
    /// Check prompt files, strategy templates or request logs for prefix-cache hazards.
    Lint(cmd::lint::Args),
    /// Analyze a request log per strategy and family; gate a deploy against a baseline.
    Analyze(cmd::analyze::Args),
    /// Replay a request log through simulated caches and compare strategies.
    Replay(cmd::replay::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Healthcheck(args) => cmd::healthcheck::run(args),
        Command::MockUpstream(args) => cmd::mock::run(args),
        Command::Tokens(args) => cmd::tokens::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Lint(args) => cmd::lint::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Replay(args) => cmd::replay::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
