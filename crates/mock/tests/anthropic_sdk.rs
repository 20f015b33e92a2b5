//! The official `anthropic` Python SDK against the mock's Messages API: if the SDK's own
//! types parse every answer and stream, and its exception classes catch the errors, the
//! wire format is faithful where it matters.

use prefixcache_mock::{MockConfig, spawn_local};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_parses_messages_streams_and_errors() {
    let Some(python) = prefixcache_testkit::require_python(
        "anthropic_python_sdk_parses_messages_streams_and_errors",
        &["anthropic"],
    ) else {
        return;
    };
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/anthropic_sdk_against_mock.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(server.url())
        .env("NO_PROXY", "*")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ANTHROPIC SDK OK"), "{stdout}");
    server.shutdown().await.unwrap();
}
