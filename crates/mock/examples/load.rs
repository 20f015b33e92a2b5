//! A bounded load probe of the mock itself: `cargo run -p prefixcache-mock --example load
//! [--release] -- [REQUESTS] [CONCURRENCY]`. Sends non-streamed chat completions to an
//! in-process mock on 127.0.0.1 over keep-alive connections, first one repeated body
//! (the memoized path), then distinct bodies (tokenize and generate each time), and prints
//! requests per second. The client shares the machine, so the figures are a floor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use prefixcache_mock::{MockConfig, spawn_local};
use tokio::task::JoinSet;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let system = "You are a careful assistant. ".repeat(40);
    for distinct in [false, true] {
        let url = format!("{}/v1/chat/completions", server.url());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        let mut set = JoinSet::new();
        for w in 0..concurrency {
            let (client, url, system) = (client.clone(), url.clone(), system.clone());
            let n = total / concurrency;
            set.spawn(async move {
                for i in 0..n {
                    let q = if distinct {
                        format!("question {w}-{i}")
                    } else {
                        "question".to_string()
                    };
                    let body = serde_json::json!({"model": "gpt-4o", "messages": [
                        {"role": "system", "content": system}, {"role": "user", "content": q}]});
                    let r = client
                        .post(&url)
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let n = (total / concurrency) * concurrency;
        println!(
            "{} bodies: {n} requests, concurrency {concurrency}: {:.0} req/s ({:.1} us/request)",
            if distinct { "distinct" } else { "repeated" },
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    server.shutdown().await.unwrap();
}
