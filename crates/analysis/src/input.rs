//! Reading request logs: files or standard input, gzip detected by its magic bytes,
//! one JSON object per line in any of the accepted forms (`docs/analysis.md`):
//!
//! - the proxy's request log (`serve --log-requests`, `docs/request-log.md`),
//! - a request body per line (`{"model": ..., "messages": [...]}`),
//! - a wrapped body: `{"ts", "service" | "strategy", "api_key" | "tenant", "request"}`.
//!
//! A malformed line is reported with its number and skipped; the caller decides how
//! many it tolerates ([`BadLines`]). Credentials (`api_key`) are hashed on sight and
//! never kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;
use serde_json::{Map, Value};

use crate::error::AnalysisError;

/// Bad lines kept with their message for the report; the rest are only counted.
pub const BAD_LINES_KEPT: usize = 20;

/// An open log: its lines, and how far into the file (compressed bytes) reading got.
pub struct LogInput {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Bytes of the file consumed so far (before decompression), for progress.
    pub position: Arc<AtomicU64>,
    /// Size of the file, when it is one (not standard input).
    pub size: Option<u64>,
    line: u64,
}

impl std::fmt::Debug for LogInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogInput")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish()
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl LogInput {
    /// Opens a file (`-` for standard input); gzip is recognised by its first two
    /// bytes, whatever the file is called.
    pub fn open(path: &Path) -> Result<LogInput, AnalysisError> {
        let position = Arc::new(AtomicU64::new(0));
        let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdin()), None)
        } else {
            let f = File::open(path).map_err(|e| AnalysisError::io(path, e))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        };
        let mut buffered = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: raw,
                count: position.clone(),
            },
        );
        let head = buffered
            .fill_buf()
            .map_err(|e| AnalysisError::io(path, e))?;
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + Send> = if gzip {
            // Multi-member: `cat a.gz b.gz` and rotated logs concatenated stay readable.
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        };
        Ok(LogInput {
            path: path.to_path_buf(),
            reader,
            position,
            size,
            line: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next line (without its newline, and without a trailing `\r`) and its 1-based
    /// number; `None` at the end.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, AnalysisError> {
        buf.clear();
        let n = self
            .reader
            .read_until(b'\n', buf)
            .map_err(|e| AnalysisError::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        self.line += 1;
        Ok(Some(self.line))
    }

    /// The whole input as UTF-8 text (prompt and template files, possibly gzipped).
    pub fn read_text(mut self) -> Result<String, AnalysisError> {
        let mut bytes = Vec::new();
        self.reader
            .read_to_end(&mut bytes)
            .map_err(|e| AnalysisError::io(&self.path, e))?;
        String::from_utf8(bytes).map_err(|e| {
            AnalysisError::io(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not valid UTF-8 (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                ),
            )
        })
    }
}

/// Malformed lines seen so far: a count, the first few with their messages, and the
/// limit past which the run fails.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BadLines {
    pub count: u64,
    /// `(line, message)` of the first [`BAD_LINES_KEPT`].
    pub first: Vec<(u64, String)>,
}

impl BadLines {
    pub fn record(&mut self, line: u64, message: String) {
        self.count += 1;
        if self.first.len() < BAD_LINES_KEPT {
            self.first.push((line, message));
        }
    }

    /// Adds another batch's bad lines (batches are merged in line order).
    pub fn merge(&mut self, other: BadLines) {
        self.count += other.count;
        for (l, m) in other.first {
            if self.first.len() < BAD_LINES_KEPT {
                self.first.push((l, m));
            }
        }
    }

    /// Fails when more than `max` lines were malformed.
    pub fn check(&self, path: &Path, max: u64) -> Result<(), AnalysisError> {
        if self.count > max {
            let (first_line, first_error) = self.first.first().cloned().unwrap_or_default();
            return Err(AnalysisError::TooManyBadLines {
                path: path.to_path_buf(),
                count: self.count,
                max,
                first_line,
                first_error,
            });
        }
        Ok(())
    }

    /// One warning line per kept bad line, and a summary of the rest, for stderr.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let mut out: Vec<String> = self
            .first
            .iter()
            .map(|(l, m)| format!("warning: {}:{l}: skipped: {m}", path.display()))
            .collect();
        if self.count > self.first.len() as u64 {
            out.push(format!(
                "warning: {}: {} more malformed lines skipped",
                path.display(),
                self.count - self.first.len() as u64
            ));
        }
        out
    }
}

/// Who sent a request, as far as the log says: the proxy's 16-hex tenant tag, a hash
/// of a logged `api_key`, or one shared tenant when the log names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TenantId(pub u64);

impl TenantId {
    /// The tenant of a log without tenants.
    pub const SHARED: TenantId = TenantId(0);

    /// From the proxy's `tenant` field (16 hex characters); any other text is hashed.
    pub fn from_tag(tag: &str) -> TenantId {
        if tag.len() == 16
            && let Ok(v) = u64::from_str_radix(tag, 16)
        {
            return TenantId(v | 1);
        }
        TenantId(hash64("prefixcache analysis tenant text v1", tag.as_bytes()) | 1)
    }

    /// From a credential: hashed at once; the key itself is not kept.
    pub fn from_api_key(key: &str) -> TenantId {
        let key = key.strip_prefix("Bearer ").unwrap_or(key);
        TenantId(hash64("prefixcache analysis api key v1", key.as_bytes()) | 1)
    }
}

fn hash64(context: &str, bytes: &[u8]) -> u64 {
    let k = blake3::derive_key(context, bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_le_bytes(b)
}

/// What the proxy logged about how it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoggedStatus {
    Hit,
    Miss,
    Bypass,
    Coalesced,
    Error,
}

impl LoggedStatus {
    pub fn parse(s: &str) -> Option<LoggedStatus> {
        Some(match s.to_ascii_lowercase().as_str() {
            "hit" => LoggedStatus::Hit,
            "miss" => LoggedStatus::Miss,
            "bypass" => LoggedStatus::Bypass,
            "coalesced" => LoggedStatus::Coalesced,
            "error" => LoggedStatus::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoggedStatus::Hit => "hit",
            LoggedStatus::Miss => "miss",
            LoggedStatus::Bypass => "bypass",
            LoggedStatus::Coalesced => "coalesced",
            LoggedStatus::Error => "error",
        }
    }
}

/// One request of a log, in whichever form it was written.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// 1-based line number in the input.
    pub line: u64,
    /// Milliseconds since the Unix epoch, when the line has a timestamp.
    pub ts_ms: Option<i64>,
    pub route: Route,
    /// The logged strategy, or the service of the wrapped form.
    pub group: Option<String>,
    pub tenant: TenantId,
    pub status: Option<LoggedStatus>,
    pub http_status: Option<u16>,
    /// The logged model (the response's), else the request's.
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub saved_usd: Option<f64>,
    /// The request body.
    pub body: Map<String, Value>,
}

impl LogRecord {
    /// The model the request asked for (the body's), else the logged one.
    pub fn request_model(&self) -> &str {
        self.body
            .get("model")
            .and_then(Value::as_str)
            .or(self.model.as_deref())
            .unwrap_or("")
    }

    /// Whether the proxy (or upstream) failed this request: it was never cacheable.
    pub fn failed(&self) -> bool {
        self.status == Some(LoggedStatus::Error) || self.http_status.is_some_and(|s| s >= 400)
    }
}

/// Parses one line. `Ok(None)` for a blank line; `Err` explains a malformed one.
pub fn parse_line(line: &[u8], line_no: u64) -> Result<Option<LogRecord>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("not a JSON object".to_string());
    };
    let wrapped = matches!(map.get("request"), Some(Value::Object(_)));
    if !wrapped {
        let route = infer_route(&map).ok_or_else(|| {
            "neither a request body (no messages, prompt or input) nor a wrapped request (no request object)"
                .to_string()
        })?;
        return Ok(Some(LogRecord {
            line: line_no,
            ts_ms: None,
            route,
            group: None,
            tenant: TenantId::SHARED,
            status: None,
            http_status: None,
            model: None,
            usage: None,
            cost_usd: None,
            saved_usd: None,
            body: map,
        }));
    }
    let Some(Value::Object(body)) = map.remove("request") else {
        return Err("request is not an object".to_string());
    };
    let ts_ms = match map.get("ts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_ts(v).ok_or_else(|| format!("unreadable ts {v}"))?),
    };
    let route = match (map.get("route"), map.get("path")) {
        (Some(Value::String(r)), _) => {
            route_by_name(r).ok_or_else(|| format!("unknown route {r:?}"))?
        }
        (_, Some(Value::String(p))) => {
            Route::from_path(p).ok_or_else(|| format!("not a cached route: {p:?}"))?
        }
        _ => infer_route(&body)
            .ok_or_else(|| "request has no messages, prompt or input".to_string())?,
    };
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    let group = text("strategy").or_else(|| text("service"));
    let tenant = match (map.get("tenant"), map.get("api_key")) {
        (Some(Value::String(t)), _) => TenantId::from_tag(t),
        (_, Some(Value::String(k))) => TenantId::from_api_key(k),
        _ => TenantId::SHARED,
    };
    let status = map
        .get("status")
        .and_then(Value::as_str)
        .and_then(LoggedStatus::parse);
    let http_status = map
        .get("http_status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let usage = map.get("usage").and_then(usage_of);
    Ok(Some(LogRecord {
        line: line_no,
        ts_ms,
        route,
        group,
        tenant,
        status,
        http_status,
        model: text("model"),
        usage,
        cost_usd: map.get("cost_usd").and_then(Value::as_f64),
        saved_usd: map.get("saved_usd").and_then(Value::as_f64),
        body,
    }))
}

/// The request body of a line as its bytes were written: the `request` member of a
/// wrapped line, else the whole line. The cache key is read from these bytes (member
/// order and number spelling count), so replay keys requests as the proxy did. `None`
/// when the line is not a JSON object.
pub fn request_bytes(line: &[u8]) -> Option<&[u8]> {
    let open = prefixcache_core::rawjson::document(line).ok()?;
    if line[open] != b'{' {
        return None;
    }
    let members = prefixcache_core::rawjson::members(line, open, 0).ok()?;
    match members
        .iter()
        .rev()
        .find(|m| m.key_is(line, "request") && line[m.value.start] == b'{')
    {
        Some(m) => Some(&line[m.value.clone()]),
        None => Some(line),
    }
}

/// The request log's flat usage (`cached_tokens` beside `prompt_tokens`), or an API
/// usage object with `*_tokens_details`.
fn usage_of(v: &Value) -> Option<Usage> {
    let o = v.as_object()?;
    let n = |k: &str| o.get(k).and_then(Value::as_u64);
    if o.contains_key("prompt_tokens_details") || o.contains_key("input_tokens") {
        return prefixcache_core::wire::usage_from_value(v);
    }
    Some(Usage {
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens").unwrap_or(0),
        cached_tokens: n("cached_tokens").unwrap_or(0),
        cache_write_tokens: n("cache_write_tokens").unwrap_or(0),
        cache_write_long_tokens: n("cache_write_long_tokens").unwrap_or(0),
    })
}

/// `chat_completions` etc. (the log's names), also accepting the path.
pub fn route_by_name(name: &str) -> Option<Route> {
    Route::ALL
        .into_iter()
        .find(|r| r.as_str() == name)
        .or_else(|| Route::from_path(name))
}

/// The route of a bare request body: `messages` → chat, `prompt` → legacy completions,
/// `input` → embeddings for embedding models (or with `dimensions`/`encoding_format`),
/// else Responses.
pub fn infer_route(body: &Map<String, Value>) -> Option<Route> {
    if body.contains_key("messages") {
        return Some(Route::ChatCompletions);
    }
    if body.contains_key("prompt") {
        return Some(Route::Completions);
    }
    if body.contains_key("input") {
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let embedding = model.contains("embedding")
            || body.contains_key("dimensions")
            || body.contains_key("encoding_format");
        return Some(if embedding {
            Route::Embeddings
        } else {
            Route::Responses
        });
    }
    None
}

/// A timestamp: RFC 3339 text, or epoch seconds or milliseconds as a number (or as
/// digits in a string). Numbers from 10^11 on are milliseconds (10^11 seconds is the
/// year 5138), below seconds (fractions allowed).
pub fn parse_ts(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => epoch(n.as_f64()?),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(f) = t.parse::<f64>() {
                return epoch(f);
            }
            parse_rfc3339(t)
        }
        _ => None,
    }
}

fn epoch(f: f64) -> Option<i64> {
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    let ms = if f >= 1e11 { f } else { f * 1000.0 };
    (ms < 9.2e18).then_some(ms.round() as i64)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction](Z|±HH:MM)`, to milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second is read as the last millisecond of its minute.
    let second = second.min(60);
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    let ms = secs * 1000 + millis;
    Some(if second == 60 { ms - 1 } else { ms })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (Hinnant)
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-26T13:00:00.123Z"),
            Some(1_795_698_000_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T15:00:00.123+02:00"),
            Some(1_795_698_000_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-26 13:00:00.1234567z"),
            Some(1_795_698_000_123)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_rfc3339("2026-11-26T13:00:00"), None);
        assert_eq!(parse_rfc3339("2026-13-26T13:00:00Z"), None);
        assert_eq!(parse_ts(&json!(1_795_698_000)), Some(1_795_698_000_000));
        assert_eq!(parse_ts(&json!(1_795_698_000.5)), Some(1_795_698_000_500));
        assert_eq!(
            parse_ts(&json!(1_795_698_000_123u64)),
            Some(1_795_698_000_123)
        );
        assert_eq!(parse_ts(&json!("1795698000123")), Some(1_795_698_000_123));
        assert_eq!(parse_ts(&json!(true)), None);
        for ms in [0, 951_782_400_000, 1_795_698_000_123, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339(&format_ts(ms)), Some(ms), "{}", format_ts(ms));
        }
        assert_eq!(format_ts(1_795_698_000_123), "2026-11-26T13:00:00.123Z");
    }

    #[test]
    fn the_three_forms() {
        let proxy = br#"{"ts":"2026-11-26T13:00:00.123Z","route":"chat_completions","strategy":"docs","tenant":"3f2a9c0d11b7e845","status":"hit","http_status":200,"key":"45380e91c416b6a8","family":"b9dbe94de6360dd0","latency_ms":0.4,"model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":1310,"completion_tokens":44,"cached_tokens":1152,"cache_write_tokens":0},"cost_usd":null,"saved_usd":0.0002,"request":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}"#;
        let r = parse_line(proxy, 7).unwrap().unwrap();
        assert_eq!(r.line, 7);
        assert_eq!(r.ts_ms, Some(1_795_698_000_123));
        assert_eq!(r.route, Route::ChatCompletions);
        assert_eq!(r.group.as_deref(), Some("docs"));
        assert_eq!(r.tenant, TenantId(0x3f2a9c0d11b7e845 | 1));
        assert_eq!(r.status, Some(LoggedStatus::Hit));
        assert_eq!(r.usage.unwrap().cached_tokens, 1152);
        assert_eq!(r.saved_usd, Some(0.0002));
        assert_eq!(r.request_model(), "gpt-4o-mini");

        let bare = br#"{"model":"text-embedding-3-small","input":"x"}"#;
        let r = parse_line(bare, 1).unwrap().unwrap();
        assert_eq!(
            (r.route, r.tenant, r.ts_ms),
            (Route::Embeddings, TenantId::SHARED, None)
        );
        let r = parse_line(br#"{"model":"gpt-4o","input":"x"}"#, 1)
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Responses);
        let r = parse_line(br#"{"model":"gpt-4o","prompt":"x"}"#, 1)
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Completions);

        let wrapped = br#"{"ts":1795698000,"service":"billing","api_key":"sk-secret","request":{"model":"gpt-4o","messages":[]}}"#;
        let r = parse_line(wrapped, 3).unwrap().unwrap();
        assert_eq!(r.group.as_deref(), Some("billing"));
        assert_eq!(r.tenant, TenantId::from_api_key("Bearer sk-secret"));
        assert_ne!(r.tenant, TenantId::from_api_key("sk-other"));
        assert!(!format!("{r:?}").contains("sk-secret"));
        assert_eq!(r.ts_ms, Some(1_795_698_000_000));
    }

    #[test]
    fn malformed_lines_say_why() {
        assert!(parse_line(b"   ", 1).unwrap().is_none());
        assert!(
            parse_line(b"{not json", 1)
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert!(
            parse_line(b"[1,2]", 1)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            parse_line(br#"{"model":"x"}"#, 1)
                .unwrap_err()
                .contains("neither")
        );
        assert!(
            parse_line(br#"{"ts":"yesterday","request":{"messages":[]}}"#, 1)
                .unwrap_err()
                .contains("ts")
        );
        assert!(
            parse_line(br#"{"route":"images","request":{"messages":[]}}"#, 1)
                .unwrap_err()
                .contains("unknown route")
        );
    }

    #[test]
    fn gzip_is_read_transparently_and_lines_are_numbered() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"a\":1}\r\n\n{\"b\":2}";
        let plain = dir.path().join("log.jsonl");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("log.bin");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for p in [plain, gz] {
            let mut input = LogInput::open(&p).unwrap();
            let mut buf = Vec::new();
            let mut lines = Vec::new();
            while let Some(n) = input.next_line(&mut buf).unwrap() {
                lines.push((n, String::from_utf8(buf.clone()).unwrap()));
            }
            assert_eq!(
                lines,
                vec![
                    (1, "{\"a\":1}".to_string()),
                    (2, String::new()),
                    (3, "{\"b\":2}".to_string())
                ]
            );
        }
    }

    #[test]
    fn bad_lines_fail_past_the_limit() {
        let mut b = BadLines::default();
        for i in 0..30 {
            b.record(i, format!("bad {i}"));
        }
        assert_eq!(b.first.len(), BAD_LINES_KEPT);
        assert!(b.check(Path::new("x"), 30).is_ok());
        let err = b.check(Path::new("x"), 29).unwrap_err().to_string();
        assert!(
            err.contains("30 malformed lines") && err.contains("line 0: bad 0"),
            "{err}"
        );
        assert_eq!(b.warnings(Path::new("x")).len(), BAD_LINES_KEPT + 1);
    }
}
