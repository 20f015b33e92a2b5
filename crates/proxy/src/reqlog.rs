//! The request log (`docs/request-log.md`): one JSON line per request on a cached
//! route, written by a dedicated thread so a slow disk never slows a request, rotated by
//! size, readable by the proxy's user only (it holds every tenant's prompts).
//!
//! Lines are handed over through a queue bounded in lines and in bytes; when it is full
//! (the disk cannot keep up) a line is dropped and counted rather than making the
//! request wait or memory grow. The request body is not copied into the line on the
//! request path: the writer thread appends the caller's bytes after the record's
//! fields.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prefixcache_store::private;
use serde::Serialize;

/// Lines waiting for the writer thread; beyond this, lines are dropped.
const QUEUE_LINES: usize = 8192;

/// One line of the request log, but for its last field, `request`: the request body as
/// the caller sent it, appended by the writer (see [`RequestLog::write`]).
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub route: &'static str,
    pub strategy: &'a str,
    /// First 8 bytes of the caller's namespace, hex: stable per credential, never the
    /// credential itself.
    pub tenant: String,
    pub status: &'static str,
    pub http_status: u16,
    pub key: String,
    pub family: String,
    pub latency_ms: f64,
    pub model: &'a str,
    pub usage: Option<UsageRecord>,
    pub cost_usd: Option<f64>,
    pub saved_usd: Option<f64>,
    /// Forwarded requests: the prompt-cache breakpoint of what was sent (`policy`:
    /// `auto` when the proxy placed one, `caller`, `none`) and the decision behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakpoint: Option<crate::breakpoints::BreakpointNote>,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct UsageRecord {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

impl From<prefixcache_core::usage::Usage> for UsageRecord {
    fn from(u: prefixcache_core::usage::Usage) -> Self {
        UsageRecord {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.cached_tokens,
            cache_write_tokens: u.cache_write_tokens,
        }
    }
}

/// A line waiting for the writer: the record's fields, then the request body.
struct Line {
    head: Vec<u8>,
    request: Bytes,
}

impl Line {
    fn len(&self) -> u64 {
        (self.head.len() + self.request.len() + 16) as u64
    }
}

/// The request log writer.
#[derive(Debug)]
pub struct RequestLog {
    tx: Mutex<Option<SyncSender<Line>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
    /// Bytes of the lines in the queue, and their bound.
    queued: Arc<AtomicU64>,
    queue_bytes: u64,
    path: PathBuf,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").field("len", &self.len()).finish()
    }
}

impl RequestLog {
    /// Opens (appends to) `path`, rotating to `path.1 .. path.<keep>` past `max_bytes`,
    /// with at most `queue_bytes` of lines waiting for the disk. The file is created
    /// with mode 0600 (an existing one is narrowed to it), its missing directories 0700.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        queue_bytes: u64,
    ) -> std::io::Result<RequestLog> {
        if let Some(dir) = path.parent() {
            private::create_parents(dir)?;
        }
        let file = private::open_append(path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = sync_channel::<Line>(QUEUE_LINES);
        let queued = Arc::new(AtomicU64::new(0));
        let mut sink = Sink {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, file),
            size,
            max_bytes: max_bytes.max(1),
            keep,
            queued: queued.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("prefixcache-request-log".into())
            .spawn(move || sink.run(&rx))?;
        Ok(RequestLog {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            dropped: AtomicU64::new(0),
            queued,
            queue_bytes,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record with the request body the caller sent (valid JSON: it was
    /// parsed before the request was served); never blocks.
    pub fn write(&self, record: &Record<'_>, request: &Bytes) {
        let head = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "request log line could not be serialized");
                return;
            }
        };
        let line = Line {
            head,
            request: request.clone(),
        };
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::SeqCst) + len > self.queue_bytes {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            self.drop_line();
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match tx.as_ref() {
            Some(tx) => tx.try_send(line).is_ok(),
            None => false,
        };
        if !sent {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            self.drop_line();
        }
    }

    fn drop_line(&self) {
        if self
            .dropped
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1000)
        {
            tracing::warn!("request log cannot keep up; dropping lines");
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of lines waiting for the writer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Flushes every queued line to disk and stops the writer (at shutdown).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer
            && w.join().is_err()
        {
            tracing::warn!("request log writer panicked");
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        self.close();
    }
}

struct Sink {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
    queued: Arc<AtomicU64>,
}

impl Sink {
    fn run(&mut self, rx: &Receiver<Line>) {
        loop {
            // Flush at least every second when traffic is light, so `tail -f` works.
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    let len = line.len();
                    if let Err(e) = self.write(&line) {
                        tracing::warn!(error = %e, path = %self.path.display(), "request log write failed");
                    }
                    drop(line);
                    self.queued.fetch_sub(len, Ordering::SeqCst);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.out.flush();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.out.flush();
        let _ = self.out.get_ref().sync_all();
    }

    fn write(&mut self, line: &Line) -> std::io::Result<()> {
        // `{...fields}` becomes `{...fields,"request":<body>}` + newline.
        let head = line.head.strip_suffix(b"}").unwrap_or(&line.head);
        let len = (head.len() + line.request.len() + 13) as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(head)?;
        self.out.write_all(b",\"request\":")?;
        // Line breaks in a JSON body are whitespace between tokens (inside strings they
        // are escaped), so they become spaces: one record stays one line.
        for (i, piece) in line
            .request
            .split(|&b| b == b'\n' || b == b'\r')
            .enumerate()
        {
            if i > 0 {
                self.out.write_all(b" ")?;
            }
            self.out.write_all(piece)?;
        }
        self.out.write_all(b"}\n")?;
        self.size += len;
        Ok(())
    }

    /// `log` → `log.1` → `log.2` ... up to `keep`; the oldest is removed.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let name = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for i in (1..self.keep).rev() {
                let from = name(i);
                if from.exists() {
                    std::fs::rename(&from, name(i + 1))?;
                }
            }
            std::fs::rename(&self.path, name(1))?;
        }
        let file = private::open_append(&self.path)?;
        self.out = BufWriter::with_capacity(256 * 1024, file);
        self.size = 0;
        Ok(())
    }
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-26T13:00:00.123Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Now as Unix milliseconds (for callers without a clock at hand).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            ts: rfc3339_ms(0),
            route: "chat_completions",
            strategy: "default",
            tenant: "00".repeat(8),
            status: "miss",
            http_status: 200,
            key: "ab".repeat(8),
            family: "cd".repeat(8),
            latency_ms: 1.5,
            model: "gpt-4o-mini",
            usage: None,
            cost_usd: None,
            saved_usd: None,
            breakpoint: None,
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_698_546_001), "2026-11-26T13:09:06.001Z");
    }

    #[test]
    fn lines_are_json_with_the_raw_request_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let raw = Bytes::from_static(b"{\"model\": \"m\",  \"messages\": []}");
        let log = RequestLog::open(&path, 600, 2, 1 << 20).unwrap();
        for _ in 0..10 {
            log.write(&record(), &raw);
        }
        log.close();
        let mut lines = Vec::new();
        for p in [
            path.clone(),
            dir.path().join("requests.jsonl.1"),
            dir.path().join("requests.jsonl.2"),
        ] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 600, "{} is {} bytes", p.display(), text.len());
            lines.extend(text.lines().map(str::to_string));
        }
        assert!(!dir.path().join("requests.jsonl.3").exists(), "keep = 2");
        assert!(lines.len() < 10, "the oldest rotated lines were removed");
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], "miss");
            assert_eq!(v["request"]["model"], "m");
        }
        assert!(
            lines[0].contains(r#""request":{"model": "m",  "messages": []}"#),
            "request bytes are kept as sent"
        );
    }

    #[test]
    fn a_pretty_printed_body_stays_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let raw = Bytes::from_static(b"{\r\n  \"model\": \"m\",\n  \"messages\": [\"a\\nb\"]\n}");
        let log = RequestLog::open(&path, 1 << 20, 1, 1 << 20).unwrap();
        log.write(&record(), &raw);
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["request"]["messages"][0], "a\nb");
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let log = RequestLog::open(&path, 1 << 30, 1, 4096).unwrap();
        // One line larger than the whole queue is dropped, not held.
        let big = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(8192)));
        log.write(&record(), &big);
        assert_eq!(log.dropped(), 1);
        assert_eq!(log.queued_bytes(), 0);
        log.write(&record(), &Bytes::from_static(b"{}"));
        log.close();
        assert_eq!(log.queued_bytes(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/requests.jsonl");
        let log = RequestLog::open(&path, 300, 1, 1 << 20).unwrap();
        for _ in 0..5 {
            log.write(&record(), &Bytes::from_static(b"{}"));
        }
        log.close();
        for p in [path.clone(), dir.path().join("logs/requests.jsonl.1")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
}
