//! The deployment artifacts in `deploy/` against the metrics the proxy really exports:
//! `promtool check rules` and `promtool test rules` on the alert rules, the Grafana
//! dashboard's JSON shape, every PromQL expression's syntax (through promtool) and its
//! metric and label names (against `crates/proxy/src/metrics.rs`), and `docs/metrics.md`
//! naming every metric, alert and panel.
//!
//! The metric list is read from the proxy's source rather than from a running proxy so
//! this stays a fast test of `core` with no server; the parse fails loudly if
//! `metrics.rs` changes shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use prefixcache_testkit::{skip_or_fail, which, workspace_root};
use serde_json::Value;

/// Labels every scraped series may carry besides its own (added by Prometheus), and
/// the histogram bucket label.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "le"];

#[derive(Debug)]
struct Exported {
    /// Sample names a query may use (`_total`, `_bucket`/`_sum`/`_count` included),
    /// each with its label names.
    samples: BTreeMap<String, BTreeSet<String>>,
    /// Metric family names as registered (with the `prefixcache_` prefix).
    families: Vec<String>,
}

fn root() -> PathBuf {
    workspace_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `registry.register("name", "help", field.clone())` in metrics.rs, typed by the
/// field's declaration in `struct Metrics`, labelled by its label struct.
fn exported_metrics() -> Exported {
    let src = read("crates/proxy/src/metrics.rs");
    // label structs: `pub struct XLabels { pub a: .., pub b: .. }`
    let mut label_structs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for chunk in src.split("pub struct ").skip(1) {
        let name: String = chunk
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name == "Metrics" {
            continue;
        }
        let Some(body) = chunk.split_once('{').map(|(_, b)| b) else {
            continue;
        };
        let body = body.split('}').next().unwrap();
        let fields: BTreeSet<String> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split(':').next())
            .map(|f| f.trim().to_string())
            .collect();
        label_structs.insert(name, fields);
    }
    // field types of `struct Metrics`
    let metrics_body = src
        .split("pub struct Metrics {")
        .nth(1)
        .expect("metrics.rs declares `pub struct Metrics {`")
        .split("\n}")
        .next()
        .unwrap();
    let mut field_types: BTreeMap<String, String> = BTreeMap::new();
    for line in metrics_body.lines() {
        if let Some((name, ty)) = line
            .trim()
            .strip_prefix("pub ")
            .and_then(|l| l.split_once(':'))
        {
            field_types.insert(
                name.trim().to_string(),
                ty.trim().trim_end_matches(',').into(),
            );
        }
    }
    let mut samples = BTreeMap::new();
    let mut families = Vec::new();
    for call in src.split("registry.register(").skip(1) {
        let name = call
            .split('"')
            .nth(1)
            .expect("register's first argument is a string literal");
        let field = call
            .split(".clone()")
            .next()
            .and_then(|s| {
                s.rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
            })
            .expect("register's third argument is `field.clone()`");
        let ty = field_types
            .get(field)
            .unwrap_or_else(|| panic!("no field {field:?} in struct Metrics"));
        let labels: BTreeSet<String> = label_structs
            .iter()
            .find(|(s, _)| ty.contains(&format!("<{s},")) || ty.contains(&format!("<{s}>")))
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        let full = format!("prefixcache_{name}");
        let kind = if ty.contains("Histogram") {
            "histogram"
        } else if ty.contains("Counter") {
            "counter"
        } else if ty.contains("Gauge") {
            "gauge"
        } else {
            panic!("unknown metric type {ty:?} for {name}")
        };
        let names: Vec<String> = match kind {
            "counter" => vec![format!("{full}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{full}{s}"))
                .collect(),
            _ => vec![full.clone()],
        };
        for n in names {
            samples.insert(n, labels.clone());
        }
        families.push(full);
    }
    assert!(
        families.len() >= 14,
        "found only {} metrics in metrics.rs: did its shape change? {families:?}",
        families.len()
    );
    Exported { samples, families }
}

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
struct Refs {
    /// Selected metric names, each with the label names of its matchers.
    selectors: Vec<(String, Vec<String>)>,
    /// Label names in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`,
    /// `group_left (...)`, `group_right (...)`.
    grouping: Vec<String>,
}

const KEYWORDS: [&str; 15] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "start",
];

/// A small PromQL scanner: enough to list metric names, matcher labels and grouping
/// labels. Syntax itself is checked by promtool.
fn refs(expr: &str) -> Refs {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Refs::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let read_ident = |mut j: usize| {
        let s = j;
        while j < b.len() && ident_char(b[j]) {
            j += 1;
        }
        (b[s..j].iter().collect::<String>(), j)
    };
    // label matchers `{a="x", b=~"y"}` starting after `{`; returns names and end
    let matchers = |mut j: usize| {
        let mut names = Vec::new();
        loop {
            j = skip_ws(j);
            if j >= b.len() || b[j] == '}' {
                return (names, j + 1);
            }
            if b[j] == ',' {
                j += 1;
                continue;
            }
            if b[j] == '"' || b[j] == '\'' || b[j] == '`' {
                let q = b[j];
                j += 1;
                while j < b.len() && b[j] != q {
                    if b[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                j += 1;
                continue;
            }
            if ident_start(b[j]) {
                let s = j;
                while j < b.len() && ident_char(b[j]) {
                    j += 1;
                }
                names.push(b[s..j].iter().collect::<String>());
                continue;
            }
            j += 1; // operators
        }
    };
    let mut expect_grouping = false;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // a selector without a name: `{__name__=...}` is not used here
            let (_, e) = matchers(i + 1);
            i = e;
        } else if c == '(' && expect_grouping {
            let mut j = i + 1;
            while j < b.len() && b[j] != ')' {
                if ident_start(b[j]) {
                    let (name, e) = read_ident(j);
                    out.grouping.push(name);
                    j = e;
                } else {
                    j += 1;
                }
            }
            expect_grouping = false;
            i = j + 1;
        } else if ident_start(c) && (i == 0 || !(ident_char(b[i - 1]) || b[i - 1] == '.')) {
            let (word, e) = read_ident(i);
            let next = skip_ws(e);
            if KEYWORDS.contains(&word.as_str()) {
                expect_grouping = matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if word == "offset" {
                    // skip the duration
                    let mut j = next;
                    while j < b.len() && (b[j].is_ascii_alphanumeric()) {
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                i = e;
            } else if (next < b.len() && b[next] == '(')
                || matches!(read_ident(next).0.as_str(), "by" | "without")
            {
                expect_grouping = false;
                i = e; // a function or aggregation
            } else {
                expect_grouping = false;
                let mut labels = Vec::new();
                let mut j = e;
                if j < b.len() && b[j] == '{' {
                    let (names, end) = matchers(j + 1);
                    labels = names;
                    j = end;
                }
                out.selectors.push((word, labels));
                i = j;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Checks an expression's names; returns problems as text.
fn check_names(
    what: &str,
    expr: &str,
    exported: &Exported,
    recorded: &BTreeSet<String>,
) -> Vec<String> {
    let r = refs(expr);
    let mut problems = Vec::new();
    let mut labels_in_scope: BTreeSet<String> =
        TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    if r.selectors.is_empty() {
        problems.push(format!("{what}: no metric in {expr:?}"));
    }
    for (name, matchers) in &r.selectors {
        if recorded.contains(name) {
            continue;
        }
        let Some(labels) = exported.samples.get(name) else {
            problems.push(format!(
                "{what}: metric {name} is not exported by crates/proxy/src/metrics.rs"
            ));
            continue;
        };
        labels_in_scope.extend(labels.iter().cloned());
        for m in matchers {
            let known = labels.contains(m)
                || TARGET_LABELS.contains(&m.as_str())
                || (m == "le" && name.ends_with("_bucket"));
            if !known {
                problems.push(format!(
                    "{what}: {name} has no label {m:?} (has {labels:?})"
                ));
            }
        }
    }
    // Grouping labels must belong to some metric of the expression (recording rules
    // keep their labels; they are checked where they are defined).
    let uses_recorded = r.selectors.iter().any(|(n, _)| recorded.contains(n));
    for g in &r.grouping {
        if !labels_in_scope.contains(g) && !uses_recorded {
            problems.push(format!(
                "{what}: grouping label {g:?} is on no metric of {expr:?}"
            ));
        }
    }
    problems
}

/// `record:`/`alert:` names and `expr:` texts of a rule file in the layout of
/// `deploy/prometheus/alerts.yml` (`expr: |` blocks or one-line exprs).
fn rules(yaml: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut recorded = BTreeSet::new();
    let mut current = String::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let t = t.strip_prefix("- ").unwrap_or(t);
        if let Some(name) = t.strip_prefix("record:") {
            current = name.trim().to_string();
            recorded.insert(current.clone());
        } else if let Some(name) = t.strip_prefix("alert:") {
            current = name.trim().to_string();
        } else if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = lines[i].len() - lines[i].trim_start().len();
                let mut body = String::new();
                while i + 1 < lines.len() {
                    let l = lines[i + 1];
                    let ind = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && ind <= indent {
                        break;
                    }
                    body.push_str(l.trim());
                    body.push('\n');
                    i += 1;
                }
                out.push((current.clone(), body));
            } else {
                out.push((current.clone(), rest.to_string()));
            }
        }
        i += 1;
    }
    (out, recorded)
}

fn promtool() -> Option<PathBuf> {
    let found = which("promtool");
    if found.is_none() {
        skip_or_fail(
            "deploy",
            "promtool",
            "Install Debian's `prometheus` package (`apt-get install -y prometheus`); .ci/run does.",
        );
    }
    found
}

fn run(promtool: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = root().join("deploy/prometheus");
    let check = run(&promtool, &dir, &["check", "rules", "alerts.yml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let test = run(&promtool, &dir, &["test", "rules", "alerts_test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let exported = exported_metrics();
    let (rules, recorded) = rules(&read("deploy/prometheus/alerts.yml"));
    let alerts: Vec<&str> = rules
        .iter()
        .filter(|(n, _)| !recorded.contains(n))
        .map(|(n, _)| n.as_str())
        .collect();
    for required in [
        "PrefixcacheLowHitRatio",
        "PrefixcacheStoreDegraded",
        "PrefixcacheUpstreamErrors",
        "PrefixcacheCostSpike",
    ] {
        assert!(alerts.contains(&required), "{required} missing: {alerts:?}");
    }
    let mut problems = Vec::new();
    for (name, expr) in &rules {
        problems.extend(check_names(name, expr, &exported, &recorded));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The unit tests feed series under exported names too.
    let tests = read("deploy/prometheus/alerts_test.yml");
    for line in tests.lines() {
        if let Some(series) = line.trim().strip_prefix("- series: '") {
            let name = series.split(['{', '\'']).next().unwrap();
            assert!(
                exported.samples.contains_key(name),
                "alerts_test.yml feeds {name}, which the proxy does not export"
            );
        }
    }
}

/// The dashboard's queries, with Grafana's variables replaced by what promtool accepts.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$job", ".*")
        .replace("$strategy", ".*")
}

#[test]
fn dashboard_is_valid_and_queries_exported_metrics() {
    let text = read("deploy/grafana/dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 30);

    // A datasource variable, and every query goes through it: no hard-coded UID.
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus datasource variable"
    );
    let mut uids = Vec::new();
    collect_datasource_uids(&dash, &mut uids);
    for uid in &uids {
        assert!(
            uid == "${datasource}" || uid == "-- Grafana --",
            "hard-coded datasource uid {uid:?}"
        );
    }

    // Panels: unique ids, inside the 24-column grid, not overlapping.
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(i64, i64, i64, i64, String)> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap().to_string();
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(x >= 0 && w > 0 && x + w <= 24 && h > 0, "{title}: {g}");
        for (bx, by, bw, bh, bt) in &boxes {
            let overlap = x < bx + bw && *bx < x + w && y < by + bh && *by < y + h;
            assert!(!overlap, "{title} overlaps {bt}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{title} has no query"
            );
            assert!(
                p["description"].as_str().is_some_and(|d| d.len() > 20),
                "{title} has no description"
            );
        }
    }

    // The panels docs/metrics.md documents, which operators look for first.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for needle in [
        "Hit ratio: response cache vs provider prompt cache",
        "Requests per second by status",
        "Latency p50 / p99 by status",
        "Dollars per hour: spent vs saved",
        "Store operations by result",
        "Store degraded",
        "Top warnings (time range)",
    ] {
        assert!(titles.contains(&needle), "missing panel {needle:?}");
    }

    // Every query names exported metrics and labels only.
    let exported = exported_metrics();
    let recorded = BTreeSet::new();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 20, "{}", queries.len());
    let mut problems = Vec::new();
    for (title, expr) in &queries {
        problems.extend(check_names(title, expr, &exported, &recorded));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn collect_datasource_uids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(ds) = m.get("datasource") {
                if let Some(uid) = ds.get("uid").and_then(Value::as_str) {
                    out.push(uid.to_string());
                } else if let Some(s) = ds.as_str() {
                    // the legacy form: a datasource name
                    out.push(s.to_string());
                }
            }
            for child in m.values() {
                collect_datasource_uids(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_datasource_uids(c, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool() else { return };
    let dash: Value = serde_json::from_str(&read("deploy/grafana/dashboard.json")).unwrap();
    // promtool parses rule expressions: one recording rule per query.
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries(&dash).iter().enumerate() {
        let promql = grafana_to_promql(expr);
        yaml.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        ));
    }
    let dir = tempdir();
    std::fs::write(dir.join("dashboard_rules.yml"), yaml).unwrap();
    let out = run(&promtool, &dir, &["check", "rules", "dashboard_rules.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "prefixcache-deploy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn metrics_doc_covers_every_metric_alert_and_panel() {
    let doc = read("docs/metrics.md");
    let exported = exported_metrics();
    for family in &exported.families {
        assert!(
            doc.contains(family.as_str()),
            "docs/metrics.md does not describe {family}"
        );
    }
    let (rules, recorded) = rules(&read("deploy/prometheus/alerts.yml"));
    for (name, _) in &rules {
        assert!(
            doc.contains(name.as_str()),
            "docs/metrics.md does not describe {name}"
        );
    }
    assert!(!recorded.is_empty());
    let dash: Value = serde_json::from_str(&read("deploy/grafana/dashboard.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            doc.contains(title),
            "docs/metrics.md does not describe panel {title:?}"
        );
    }
}

#[test]
fn the_promql_scanner_finds_names_and_labels() {
    let r = refs(
        r#"histogram_quantile(0.99, sum by (le, status) (rate(prefixcache_request_duration_seconds_bucket{job=~"$job", status!="x{y}"}[5m]))) / on() group_left foo:bar offset 1d and up"#,
    );
    let names: Vec<&str> = r.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "prefixcache_request_duration_seconds_bucket",
            "foo:bar",
            "up"
        ]
    );
    assert_eq!(r.selectors[0].1, ["job", "status"]);
    assert_eq!(r.grouping, ["le", "status"]);

    // A misspelled metric or label is caught.
    let exported = exported_metrics();
    let none = BTreeSet::new();
    assert!(!check_names("t", "rate(prefixcache_request_total[5m])", &exported, &none).is_empty());
    assert!(
        !check_names(
            "t",
            r#"rate(prefixcache_requests_total{state="hit"}[5m])"#,
            &exported,
            &none
        )
        .is_empty()
    );
    assert!(
        !check_names(
            "t",
            "sum by (tenant) (rate(prefixcache_requests_total[5m]))",
            &exported,
            &none
        )
        .is_empty()
    );
    assert!(
        check_names(
            "t",
            r#"sum by (strategy) (rate(prefixcache_requests_total{status="hit",job="x"}[5m]))"#,
            &exported,
            &none
        )
        .is_empty()
    );
    assert!(exported.samples.contains_key("prefixcache_requests_total"));
    assert!(
        exported
            .samples
            .contains_key("prefixcache_request_duration_seconds_bucket")
    );
    assert!(exported.samples.contains_key("prefixcache_store_degraded"));
    assert_eq!(
        exported.samples["prefixcache_requests_total"],
        ["route", "status", "strategy"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
