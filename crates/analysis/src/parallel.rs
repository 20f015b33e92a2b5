//! Parsing a log on every core while keeping line order: the reading thread cuts the
//! input into batches of lines, workers turn lines into results, and the batches are
//! put back in order at the end. What a line becomes is the caller's function, so the
//! expensive part (JSON, canonical keys, tokenizing) runs in parallel.

use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use crate::error::AnalysisError;
use crate::input::{BadLines, LogInput};
use crate::progress::Progress;

/// Bytes of lines per batch: large enough that channel traffic is negligible, small
/// enough that both cores stay busy on short logs.
const BATCH_BYTES: usize = 1 << 20;

/// A batch of lines: their bytes back to back, where each ends, and their numbers.
struct Batch {
    seq: usize,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    lines: Vec<u64>,
}

/// Runs `f` on every line of `input` on `threads` worker threads (each with its own
/// state from `init`) and returns the results in line order. `f` returns `Ok(None)` to
/// skip a line and `Err(message)` for a malformed one, which is recorded in the
/// returned [`BadLines`].
pub fn map_lines<T, S, I, F>(
    input: &mut LogInput,
    threads: usize,
    init: I,
    f: F,
    progress: &Progress,
) -> Result<(Vec<T>, BadLines), AnalysisError>
where
    T: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, &[u8], u64) -> Result<Option<T>, String> + Sync,
{
    let threads = threads.max(1);
    let (work_tx, work_rx) = sync_channel::<Batch>(threads * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Vec<T>, BadLines)>();
    let position = input.position.clone();

    let read_result = std::thread::scope(|scope| {
        for _ in 0..threads {
            let rx = work_rx.clone();
            let done = done_tx.clone();
            let (init, f) = (&init, &f);
            scope.spawn(move || worker(&rx, &done, init, f));
        }
        drop(done_tx);
        let mut seq = 0usize;
        let mut line = Vec::with_capacity(4096);
        let mut batch = Batch::empty(seq);
        let result = loop {
            match input.next_line(&mut line) {
                Ok(Some(n)) => {
                    batch.push(&line, n);
                    if batch.bytes.len() >= BATCH_BYTES {
                        seq += 1;
                        let full = std::mem::replace(&mut batch, Batch::empty(seq));
                        if work_tx.send(full).is_err() {
                            break Ok(());
                        }
                        progress.set(position.load(std::sync::atomic::Ordering::Relaxed));
                    }
                }
                Ok(None) => {
                    let _ = work_tx.send(batch);
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        drop(work_tx);
        result
    });
    read_result?;
    progress.set(position.load(std::sync::atomic::Ordering::Relaxed));

    let mut parts: Vec<(usize, Vec<T>, BadLines)> = done_rx.into_iter().collect();
    parts.sort_unstable_by_key(|(seq, _, _)| *seq);
    let mut bad = BadLines::default();
    let total = parts.iter().map(|(_, v, _)| v.len()).sum();
    let mut out = Vec::with_capacity(total);
    for (_, items, b) in parts {
        out.extend(items);
        bad.merge(b);
    }
    Ok((out, bad))
}

impl Batch {
    fn empty(seq: usize) -> Batch {
        Batch {
            seq,
            bytes: Vec::with_capacity(BATCH_BYTES + 4096),
            ends: Vec::new(),
            lines: Vec::new(),
        }
    }

    fn push(&mut self, line: &[u8], n: u64) {
        self.bytes.extend_from_slice(line);
        self.ends.push(self.bytes.len());
        self.lines.push(n);
    }
}

fn worker<T, S, I, F>(
    rx: &Mutex<Receiver<Batch>>,
    done: &std::sync::mpsc::Sender<(usize, Vec<T>, BadLines)>,
    init: &I,
    f: &F,
) where
    I: Fn() -> S,
    F: Fn(&mut S, &[u8], u64) -> Result<Option<T>, String>,
{
    let mut state = init();
    loop {
        // A poisoned lock means another worker panicked; the receiver is still usable.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(batch) = next else {
            return;
        };
        let mut out = Vec::with_capacity(batch.lines.len());
        let mut bad = BadLines::default();
        let mut start = 0;
        for (end, n) in batch.ends.iter().zip(&batch.lines) {
            match f(&mut state, &batch.bytes[start..*end], *n) {
                Ok(Some(t)) => out.push(t),
                Ok(None) => {}
                Err(m) => bad.record(*n, m),
            }
            start = *end;
        }
        if done.send((batch.seq, out, bad)).is_err() {
            return;
        }
    }
}

/// Worker threads to use: every core (the reading thread mostly waits on them).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_line_order_with_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        let mut text = String::new();
        for i in 0..200_000u64 {
            if i % 50_000 == 7 {
                text.push_str("bad\n");
            } else {
                text.push_str(&format!("{i}\n"));
            }
        }
        std::fs::write(&p, text).unwrap();
        let mut input = LogInput::open(&p).unwrap();
        let (out, bad) = map_lines(
            &mut input,
            3,
            || 0u64,
            |count, line, n| {
                *count += 1;
                let s = std::str::from_utf8(line).map_err(|e| e.to_string())?;
                let v: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
                Ok(v.is_multiple_of(2).then_some((n, v)))
            },
            &Progress::hidden(),
        )
        .unwrap();
        assert_eq!(bad.count, 4);
        assert_eq!(bad.first[0], (8, "not a number: bad".to_string()));
        let expected: Vec<(u64, u64)> = (0..200_000u64)
            .filter(|i| i % 50_000 != 7 && i % 2 == 0)
            .map(|i| (i + 1, i))
            .collect();
        assert_eq!(out, expected);
    }
}
