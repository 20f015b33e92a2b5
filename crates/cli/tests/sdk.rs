//! The official `openai` Python SDK (sync and async, streaming and not, raw responses,
//! error types) against the real `prefixcache serve` in front of `prefixcache
//! mock-upstream`, both as separate processes. The Python side is `sdk/test_sdk.py`.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::{require_python, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

fn run_sdk_suite(store: &str) {
    let Some(python) = require_python("sdk_suite", &["openai"]) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mock = Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    );
    let data_dir = data.path().to_str().unwrap();
    let mut proxy = Service::start(
        BIN.as_ref(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.url,
            "--store",
            store,
            "--data-dir",
            data_dir,
        ],
        // Keep the test independent of a prefixcache.toml or env in the caller's shell.
        // A loaded machine must not turn a slow store write into a miss the suite
        // would read as a failure: the store gets all the time it needs here.
        &[
            ("PREFIXCACHE_CONFIG", "/dev/null"),
            ("RUST_LOG", "warn"),
            ("PREFIXCACHE_STORE_TIMEOUT", "30s"),
        ],
    );
    let script = workspace_root().join("crates/cli/tests/sdk/test_sdk.py");
    let status = Command::new(&python)
        .arg(&script)
        .env("PROXY_URL", &proxy.url)
        .env("MOCK_URL", &mock.url)
        .status()
        .expect("running the Python SDK suite");
    assert!(
        status.success(),
        "the openai SDK suite failed against the {store} store (output above)"
    );
    let exit = proxy.terminate();
    assert!(exit.success(), "serve must exit 0 on SIGTERM, got {exit:?}");
}

#[test]
fn openai_sdk_against_the_proxy_on_the_disk_store() {
    run_sdk_suite("disk");
}

#[test]
fn openai_sdk_against_the_proxy_on_the_memory_store() {
    run_sdk_suite("memory");
}
