//! `prefixcache serve` on a real Redis Cluster that changes shape under load: slots are
//! resharded from one master to another (`ASK`, then `MOVED`) and a master fails over to
//! its replica, while clients keep asking. Every answer must be a 200 carrying the
//! answer to its own request; afterwards hits come from the cluster again.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test awaits every task it spawns before it ends.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::redis::{RedisCluster, require_redis};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

/// One answer: the body's index, the HTTP status, the cache status, the content.
type Answer = (usize, u16, String, String);

async fn ask(client: &reqwest::Client, url: &str, i: usize) -> Answer {
    let body = json!({"model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "user", "content": format!("cluster body {i}")}]});
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", "Bearer sk-cluster")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-prefixcache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (i, status, cache, content)
}

/// Store operations that failed so far (timeouts, unavailable, errors, open circuit),
/// by series, from the proxy's metrics.
async fn store_failures(client: &reqwest::Client, url: &str) -> BTreeMap<String, u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("prefixcache_store_operations_total{"))
        .filter(|l| {
            !["hit", "miss", "ok"]
                .iter()
                .any(|r| l.contains(&format!("result=\"{r}\"")))
        })
        .map(|l| {
            let (series, n) = l.rsplit_once(' ').unwrap();
            (series.to_string(), n.parse::<f64>().unwrap() as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_and_failover_under_load_keep_every_answer_right() {
    if !require_redis("resharding_and_failover_under_load_keep_every_answer_right") {
        return;
    }
    let cluster = Arc::new(RedisCluster::start_with_replicas(3, 1));
    let mock = Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    // No memory tier: every lookup goes to the cluster while it changes.
    let proxy = Service::start(
        BIN.as_ref(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.url,
            "--store",
            "redis",
            "--redis-url",
            &cluster.url(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[
            ("PREFIXCACHE_CONFIG", "/dev/null"),
            ("RUST_LOG", "warn"),
            ("PREFIXCACHE_STORE_MEMORY_TTL", "0s"),
            // A loaded machine must not turn slow store answers into failures here:
            // only a redirect the store cannot follow may fail an operation.
            ("PREFIXCACHE_STORE_TIMEOUT", "30s"),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    const BODIES: usize = 40;
    // Fill: every body stored once.
    let mut answers: Vec<Answer> = Vec::new();
    for i in 0..BODIES {
        answers.push(ask(&client, &proxy.url, i).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..6 {
        let (client, url, stop) = (client.clone(), proxy.url.clone(), stop.clone());
        load.spawn(async move {
            let mut out = Vec::new();
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                out.push(ask(&client, &url, i % BODIES).await);
                i += 7;
            }
            out
        });
    }
    // While the load runs: move 2,000 slots (with their keys) from one master to
    // another. Store operations must not fail meanwhile: redirects are followed.
    let failures_before = store_failures(&client, &proxy.url).await;
    let masters: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&i| {
            cluster.nodes()[i]
                .command(&["ROLE"])
                .is_ok_and(|r| r.text().starts_with("master"))
        })
        .collect();
    tokio::task::spawn_blocking({
        let (cluster, masters) = (cluster.clone(), masters.clone());
        move || {
            let id = |i: usize| {
                cluster.nodes()[i]
                    .command(&["CLUSTER", "MYID"])
                    .unwrap()
                    .text()
            };
            let out = std::process::Command::new("redis-cli")
                .args(["--cluster", "reshard"])
                .arg(format!("127.0.0.1:{}", cluster.nodes()[masters[0]].port()))
                .args(["--cluster-from", &id(masters[0])])
                .args(["--cluster-to", &id(masters[1])])
                .args(["--cluster-slots", "2000", "--cluster-yes"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "reshard: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    })
    .await
    .unwrap();
    let failures_after = store_failures(&client, &proxy.url).await;
    let reshard_failures: u64 =
        failures_after.values().sum::<u64>() - failures_before.values().sum::<u64>();
    // Then a master fails over to its replica (some operations may fail open here: the
    // old master refuses writes while it hands over).
    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || {
            let replica = cluster.replicas_of(masters[2])[0];
            cluster.fail_over_to(replica);
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = load.join_next().await {
        answers.extend(r.unwrap());
    }

    // After the changes: once the proxy reports its store healthy (a circuit opened by
    // failures during the failover closes on its next probe), everything is a hit
    // again, served from the cluster.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get(format!("{}/readyz", proxy.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if ready.contains("\"status\":\"ok\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store never recovered: {ready}"
        );
        answers.push(ask(&client, &proxy.url, 0).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = Vec::new();
    for i in 0..BODIES {
        after.push(ask(&client, &proxy.url, i).await);
    }
    let failed: Vec<&Answer> = answers
        .iter()
        .chain(&after)
        .filter(|a| a.1 != 200)
        .collect();
    assert!(failed.is_empty(), "failed answers: {failed:?}");
    // One content per body, whether answered by a hit or by upstream.
    let mut content: BTreeMap<usize, &str> = BTreeMap::new();
    for (i, _, _, c) in answers.iter().chain(&after) {
        assert!(!c.is_empty());
        let first = content.entry(*i).or_insert(c.as_str());
        assert_eq!(first, c, "body {i} got another body's answer");
    }
    let hits = after.iter().filter(|a| a.2 == "HIT").count();
    println!(
        "cluster reshard + failover under load: {} answers during the changes, {reshard_failures} store operations failed during the reshard, {hits} hits of {BODIES} after",
        answers.len() - BODIES,
    );
    assert_eq!(
        reshard_failures, 0,
        "no store operation fails while slots move: {failures_before:?} -> {failures_after:?}"
    );
    assert_eq!(
        hits, BODIES,
        "every body is a hit from the cluster afterwards"
    );
}
