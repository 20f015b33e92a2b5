//! `prefixcache diff`: where two prompts' tokens first diverge, and why: the token
//! index, the byte, line and column in each file, and the tokens around the boundary
//! decoded, so a person sees how one added word or newline moved every later token.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use prefixcache_core::boundary::{Divergence, Side, first_divergence};
use serde_json::json;

use super::tokens::{choose_encoding, read_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model whose encoding to use (tiktoken's model table; unknown models use
    /// o200k_base, with a note on stderr).
    #[arg(long, short)]
    model: Option<String>,
    /// Use this encoding directly: o200k_base, cl100k_base or o200k_harmony.
    #[arg(long, conflicts_with = "model")]
    encoding: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The first prompt (`-` for standard input).
    file_a: PathBuf,
    /// The second prompt (`-` for standard input).
    file_b: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let chosen = choose_encoding(args.model.as_deref(), args.encoding.as_deref())?;
    if args.file_a.as_os_str() == "-" && args.file_b.as_os_str() == "-" {
        bail!("only one of FILE_A and FILE_B can be standard input (-)");
    }
    let a = read_text(&args.file_a)?;
    let b = read_text(&args.file_b)?;
    chosen.print_note();
    let enc = chosen.encoding;
    let d = first_divergence(enc, &a, &b);
    let (count_a, count_b) = (enc.count(&a), enc.count(&b));
    let (name_a, name_b) = (
        args.file_a.display().to_string(),
        args.file_b.display().to_string(),
    );

    let mut out = std::io::stdout().lock();
    if args.json {
        let side = |name: &str, count: usize, s: &Side| {
            json!({
                "file": name,
                "tokens": count,
                "byte_offset": s.boundary.byte,
                "line": s.boundary.line,
                "column": s.boundary.column,
                "change": {"byte_offset": s.change.byte, "line": s.change.line, "column": s.change.column},
                "before": s.before_text,
                "after": s.after_text,
                "before_ids": s.before,
                "after_ids": s.after,
            })
        };
        let obj = json!({
            "identical": d.identical,
            "model": chosen.model,
            "encoding": enc.as_str(),
            "known": chosen.known,
            "token_index": d.token_index,
            "byte_offset": d.byte_offset,
            "text_byte_offset": d.text_byte_offset,
            "provider_cacheable_tokens": d.provider_cacheable_tokens(),
            "a": side(&name_a, count_a, &d.a),
            "b": side(&name_b, count_b, &d.b),
        });
        writeln!(out, "{obj}")?;
    } else {
        // Whether text follows the tokens shown after the boundary.
        let more = |s: &Side, len: usize| d.byte_offset + enc.decode_bytes(&s.after).len() < len;
        let more = (more(&d.a, a.len()), more(&d.b, b.len()));
        write_human(&mut out, &d, (&name_a, count_a), (&name_b, count_b), more)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_human(
    out: &mut impl Write,
    d: &Divergence,
    (name_a, count_a): (&str, usize),
    (name_b, count_b): (&str, usize),
    (more_a, more_b): (bool, bool),
) -> std::io::Result<()> {
    if d.identical {
        writeln!(
            out,
            "{name_a} and {name_b} are identical: {count_a} tokens ({})",
            d.encoding
        )?;
        return Ok(());
    }
    let width = name_a.len().max(name_b.len()).max("shared".len());
    writeln!(
        out,
        "{name_a} and {name_b} share {} of their tokens ({count_a} and {count_b}, {}); \
         token {} is the first that differs.",
        d.token_index, d.encoding, d.token_index
    )?;
    writeln!(
        out,
        "  the texts first differ at byte {}: {name_a} line {}, column {}; {name_b} line {}, column {}",
        d.text_byte_offset, d.a.change.line, d.a.change.column, d.b.change.line, d.b.change.column
    )?;
    if d.byte_offset < d.text_byte_offset {
        writeln!(
            out,
            "  the tokens part {} byte(s) earlier, at byte {} (line {}, column {}): the token \
             that holds the change starts there",
            d.text_byte_offset - d.byte_offset,
            d.byte_offset,
            d.a.boundary.line,
            d.a.boundary.column
        )?;
    } else {
        writeln!(
            out,
            "  the tokens part at the same byte (line {}, column {})",
            d.a.boundary.line, d.a.boundary.column
        )?;
    }
    writeln!(
        out,
        "  {:<width$}  {}",
        "shared",
        tokens_line(&d.a.before_text, true, d.token_index > d.a.before.len())
    )?;
    writeln!(
        out,
        "  {:<width$}  {}",
        name_a,
        tokens_line(&d.a.after_text, false, more_a)
    )?;
    writeln!(
        out,
        "  {:<width$}  {}",
        name_b,
        tokens_line(&d.b.after_text, false, more_b)
    )?;
    let cacheable = d.provider_cacheable_tokens();
    if cacheable == 0 {
        writeln!(
            out,
            "  provider prompt cache: {} shared tokens, under the 1024 it needs: nothing of one \
             can be served from the other's cache",
            d.token_index
        )?;
    } else {
        writeln!(
            out,
            "  provider prompt cache: at most {cacheable} of the {} shared tokens can be served \
             from cache (from 1024, in steps of 128)",
            d.token_index
        )?;
    }
    Ok(())
}

/// Tokens as quoted, escaped strings, so whitespace is visible; `…` marks text that
/// goes on, `∎` the end of the text.
fn tokens_line(tokens: &[String], before: bool, more: bool) -> String {
    let mut parts: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    if before {
        if parts.is_empty() {
            parts.push("(start of text)".to_string());
        } else if more {
            parts.insert(0, "…".to_string());
        }
        parts.push("|".to_string());
    } else {
        parts.insert(0, "|".to_string());
        parts.push(if more { "…" } else { "∎" }.to_string());
    }
    parts.join(" ")
}
