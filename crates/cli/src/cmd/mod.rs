//! One module per subcommand, each with its `Args` and a `run` returning the exit code.

pub mod analyze;
pub mod diff;
pub mod healthcheck;
pub mod lint;
pub mod mock;
pub mod replay;
pub mod serve;
pub mod tokens;
