//! The real `prefixcache serve` binary as an operator runs it: restarted on the same
//! data dir it answers from its cache (with the tenant secret it generated there);
//! configuration layers (file < environment < flags, `PREFIXCACHE_CONFIG` over
//! `./prefixcache.toml`); `admin.listen`; `cache.stream_finish_timeout`; and SIGTERM
//! storing what completed during the drain.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use prefixcache_testkit::process::Service;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

fn mock_upstream() -> Service {
    Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    )
}

/// `serve` on the disk store in `data`, with `extra` arguments and environment.
fn serve(data: &Path, args: &[&str], envs: &[(&str, &str)], dir: Option<&Path>) -> Service {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    // A loaded machine must not turn a slow store write into a miss.
    let mut env = vec![("RUST_LOG", "warn"), ("PREFIXCACHE_STORE_TIMEOUT", "30s")];
    env.extend_from_slice(envs);
    Service::start_in(BIN.as_ref(), &all, &env, dir)
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
           "messages": [{"role": "user", "content": text}]})
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, String, Vec<u8>) {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", "Bearer sk-serve")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-prefixcache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, r.bytes().await.unwrap().to_vec())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn upstream_calls(client: &reqwest::Client, mock: &Service) -> u64 {
    get_json(client, &format!("{}/mock/stats", mock.url)).await["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_data_dir_answers_from_the_cache() {
    let mock = mock_upstream();
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let args = ["--upstream", mock.url.as_str(), "--store", "disk"];
    let envs = [("PREFIXCACHE_CONFIG", "/dev/null")];
    let mut first = serve(data.path(), &args, &envs, None);
    let (status, cache, body) = post(&client, &first.url, &chat("survive a restart")).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert!(first.terminate().success(), "serve exits 0 on SIGTERM");

    // No secret was configured: one was generated into the data dir, private to us.
    let secret = data.path().join("tenant.secret");
    let text = std::fs::read_to_string(&secret).unwrap();
    assert!(text.trim().len() >= 32, "{text:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tenant.secret mode {mode:o}");
    }

    let mut second = serve(data.path(), &args, &envs, None);
    let (status, cache, again) = post(&client, &second.url, &chat("survive a restart")).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "HIT"),
        "the same caller maps to the same namespace after the restart"
    );
    assert_eq!(again, body);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), text, "reused");
    assert_eq!(upstream_calls(&client, &mock).await, 1);
    assert!(second.terminate().success());
}

/// One case: its name, the flags, the environment, the working directory.
type Layers<'a> = (
    &'a str,
    Vec<&'a str>,
    Vec<(&'a str, &'a str)>,
    Option<&'a Path>,
);

/// The upstream each layer names is a path under one mock, so the mock's record of the
/// request says which layer won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_layers_file_then_environment_then_flags() {
    let mock = mock_upstream();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, layer: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "upstream = \"{}/{layer}\"\n[store]\nkind = \"memory\"\n",
                mock.url
            ),
        )
        .unwrap();
        path
    };
    let file = write("file.toml", "from-file");
    write("prefixcache.toml", "from-cwd");
    let env_upstream = format!("{}/from-env", mock.url);
    let flag_upstream = format!("{}/from-flag", mock.url);
    let file = file.to_str().unwrap();
    let cases: [Layers<'_>; 6] = [
        ("file", vec![], vec![("PREFIXCACHE_CONFIG", file)], None),
        (
            "env over file",
            vec![],
            vec![
                ("PREFIXCACHE_CONFIG", file),
                ("PREFIXCACHE_UPSTREAM", &env_upstream),
            ],
            None,
        ),
        (
            "flag over env and file",
            vec!["--upstream", &flag_upstream],
            vec![
                ("PREFIXCACHE_CONFIG", file),
                ("PREFIXCACHE_UPSTREAM", &env_upstream),
            ],
            None,
        ),
        ("./prefixcache.toml", vec![], vec![], Some(dir.path())),
        (
            "PREFIXCACHE_CONFIG over ./prefixcache.toml",
            vec![],
            vec![("PREFIXCACHE_CONFIG", file)],
            Some(dir.path()),
        ),
        (
            "--config over PREFIXCACHE_CONFIG",
            vec!["--config", "prefixcache.toml"],
            vec![("PREFIXCACHE_CONFIG", file)],
            Some(dir.path()),
        ),
    ];
    let expected = [
        "/from-file/",
        "/from-env/",
        "/from-flag/",
        "/from-cwd/",
        "/from-file/",
        "/from-cwd/",
    ];
    for ((what, args, envs, cwd), want) in cases.iter().zip(expected) {
        let data = tempfile::tempdir().unwrap();
        let mut proxy = serve(data.path(), args, envs, *cwd);
        post(&client, &proxy.url, &chat(what)).await;
        let seen = get_json(&client, &format!("{}/mock/requests", mock.url)).await;
        let uris: Vec<&str> = seen
            .as_object()
            .unwrap()
            .values()
            .flat_map(|v| v.as_array().unwrap())
            .map(|r| r["uri"].as_str().unwrap())
            .collect();
        let last = uris
            .iter()
            .find(|u| u.starts_with(want))
            .unwrap_or_else(|| panic!("{what}: no request under {want}: {uris:?}"));
        assert!(last.ends_with("/v1/chat/completions"), "{what}: {last}");
        client
            .post(format!("{}/mock/reset", mock.url))
            .send()
            .await
            .unwrap();
        assert!(proxy.terminate().success(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_serves_the_admin_routes_on_their_own_port() {
    let mock = mock_upstream();
    let client = reqwest::Client::new();
    let data = tempfile::tempdir().unwrap();
    let mut proxy = serve(
        data.path(),
        &["--upstream", &mock.url, "--store", "memory"],
        &[
            ("PREFIXCACHE_CONFIG", "/dev/null"),
            ("PREFIXCACHE_ADMIN_LISTEN", "127.0.0.1:0"),
        ],
        None,
    );
    let admin = proxy.admin_url.clone().expect("an admin listener");
    assert_ne!(admin, proxy.url);
    let stats = client
        .get(format!("{admin}/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let stats: Value = stats.json().await.unwrap();
    assert!(stats.is_object(), "{stats}");
    let dashboard = client
        .get(format!("{admin}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    // The API listener does not serve them: it has no admin token, so they are not
    // there at all (forwarded upstream like any other unknown path).
    let on_api = client
        .get(format!("{}/admin/stats", proxy.url))
        .send()
        .await
        .unwrap();
    assert_ne!(on_api.status(), 200);
    assert!(proxy.terminate().success());
}

/// A client leaves mid-stream while the upstream is still sending slowly: with a short
/// `stream_finish_timeout` the proxy stops reading and stores nothing; with the default
/// it reads to the end and stores the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_finish_timeout_bounds_reading_for_a_client_that_left() {
    let mock = mock_upstream();
    let client = reqwest::Client::new();
    for (finish_timeout, stored) in [("200ms", false), ("120s", true)] {
        let data = tempfile::tempdir().unwrap();
        let mut proxy = serve(
            data.path(),
            &["--upstream", &mock.url, "--store", "memory"],
            &[
                ("PREFIXCACHE_CONFIG", "/dev/null"),
                ("PREFIXCACHE_CACHE_STREAM_FINISH_TIMEOUT", finish_timeout),
            ],
            None,
        );
        let gate = format!("finish-{finish_timeout}");
        let mut body = chat(&format!("leave early, timeout {finish_timeout}"));
        body["stream"] = json!(true);
        // Two events, then the upstream holds the rest; after the gate opens it sends an
        // event every 100 ms (at least 16 more: over 1.6 s, far past 200 ms).
        let mut resp = client
            .post(format!("{}/v1/chat/completions", proxy.url))
            .header("authorization", "Bearer sk-serve")
            .header("x-mock-stream-gate", format!("{gate}@2"))
            .header("x-mock-chunk-delay", "100ms")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(!resp.chunk().await.unwrap().unwrap().is_empty());
        drop(resp);
        let gates = format!("{}/mock/gates", mock.url);
        while get_json(&client, &gates).await[&gate]["waiting"] != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        client
            .post(format!("{}/mock/gates/{gate}/open", mock.url))
            .send()
            .await
            .unwrap();
        // Wait until the proxy is done with that upstream response, read or cut.
        while get_json(&client, &format!("{}/mock/stats", mock.url)).await["in_flight"] != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        body["stream"] = json!(false);
        let (status, cache, _) = post(&client, &proxy.url, &body).await;
        let want = if stored { "HIT" } else { "MISS" };
        assert_eq!((status, cache.as_str()), (200, want), "{finish_timeout}");
        assert!(proxy.terminate().success());
    }
}

/// SIGTERM while a stream is in flight: the stream completes during the drain, serve
/// exits 0, and the answer was stored on disk (a restart answers it from the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_what_completed_during_the_drain() {
    let mock = mock_upstream();
    let client = reqwest::Client::new();
    let data = tempfile::tempdir().unwrap();
    let args = ["--upstream", mock.url.as_str(), "--store", "disk"];
    let envs = [("PREFIXCACHE_CONFIG", "/dev/null")];
    let mut proxy = serve(data.path(), &args, &envs, None);
    let mut body = chat("finish during the drain");
    body["stream"] = json!(true);
    let mut resp = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer sk-serve")
        .header("x-mock-stream-gate", "drain@2")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
    let gates = format!("{}/mock/gates", mock.url);
    while get_json(&client, &gates).await["drain"]["waiting"] != 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    proxy.signal_term();
    client
        .post(format!("{}/mock/gates/drain/open", mock.url))
        .send()
        .await
        .unwrap();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got.ends_with(b"data: [DONE]\n\n"), "the stream completed");
    let status = tokio::task::spawn_blocking(move || {
        let s = proxy.wait();
        (s, proxy)
    })
    .await
    .unwrap()
    .0;
    assert!(
        status.success(),
        "serve exits 0 after the drain: {status:?}"
    );

    let mut again = serve(data.path(), &args, &envs, None);
    let (status, cache, replay) = post(&client, &again.url, &body).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert_eq!(replay, got);
    assert_eq!(upstream_calls(&client, &mock).await, 1);
    assert!(again.terminate().success());
}
