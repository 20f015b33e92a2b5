//! An upstream response in flight: read once by a task the proxy owns, buffered, fanned
//! out to the caller that started it and to identical requests that joined it
//! (coalescing), and stored when it completed.
//!
//! The reading task does not belong to any client: a caller that disconnects mid-stream
//! does not stop it, so the response is still stored and the money spent is not wasted.
//!
//! A response larger than `limits.max_response_bytes` is [oversized](Flight::set_oversized):
//! it will not be stored or shared, so from then on chunks every reader has taken are
//! dropped, and the task reads upstream only as fast as its readers take the body.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use prefixcache_core::key::CacheKey;
use prefixcache_core::usage::Usage;
use tokio::sync::watch;

/// The status line and headers of the upstream response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: StatusCode,
    /// Upstream headers minus hop-by-hop ones.
    pub headers: HeaderMap,
    /// `text/event-stream`: the body is a stream of SSE events.
    pub is_sse: bool,
}

/// One piece of the body as forwarded: an SSE event, or a chunk of a JSON body.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub bytes: Bytes,
    /// The usage-only SSE event the proxy asked for by injecting `include_usage`; callers
    /// that did not ask for usage do not receive it.
    pub usage_only: bool,
}

/// How a flight ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Upstream finished the body. `complete` says whether it was a complete, successful
    /// response (2xx and a finished stream), which is what followers may reuse.
    Finished { complete: bool },
    /// No response at all (connect error, timeout before headers): the message says why.
    NoResponse(FailKind),
    /// The body was cut (connection reset, idle timeout) after the head was sent.
    Cut,
}

/// Why a flight produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailKind {
    Unreachable(String),
    Timeout(std::time::Duration),
}

#[derive(Debug, Default)]
struct State {
    head: Option<Head>,
    /// The chunks from position `base` on (earlier ones were dropped: oversized).
    chunks: VecDeque<Chunk>,
    base: usize,
    /// Bytes of `chunks`.
    buffered: usize,
    /// A chunk readers do not see yet ([`Flight::push_held`]): part of the body, released
    /// by the next push or by the end.
    held: Option<Chunk>,
    end: Option<End>,
    /// Usage and model of the finished response, for followers' accounting.
    summary: Option<(Option<Usage>, String)>,
    /// Past `max_response_bytes`: not stored, not shared, trimmed behind its readers.
    oversized: bool,
    /// Each reader's position: the chunks before it were taken.
    positions: HashMap<u64, usize>,
    next_reader: u64,
}

impl State {
    /// Drops the chunks every reader has taken (oversized flights only).
    fn trim(&mut self) {
        if !self.oversized {
            return;
        }
        let end = self.base + self.chunks.len();
        let taken = self.positions.values().copied().min().unwrap_or(end);
        while self.base < taken {
            match self.chunks.pop_front() {
                Some(c) => self.buffered -= c.bytes.len(),
                None => break,
            }
            self.base += 1;
        }
    }

    /// Bytes not yet taken by the slowest reader.
    fn untaken(&self) -> usize {
        let Some(&slowest) = self.positions.values().min() else {
            return 0;
        };
        self.chunks
            .iter()
            .skip(slowest.saturating_sub(self.base))
            .map(|c| c.bytes.len())
            .sum()
    }
}

/// The shared buffer of one upstream response.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<State>,
    // A version counter: readers mark what they have seen, writers bump it. Unlike
    // `Notify`, a wake-up that happens between a reader's check and its wait is not lost.
    version: watch::Sender<u64>,
    /// Callers currently receiving this response (see [`Reader`]).
    readers: AtomicUsize,
    /// Identical requests that joined this flight instead of calling upstream.
    followers: AtomicUsize,
}

/// A caller receiving a flight's body, from its start. While none exist, the reading
/// task knows nobody is waiting and bounds how long it keeps reading.
#[derive(Debug)]
pub struct Reader {
    flight: Arc<Flight>,
    id: u64,
    pos: usize,
}

impl Reader {
    pub fn flight(&self) -> &Flight {
        &self.flight
    }

    /// Waits for the chunks after what this reader took, or the end.
    pub async fn next(&mut self) -> Next {
        let next = self.flight.next_for(self.id, self.pos).await;
        if let Next::Chunks(chunks) = &next {
            self.pos += chunks.len();
        }
        next
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let oversized = {
            let mut state = self.flight.lock();
            state.positions.remove(&self.id);
            state.trim();
            state.oversized
        };
        self.flight.readers.fetch_sub(1, Ordering::SeqCst);
        if oversized {
            // The task may be waiting for this reader to make room.
            self.flight.bump();
        }
    }
}

/// What a reader found at its position.
#[derive(Debug)]
pub enum Next {
    /// Chunks from the reader's position on.
    Chunks(Vec<Chunk>),
    /// Nothing new and the flight ended this way.
    End(End),
}

impl Flight {
    pub fn new() -> Arc<Flight> {
        let (version, _) = watch::channel(0);
        Arc::new(Flight {
            state: Mutex::new(State::default()),
            version,
            readers: AtomicUsize::new(0),
            followers: AtomicUsize::new(0),
        })
    }

    /// Registers a caller receiving the body from its start.
    pub fn reader(self: &Arc<Self>) -> Reader {
        let id = {
            let mut state = self.lock();
            let id = state.next_reader;
            state.next_reader += 1;
            state.positions.insert(id, 0);
            id
        };
        self.readers.fetch_add(1, Ordering::SeqCst);
        Reader {
            flight: self.clone(),
            id,
            pos: 0,
        }
    }

    /// How many callers are receiving the body now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the buffer half-updated (each
        // update is one push or one assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn set_head(&self, head: Head) {
        self.lock().head = Some(head);
        self.bump();
    }

    pub fn push(&self, chunk: Chunk) {
        {
            let mut state = self.lock();
            state.release_held();
            state.buffered += chunk.bytes.len();
            state.chunks.push_back(chunk);
            state.trim();
        }
        self.bump();
    }

    /// Appends a chunk that readers receive only with the next push or the end: the
    /// reading task holds back what may be a response's last bytes until the response is
    /// stored, so a caller that has read its whole answer finds it in the cache.
    pub fn push_held(&self, chunk: Chunk) {
        {
            let mut state = self.lock();
            state.release_held();
            state.held = Some(chunk);
        }
        self.bump();
    }

    /// Bytes held in the buffer.
    pub fn buffered(&self) -> usize {
        self.lock().buffered
    }

    /// Marks the response as too large to keep: it will end incomplete (not stored, not
    /// given to a follower that waits for the whole body), and chunks all readers have
    /// taken are dropped from now on.
    pub fn set_oversized(&self) {
        {
            let mut state = self.lock();
            state.oversized = true;
            state.trim();
        }
        self.bump();
    }

    pub fn is_oversized(&self) -> bool {
        self.lock().oversized
    }

    /// Waits until the slowest reader is at most `window` bytes behind: how an
    /// oversized response is read upstream only as fast as it is sent on. `false` when
    /// no reader is left (nobody will receive the rest).
    pub async fn room(&self, window: usize) -> bool {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let state = self.lock();
                if state.positions.is_empty() {
                    return false;
                }
                if state.untaken() <= window {
                    return true;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    pub fn end(&self, end: End) {
        {
            let mut state = self.lock();
            state.release_held();
            state.end = Some(end);
        }
        self.bump();
    }

    /// Ends a finished response, with the usage and model it reported. An oversized
    /// response never ends complete: its start is gone.
    pub fn finish(&self, complete: bool, usage: Option<Usage>, model: String) {
        {
            let mut state = self.lock();
            state.release_held();
            state.summary = Some((usage, model));
            let complete = complete && !state.oversized;
            state.end = Some(End::Finished { complete });
        }
        self.bump();
    }

    /// Usage and model of a finished response.
    pub fn summary(&self) -> Option<(Option<Usage>, String)> {
        self.lock().summary.clone()
    }

    /// The whole body received so far, held chunk included (the stored body once
    /// upstream finished).
    pub fn body(&self) -> Bytes {
        let state = self.lock();
        let all = || state.chunks.iter().chain(&state.held);
        let len = all().map(|c| c.bytes.len()).sum();
        let mut out = Vec::with_capacity(len);
        for c in all() {
            out.extend_from_slice(&c.bytes);
        }
        Bytes::from(out)
    }

    /// Waits for the head, or for the flight to end without one.
    pub async fn head(&self) -> Result<Head, End> {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let state = self.lock();
                if let Some(head) = &state.head {
                    return Ok(head.clone());
                }
                if let Some(end) = &state.end {
                    return Err(end.clone());
                }
            }
            if rx.changed().await.is_err() {
                return Err(End::Cut);
            }
        }
    }

    /// Waits until there is something at `pos` or the flight ended.
    pub async fn next(&self, pos: usize) -> Next {
        self.next_for(u64::MAX, pos).await
    }

    /// [`Flight::next`] for reader `id`, which took everything before `pos`.
    async fn next_for(&self, id: u64, pos: usize) -> Next {
        let mut rx = self.version.subscribe();
        let mut recorded = false;
        loop {
            rx.borrow_and_update();
            let moved = {
                let mut state = self.lock();
                let mut moved = false;
                if !recorded
                    && let Some(p) = state.positions.get_mut(&id)
                    && *p != pos
                {
                    *p = pos;
                    recorded = true;
                    moved = state.oversized;
                    state.trim();
                }
                if pos < state.base {
                    // Dropped before this reader took them (it joined an oversized
                    // response late): it cannot be given the whole body.
                    return Next::End(End::Cut);
                }
                let at = pos - state.base;
                if at < state.chunks.len() {
                    return Next::Chunks(state.chunks.range(at..).cloned().collect());
                }
                if let Some(end) = &state.end {
                    return Next::End(end.clone());
                }
                moved
            };
            if moved {
                // The task may be waiting for room.
                self.bump();
            }
            if rx.changed().await.is_err() {
                return Next::End(End::Cut);
            }
        }
    }

    /// Waits for the end.
    pub async fn finished(&self) -> End {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(end) = &self.lock().end {
                return end.clone();
            }
            if rx.changed().await.is_err() {
                return End::Cut;
            }
        }
    }

    /// Waits for the end, or `None` as soon as the response is oversized (it will not
    /// end complete, and waiting would hold all of it).
    pub async fn finished_whole(&self) -> Option<End> {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let state = self.lock();
                if state.oversized {
                    return None;
                }
                if let Some(end) = &state.end {
                    return Some(end.clone());
                }
            }
            if rx.changed().await.is_err() {
                return Some(End::Cut);
            }
        }
    }

    /// The head if it has arrived (no waiting).
    pub fn head_now(&self) -> Option<Head> {
        self.lock().head.clone()
    }
}

impl State {
    fn release_held(&mut self) {
        if let Some(chunk) = self.held.take() {
            self.buffered += chunk.bytes.len();
            self.chunks.push_back(chunk);
            self.trim();
        }
    }
}

/// The flights that identical requests may join, by cache key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

/// Whether the caller leads a new flight or follows an existing one.
#[derive(Debug)]
pub enum Joined {
    Leader(Arc<Flight>),
    Follower(Arc<Flight>),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the flight for `key`, or registers a new one that the caller must run.
    pub fn join_or_lead(&self, key: CacheKey) -> Joined {
        let mut map = self.lock();
        if let Some(f) = map.get(&key) {
            f.followers.fetch_add(1, Ordering::Relaxed);
            return Joined::Follower(f.clone());
        }
        let f = Flight::new();
        map.insert(key, f.clone());
        Joined::Leader(f)
    }

    /// Registers a flight for `key` unless one exists (used by a `no-cache` request,
    /// which never joins but may be joined).
    pub fn lead(&self, key: CacheKey) -> Arc<Flight> {
        let f = Flight::new();
        self.lock().entry(key).or_insert_with(|| f.clone());
        f
    }

    /// Removes the flight for `key` if it is `flight` (a later flight under the same key
    /// stays).
    pub fn remove(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Callers that joined a flight still registered: they wait on its upstream call
    /// instead of making their own.
    pub fn followers(&self) -> usize {
        self.lock()
            .values()
            .map(|f| f.followers.load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn readers_see_every_chunk_and_the_end() {
        let f = Flight::new();
        let reader = {
            let f = f.clone();
            async move {
                let mut pos = 0;
                let mut got = Vec::new();
                loop {
                    match f.next(pos).await {
                        Next::Chunks(c) => {
                            pos += c.len();
                            got.extend(c.into_iter().map(|c| c.bytes));
                        }
                        Next::End(e) => return (got, e),
                    }
                }
            }
        };
        let writer = async {
            for i in 0..100u8 {
                f.push(Chunk {
                    bytes: Bytes::from(vec![i]),
                    usage_only: false,
                });
                tokio::task::yield_now().await;
            }
            f.end(End::Finished { complete: true });
        };
        let ((got, end), ()) = tokio::join!(reader, writer);
        assert_eq!(got.len(), 100);
        assert!(got.iter().enumerate().all(|(i, b)| b[0] == i as u8));
        assert_eq!(end, End::Finished { complete: true });
        assert_eq!(f.body().len(), 100);
    }

    #[tokio::test]
    async fn a_held_chunk_is_in_the_body_but_reaches_readers_only_at_the_end() {
        let f = Flight::new();
        let chunk = |b: &'static [u8]| Chunk {
            bytes: Bytes::from_static(b),
            usage_only: false,
        };
        f.push(chunk(b"a"));
        f.push_held(chunk(b"b"));
        assert_eq!(&f.body()[..], b"ab", "stored with the held chunk");
        let Next::Chunks(seen) = f.next(0).await else {
            panic!("the first chunk is visible")
        };
        assert_eq!(seen.len(), 1);
        let pending = tokio::time::timeout(std::time::Duration::from_millis(1), f.next(1)).await;
        assert!(pending.is_err(), "the held chunk is not visible yet");
        // A later push releases it first; the end releases the last one.
        f.push_held(chunk(b"c"));
        let Next::Chunks(seen) = f.next(1).await else {
            panic!("released by the next push")
        };
        assert_eq!(&seen[0].bytes[..], b"b");
        f.finish(true, None, String::new());
        let Next::Chunks(seen) = f.next(2).await else {
            panic!("released by the end")
        };
        assert_eq!(&seen[0].bytes[..], b"c");
        assert!(matches!(
            f.next(3).await,
            Next::End(End::Finished { complete: true })
        ));
        assert_eq!(&f.body()[..], b"abc");
    }

    #[test]
    fn one_flight_per_key_until_removed() {
        let flights = Flights::default();
        let k = CacheKey([1; 32]);
        let Joined::Leader(a) = flights.join_or_lead(k) else {
            panic!("first must lead")
        };
        assert!(matches!(flights.join_or_lead(k), Joined::Follower(f) if Arc::ptr_eq(&f, &a)));
        assert_eq!(flights.followers(), 1);
        // A no-cache leader does not displace the registered flight.
        let b = flights.lead(k);
        flights.remove(&k, &b);
        assert_eq!(flights.len(), 1);
        flights.remove(&k, &a);
        assert!(flights.is_empty());
        assert_eq!(flights.followers(), 0);
    }

    fn chunk(n: usize) -> Chunk {
        Chunk {
            bytes: Bytes::from(vec![b'x'; n]),
            usage_only: false,
        }
    }

    #[tokio::test]
    async fn an_oversized_flight_keeps_only_what_its_readers_have_not_taken() {
        let f = Flight::new();
        let mut slow = f.reader();
        let mut fast = f.reader();
        for _ in 0..4 {
            f.push(chunk(10));
        }
        f.set_oversized();
        assert_eq!(f.buffered(), 40, "nothing taken yet");
        let Next::Chunks(c) = fast.next().await else {
            panic!()
        };
        assert_eq!(c.len(), 4);
        let Next::Chunks(c) = slow.next().await else {
            panic!()
        };
        assert_eq!(c.len(), 4);
        // Both took four chunks; the next call records it and frees them.
        f.push(chunk(10));
        let _ = fast.next().await;
        assert_eq!(f.buffered(), 50, "the slow reader still holds the start");
        assert!(f.room(20).now_or_never().is_none(), "no room while behind");
        let _ = slow.next().await;
        assert_eq!(f.buffered(), 10);
        assert_eq!(f.room(20).now_or_never(), Some(true));
        // A reader registered now would miss the start: it is told so.
        let mut late = f.reader();
        assert!(matches!(late.next().await, Next::End(End::Cut)));
        drop((slow, fast, late));
        assert_eq!(f.room(20).now_or_never(), Some(false), "no reader left");
        f.finish(true, None, String::new());
        assert_eq!(f.finished().await, End::Finished { complete: false });
        assert_eq!(f.finished_whole().await, None);
    }
}
