//! Offline tools over request logs and prompts (`docs/analysis.md`): `lint`, `analyze` (with
//! the deploy gate) and `replay` (the what-if simulator, offline or against a live
//! proxy). The CLI (`crates/cli/src/cmd/{lint,analyze,replay}.rs`) parses flags and
//! prints; everything else is here. Definitions and the `--json` schemas are in
//! `docs/analysis.md`.
//!
//! # Layout
//! - [`input`]: reading logs (plain or gzip; proxy log, bare bodies, wrapped bodies),
//!   timestamps, malformed lines.
//! - [`parallel`]: parsing a log on every core, in order.
//! - [`traffic`]: which strategy a logged request belongs to, its settings, tenants.
//! - [`prefixes`]: token-prefix statistics (stable prefix, family hit rate by
//!   granularity, recommended granularity, percentiles).
//! - [`analyze`]: per-strategy and per-family statistics and lint findings; the report
//!   that is also the gate's baseline.
//! - [`gate`]: the deploy gate against a baseline report.
//! - [`lint`]: the core lint rules over config templates, prompt files and logs.
//! - [`replay`]: the what-if simulator (simulated response caches and the provider's
//!   prompt cache per `prompt_cache_key` policy), its table and HTML report.
//! - [`live`]: replaying a log against a running proxy.
//! - [`findings`]: lint findings summarized per strategy (rules from `core::lint`).
//! - [`error`]: the errors ([`AnalysisError`]).
//! - [`progress`]: the progress bar (stderr, only on a terminal).

pub mod analyze;
pub mod error;
pub mod findings;
pub mod gate;
pub mod input;
pub mod lint;
pub mod live;
pub mod parallel;
pub mod prefixes;
pub mod progress;
pub mod replay;
pub mod traffic;

pub use error::AnalysisError;
