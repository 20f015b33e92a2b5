//! The dashboard's routes: who may see them (admin listener, or the main listener with
//! the admin token; never public), the page's security headers, and the summary JSON
//! against `/metrics` after real traffic through the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Reply, Setup, metric};
use prefixcache_proxy::dashboard::history::RESOLUTION_MS;
use serde_json::{Value, json};

const TOKEN: &str = "admin-secret-token";

fn basic(user: &str, password: &str) -> String {
    // Base64 by hand keeps the test free of another dependency.
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

async fn get(h: &Harness, base: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut req = h.client.get(format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    Reply::read(req.send().await.unwrap()).await
}

async fn summary(h: &Harness, base: &str, auth: Option<&str>) -> Value {
    let r = get(h, base, "/admin/summary", auth).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn system_chat(system: &str, user: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
    })
}

#[tokio::test]
async fn on_the_main_listener_the_dashboard_needs_the_admin_token() {
    let h = Harness::start(Setup::default().toml(&format!("[admin]\ntoken = \"{TOKEN}\""))).await;
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/dashboard", "/dashboard/app.js", "/admin/summary"] {
        let none = get(&h, &h.url, path, None).await;
        assert_eq!(none.status, 401, "{path} without a token");
        assert_eq!(none.json()["error"]["code"], "admin_unauthorized");
        let wrong = get(&h, &h.url, path, Some("Bearer not-the-token")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let wrong_basic = get(&h, &h.url, path, Some(&basic("admin", "nope"))).await;
        assert_eq!(wrong_basic.status, 401, "{path} with a wrong password");
        let ok = get(&h, &h.url, path, Some(&bearer)).await;
        assert_eq!(ok.status, 200, "{path} with the token");
        // A browser asks for the token once (Basic, any user name) and sends it along.
        let browser = get(&h, &h.url, path, Some(&basic("", TOKEN))).await;
        assert_eq!(
            browser.status, 200,
            "{path} with the token as a Basic password"
        );
    }
    // The page's 401 asks the browser for credentials.
    let page = get(&h, &h.url, "/dashboard", None).await;
    assert!(
        page.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic realm=")),
        "{:?}",
        page.headers
    );
    // Basic credentials, which a browser sends on its own (even for a form another
    // site posts here), never authorize a purge: only the bearer token does.
    let csrf = Reply::read(
        h.client
            .post(format!("{}/admin/purge", h.url))
            .header("authorization", basic("", TOKEN))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(csrf.status, 401);
    let purge = Reply::read(
        h.client
            .post(format!("{}/admin/purge", h.url))
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(purge.status, 200);
}

#[tokio::test]
async fn without_a_token_the_main_listener_has_no_dashboard() {
    let h = Harness::start(Setup::default()).await;
    for path in ["/dashboard", "/admin/summary"] {
        let r = get(&h, &h.url, path, None).await;
        assert_ne!(r.status, 200, "{path} must not be public");
        assert!(
            r.header("content-security-policy").is_none(),
            "{path} must not be the dashboard"
        );
    }
}

#[tokio::test]
async fn the_admin_listener_serves_the_page_with_a_strict_policy() {
    let h = Harness::start(Setup::default().admin_listener()).await;
    let admin = h.admin_url.clone().unwrap();
    let page = get(&h, &admin, "/dashboard", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8_lossy(&page.body);
    // Self-contained: nothing from another origin, no inline script or style.
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script>") && !html.contains("style="));
    for (file, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/icon.svg", "image/svg+xml"),
    ] {
        let r = get(&h, &admin, file, None).await;
        assert_eq!(r.status, 200, "{file}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{file}"
        );
        // The only absolute URLs: the SVG namespace (a name, never fetched) and the
        // `http://` the empty state's example starts with.
        let text = String::from_utf8_lossy(&r.body);
        for (at, _) in text.match_indices("http") {
            let rest = &text[at..];
            assert!(
                rest.starts_with("http://www.w3.org/2000/svg\"")
                    || rest.starts_with("http://\"")
                    || !(rest.starts_with("http://") || rest.starts_with("https://")),
                "{file} names another origin: {}",
                &rest[..rest.len().min(60)]
            );
        }
    }
    assert_eq!(
        get(&h, &admin, "/dashboard/nope.js", None).await.status,
        404
    );
    // The main listener does not serve it (admin routes live on the admin listener).
    assert!(
        get(&h, &h.url, "/dashboard", None)
            .await
            .header("content-security-policy")
            .is_none()
    );
}

#[tokio::test]
async fn the_summary_says_what_metrics_says() {
    let h = Harness::start(Setup::default().admin_listener()).await;
    let admin = h.admin_url.clone().unwrap();

    // Before any request: an empty summary, every ratio null.
    let empty = summary(&h, &admin, None).await;
    assert_eq!(empty["version"], 1);
    assert_eq!(empty["requests"]["since_start"]["total"], 0);
    assert_eq!(empty["hit_ratio"]["since_start"], Value::Null);
    assert_eq!(empty["families"], json!([]));
    assert_eq!(empty["history"]["resolution_s"], 10);
    assert_eq!(empty["history"]["window_s"], 3600);
    assert_eq!(empty["alert"]["hit_ratio_below"], 0.6);

    let system = "You are a careful assistant. Answer in one short sentence, please.";
    let stable = system_chat(system, "Name three prime numbers.");
    assert_eq!(h.chat(&stable).await.cache(), "MISS");
    let hit = h.chat(&stable).await;
    assert_eq!(hit.cache(), "HIT");
    let family = hit.header("x-prefixcache-family").unwrap().to_string();
    let bypass = h.chat_with(&[("cache-control", "no-cache")], &stable).await;
    assert_eq!(bypass.cache(), "BYPASS");
    let dynamic = h
        .chat(&system_chat(
            "RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b. You are a careful assistant.",
            "Name three prime numbers.",
        ))
        .await;
    assert_eq!(dynamic.cache(), "MISS");
    let dynamic_family = dynamic.header("x-prefixcache-family").unwrap().to_string();
    // The caller's own prompt_cache_key is reported as its own policy.
    let mut own_key = system_chat(system, "Name three even numbers.");
    own_key["prompt_cache_key"] = json!("my-key");
    assert_eq!(h.chat(&own_key).await.cache(), "MISS");
    let bad = Reply::read(
        h.post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, 400);
    h.settle().await;

    let s = summary(&h, &admin, None).await;
    let m = h.metrics().await;
    let requests = |status| metric(&m, "prefixcache_requests_total", &[("status", status)]);
    for status in ["hit", "miss", "coalesced", "bypass", "error", "passthrough"] {
        assert_eq!(
            s["requests"]["since_start"][status].as_f64().unwrap(),
            requests(status),
            "{status}"
        );
        assert_eq!(
            s["requests"]["last_hour"][status], s["requests"]["since_start"][status],
            "a young process: the last hour is everything ({status})"
        );
    }
    assert_eq!(s["requests"]["since_start"]["hit"], 1);
    assert_eq!(s["requests"]["since_start"]["miss"], 3);
    assert_eq!(s["requests"]["since_start"]["bypass"], 1);
    assert_eq!(s["requests"]["since_start"]["error"], 1);
    assert_eq!(s["requests"]["since_start"]["total"], 6);
    // The alert's ratio: (hit + coalesced) / (hit + coalesced + miss).
    assert_eq!(s["hit_ratio"]["since_start"], 0.25);
    let default = s["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "default")
        .unwrap();
    assert_eq!(default["hit_ratio"]["last_5m"], 0.25);
    for kind in ["spent", "saved"] {
        let want = metric(&m, "prefixcache_cost_usd_total", &[("kind", kind)]);
        let key = format!("{kind}_usd");
        assert!(want > 0.0, "{kind}");
        assert_eq!(s["money"][&key]["since_start"].as_f64().unwrap(), want);
        assert_eq!(s["money"][&key]["today"].as_f64().unwrap(), want);
        assert_eq!(s["money"][&key]["last_hour"].as_f64().unwrap(), want);
    }
    let saved_tokens = metric(
        &m,
        "prefixcache_tokens_total",
        &[("source", "cache"), ("kind", "prompt")],
    ) + metric(
        &m,
        "prefixcache_tokens_total",
        &[("source", "cache"), ("kind", "completion")],
    );
    assert!(saved_tokens > 0.0);
    assert_eq!(
        s["tokens"]["saved"]["since_start"].as_f64().unwrap(),
        saved_tokens
    );

    // Provider prompt cache by policy: equal to provider_prompt_tokens_total.
    let policies = s["provider_cache"]["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["policy"]["prompt_cache_key"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"caller"), "{names:?}");
    // The default `prompt_cache_key = "auto"` gives a quiet family the family's key.
    assert!(names.contains(&"family"), "{names:?}");
    for p in policies {
        let name = p["policy"]["prompt_cache_key"].as_str().unwrap();
        assert_eq!(p["policy"]["breakpoints"], Value::Null);
        assert_eq!(
            p["since_start"]["prompt_tokens"].as_f64().unwrap(),
            metric(
                &m,
                "prefixcache_provider_prompt_tokens_total",
                &[("prompt_cache_key", name), ("kind", "prompt")]
            ),
            "{name}"
        );
    }

    // Families: the stable one with its hit rate, the dynamic one with its finding.
    let families = s["families"].as_array().unwrap();
    let stable_row = families.iter().find(|f| f["short"] == family).unwrap();
    // MISS, HIT, BYPASS: one hit in two lookups.
    assert_eq!(stable_row["requests_last_hour"], 3);
    assert_eq!(stable_row["hit_ratio_last_hour"], 0.5);
    assert_eq!(stable_row["forwarded"], 2);
    let stable_tokens = stable_row["stable_prefix_tokens"].as_u64().unwrap();
    assert!((5..40).contains(&stable_tokens), "{stable_row}");
    assert_eq!(stable_row["static_varies"], false);
    assert_eq!(stable_row["provider_cacheable_share"], 0.0);
    assert_eq!(stable_row["findings"], json!([]));
    let dynamic_row = families
        .iter()
        .find(|f| f["short"] == dynamic_family)
        .unwrap();
    let finding = dynamic_row["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "dynamic-prefix" && f["severity"] == "error")
        .unwrap_or_else(|| panic!("{dynamic_row}"));
    let [start, end] = [
        finding["tokens"][0].as_u64().unwrap(),
        finding["tokens"][1].as_u64().unwrap(),
    ];
    assert!(start < end && end <= 50, "{finding}");
    assert_eq!(
        s["findings"]["by_rule"][0]["since_start"].as_f64().unwrap(),
        metric(
            &m,
            "prefixcache_lint_findings_total",
            &[("rule", "dynamic-prefix")]
        )
    );
    // Never prompt text.
    let text = s.to_string();
    assert!(!text.contains("3f2b8c1e") && !text.contains("careful assistant"));

    // Latency: one hit, three misses (and the bypass) observed.
    assert_eq!(s["latency_ms"]["hit"]["since_start"]["count"], 1);
    assert_eq!(s["latency_ms"]["miss"]["since_start"]["count"], 3);
    assert!(
        s["latency_ms"]["hit"]["since_start"]["p50"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    assert_eq!(s["store"]["backend"], "memory");
    assert_eq!(s["store"]["degraded"], false);
    assert_eq!(
        s["inflight"],
        json!({"upstream": 0, "flights": 0, "followers": 0})
    );
    // One point per reading plus now, and every series as long as `t`.
    let n = s["series"]["t"].as_array().unwrap().len();
    assert!(n >= 1);
    for (name, series) in s["series"]["requests_per_s"].as_object().unwrap() {
        assert_eq!(series.as_array().unwrap().len(), n, "{name}");
    }
    assert_eq!(s["series"]["hit_ratio"].as_array().unwrap().len(), n);
}

#[tokio::test]
async fn windows_move_with_the_clock() {
    let h = Harness::start(Setup::default().admin_listener()).await;
    let admin = h.admin_url.clone().unwrap();
    let body = system_chat("You are terse.", "One.");
    let sample = || h.state.dashboard.sample(&h.state.metrics, h.state.now_ms());

    // 08:00 UTC: a miss.
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    h.settle().await;
    h.clock
        .advance(std::time::Duration::from_millis(RESOLUTION_MS));
    sample();
    let spent_first = summary(&h, &admin, None).await["money"]["spent_usd"]["since_start"]
        .as_f64()
        .unwrap();

    // Two hours later: a hit. The last hour holds only the hit.
    h.clock.advance(std::time::Duration::from_secs(2 * 3600));
    sample();
    assert_eq!(h.chat(&body).await.cache(), "HIT");
    let s = summary(&h, &admin, None).await;
    assert_eq!(s["requests"]["since_start"]["total"], 2);
    assert_eq!(s["requests"]["last_hour"]["total"], 1);
    assert_eq!(s["requests"]["last_hour"]["hit"], 1);
    assert_eq!(s["hit_ratio"]["last_hour"], 1.0);
    assert_eq!(s["hit_ratio"]["since_start"], 0.5);
    assert_eq!(s["money"]["spent_usd"]["last_hour"], 0.0);
    // The projection runs on the last hour's rate: nothing spent, nothing projected.
    assert_eq!(s["money"]["projected_month_spent_usd"], 0.0);
    assert!(s["money"]["projected_month_saved_usd"].as_f64().unwrap() > 0.0);
    // The sampler's next reading.
    h.clock
        .advance(std::time::Duration::from_millis(RESOLUTION_MS));
    sample();

    // Past midnight UTC: "today" starts over, "since start" does not.
    h.clock.advance(std::time::Duration::from_secs(16 * 3600));
    sample();
    let body2 = system_chat("You are terse.", "Two.");
    assert_eq!(h.chat(&body2).await.cache(), "MISS");
    h.settle().await;
    let s = summary(&h, &admin, None).await;
    let spent_today = s["money"]["spent_usd"]["today"].as_f64().unwrap();
    let spent_all = s["money"]["spent_usd"]["since_start"].as_f64().unwrap();
    assert!(spent_today > 0.0);
    assert!((spent_all - spent_first - spent_today).abs() < 1e-15, "{s}");
    assert_eq!(s["requests"]["last_hour"]["total"], 1);
    assert!(s["history"]["readings"].as_u64().unwrap() <= 361);
}
