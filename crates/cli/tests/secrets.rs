//! The real `prefixcache serve` writes no secret to its logs: not the password or query
//! of the configured upstream URL (startup line, upstream errors), not a caller's query
//! string, at the most verbose log level, and its error bodies name no internal URL.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_the_logs_or_error_bodies() {
    // An upstream that refuses connections, configured with a password and a key.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = format!("http://svc:pw-s3cret@127.0.0.1:{port}/gw?key=url-s3cret");
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--store",
            "memory",
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .env("PREFIXCACHE_CONFIG", "/dev/null")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("serve reported its address");

    let client = reqwest::Client::new();
    let chat = client
        .post(format!("{url}/v1/chat/completions?api-key=caller-s3cret"))
        .header("authorization", "Bearer sk-caller-s3cret")
        .json(
            &serde_json::json!({"model": "gpt-4o-mini", "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status().as_u16(), 502);
    let chat_body = chat.text().await.unwrap();
    let models = client
        .get(format!("{url}/v1/models?key=caller-s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status().as_u16(), 502);
    let models_body = models.text().await.unwrap();

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("prefixcache listening"), "{logs}");
    assert!(
        logs.contains("upstream call failed"),
        "the failure is logged: {logs}"
    );
    for (what, text) in [
        ("logs", &logs),
        ("chat error body", &chat_body),
        ("passthrough error body", &models_body),
    ] {
        assert!(
            !text.contains("s3cret"),
            "a secret reached the {what}:\n{text}"
        );
    }
    for body in [&chat_body, &models_body] {
        assert!(
            !body.contains(&format!(":{port}")),
            "internal address in {body}"
        );
        assert!(!body.contains("/gw"), "internal path in {body}");
    }
}
