//! The deployment files on the real Docker engine: the image built from the binary under
//! test, the compose stack of `deploy/compose/compose.yaml` (two replicas behind HAProxy
//! on one Redis, Prometheus, Alertmanager, the mock upstream) and the Redis Cluster
//! stack of `deploy/compose/redis-cluster.yaml`, driven from the host through published
//! loopback ports. Each test brings its own compose project up and takes it down.
//!
//! Waits are bounded polls of the state a test waits for (a target up, an alert
//! received), never sleeps standing in for an event; the bounds only catch a hang.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prefixcache_testkit::docker::{
    Compose, TEST_IMAGE, build_test_image, ensure_base_images, require_docker, run,
};
use prefixcache_testkit::{require_python, workspace_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");
const STACK: &str = "deploy/compose/compose.yaml";
const CLUSTER: &str = "deploy/compose/redis-cluster.yaml";
/// Longest wait for a state the stack reaches by itself (containers starting,
/// Prometheus scraping, Alertmanager's group wait, a cluster failing over).
const PATIENCE: Duration = Duration::from_secs(240);

/// The compose stack's variables for a test: the test image, every port on a free one.
fn stack_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PREFIXCACHE_IMAGE", TEST_IMAGE),
        ("UPSTREAM_URL", "http://mock:8090"),
        ("RUST_LOG", "warn"),
    ];
    for port in [
        "LB_PORT",
        "PROXY_A_PORT",
        "PROXY_B_PORT",
        "PROMETHEUS_PORT",
        "ALERTMANAGER_PORT",
        "GRAFANA_PORT",
        "MOCK_PORT",
        "WEBHOOK_PORT",
        "PROXY_PORT",
    ] {
        env.push((port, ""));
    }
    env.extend_from_slice(extra);
    env
}

/// Images of the stack: the project's, and stand-ins for the public ones not present.
fn prepare(test: &str, bases: &[&str]) -> bool {
    if !require_docker(test) {
        return false;
    }
    ensure_base_images(bases);
    build_test_image(BIN.as_ref());
    true
}

/// Polls `check` every 250 ms until it gives a value; panics after [`PATIENCE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

/// Waits until `GET http://addr/readyz` answers 200 with `status` = `want`.
async fn wait_ready(client: &reqwest::Client, addr: &str, want: &str) -> Value {
    let url = format!("http://{addr}/readyz");
    wait_for(&format!("{url} to say {want}"), || async {
        match get_json(client, &url).await {
            Some((200, body)) if body["status"] == want => Some(body),
            _ => None,
        }
    })
    .await
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
           "messages": [{"role": "user", "content": text}]})
}

/// One chat completion through `addr`: the HTTP status and `x-prefixcache-status`, or
/// the transport error.
async fn ask(client: &reqwest::Client, addr: &str, text: &str) -> Result<(u16, String), String> {
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("authorization", "Bearer sk-containers")
        .json(&chat(text))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-prefixcache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.bytes().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((status, cache))
}

/// Clients sending chat completions to one address until stopped: a few distinct
/// prompts, so most answers are hits. Bounded in count and time.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(600);

    fn start(addr: &str, clients: usize, prompts: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            hits: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(std::sync::Mutex::new(Vec::new())),
            tasks: tokio::task::JoinSet::new(),
        };
        let mut load = load;
        for c in 0..clients {
            let (stop, ok, hits, failures) = (
                load.stop.clone(),
                load.ok.clone(),
                load.hits.clone(),
                load.failures.clone(),
            );
            let addr = addr.to_string();
            load.tasks.spawn(async move {
                let client = reqwest::Client::new();
                let started = tokio::time::Instant::now();
                for i in 0..Self::MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Self::MAX_TIME {
                        break;
                    }
                    let text = format!("load prompt {}", (i as usize + c) % prompts);
                    match ask(&client, &addr, &text).await {
                        Ok((200, cache)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if cache == "HIT" {
                                hits.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok((status, cache)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("HTTP {status} ({cache})")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            });
        }
        load
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded than when called.
    async fn progress(&self, n: u64) {
        let from = self.ok();
        wait_for(&format!("{n} more successful requests"), || async {
            (self.ok() >= from + n).then_some(())
        })
        .await;
    }

    /// Stops the clients and returns (successful requests, failures).
    async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok(), failures)
    }
}

fn assert_no_failures(what: &str, ok: u64, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} of {} requests failed, first ones: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
}

/// The alert rules as deployed, with every `for:` at 0 s so an alert fires on its
/// first evaluation instead of after 15 minutes. Written world-readable: Prometheus
/// runs as `nobody` in its container.
fn rules_without_for(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let rules =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let rewritten: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: 0s\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(
        rewritten.contains("for: 0s"),
        "the rules have no `for:` to shorten"
    );
    let path = dir.join("alerts.yml");
    std::fs::write(&path, rewritten).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// The official `openai` SDK against each URL in turn; returns the
/// `x-prefixcache-status` each answered.
fn sdk_statuses(python: &std::path::Path, urls: &[String]) -> Vec<String> {
    const SCRIPT: &str = r#"
import sys
from openai import OpenAI
for url in sys.argv[1:]:
    client = OpenAI(base_url=url + "/v1", api_key="sk-compose-sdk", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", temperature=0,
        messages=[{"role": "user", "content": "Name three prime numbers."}])
    assert raw.parse().choices[0].message.content
    print(raw.headers["x-prefixcache-status"])
"#;
    let out = run(Command::new(python).arg("-c").arg(SCRIPT).args(urls));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_shares_one_cache_and_alerts_reach_the_webhook() {
    const TEST: &str = "compose_stack_shares_one_cache_and_alerts_reach_the_webhook";
    let Some(python) = require_python(TEST, &["openai"]) else {
        return;
    };
    if !prepare(
        TEST,
        &[
            "debian",
            "redis",
            "haproxy",
            "prometheus",
            "alertmanager",
            "python",
        ],
    ) {
        return;
    }
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_without_for(rules_dir.path());
    let stack = Compose::new(
        STACK,
        &stack_env(&[
            ("ALERT_RULES", rules.to_str().unwrap()),
            (
                "ALERTMANAGER_CONFIG",
                "./alertmanager/alertmanager.test.yml",
            ),
        ]),
        &["demo", "test"],
    );
    stack.up();
    let client = reqwest::Client::new();
    let (a, b) = (stack.addr("proxy-a", 8080), stack.addr("proxy-b", 8080));
    let (lb, mock) = (stack.addr("lb", 8080), stack.addr("mock", 8090));
    for addr in [&a, &b, &lb] {
        wait_ready(&client, addr, "ok").await;
    }

    // The SDK: a miss on replica A is a hit on replica B, and the upstream saw one call.
    let statuses = sdk_statuses(&python, &[format!("http://{a}"), format!("http://{b}")]);
    assert_eq!(statuses, ["MISS", "HIT"], "replica A then replica B");
    let (_, stats) = get_json(&client, &format!("http://{mock}/mock/stats"))
        .await
        .unwrap();
    assert_eq!(
        stats["total"], 1,
        "one upstream call for both replicas: {stats}"
    );

    // Prometheus scrapes both replicas and has loaded every rule of the project's file.
    let prometheus = stack.addr("prometheus", 9090);
    wait_for("Prometheus to scrape both replicas", || async {
        let (_, t) = get_json(&client, &format!("http://{prometheus}/api/v1/targets")).await?;
        let up: Vec<&str> = t["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str())
            .collect();
        (up.contains(&"proxy-a:8080") && up.contains(&"proxy-b:8080")).then_some(())
    })
    .await;
    let (_, r) = get_json(&client, &format!("http://{prometheus}/api/v1/rules"))
        .await
        .unwrap();
    let groups = r["data"]["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"prefixcache-alerts") && names.contains(&"prefixcache-recording"));
    let alerts: Vec<&str> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|rule| rule["type"] == "alerting")
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    assert!(alerts.contains(&"PrefixcacheLowHitRatio"), "{alerts:?}");

    // A forced low hit ratio: distinct prompts through the load balancer all miss.
    for i in 0..30 {
        let (status, cache) = ask(&client, &lb, &format!("never asked before {i}"))
            .await
            .unwrap();
        assert_eq!((status, cache.as_str()), (200, "MISS"));
    }
    wait_for("every rule to evaluate without error", || async {
        let (_, r) = get_json(&client, &format!("http://{prometheus}/api/v1/rules")).await?;
        let all_ok = r["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|rule| rule["health"] == "ok");
        all_ok.then_some(())
    })
    .await;
    let webhook = stack.addr("webhook", 8080);
    let notification = wait_for("PrefixcacheLowHitRatio at the webhook receiver", || async {
        let (_, got) = get_json(&client, &format!("http://{webhook}/alerts")).await?;
        got.as_array()?
            .iter()
            .flat_map(|n| n["alerts"].as_array().into_iter().flatten())
            .find(|a| {
                a["labels"]["alertname"] == "PrefixcacheLowHitRatio" && a["status"] == "firing"
            })
            .cloned()
    })
    .await;
    assert_eq!(notification["labels"]["severity"], "warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_load_costs_no_request_and_hits_return() {
    const TEST: &str = "redis_stopped_under_load_costs_no_request_and_hits_return";
    if !prepare(
        TEST,
        &["debian", "redis", "haproxy", "prometheus", "alertmanager"],
    ) {
        return;
    }
    let stack = Compose::new(STACK, &stack_env(&[]), &["demo"]);
    stack.up();
    let client = reqwest::Client::new();
    let (a, b) = (stack.addr("proxy-a", 8080), stack.addr("proxy-b", 8080));
    for addr in [&a, &b] {
        wait_ready(&client, addr, "ok").await;
    }
    let load = Load::start(&a, 4, 16);
    load.progress(50).await;

    stack.run(&["stop", "-t", "1", "redis"]);
    wait_ready(&client, &a, "degraded").await;
    load.progress(100).await;

    stack.run(&["start", "redis"]);
    wait_ready(&client, &a, "ok").await;
    // A hit on B for a prompt A stored can only come from Redis (each replica's memory
    // tier holds only what it saw itself).
    let mut attempt = 0;
    wait_for("a hit through the restarted Redis", || {
        attempt += 1;
        let (client, a, b) = (&client, &a, &b);
        async move {
            let text = format!("after the restart {attempt}");
            let (status, _) = ask(client, a, &text).await.ok()?;
            assert_eq!(status, 200);
            let (status, cache) = ask(client, b, &text).await.ok()?;
            assert_eq!(status, 200);
            (cache == "HIT").then_some(())
        }
    })
    .await;
    load.progress(50).await;
    let (ok, failures) = load.finish().await;
    assert_no_failures("Redis stopped and restarted under load", ok, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_the_replicas_costs_no_request() {
    const TEST: &str = "rolling_restart_of_the_replicas_costs_no_request";
    if !prepare(
        TEST,
        &["debian", "redis", "haproxy", "prometheus", "alertmanager"],
    ) {
        return;
    }
    let stack = Compose::new(STACK, &stack_env(&[]), &["demo"]);
    stack.up();
    let client = reqwest::Client::new();
    let lb = stack.addr("lb", 8080);
    for service in ["proxy-a", "proxy-b"] {
        wait_ready(&client, &stack.addr(service, 8080), "ok").await;
    }
    let load = Load::start(&lb, 4, 16);
    load.progress(50).await;
    for service in ["proxy-a", "proxy-b"] {
        let before = load.ok();
        // SIGTERM, wait for the exit, start again: what a rolling update does.
        stack.run(&["restart", "-t", "30", service]);
        assert!(
            load.ok() > before,
            "requests went on while {service} restarted"
        );
        // Its published port is a new one after the restart.
        wait_ready(&client, &stack.addr(service, 8080), "ok").await;
        load.progress(50).await;
    }
    let hits = load.hits();
    let (ok, failures) = load.finish().await;
    assert_no_failures("rolling restart behind HAProxy", ok, &failures);
    assert!(hits > 0, "the replicas answered from the shared cache");
}

/// The nodes of the cluster stack, as compose names them.
const NODES: [&str; 6] = [
    "redis-1", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6",
];

/// `CLUSTER NODES` as one node sees it: (service, role, link) per node.
fn cluster_view(stack: &Compose) -> String {
    for node in NODES {
        let out = stack
            .command(&["exec", "-T", node, "redis-cli", "cluster", "nodes"])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    String::new()
}

/// The IP address of a container on the cluster's `store` network.
fn store_ip(stack: &Compose, service: &str) -> String {
    let out = run(Command::new("docker").args([
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            stack.network("store")
        ),
        &stack.container(service),
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_fails_over_and_a_cut_off_replica_fails_open() {
    const TEST: &str = "redis_cluster_fails_over_and_a_cut_off_replica_fails_open";
    if !prepare(TEST, &["debian", "redis"]) {
        return;
    }
    // Memory-tier entries go stale after 200 ms: later hits come from the cluster.
    let stack = Compose::new(CLUSTER, &stack_env(&[("MEMORY_TTL", "200ms")]), &[]);
    stack.up();
    let client = reqwest::Client::new();
    let proxy = stack.addr("proxy", 8080);
    wait_for(
        "the cluster to be formed with three masters and three replicas",
        || async {
            let view = cluster_view(&stack);
            let masters = view
                .lines()
                .filter(|l| l.contains("master") && !l.contains("fail"))
                .count();
            let replicas = view.lines().filter(|l| l.contains("slave")).count();
            (masters == 3 && replicas == 3).then_some(())
        },
    )
    .await;
    wait_ready(&client, &proxy, "ok").await;

    let load = Load::start(&proxy, 4, 32);
    load.progress(100).await;
    // Kill the master that `redis-1` is (the cluster is created with the first three
    // nodes as masters).
    let victim_ip = store_ip(&stack, "redis-1");
    let view = cluster_view(&stack);
    assert!(
        view.lines()
            .any(|l| l.contains(&format!("{victim_ip}:6379")) && l.contains("master")),
        "redis-1 ({victim_ip}) should be a master:\n{view}"
    );
    run(Command::new("docker").args(["kill", &stack.container("redis-1")]));
    wait_for(
        "a replica to take over the killed master's slots",
        || async {
            let view = cluster_view(&stack);
            let live_masters = view
                .lines()
                .filter(|l| l.contains("master") && !l.contains("fail"))
                .count();
            (live_masters == 3).then_some(())
        },
    )
    .await;
    // Hits again after the failover: the hit count grows while the cluster is whole.
    wait_ready(&client, &proxy, "ok").await;
    let hits = load.hits();
    load.progress(100).await;
    assert!(load.hits() > hits, "hits recover after the failover");

    // Cut the proxy off the store network: it keeps answering (from upstream).
    let container = stack.container("proxy");
    run(Command::new("docker").args([
        "network",
        "disconnect",
        &stack.network("store"),
        &container,
    ]));
    wait_ready(&client, &proxy, "degraded").await;
    load.progress(100).await;
    run(Command::new("docker").args(["network", "connect", &stack.network("store"), &container]));
    wait_ready(&client, &proxy, "ok").await;
    let hits = load.hits();
    load.progress(100).await;
    assert!(load.hits() > hits, "hits recover after reconnecting");

    let (ok, failures) = load.finish().await;
    assert_no_failures("Redis Cluster failover and network cut", ok, &failures);
}
