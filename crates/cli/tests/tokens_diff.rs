//! `prefixcache tokens` and `prefixcache diff`, driven through the built binary as a
//! user would: files and standard input, text and `--json` output, exit codes.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prefixcache"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // The binary may exit before reading (a usage error): a broken pipe here
            // is the behaviour under test, not a failure.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap()
}

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tokens_counts_a_file_and_lists_ids() {
    let f = Files::new();
    let p = f.write("prompt.txt", "hello world");
    let o = run(&["tokens", s(&p)], None);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "2 tokens (o200k_base)\n");

    let o = run(&["tokens", "--ids", s(&p)], None);
    assert_eq!(stdout(&o), "2 tokens (o200k_base)\n24912 2375\n");

    let v = json_of(&run(
        &["tokens", "--json", "--ids", "--model", "gpt-4o", s(&p)],
        None,
    ));
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["encoding"], "o200k_base");
    assert_eq!(v["count"], 2);
    assert_eq!(v["ids"], serde_json::json!([24912, 2375]));

    // Without --ids, no ids in the JSON.
    let v = json_of(&run(&["tokens", "--json", s(&p)], None));
    assert!(v.get("ids").is_none());
}

#[test]
fn tokens_reads_stdin_and_follows_the_model_table() {
    let v = json_of(&run(
        &["tokens", "--json", "--ids", "--model", "gpt-4"],
        Some(b"hello world"),
    ));
    assert_eq!(v["encoding"], "cl100k_base");
    assert_eq!(v["ids"], serde_json::json!([15339, 1917]));
    let v = json_of(&run(
        &["tokens", "--json", "--encoding", "cl100k_base", "-"],
        Some(b"hello world"),
    ));
    assert_eq!(v["encoding"], "cl100k_base");
    assert_eq!(v["model"], Value::Null);
}

#[test]
fn tokens_says_when_the_model_is_unknown() {
    let o = run(
        &["tokens", "--json", "--model", "my-local-llama"],
        Some(b"x y"),
    );
    let v = json_of(&o);
    assert_eq!(v["encoding"], "o200k_base");
    assert_eq!(v["known"], false);
    assert!(
        stderr(&o).contains("unknown model \"my-local-llama\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let f = Files::new();
    let bad = f.write("bad.txt", b"ok \xff\xfe");
    let o = run(&["tokens", s(&bad)], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not valid UTF-8 (invalid byte at offset 3)"),
        "{}",
        stderr(&o)
    );

    let o = run(&["tokens", "/nonexistent/prompt.txt"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/prompt.txt"));

    let o = run(&["tokens", "--encoding", "p50k_base"], Some(b"x"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown encoding \"p50k_base\""));

    let good = f.write("good.txt", "x");
    let o = run(&["diff", s(&good), s(&bad)], None);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["diff", "-", "-"], Some(b"x"));
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["diff", s(&good)], None);
    assert_eq!(o.status.code(), Some(2), "missing FILE_B is a usage error");
}

#[test]
fn diff_request_id_at_the_start() {
    let f = Files::new();
    let a = f.write(
        "a.txt",
        "Request 8f14e45f: Summarize the attached contract.",
    );
    let b = f.write(
        "b.txt",
        "Request 1679091c: Summarize the attached contract.",
    );
    let v = json_of(&run(&["diff", "--json", s(&a), s(&b)], None));
    assert_eq!(v["identical"], false);
    assert_eq!(v["token_index"], 2);
    assert_eq!(v["byte_offset"], 8);
    assert_eq!(v["a"]["line"], 1);
    assert_eq!(v["a"]["column"], 9);
    assert_eq!(v["b"]["column"], 9);
    assert_eq!(v["a"]["before"], serde_json::json!(["Request", " "]));
    assert_eq!(v["a"]["after"][0], "8");
    assert_eq!(v["b"]["after"][0], "167");
}

#[test]
fn diff_extra_newlines_after_summarize() {
    let f = Files::new();
    let a = f.write("a.txt", "Summarize:\n\n{text}");
    let b = f.write("b.txt", "Summarize:\n\n\n{text}");
    let o = run(&["diff", s(&a), s(&b)], None);
    assert!(o.status.success());
    let text = stdout(&o);
    // The human report names both points and shows the tokens that differ.
    assert!(text.contains("token 3 is the first that differs"), "{text}");
    assert!(text.contains("first differ at byte 12"), "{text}");
    assert!(text.contains("3 byte(s) earlier, at byte 9"), "{text}");
    assert!(text.contains(r#"| ":\n\n\n""#), "{text}");

    let v = json_of(&run(&["diff", "--json", s(&a), s(&b)], None));
    assert_eq!(v["token_index"], 3);
    assert_eq!(v["byte_offset"], 9);
    assert_eq!(v["text_byte_offset"], 12);
    assert_eq!(v["b"]["change"]["line"], 3);
    assert_eq!(v["a"]["after"][0], ":\n\n");
    assert_eq!(v["b"]["after"][0], ":\n\n\n");
}

#[test]
fn diff_one_word_added_to_a_system_prompt() {
    let f = Files::new();
    let base = "You are a helpful assistant for Acme Corp.\nAlways answer in English.\n";
    let a = f.write("a.txt", base);
    let b = f.write("b.txt", base.replace("a helpful", "a very helpful"));
    let v = json_of(&run(
        &["diff", "--json", "--model", "gpt-4o", s(&a), s(&b)],
        None,
    ));
    assert_eq!(v["token_index"], 3);
    assert_eq!(v["a"]["after"][0], " helpful");
    assert_eq!(v["b"]["after"][0], " very");
    assert_eq!(v["b"]["tokens"], v["a"]["tokens"].as_u64().unwrap() + 1);
    assert_eq!(v["provider_cacheable_tokens"], 0);
}

#[test]
fn diff_of_identical_files_says_so() {
    let f = Files::new();
    let a = f.write("a.txt", "same prompt\n");
    let b = f.write("b.txt", "same prompt\n");
    let o = run(&["diff", s(&a), s(&b)], None);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("are identical: 3 tokens"),
        "{}",
        stdout(&o)
    );
    let v = json_of(&run(&["diff", "--json", s(&a), s(&b)], None));
    assert_eq!(v["identical"], true);
    assert_eq!(v["token_index"], 3);
}

#[test]
fn diff_reports_the_provider_cacheable_share_of_long_prompts() {
    let f = Files::new();
    let shared = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    let a = f.write("a.txt", format!("{shared}Question one?"));
    let b = f.write("b.txt", format!("{shared}Another question?"));
    let v = json_of(&run(&["diff", "--json", s(&a), s(&b)], None));
    let shared_tokens = v["token_index"].as_u64().unwrap();
    assert!(shared_tokens >= 1800, "{shared_tokens}");
    let cacheable = v["provider_cacheable_tokens"].as_u64().unwrap();
    assert!(cacheable <= shared_tokens && cacheable > shared_tokens - 128);
    assert_eq!((cacheable - 1024) % 128, 0);
}
