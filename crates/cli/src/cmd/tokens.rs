//! `prefixcache tokens`: the token count (and ids) of a text, with the encoding used.
//! Also home of the input helpers `diff` shares: choosing the encoding from `--model` /
//! `--encoding` and reading a UTF-8 file or standard input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use prefixcache_core::tokenizer::{Encoding, encoding_for_model};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model whose encoding to use (tiktoken's model table; unknown models use
    /// o200k_base, with a note on stderr).
    #[arg(long, short)]
    model: Option<String>,
    /// Use this encoding directly: o200k_base, cl100k_base or o200k_harmony.
    #[arg(long, conflicts_with = "model")]
    encoding: Option<String>,
    /// Print the token ids too.
    #[arg(long)]
    ids: bool,
    /// Print one JSON object: {"model", "encoding", "known", "count", "ids"} (ids with --ids).
    #[arg(long)]
    json: bool,
    /// The text to tokenize; `-` or nothing reads standard input.
    file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let chosen = choose_encoding(args.model.as_deref(), args.encoding.as_deref())?;
    let path = args.file.unwrap_or_else(|| PathBuf::from("-"));
    let text = read_text(&path)?;
    chosen.print_note();
    let enc = chosen.encoding;
    let ids = args.ids.then(|| enc.encode(&text));
    let count = ids.as_ref().map_or_else(|| enc.count(&text), Vec::len);

    let mut out = std::io::stdout().lock();
    if args.json {
        let mut obj = json!({
            "model": chosen.model,
            "encoding": enc.as_str(),
            "known": chosen.known,
            "count": count,
        });
        if let Some(ids) = &ids {
            obj["ids"] = json!(ids);
        }
        writeln!(out, "{obj}")?;
    } else {
        let noun = if count == 1 { "token" } else { "tokens" };
        match &chosen.model {
            Some(m) => writeln!(out, "{count} {noun} ({}, model {m})", enc.as_str())?,
            None => writeln!(out, "{count} {noun} ({})", enc.as_str())?,
        }
        if let Some(ids) = &ids {
            let mut line = String::with_capacity(ids.len() * 7);
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                line.push_str(&id.to_string());
            }
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The encoding picked from the command line, and how.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub model: Option<String>,
    pub encoding: Encoding,
    /// False when an unknown (or unsupported) model fell back to o200k_base.
    pub known: bool,
    note: Option<String>,
}

impl Chosen {
    /// Says on stderr when the encoding is a fallback, so a count is never silently
    /// computed with the wrong vocabulary.
    pub fn print_note(&self) {
        if let Some(note) = &self.note {
            eprintln!("note: {note}");
        }
    }
}

/// `--model` through tiktoken's table, or `--encoding` by name, or o200k_base.
pub(crate) fn choose_encoding(
    model: Option<&str>,
    encoding: Option<&str>,
) -> anyhow::Result<Chosen> {
    if let Some(name) = encoding {
        let Some(encoding) = Encoding::from_name(name) else {
            let known: Vec<&str> = Encoding::ALL.iter().map(|e| e.as_str()).collect();
            bail!(
                "unknown encoding {name:?}; expected one of {}",
                known.join(", ")
            );
        };
        return Ok(Chosen {
            model: None,
            encoding,
            known: true,
            note: None,
        });
    }
    let Some(model) = model else {
        return Ok(Chosen {
            model: None,
            encoding: Encoding::O200kBase,
            known: true,
            note: None,
        });
    };
    let found = encoding_for_model(model);
    let note = match (found.known, found.unsupported) {
        (true, _) => None,
        (false, Some(theirs)) => Some(format!(
            "model {model:?} uses {theirs}, which prefixcache does not ship; counting with {}",
            found.encoding.as_str()
        )),
        (false, None) => Some(format!(
            "unknown model {model:?}; counting with {} (pass --encoding to choose)",
            found.encoding.as_str()
        )),
    };
    Ok(Chosen {
        model: Some(model.to_string()),
        encoding: found.encoding,
        known: found.known,
        note,
    })
}

/// A file (or `-` for standard input) as UTF-8 text; errors name the file and, for
/// invalid UTF-8, the byte offset.
pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    let (bytes, shown) = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        (buf, "standard input".to_string())
    } else {
        let buf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        (buf, path.display().to_string())
    };
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}
