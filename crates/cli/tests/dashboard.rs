//! The dashboard in a real browser: headless Chromium, driven by `selenium` from
//! Python (`dashboard/test_dashboard.py`), against `prefixcache serve` with an admin
//! listener in front of `prefixcache mock-upstream`, both as separate processes.
//! Screenshots (1280 and 390 px, light and dark) land in `target/tmp/dashboard/`.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::{require_python, skip_or_fail, which, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");
const TEST: &str = "dashboard_in_chromium";

/// The first of `names` found as `$env_var` or on PATH, applying the skip policy.
fn require_program(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    let found = std::env::var_os(env_var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| names.iter().find_map(|n| which(n)));
    if found.is_none() {
        skip_or_fail(
            TEST,
            &format!("{} ({env_var})", names.join(" or ")),
            "Install Debian's chromium and chromium-driver (`bash .ci/run` does), or set the variable.",
        );
    }
    found
}

#[test]
fn dashboard_in_chromium() {
    let Some(python) = require_python(TEST, &["selenium"]) else {
        return;
    };
    let Some(chromium) = require_program(
        "PREFIXCACHE_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    ) else {
        return;
    };
    let Some(chromedriver) = require_program("PREFIXCACHE_CHROMEDRIVER", &["chromedriver"]) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mock = Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut proxy = Service::start(
        BIN.as_ref(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.url,
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[
            ("PREFIXCACHE_CONFIG", "/dev/null"),
            ("PREFIXCACHE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", "warn"),
            // A slow store write on a loaded machine must not turn the second request
            // into a miss.
            ("PREFIXCACHE_STORE_TIMEOUT", "30s"),
        ],
    );
    let admin = proxy
        .admin_url
        .clone()
        .expect("serve prints the admin listener's address");
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let script = workspace_root().join("crates/cli/tests/dashboard/test_dashboard.py");
    let status = Command::new(&python)
        .arg(&script)
        .env("PROXY_URL", &proxy.url)
        .env("ADMIN_URL", &admin)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .env("CHROMEDRIVER", &chromedriver)
        // Selenium must never try to download a browser or driver.
        .env("SE_OFFLINE", "true")
        .status()
        .expect("running the dashboard browser test");
    assert!(
        status.success(),
        "the dashboard browser checks failed (output above); screenshots in {}",
        artifacts.display()
    );
    let exit = proxy.terminate();
    assert!(exit.success(), "serve must exit 0 on SIGTERM, got {exit:?}");
}
