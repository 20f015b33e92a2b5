//! The errors of the offline tools: unreadable input, too many malformed lines, a bad
//! baseline or spec. The CLI maps every one of them to exit code 2.

use std::path::PathBuf;

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: {count} malformed lines, more than --max-bad-lines {max} (first: line {first_line}: {first_error})"
    )]
    TooManyBadLines {
        path: PathBuf,
        count: u64,
        max: u64,
        first_line: u64,
        first_error: String,
    },
    #[error("{path}: no request in the log")]
    Empty { path: PathBuf },
    #[error("invalid baseline {path}: {message}")]
    Baseline { path: PathBuf, message: String },
    #[error("invalid strategy spec {spec:?}: {message}")]
    Spec { spec: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("live replay: {0}")]
    Live(String),
}

impl AnalysisError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> AnalysisError {
        AnalysisError::Io {
            path: path.into(),
            source,
        }
    }

    /// Short label for logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AnalysisError::Io { .. } => "io",
            AnalysisError::TooManyBadLines { .. } => "bad_lines",
            AnalysisError::Empty { .. } => "empty",
            AnalysisError::Baseline { .. } => "baseline",
            AnalysisError::Spec { .. } => "spec",
            AnalysisError::Config(_) => "config",
            AnalysisError::Live(_) => "live",
        }
    }
}
