//! The embedded disk store: one redb file (`<dir>/cache.redb`) that survives restarts,
//! honours TTL, and stays under a byte budget by evicting the soonest-expiring entries.
//!
//! # How it avoids blocking the runtime
//! Reads run in `spawn_blocking` (a read transaction may touch the disk). All writes go
//! through one writer thread that owns the write side: it drains whatever puts and
//! deletes are queued, applies them in one transaction and answers each caller after
//! the commit (group commit). Many concurrent puts cost one commit, not one each.
//!
//! # Durability
//! Batches commit with [`Durability::None`] (no fsync) and the writer makes a durable
//! commit at most [`DURABLE_INTERVAL`] after the first non-durable one, after 1/16 of
//! `disk_bytes` (1 to 64 MiB) written non-durably, when idle, on [`CacheStore::flush`]
//! and on drop. A crash loses at most about a second of writes:
//! for a cache that costs a few upstream calls, while an fsync per batch would cap put
//! throughput at the disk's fsync rate. redb stays consistent either way (its commit
//! slots are checksummed; a torn commit rolls back to the last good one).
//!
//! # Eviction order
//! Soonest-expiring first, through a secondary table keyed `(expires_at_ms, key)`. It
//! removes expired entries first for free (the same walk sweeps them), needs no write on
//! read (an LRU on disk would turn every hit into a write transaction), and the memory
//! tier in front already keeps what is hot. With one TTL for all traffic it is oldest
//! stored first.
//!
//! # Size accounting
//! `disk_bytes` bounds the sum of encoded entry sizes plus [`ROW_OVERHEAD`] per entry
//! (keys, index row, B-tree slack). The file itself is larger: redb rounds large values
//! up to power-of-two pages, copies pages on write, and reuses freed pages only after a
//! durable commit. It does not grow with traffic, and does not shrink when entries are
//! removed (freed pages are reused); `docs/stores.md` has measured ratios.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prefixcache_core::key::CacheKey;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError, Table,
    TableDefinition,
};
use tokio::sync::oneshot;

use crate::entry::{self, DecodeError};
use crate::{CacheStore, Clock, Entry, PurgeFilter, StoreError, StoreStats};

/// File name of the database under the data directory.
pub const FILE_NAME: &str = "cache.redb";
/// Bytes counted per entry on top of its encoding: the 32-byte key twice (entry and
/// index row), the expiry twice, the index value, and B-tree slot overhead.
pub const ROW_OVERHEAD: u64 = 128;
/// Longest time a committed write stays non-durable.
pub const DURABLE_INTERVAL: Duration = Duration::from_secs(1);
/// A durable commit also happens once this fraction of the budget (clamped to
/// 1..64 MiB) was written non-durably: pages freed by non-durable commits are reused
/// only after a durable one, so this bounds the file's growth by bytes, not by time.
const DURABLE_EVERY_FRACTION: u64 = 16;
/// An entry larger than this fraction of `disk_bytes` is not stored (it would evict a
/// large part of the cache for one response).
const MAX_ENTRY_FRACTION: u64 = 4;
/// Expired entries removed per batch by the background sweep (bounded so a burst of
/// expiries never makes one commit slow).
const SWEEP_PER_BATCH: usize = 256;
/// Eviction runs down to this fraction of the budget (in 1/100), so a full store does
/// not evict on every single put.
const EVICT_TO_PERCENT: u64 = 95;
const MAX_BATCH_OPS: usize = 512;
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Keys per delete operation sent by purge.
const PURGE_CHUNK: usize = 4096;

type Key32 = [u8; 32];

/// key -> (expires_at_ms, encoded entry). The expiry is kept outside the encoding so the
/// index stays consistent even when the encoded bytes are corrupt.
const ENTRIES: TableDefinition<&Key32, (u64, &[u8])> = TableDefinition::new("entries_v1");
/// (expires_at_ms, key) -> accounted bytes of the entry: the eviction and sweep order.
const BY_EXPIRY: TableDefinition<(u64, &Key32), u64> = TableDefinition::new("by_expiry_v1");
/// "entries" / "bytes": running totals, updated in the same transaction as the rows.
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats_v1");

/// What a conditional delete expects to find, so a delete decided on an old read never
/// removes an entry written since (a get that saw an expired entry races a fresh put).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    expires_at_ms: u64,
    len: usize,
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

enum Op {
    Put {
        key: Key32,
        expires_at_ms: u64,
        bytes: Vec<u8>,
        done: Reply,
    },
    Delete {
        keys: Vec<(Key32, Option<Expect>)>,
        done: Option<Reply>,
    },
    Flush {
        done: Reply,
    },
}

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Put { bytes, .. } => bytes.len(),
            Op::Delete { keys, .. } => keys.len() * 40,
            Op::Flush { .. } => 0,
        }
    }
}

struct Shared {
    db: Database,
    clock: Arc<dyn Clock>,
    max_bytes: u64,
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Entries evicted for the byte budget since the store opened.
    evictions: AtomicU64,
    writer_alive: AtomicBool,
}

/// The redb-backed store. Dropping it stops the writer thread after a final durable
/// commit and closes the file (blocking briefly), so the same directory can be opened
/// again.
pub struct DiskStore {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl DiskStore {
    /// Opens (or creates) `<dir>/cache.redb`, keeping about `max_bytes` at most.
    ///
    /// A file that is not a readable redb database of a supported version is moved
    /// aside to `cache.redb.corrupt-<unix ms>` and a fresh one created: it is a cache,
    /// and a proxy that refuses to start over it helps nobody. A file locked by another
    /// process is an error.
    pub async fn open(
        dir: &Path,
        max_bytes: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<DiskStore, StoreError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || DiskStore::open_blocking(&dir, max_bytes, clock))
            .await
            .map_err(|e| StoreError::Backend(format!("disk open task failed: {e}")))?
    }

    fn open_blocking(
        dir: &Path,
        max_bytes: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<DiskStore, StoreError> {
        crate::private::create_dir(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_or_replace(&path, clock.now_ms())?;
        let (entries, bytes) = init_tables(&db)?;
        let shared = Arc::new(Shared {
            db,
            clock,
            max_bytes,
            entries: AtomicU64::new(entries),
            bytes: AtomicU64::new(bytes),
            evictions: AtomicU64::new(0),
            writer_alive: AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("prefixcache-disk-writer".into())
            .spawn(move || writer_loop(&writer_shared, &rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start disk writer: {e}")))?;
        Ok(DiskStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores already-encoded bytes under `key` as they are, expiring at `expires_at_ms`.
    /// For tests and tools (the conformance suite writes corrupt bytes with it).
    pub async fn put_raw(
        &self,
        key: &CacheKey,
        expires_at_ms: u64,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Op::Put {
            key: *key.as_bytes(),
            expires_at_ms,
            bytes,
            done,
        })?;
        wait(rx).await.map(drop)
    }

    /// The stored row under `key` as it is (expiry and encoded bytes), without decoding
    /// or expiry checks. For tests and tools.
    pub async fn get_raw(&self, key: &CacheKey) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let shared = self.shared.clone();
        let k = *key.as_bytes();
        blocking(move || {
            let txn = shared.db.begin_read().map_err(backend)?;
            let table = txn.open_table(ENTRIES).map_err(backend)?;
            let row = table.get(&k).map_err(backend)?;
            Ok(row.map(|g| {
                let (exp, bytes) = g.value();
                (exp, bytes.to_vec())
            }))
        })
        .await
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(writer_gone)
    }

    async fn delete_keys(&self, keys: Vec<(Key32, Option<Expect>)>) -> Result<u64, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Op::Delete {
            keys,
            done: Some(done),
        })?;
        wait(rx).await
    }

    /// Queues a conditional delete without waiting: used on the read path for expired
    /// and corrupt entries, where the caller already has its answer (a miss).
    fn forget(&self, key: Key32, expect: Expect) {
        let _ = self.send(Op::Delete {
            keys: vec![(key, Some(expect))],
            done: None,
        });
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Closing the channel tells the writer to make a last durable commit and exit;
        // joining it releases its handle on the database so the file can be reopened.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

enum Read {
    Miss,
    Hit(Entry),
    Expired(Expect),
    Corrupt(Expect, DecodeError),
}

#[async_trait]
impl CacheStore for DiskStore {
    fn backend(&self) -> &'static str {
        "disk"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let shared = self.shared.clone();
        let k = *key.as_bytes();
        let read = blocking(move || -> Result<Read, StoreError> {
            let txn = shared.db.begin_read().map_err(backend)?;
            let table = txn.open_table(ENTRIES).map_err(backend)?;
            let Some(row) = table.get(&k).map_err(backend)? else {
                return Ok(Read::Miss);
            };
            let (expires_at_ms, bytes) = row.value();
            let expect = Expect {
                expires_at_ms,
                len: bytes.len(),
            };
            let now = shared.clock.now_ms();
            if now >= expires_at_ms {
                return Ok(Read::Expired(expect));
            }
            match entry::decode(bytes) {
                Ok(e) if e.is_expired(now) => Ok(Read::Expired(expect)),
                Ok(e) => Ok(Read::Hit(e)),
                Err(err) => Ok(Read::Corrupt(expect, err)),
            }
        })
        .await?;
        match read {
            Read::Miss => Ok(None),
            Read::Hit(e) => Ok(Some(e)),
            Read::Expired(expect) => {
                self.forget(k, expect);
                Ok(None)
            }
            Read::Corrupt(expect, err) => {
                tracing::warn!(key = %key.short_hex(), error = %err, reason = err.metric_label(),
                    "undecodable disk entry; treated as a miss and deleted");
                self.forget(k, expect);
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        let now = self.shared.clock.now_ms();
        let too_big = entry.weight() > self.shared.max_bytes / MAX_ENTRY_FRACTION;
        if entry.is_expired(now) || too_big {
            if too_big {
                tracing::debug!(key = %key.short_hex(), bytes = entry.body.len(),
                    "entry too large for the disk budget; not stored");
            }
            self.delete_keys(vec![(*key.as_bytes(), None)]).await?;
            return Ok(());
        }
        let bytes = crate::encode_off_runtime(entry).await?;
        self.put_raw(key, entry.meta.expires_at_ms, bytes).await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.delete_keys(vec![(*key.as_bytes(), None)])
            .await
            .map(drop)
    }

    async fn health(&self) -> Result<(), StoreError> {
        if !self.shared.writer_alive.load(Ordering::Acquire) || self.tx.is_none() {
            return Err(writer_gone());
        }
        let shared = self.shared.clone();
        blocking(move || {
            let txn = shared.db.begin_read().map_err(backend)?;
            txn.open_table(ENTRIES).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        let shared = self.shared.clone();
        let filter = filter.clone();
        type Doomed = Vec<(Key32, Option<Expect>)>;
        let (matched, corrupt) = blocking(move || -> Result<(Doomed, Doomed), StoreError> {
            let txn = shared.db.begin_read().map_err(backend)?;
            let table = txn.open_table(ENTRIES).map_err(backend)?;
            let (mut matched, mut corrupt) = (Vec::new(), Vec::new());
            for row in table.range::<&Key32>(..).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let (expires_at_ms, bytes) = v.value();
                let item = (
                    *k.value(),
                    Some(Expect {
                        expires_at_ms,
                        len: bytes.len(),
                    }),
                );
                match entry::decode_meta(bytes) {
                    Ok(meta) if filter.matches(&meta) => matched.push(item),
                    Ok(_) => {}
                    Err(_) => corrupt.push(item),
                }
            }
            Ok((matched, corrupt))
        })
        .await?;
        let mut removed = 0;
        for chunk in matched.chunks(PURGE_CHUNK) {
            removed += self.delete_keys(chunk.to_vec()).await?;
        }
        // Undecodable rows are garbage whatever the filter; they are not counted.
        for chunk in corrupt.chunks(PURGE_CHUNK) {
            self.delete_keys(chunk.to_vec()).await?;
        }
        Ok(removed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Op::Flush { done })?;
        wait(rx).await.map(drop)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.shared.entries.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            evictions: self.shared.evictions.load(Ordering::Relaxed),
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("disk store writer has stopped".into())
}

async fn wait(rx: oneshot::Receiver<Result<u64, StoreError>>) -> Result<u64, StoreError> {
    rx.await.map_err(|_| writer_gone())?
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("disk read task failed: {e}")))?
}

/// Opens or creates the database file, readable by the proxy's user only: it holds
/// every tenant's answers.
fn create_private(path: &Path) -> Result<Database, DatabaseError> {
    let private = crate::private::options()
        .create(true)
        .write(true)
        .open(path)
        .and_then(|_| crate::private::restrict(path));
    if let Err(e) = private {
        return Err(DatabaseError::Storage(StorageError::Io(e)));
    }
    Database::create(path)
}

fn open_or_replace(path: &Path, now_ms: u64) -> Result<Database, StoreError> {
    match create_private(path) {
        Ok(db) => Ok(db),
        Err(DatabaseError::Storage(StorageError::Corrupted(why))) => {
            replace(path, now_ms, &format!("corrupted: {why}"))
        }
        // redb reports a file that is not a redb database (bad magic) this way.
        Err(DatabaseError::Storage(StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            replace(path, now_ms, &format!("unreadable: {e}"))
        }
        Err(DatabaseError::UpgradeRequired(v)) => {
            replace(path, now_ms, &format!("old redb file format {v}"))
        }
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Unavailable(format!(
            "{} is already open (another prefixcache using the same data dir?)",
            path.display()
        ))),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot open {}: {e}",
            path.display()
        ))),
    }
}

fn replace(path: &Path, now_ms: u64, why: &str) -> Result<Database, StoreError> {
    let aside = path.with_extension(format!("redb.corrupt-{now_ms}"));
    tracing::warn!(file = %path.display(), moved_to = %aside.display(), reason = why,
        "disk cache file unreadable; starting an empty cache");
    std::fs::rename(path, &aside).map_err(|e| {
        StoreError::Unavailable(format!("cannot move aside {}: {e}", path.display()))
    })?;
    create_private(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", path.display())))
}

/// Creates the tables if needed and reads the running totals (rebuilding them from the
/// index if they are missing).
fn init_tables(db: &Database) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let totals = {
        txn.open_table(ENTRIES).map_err(backend)?;
        let index = txn.open_table(BY_EXPIRY).map_err(backend)?;
        let mut stats = txn.open_table(STATS).map_err(backend)?;
        let entries = stats.get("entries").map_err(backend)?.map(|g| g.value());
        let bytes = stats.get("bytes").map_err(backend)?.map(|g| g.value());
        match (entries, bytes) {
            (Some(e), Some(b)) => (e, b),
            _ => {
                let (mut e, mut b) = (0u64, 0u64);
                for row in index.range::<(u64, &Key32)>(..).map_err(backend)? {
                    let (_, size) = row.map_err(backend)?;
                    e += 1;
                    b += size.value();
                }
                stats.insert("entries", e).map_err(backend)?;
                stats.insert("bytes", b).map_err(backend)?;
                (e, b)
            }
        }
    };
    txn.commit().map_err(backend)?;
    Ok(totals)
}

fn writer_loop(shared: &Shared, rx: &mpsc::Receiver<Op>) {
    let mut totals = Totals {
        entries: shared.entries.load(Ordering::Relaxed),
        bytes: shared.bytes.load(Ordering::Relaxed),
    };
    // Time of the first commit not yet made durable, and bytes written since.
    let mut dirty_since: Option<Instant> = None;
    let mut dirty_bytes: u64 = 0;
    let durable_every = (shared.max_bytes / DURABLE_EVERY_FRACTION).clamp(1 << 20, 64 << 20);
    loop {
        let wait_for = match dirty_since {
            Some(t) => DURABLE_INTERVAL.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let first = match rx.recv_timeout(wait_for) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => {
                if dirty_since.is_some() {
                    match commit_batch(shared, &[], true, &mut totals) {
                        Ok(_) => (dirty_since, dirty_bytes) = (None, 0),
                        Err(e) => tracing::warn!(error = %e, "disk store durable commit failed"),
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        let mut weight = batch[0].weight();
        while batch.len() < MAX_BATCH_OPS && weight < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    weight += op.weight();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|op| matches!(op, Op::Flush { .. }))
            || dirty_since.is_some_and(|t| t.elapsed() >= DURABLE_INTERVAL)
            || dirty_bytes + weight as u64 >= durable_every;
        let outcome = commit_batch(shared, &batch, durable, &mut totals);
        match &outcome {
            Ok(_) if durable => (dirty_since, dirty_bytes) = (None, 0),
            Ok(_) => {
                dirty_since.get_or_insert_with(Instant::now);
                dirty_bytes += weight as u64;
            }
            Err(e) => tracing::warn!(error = %e, ops = batch.len(), "disk store commit failed"),
        }
        for (i, op) in batch.into_iter().enumerate() {
            let result = match &outcome {
                Ok(counts) => Ok(counts[i]),
                Err(e) => Err(StoreError::Backend(e.clone())),
            };
            let done = match op {
                Op::Put { done, .. } | Op::Flush { done } => Some(done),
                Op::Delete { done, .. } => done,
            };
            if let Some(done) = done {
                // The caller may have given up (timeout); the write stands regardless.
                let _ = done.send(result);
            }
        }
    }
    if dirty_since.is_some()
        && let Err(e) = commit_batch(shared, &[], true, &mut totals)
    {
        tracing::warn!(error = %e, "disk store final durable commit failed");
    }
    shared.writer_alive.store(false, Ordering::Release);
}

#[derive(Clone, Copy)]
struct Totals {
    entries: u64,
    bytes: u64,
}

/// Applies one batch in one write transaction, then sweeps expired entries and evicts
/// down to the budget. Returns, per op, how many entries it removed (for purge counts).
/// On error nothing of the batch is committed and the totals are unchanged.
fn commit_batch(
    shared: &Shared,
    batch: &[Op],
    durable: bool,
    totals: &mut Totals,
) -> Result<Vec<u64>, String> {
    let now = shared.clock.now_ms();
    let mut t = *totals;
    let evicted;
    let mut txn = shared.db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| e.to_string())?;
    let counts = {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut index = txn.open_table(BY_EXPIRY).map_err(|e| e.to_string())?;
        let mut rows = Rows {
            entries: &mut entries,
            index: &mut index,
            totals: &mut t,
        };
        let mut counts = Vec::with_capacity(batch.len());
        for op in batch {
            let n = match op {
                Op::Put {
                    key,
                    expires_at_ms,
                    bytes,
                    ..
                } => {
                    if *expires_at_ms <= now {
                        rows.remove(key, None)?;
                    } else {
                        rows.insert(key, *expires_at_ms, bytes)?;
                    }
                    0
                }
                Op::Delete { keys, .. } => {
                    let mut n = 0;
                    for (key, expect) in keys {
                        n += u64::from(rows.remove(key, *expect)?);
                    }
                    n
                }
                Op::Flush { .. } => 0,
            };
            counts.push(n);
        }
        evicted = rows.sweep(now, shared.max_bytes)?;
        let mut stats = txn.open_table(STATS).map_err(|e| e.to_string())?;
        stats
            .insert("entries", t.entries)
            .map_err(|e| e.to_string())?;
        stats.insert("bytes", t.bytes).map_err(|e| e.to_string())?;
        counts
    };
    txn.commit().map_err(|e| e.to_string())?;
    *totals = t;
    shared.entries.store(t.entries, Ordering::Relaxed);
    shared.bytes.store(t.bytes, Ordering::Relaxed);
    shared.evictions.fetch_add(evicted, Ordering::Relaxed);
    Ok(counts)
}

struct Rows<'a, 't> {
    entries: &'a mut Table<'t, &'static Key32, (u64, &'static [u8])>,
    index: &'a mut Table<'t, (u64, &'static Key32), u64>,
    totals: &'a mut Totals,
}

impl Rows<'_, '_> {
    fn insert(&mut self, key: &Key32, expires_at_ms: u64, bytes: &[u8]) -> Result<(), String> {
        let old = self
            .entries
            .insert(key, (expires_at_ms, bytes))
            .map_err(|e| e.to_string())?
            .map(|g| {
                let (exp, b) = g.value();
                (exp, b.len() as u64)
            });
        if let Some((old_exp, old_len)) = old {
            self.index
                .remove((old_exp, key))
                .map_err(|e| e.to_string())?;
            self.totals.entries -= 1;
            self.totals.bytes = self.totals.bytes.saturating_sub(old_len + ROW_OVERHEAD);
        }
        let size = bytes.len() as u64 + ROW_OVERHEAD;
        self.index
            .insert((expires_at_ms, key), size)
            .map_err(|e| e.to_string())?;
        self.totals.entries += 1;
        self.totals.bytes += size;
        Ok(())
    }

    /// Removes `key` if present (and, with `expect`, only if unchanged). True if removed.
    fn remove(&mut self, key: &Key32, expect: Option<Expect>) -> Result<bool, String> {
        let current = self.entries.get(key).map_err(|e| e.to_string())?.map(|g| {
            let (exp, b) = g.value();
            Expect {
                expires_at_ms: exp,
                len: b.len(),
            }
        });
        let Some(current) = current else {
            return Ok(false);
        };
        if expect.is_some_and(|e| e != current) {
            return Ok(false);
        }
        self.entries.remove(key).map_err(|e| e.to_string())?;
        self.index
            .remove((current.expires_at_ms, key))
            .map_err(|e| e.to_string())?;
        self.totals.entries = self.totals.entries.saturating_sub(1);
        self.totals.bytes = self
            .totals
            .bytes
            .saturating_sub(current.len as u64 + ROW_OVERHEAD);
        Ok(true)
    }

    /// Removes up to [`SWEEP_PER_BATCH`] expired entries, then evicts soonest-expiring
    /// entries while over budget. Returns how many live entries it evicted.
    fn sweep(&mut self, now: u64, max_bytes: u64) -> Result<u64, String> {
        let mut swept = 0;
        let mut evicted = 0;
        let target = max_bytes / 100 * EVICT_TO_PERCENT;
        let mut evicting = self.totals.bytes > max_bytes;
        loop {
            let first = self
                .index
                .first()
                .map_err(|e| e.to_string())?
                .map(|(k, _)| k.value().0);
            let Some(exp) = first else { break };
            let expired = exp <= now && swept < SWEEP_PER_BATCH;
            evicting = evicting && self.totals.bytes > target;
            if !expired && !evicting {
                break;
            }
            let key = self
                .index
                .first()
                .map_err(|e| e.to_string())?
                .map(|(k, _)| *k.value().1);
            let Some(key) = key else { break };
            if !self.remove(&key, None)? {
                // An index row without its entry (cannot happen through this module;
                // tolerated so one bad row never wedges the sweep).
                self.index.remove((exp, &key)).map_err(|e| e.to_string())?;
            } else if !expired {
                evicted += 1;
            }
            swept += 1;
        }
        Ok(evicted)
    }
}
