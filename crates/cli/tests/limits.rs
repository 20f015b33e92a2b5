//! The real `prefixcache serve` within its limits: the peak memory four concurrent
//! bodies of `max_body_bytes` cost (read from the process's own high-water mark), the
//! modes of the files that hold callers' data, the admin listener's token rule, and a
//! clean drain on SIGTERM. Linux only: the high-water mark comes from `/proc`.

// Test helpers outside #[test] fns are not covered by clippy's test exemption; the
// in-process upstream's task is owned by the test's runtime and ends with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use prefixcache_testkit::process::Service;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

/// `max_body_bytes` by default.
const MAX_BODY: usize = 32 << 20;

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn mock() -> Service {
    Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    )
}

fn serve(upstream: &str, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Service {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut envs = vec![("PREFIXCACHE_CONFIG", "/dev/null"), ("RUST_LOG", "warn")];
    envs.extend_from_slice(env);
    Service::start(BIN.as_ref(), &args, &envs)
}

/// An upstream in this process that reads each request body to its end, keeping none
/// of it, and answers with a small chat completion. (The mock would parse a 32 MiB
/// body; the figure is about the proxy, whose memory is measured apart from ours.)
async fn sink_upstream() -> String {
    use futures_util::StreamExt;
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
        let json = json!({"id": "chatcmpl-sink", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// A chat request of exactly `size` bytes, most of it an array of zeros: in an
/// unknown member (`pad`, the shape that once parsed to a tree twenty times its size),
/// or as a message's content, a member the proxy reads (its tree then outgrows the
/// budget and the request is forwarded uncached).
fn padded_body(size: usize, in_messages: bool) -> Vec<u8> {
    let mut body = if in_messages {
        br#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":[0"#
            .to_vec()
    } else {
        br#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}],"pad":[0"#
            .to_vec()
    };
    let close: &[u8] = if in_messages { b"]}]}" } else { b"]}" };
    while body.len() + 2 + close.len() <= size {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(close);
    while body.len() < size {
        body.insert(body.len() - close.len(), b' ');
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_bodies_at_max_body_bytes_raise_peak_rss_by_at_most_four_times_their_size() {
    let upstream = sink_upstream().await;
    for in_messages in [false, true] {
        // A fresh process per shape: a high-water mark never comes down.
        let data = tempfile::tempdir().unwrap();
        let mut proxy = serve(&upstream, data.path(), &["--store", "memory"], &[]);
        let client = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", proxy.url);
        // What any first request costs is not part of the figure.
        let warm = client
            .post(&url)
            .header("authorization", "Bearer sk-rss")
            .json(&json!({"model": "gpt-4o-mini", "temperature": 0,
                "messages": [{"role": "user", "content": "warm up"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(warm.status(), 200);
        let before = peak_rss(proxy.pid());
        let body = padded_body(MAX_BODY, in_messages);
        assert_eq!(body.len(), MAX_BODY);
        let sends = (0..4).map(|i| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                let r = client
                    .post(&url)
                    .header("authorization", format!("Bearer sk-rss-{i}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let bypass = r
                    .headers()
                    .get("x-prefixcache-bypass")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), bypass)
            }
        });
        let answers = futures_util::future::join_all(sends).await;
        // All four were admitted (the default budget is four such bodies) and forwarded.
        for (status, bypass) in &answers {
            assert_eq!(*status, 200, "{answers:?}");
            let expected = in_messages.then_some("body_too_complex");
            assert_eq!(bypass.as_deref(), expected, "{answers:?}");
        }
        let grown = peak_rss(proxy.pid()).saturating_sub(before);
        let bodies = 4 * MAX_BODY as u64;
        let shape = if in_messages { "messages" } else { "pad" };
        eprintln!(
            "{shape}: peak RSS grew by {} MiB for {} MiB of bodies ({:.2}x)",
            grown >> 20,
            bodies >> 20,
            grown as f64 / bodies as f64
        );
        assert!(
            grown <= 4 * bodies,
            "{shape}: peak RSS grew by {} MiB for {} MiB of bodies",
            grown >> 20,
            bodies >> 20
        );
        let exit = tokio::task::spawn_blocking(move || proxy.terminate())
            .await
            .unwrap();
        assert!(exit.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_holding_callers_data_are_readable_by_their_owner_only() {
    let mock = mock();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Left wide by an older version: narrowed at start.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("logs/requests.jsonl");
    let mut proxy = serve(
        &mock.url,
        &data,
        &["--store", "disk", "--log-requests", log.to_str().unwrap()],
        &[],
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer sk-modes")
        .json(&json!({"model": "gpt-4o-mini", "temperature": 0,
            "messages": [{"role": "user", "content": "who may read this?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exit = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .unwrap();
    assert!(exit.success());
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("cache.redb")), 0o600, "disk store");
    assert_eq!(mode(&data.join("tenant.secret")), 0o600, "tenant secret");
    assert_eq!(mode(&log), 0o600, "request log");
    assert_eq!(
        mode(log.parent().unwrap()),
        0o700,
        "the log's new directory"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("who may read this?")
    );
}

#[test]
fn an_admin_listener_without_a_token_is_loopback_only_and_warned_about() {
    let mock = mock();
    let tmp = tempfile::tempdir().unwrap();
    // Off loopback: refused at start, naming the keys to fix.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.url,
            "--store",
            "memory",
        ])
        .env("PREFIXCACHE_CONFIG", "/dev/null")
        .env("PREFIXCACHE_ADMIN_LISTEN", "0.0.0.0:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.listen") && stderr.contains("admin.token"),
        "{stderr}"
    );
    // On loopback: served, with a warning.
    let log = tmp.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.url,
            "--store",
            "memory",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ])
        .env("PREFIXCACHE_CONFIG", "/dev/null")
        .env("PREFIXCACHE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The listening line is printed after the warning is logged.
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines.find(|l| {
        l.as_ref()
            .is_ok_and(|l| l.starts_with("prefixcache listening"))
    });
    assert!(listening.is_some());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("no admin.token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_stream_in_flight_and_exits_without_waiting_for_idle_connections() {
    let mock = Service::start(
        BIN.as_ref(),
        &[
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--chunk-delay",
            "20ms",
        ],
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    // A drain timeout far longer than the wait below: exiting within the wait means the
    // drain ended because nothing was left, not because it timed out.
    let mut proxy = serve(
        &mock.url,
        data.path(),
        &["--store", "memory"],
        &[("PREFIXCACHE_DRAIN_TIMEOUT", "10m")],
    );
    // An idle kept-alive connection that must not hold the drain.
    let mut idle = tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://"))
        .await
        .unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let client = reqwest::Client::new();
    let mut stream = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer sk-drain")
        .json(
            &json!({"model": "gpt-4o-mini", "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": "finish me"}]}),
        )
        .send()
        .await
        .unwrap();
    let mut got = stream.chunk().await.unwrap().unwrap().to_vec();
    let pid = proxy.pid();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    while let Some(c) = stream.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let exit = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // The idle connection was closed by the drain, not left to the timeout.
    {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(20), idle.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
}
