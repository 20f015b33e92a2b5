//! Test-only helpers shared by the crates' integration tests: the rule that nothing
//! skips under `CI=true`, and finding the real dependencies tests drive (the Python
//! venv with the `openai` and `tiktoken` packages, `redis-server`).
//!
//! # Layout
//! - `lib.rs`: the skip policy, workspace paths and the Python interpreter.
//! - [`docker`]: the Docker engine, the images container tests run, compose projects.
//! - [`process`]: server processes started for end-to-end tests.
//! - [`redis`]: real `redis-server` processes and Redis Clusters on free ports.

pub mod docker;
pub mod process;
pub mod redis;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether we run in CI (`CI=true`), where a missing dependency fails the test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Called when a test cannot run because `what` is missing. Under `CI=true` this
/// panics (a silent skip would hide a broken CI); locally it prints a loud message and
/// returns, and the caller returns early.
pub fn skip_or_fail(test: &str, what: &str, how_to_fix: &str) {
    if in_ci() {
        panic!("{test}: {what} is missing and CI=true forbids skipping. {how_to_fix}");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!! SKIPPED {test}: {what} is missing.");
    eprintln!("!! {how_to_fix}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

/// The workspace root (where the top-level `Cargo.toml` is).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// A Python interpreter that can import every module in `modules`: `$PREFIXCACHE_PYTHON`
/// if set, else the workspace's `.venv` (made by `.ci/run`), else `python3` on PATH.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("PREFIXCACHE_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(workspace_root().join(".venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let probe = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &probe])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// [`python_with`], applying the skip policy: `None` means the caller should return.
pub fn require_python(test: &str, modules: &[&str]) -> Option<PathBuf> {
    let found = python_with(modules);
    if found.is_none() {
        skip_or_fail(
            test,
            &format!("a Python with {}", modules.join(", ")),
            "Run `bash .ci/run` once (it creates .venv with the packages), or set PREFIXCACHE_PYTHON.",
        );
    }
    found
}

/// The path of an executable on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
