//! The official `openai` Python SDK against the mock: if the SDK's own types parse every
//! answer and stream, the wire format is faithful where it matters.

use prefixcache_mock::{MockConfig, spawn_local};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_parses_every_route() {
    let Some(python) = prefixcache_testkit::python_with(&["openai", "pydantic"]) else {
        prefixcache_testkit::skip_or_fail(
            "openai_python_sdk_parses_every_route",
            "a Python with the openai package",
            "run .ci/run once, or create .venv with `pip install -r requirements-test.txt`",
        );
        return;
    };
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/sdk_against_mock.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(server.base_url())
        .env("NO_PROXY", "*")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("SDK OK"), "{stdout}");
    server.shutdown().await.unwrap();
}
