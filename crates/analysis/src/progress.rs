//! The progress bar of long runs: bytes of the input read, on stderr, and only when
//! stderr is a terminal (a CI log or a pipe gets no control characters).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No output at all.
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// A bar over `total` bytes (a spinner when the size is unknown, as for standard
    /// input) when stderr is a terminal; hidden otherwise.
    pub fn for_terminal(total: Option<u64>, what: &str) -> Progress {
        Progress::terminal_bar(total, what, true)
    }

    /// A bar counting items (requests) rather than bytes.
    pub fn for_terminal_count(total: u64, what: &str) -> Progress {
        Progress::terminal_bar(Some(total), what, false)
    }

    fn terminal_bar(total: Option<u64>, what: &str, bytes: bool) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = match (total.is_some(), bytes) {
            (true, true) => "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
            (false, true) => "{msg} [{elapsed_precise}] {spinner} {bytes}",
            (_, false) => "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        Progress { bar: Some(bar) }
    }

    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Advances the bar by `n`.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Moves the bar to `pos` bytes.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Changes the label (e.g. from reading to simulating).
    pub fn message(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(what.to_string());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
