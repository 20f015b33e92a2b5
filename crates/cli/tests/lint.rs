//! `prefixcache lint`, driven through the built binary: each rule positive and negative
//! on prompt files, config templates and request logs; compiler-style locations; the
//! `--json` output; `--deny` and the exit codes.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prefixcache"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lint --json --deny never` on paths: the findings.
fn findings(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["lint", "--json", "--deny", "never"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "prefixcache.lint/1");
    v["findings"].as_array().unwrap().clone()
}

fn with_rule<'a>(fs: &'a [Value], rule: &str) -> Vec<&'a Value> {
    fs.iter().filter(|f| f["rule"] == rule).collect()
}

/// Static instruction text of about `words` tokens.
fn prose(words: usize) -> String {
    let w = [
        "review",
        "the",
        "document",
        "carefully",
        "and",
        "report",
        "every",
        "issue",
    ];
    (0..words)
        .map(|i| w[i % w.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

const UUID: &str = "3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b";

#[test]
fn dynamic_prefix_in_a_prompt_file() {
    let d = Dir::new();
    let bad = d.write(
        "bad.txt",
        format!("[RequestID: {UUID}] Translate to French: hello\n"),
    );
    let fs = findings(&[s(&bad)]);
    let dynamic = with_rule(&fs, "dynamic-prefix");
    assert!(!dynamic.is_empty(), "{fs:?}");
    assert_eq!(dynamic[0]["line"], 1);
    assert_eq!(dynamic[0]["severity"], "error");
    assert_eq!(dynamic[0]["source"], "prompt");
    // Compiler-style text, the span and the fix; error >= warning: exit 1.
    let o = run(&["lint", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{}:1:", bad.display()))
                && l.contains("dynamic-prefix error:")),
        "{text}"
    );
    assert!(
        text.contains("    | ") && text.contains("    = fix: "),
        "{text}"
    );

    // The same id at the end, past the 50-token window: fine.
    let good = d.write(
        "good.txt",
        format!("Translate to French: {}\n[RequestID: {UUID}]\n", prose(80)),
    );
    assert!(with_rule(&findings(&[s(&good)]), "dynamic-prefix").is_empty());
    // ...unless the window is made larger.
    assert!(
        !with_rule(
            &findings(&["--granularity", "200", s(&good)]),
            "dynamic-prefix"
        )
        .is_empty()
    );
}

#[test]
fn placeholders_in_config_templates_point_at_the_toml_line() {
    let d = Dir::new();
    let config = d.write(
        "prefixcache.toml",
        format!(
            "[strategies.document_analysis]\nprefix_granularity = 100\ntemplate = \"\"\"\
             You are a document analyzer.\nAnalyze the following {{doc_type}} and extract:\n\
             1. Key entities\nDocument: {{content}}\"\"\"\n\n\
             [strategies.late]\nprefix_granularity = 20\ntemplate = \"\"\"{}\nDocument: {{content}}\"\"\"\n",
            prose(60)
        ),
    );
    let fs = findings(&[s(&config)]);
    let ph = with_rule(&fs, "template-placeholder");
    // {doc_type} (line 4) and {content} (line 6) are inside 100 tokens; `late`'s
    // placeholder is after 60 tokens with a 20-token window.
    assert_eq!(ph.len(), 2, "{ph:?}");
    assert_eq!(ph[0]["strategy"], "document_analysis");
    assert_eq!(ph[0]["source"], "config");
    // Where `{doc_type}` is in the file, found by searching the text.
    let text = std::fs::read_to_string(&config).unwrap();
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("{doc_type}").map(|c| (i as u64 + 1, c as u64 + 1)))
        .unwrap();
    assert_eq!(line, 4);
    assert_eq!(
        (ph[0]["line"].as_u64(), ph[0]["column"].as_u64()),
        (Some(line), Some(col))
    );
    assert!(ph[0]["excerpt"].as_str().unwrap().contains("{doc_type}"));
    assert_eq!(ph[1]["line"], 6);
    assert!(ph.iter().all(|f| f["strategy"] != "late"));
    // --granularity overrides every strategy's window.
    let wide = findings(&["--granularity", "500", s(&config)]);
    assert_eq!(with_rule(&wide, "template-placeholder").len(), 3);
    // An invalid config is an input error.
    let bad = d.write("broken.toml", "[strategies.x]\nnot_a_key = 1\n");
    assert_eq!(run(&["lint", s(&bad)]).status.code(), Some(2));
}

#[test]
fn unnormalized_whitespace_and_drift_between_prompt_files() {
    let d = Dir::new();
    let body = prose(40);
    let a = d.write("prompts/a.txt", format!("Summarize:\n{body}\n"));
    let b = d.write("prompts/b.txt", format!("Summarize:\n\n\n\n{body}   \n"));
    let fs = findings(&[s(&a), s(&b)]);
    let ws: Vec<&Value> = with_rule(&fs, "whitespace-unnormalized");
    assert!(ws.iter().all(|f| f["path"] == s(&b)), "{ws:?}");
    let kinds: Vec<&str> = ws.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"blank-lines") && kinds.contains(&"trailing-spaces"),
        "{kinds:?}"
    );
    let drift = with_rule(&fs, "whitespace-drift");
    assert_eq!(drift.len(), 1, "{fs:?}");
    assert_eq!(drift[0]["path"], s(&b));
    // A directory is linted file by file, in order: the same two findings.
    let dir = findings(&[s(a.parent().unwrap())]);
    assert_eq!(with_rule(&dir, "whitespace-drift").len(), 1);
    // Negative: two equal, normalized files.
    let c = d.write("same/c.txt", format!("Summarize:\n{body}\n"));
    let e = d.write("same/e.txt", format!("Summarize:\n{body}\n"));
    let clean = findings(&[s(&c), s(&e)]);
    assert!(with_rule(&clean, "whitespace-drift").is_empty());
    assert!(
        with_rule(&clean, "whitespace-unnormalized").is_empty(),
        "{clean:?}"
    );
}

#[test]
fn short_static_prefixes_are_info_and_deny_decides_the_exit_code() {
    let d = Dir::new();
    let short = d.write("short.txt", format!("{}\n{{question}}\n", prose(100)));
    let fs = findings(&[s(&short)]);
    let sp = with_rule(&fs, "short-prefix");
    assert_eq!(sp.len(), 1);
    assert_eq!(sp[0]["severity"], "info");
    assert!(fs.iter().all(|f| f["severity"] == "info"), "{fs:?}");
    assert_eq!(
        run(&["lint", s(&short)]).status.code(),
        Some(0),
        "warning is the default bar"
    );
    assert_eq!(
        run(&["lint", "--deny", "info", s(&short)]).status.code(),
        Some(1)
    );
    assert_eq!(
        run(&["lint", "--deny", "never", s(&short)]).status.code(),
        Some(0)
    );
    assert_eq!(
        run(&["lint", "--deny", "sometimes", s(&short)])
            .status
            .code(),
        Some(2)
    );
    // Negative: 1200 static tokens before the placeholder.
    let long = d.write("long.txt", format!("{}\n{{question}}\n", prose(1200)));
    assert!(with_rule(&findings(&[s(&long)]), "short-prefix").is_empty());
}

fn log_line(strategy: &str, body: &Value) -> String {
    json!({"ts": "2026-11-26T13:00:00.000Z", "route": "chat_completions", "strategy": strategy,
           "tenant": "aaaaaaaaaaaaaaa1", "status": "miss", "http_status": 200, "request": body})
    .to_string()
}

#[test]
fn logs_are_linted_per_strategy() {
    let d = Dir::new();
    let tools_a = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;
    let tools_b = r#"[{"function":{"parameters":{"properties":{"city":{"type":"string"}},"type":"object"},"name":"get_weather"},"type":"function"}]"#;
    let mut log = String::new();
    for i in 0..10 {
        // `tools`: serialized in two key orders by the `agent` service.
        let tools = if i % 2 == 0 { tools_a } else { tools_b };
        log.push_str(&format!(
            "{{\"ts\":\"2026-11-26T13:00:0{i}.000Z\",\"strategy\":\"agent\",\"tenant\":\"t\",\"request\":{{\"model\":\"gpt-4o\",\"tools\":{tools},\"messages\":[{{\"role\":\"user\",\"content\":\"weather {i}\"}}]}}}}\n"
        ));
        // `ids`: a request id at the start of the system prompt.
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": format!("[RequestID: {}] {}", UUID.replace('3', &i.to_string()), prose(60))},
            {"role": "user", "content": "hi"}]});
        log.push_str(&(log_line("ids", &body) + "\n"));
        // `clean`: stable prefix, dynamic content at the end.
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": prose(60)},
            {"role": "user", "content": format!("question {i} {UUID}")}]});
        log.push_str(&(log_line("clean", &body) + "\n"));
    }
    let path = d.write("requests.jsonl", log);
    let fs = findings(&[s(&path)]);
    let of = |strategy: &str, rule: &str| -> Vec<&Value> {
        fs.iter()
            .filter(|f| f["strategy"] == strategy && f["rule"] == rule)
            .collect()
    };
    let ids = of("ids", "dynamic-prefix");
    assert_eq!(ids.len(), 1, "one summary per rule and kind: {fs:?}");
    assert_eq!(ids[0]["count"], 10);
    assert_eq!(ids[0]["line"], 2, "first seen on line 2");
    assert_eq!(ids[0]["source"], "log");
    let tools = of("agent", "unstable-tools");
    assert_eq!(tools.len(), 1, "{fs:?}");
    assert!(of("clean", "dynamic-prefix").is_empty());
    assert!(of("clean", "unstable-tools").is_empty());
    assert!(of("ids", "unstable-tools").is_empty());
    // Short stable prefixes are reported per strategy, as info.
    assert_eq!(of("clean", "short-prefix")[0]["severity"], "info");
    // Negative for tools: one key order only.
    let same: String = (0..6)
        .map(|i| format!(
            "{{\"strategy\":\"agent\",\"request\":{{\"model\":\"gpt-4o\",\"tools\":{tools_a},\"messages\":[{{\"role\":\"user\",\"content\":\"w {i}\"}}]}}}}\n"
        ))
        .collect();
    let p = d.write("same.jsonl", same);
    assert!(with_rule(&findings(&[s(&p)]), "unstable-tools").is_empty());
    // A missing path is an input error.
    assert_eq!(
        run(&["lint", s(&d.0.path().join("nope.txt"))])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn drift_between_services_and_unstable_schemas_in_logs() {
    let d = Dir::new();
    let text = prose(40);
    let mut log = String::new();
    for i in 0..4 {
        // Two services send one system prompt, one of them with doubled newlines.
        let a = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": format!("Summarize:\n{text}")},
            {"role": "user", "content": format!("doc {i}")}]});
        let b = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": format!("Summarize:\n\n{text}")},
            {"role": "user", "content": format!("doc {i}")}]});
        log.push_str(&(log_line("billing", &a) + "\n"));
        log.push_str(&(log_line("search", &b) + "\n"));
    }
    // A response schema sent in two key orders by one service.
    let schemas = [
        r#"{"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object","properties":{"a":{"type":"string"}}}}}"#,
        r#"{"json_schema":{"schema":{"properties":{"a":{"type":"string"}},"type":"object"},"name":"out"},"type":"json_schema"}"#,
    ];
    for (i, sc) in schemas.iter().enumerate() {
        log.push_str(&format!(
            "{{\"strategy\":\"extract\",\"request\":{{\"model\":\"gpt-4o\",\"response_format\":{sc},\"messages\":[{{\"role\":\"user\",\"content\":\"x {i}\"}}]}}}}\n"
        ));
    }
    let path = d.write("services.jsonl", log);
    let fs = findings(&[s(&path)]);
    let drift = with_rule(&fs, "whitespace-drift");
    assert_eq!(drift.len(), 1, "{fs:?}");
    assert_eq!(
        drift[0]["strategy"], "search",
        "found when the second variant arrives"
    );
    let unstable = with_rule(&fs, "unstable-tools");
    assert_eq!(unstable.len(), 1, "{fs:?}");
    assert_eq!(unstable[0]["strategy"], "extract");
    // Negative: the same prompt formatted alike by both services.
    let same: String = (0..4)
        .flat_map(|i| {
            let b = json!({"model": "gpt-4o", "messages": [
                {"role": "system", "content": format!("Summarize:\n{text}")},
                {"role": "user", "content": format!("doc {i}")}]});
            [
                log_line("billing", &b) + "\n",
                log_line("search", &b) + "\n",
            ]
        })
        .collect();
    let p = d.write("same.jsonl", same);
    assert!(with_rule(&findings(&[s(&p)]), "whitespace-drift").is_empty());
}
