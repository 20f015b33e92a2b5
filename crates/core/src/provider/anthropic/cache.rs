//! The simulated Anthropic prompt cache: entries are prefixes written at breakpoints,
//! found again by later requests through the 20-block lookback, living 5 minutes or an
//! hour after their last use.
//!
//! One request, in order:
//! - **Read.** From each breakpoint, the cache checks the block it ends and up to 19
//!   blocks before it, latest first, for a live entry; the longest prefix found over all
//!   breakpoints is read (`cache_read_input_tokens`). Every entry found is refreshed.
//! - **Write.** Every breakpoint past what was read whose prefix reaches the model's
//!   minimum is written with its lifetime. The tokens from the read prefix to the
//!   furthest write are `cache_creation_input_tokens`; those up to the furthest 1-hour
//!   write are `ephemeral_1h_input_tokens` (1-hour markers come first, so they are a
//!   leading part), the rest `ephemeral_5m_input_tokens`.
//! - **Uncached** is everything else: `input_tokens`.
//!
//! No randomness: Anthropic documents no routing or overflow, so the outcome depends
//! only on the sequence of (request, time) and the seed the prompts were built with.
//! Entries are per model (the prompt's identities include it) and per scope: Anthropic
//! isolates caches between organizations, and the caller says whose request it is (the
//! mock passes a hash of the API key). The store is bounded (least recently used entries
//! go first).

use std::collections::{BTreeMap, HashMap};

use super::prompt::{CacheTtl, MessagesPrompt};
use crate::provider::cache::PromptCacheStats;
use crate::provider::rng::mix64;

/// Blocks a breakpoint looks back through, itself included.
pub const LOOKBACK_BLOCKS: usize = 20;

/// What one request read and wrote, in the API's usage terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// `input_tokens`: neither read nor written.
    pub input_tokens: u64,
    /// `cache_read_input_tokens`.
    pub read: u64,
    /// `cache_creation_input_tokens`.
    pub written: u64,
    /// `cache_creation.ephemeral_1h_input_tokens` (a part of `written`).
    pub written_1h: u64,
}

impl CacheUse {
    /// `cache_creation.ephemeral_5m_input_tokens`.
    pub fn written_5m(&self) -> u64 {
        self.written - self.written_1h
    }

    /// Nothing cached: the whole prompt is `input_tokens`.
    pub fn uncached(tokens: u64) -> CacheUse {
        CacheUse {
            input_tokens: tokens,
            ..CacheUse::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    stamp: u64,
    expires_ms: u64,
    ttl: CacheTtl,
}

/// The cache: prefix identity → entry, bounded, least recently used out first.
#[derive(Debug)]
pub struct AnthropicCacheSim {
    enabled: bool,
    capacity: usize,
    entries: HashMap<u64, Slot>,
    lru: BTreeMap<u64, u64>,
    next_stamp: u64,
    stats: PromptCacheStats,
}

impl AnthropicCacheSim {
    /// A cache holding at most `capacity` entries; with `enabled` false nothing is ever
    /// read or written.
    pub fn new(enabled: bool, capacity: usize) -> AnthropicCacheSim {
        AnthropicCacheSim {
            enabled,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_stamp: 0,
            stats: PromptCacheStats::default(),
        }
    }

    pub fn stats(&self) -> PromptCacheStats {
        self.stats
    }

    /// Forgets every entry and total.
    pub fn reset(&mut self) {
        *self = AnthropicCacheSim::new(self.enabled, self.capacity);
    }

    /// Entries held now (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn live(&mut self, id: u64, now: u64) -> Option<Slot> {
        match self.entries.get(&id) {
            Some(s) if s.expires_ms > now => Some(*s),
            Some(s) => {
                let stamp = s.stamp;
                self.entries.remove(&id);
                self.lru.remove(&stamp);
                None
            }
            None => None,
        }
    }

    /// Uses `id` now: it lives `ttl` from now, never less than it had.
    fn put(&mut self, id: u64, ttl: CacheTtl, now: u64) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let mut slot = Slot {
            stamp,
            expires_ms: now.saturating_add(ttl.millis()),
            ttl,
        };
        if let Some(old) = self.entries.get(&id) {
            slot.ttl = slot.ttl.max(old.ttl);
            slot.expires_ms = now.saturating_add(slot.ttl.millis()).max(old.expires_ms);
            self.lru.remove(&old.stamp);
        }
        self.entries.insert(id, slot);
        self.lru.insert(stamp, id);
        while self.entries.len() > self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
    }

    /// Serves one request of `scope` at `now_ms` (any millisecond clock that does not go
    /// backwards across calls): reads, writes and refreshes as the module docs say.
    pub fn serve(&mut self, p: &MessagesPrompt, scope: u64, now_ms: u64) -> CacheUse {
        self.stats.lookups += 1;
        self.stats.prompt_tokens += p.tokens;
        if !self.enabled || p.breakpoints.is_empty() {
            return CacheUse::uncached(p.tokens);
        }
        let now = now_ms;
        let id = |block: super::prompt::Block| mix64(block.id ^ scope.rotate_left(17));
        // Read: per breakpoint, the latest live entry within the lookback window.
        let mut read = 0u64;
        for bp in &p.breakpoints {
            let first = (bp.block + 1).saturating_sub(LOOKBACK_BLOCKS);
            for k in (first..=bp.block).rev() {
                let block = p.blocks[k];
                if block.tokens < p.min_tokens {
                    break;
                }
                if let Some(slot) = self.live(id(block), now) {
                    self.put(id(block), slot.ttl.max(bp.ttl), now);
                    read = read.max(block.tokens);
                    break;
                }
            }
        }
        // Write: every breakpoint past the read prefix that is long enough.
        let (mut furthest, mut furthest_1h) = (read, read);
        for bp in &p.breakpoints {
            let block = p.blocks[bp.block];
            if block.tokens <= read || block.tokens < p.min_tokens {
                continue;
            }
            self.put(id(block), bp.ttl, now);
            furthest = furthest.max(block.tokens);
            if bp.ttl == CacheTtl::Hour1 {
                furthest_1h = furthest_1h.max(block.tokens);
            }
        }
        let written = furthest - read;
        let written_1h = furthest_1h - read;
        if read > 0 {
            self.stats.hits += 1;
            self.stats.cached_tokens += read;
        }
        self.stats.cache_write_tokens += written;
        CacheUse {
            input_tokens: p.tokens - read - written,
            read,
            written,
            written_1h,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prompt::{Block, Breakpoint};
    use super::*;

    const MIN: u64 = 60_000;

    /// A prompt of `n` blocks of 100 tokens each (block `i` ends at `(i + 1) * 100`),
    /// identified by `(stream, i)`: two prompts share a prefix while their streams and
    /// indexes agree, plus 10 tokens after the last block.
    fn prompt(
        n: usize,
        shared_until: usize,
        stream: u64,
        marks: &[(usize, CacheTtl)],
    ) -> MessagesPrompt {
        let blocks = (0..n)
            .map(|i| Block {
                tokens: (i as u64 + 1) * 100,
                id: if i < shared_until {
                    i as u64
                } else {
                    (stream << 32) | i as u64
                },
            })
            .collect();
        MessagesPrompt {
            tokens: n as u64 * 100 + 10,
            blocks,
            breakpoints: marks
                .iter()
                .map(|&(block, ttl)| Breakpoint { block, ttl })
                .collect(),
            min_tokens: 1024,
        }
    }

    use CacheTtl::{Hour1, Min5};

    #[test]
    fn nothing_is_cached_without_a_breakpoint() {
        let mut c = AnthropicCacheSim::new(true, 100);
        let p = prompt(30, 30, 0, &[]);
        assert_eq!(c.serve(&p, 0, 0), CacheUse::uncached(3010));
        assert_eq!(c.serve(&p, 0, 1), CacheUse::uncached(3010));
        assert!(c.is_empty());
    }

    #[test]
    fn a_breakpoint_writes_then_reads_its_prefix() {
        let mut c = AnthropicCacheSim::new(true, 100);
        // Breakpoint on block 19: a 2000-token prefix, 1010 of the 3010 tokens after it.
        let p = prompt(30, 30, 0, &[(19, Min5)]);
        let first = c.serve(&p, 0, 0);
        assert_eq!(
            first,
            CacheUse {
                input_tokens: 1010,
                read: 0,
                written: 2000,
                written_1h: 0
            }
        );
        let second = c.serve(&p, 0, 1000);
        assert_eq!(
            second,
            CacheUse {
                input_tokens: 1010,
                read: 2000,
                written: 0,
                written_1h: 0
            }
        );
        let st = c.stats();
        assert_eq!(
            (st.lookups, st.hits, st.cached_tokens, st.cache_write_tokens),
            (2, 1, 2000, 2000)
        );
    }

    #[test]
    fn prefixes_below_the_minimum_are_never_cached() {
        let mut c = AnthropicCacheSim::new(true, 100);
        // Block 9 ends at 1000 tokens < 1024.
        let p = prompt(12, 12, 0, &[(9, Min5)]);
        assert_eq!(c.serve(&p, 0, 0), CacheUse::uncached(1210));
        assert_eq!(c.serve(&p, 0, 1), CacheUse::uncached(1210));
        // Block 10 ends at 1100: cacheable.
        let p = prompt(12, 12, 0, &[(10, Min5)]);
        assert_eq!(c.serve(&p, 0, 2).written, 1100);
        assert_eq!(c.serve(&p, 0, 3).read, 1100);
    }

    #[test]
    fn a_moving_breakpoint_reads_the_last_one_within_twenty_blocks() {
        let mut c = AnthropicCacheSim::new(true, 100);
        // Turn 1: 15 blocks, breakpoint on the last (1500 tokens).
        c.serve(&prompt(15, 15, 0, &[(14, Min5)]), 0, 0);
        // Turn 2 grows to 34 blocks sharing the first 15; breakpoint on block 33: the
        // lookback covers blocks 14..=33 and finds block 14's entry.
        let u = c.serve(&prompt(34, 34, 0, &[(33, Min5)]), 0, 1);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 10,
                read: 1500,
                written: 3400 - 1500,
                written_1h: 0
            }
        );
        // Turn 3 grows to 54 blocks: the breakpoint on block 53 looks at 34..=53 and
        // misses block 33's entry: a full rewrite.
        let u = c.serve(&prompt(54, 54, 0, &[(53, Min5)]), 0, 2);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 10,
                read: 0,
                written: 5400,
                written_1h: 0
            }
        );
        // Turn 4 (74 blocks) with an intermediate breakpoint on block 52: its lookback
        // (33..=52) reaches block 33's entry, the one on block 73 (54..=73) finds none.
        // Read 3400; written from there to the furthest breakpoint, 7400.
        let u = c.serve(&prompt(74, 74, 0, &[(52, Min5), (73, Min5)]), 0, 3);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 10,
                read: 3400,
                written: 4000,
                written_1h: 0
            }
        );
    }

    #[test]
    fn entries_expire_after_their_lifetime_and_reads_refresh_them() {
        let mut c = AnthropicCacheSim::new(true, 100);
        let p = prompt(20, 20, 0, &[(15, Min5)]);
        c.serve(&p, 0, 0);
        // Read at 4:59 refreshes to 9:59.
        assert_eq!(c.serve(&p, 0, 299_999).read, 1600);
        assert_eq!(c.serve(&p, 0, 599_998).read, 1600);
        // 5 minutes after the last use, gone: written again.
        let u = c.serve(&p, 0, 599_998 + 300_000);
        assert_eq!((u.read, u.written), (0, 1600));
        // A 1-hour entry survives 59 minutes idle.
        let q = prompt(20, 0, 1, &[(15, Hour1)]);
        let w = c.serve(&q, 0, 20 * MIN);
        assert_eq!((w.written, w.written_1h), (1600, 1600));
        assert_eq!(c.serve(&q, 0, 79 * MIN).read, 1600);
        assert_eq!(c.serve(&q, 0, 79 * MIN + 3_600_000).read, 0);
    }

    #[test]
    fn mixed_lifetimes_split_the_written_tokens() {
        let mut c = AnthropicCacheSim::new(true, 100);
        // 1h on block 11 (1200 tokens), 5m on block 24 (2500 tokens).
        let p = prompt(30, 30, 0, &[(11, Hour1), (24, Min5)]);
        let u = c.serve(&p, 0, 0);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 510,
                read: 0,
                written: 2500,
                written_1h: 1200
            }
        );
        assert_eq!(u.written_5m(), 1300);
        // After 10 minutes the 5m entry is gone, the 1h one is read; the 5m part is
        // written again.
        let u = c.serve(&p, 0, 10 * MIN);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 510,
                read: 1200,
                written: 1300,
                written_1h: 0
            }
        );
    }

    #[test]
    fn a_changed_block_invalidates_everything_after_it() {
        let mut c = AnthropicCacheSim::new(true, 100);
        c.serve(&prompt(30, 30, 0, &[(11, Min5), (24, Min5)]), 0, 0);
        // Same first 18 blocks, then different: block 11's entry still matches.
        let u = c.serve(&prompt(30, 18, 9, &[(11, Min5), (24, Min5)]), 0, 1);
        assert_eq!(
            u,
            CacheUse {
                input_tokens: 510,
                read: 1200,
                written: 1300,
                written_1h: 0
            }
        );
    }

    #[test]
    fn scopes_do_not_share_entries() {
        let mut c = AnthropicCacheSim::new(true, 100);
        let p = prompt(20, 20, 0, &[(15, Min5)]);
        c.serve(&p, 1, 0);
        assert_eq!(c.serve(&p, 2, 1).read, 0);
        assert_eq!(c.serve(&p, 1, 2).read, 1600);
    }

    #[test]
    fn the_store_is_bounded_and_can_be_switched_off() {
        let mut c = AnthropicCacheSim::new(true, 2);
        for s in 0..5u64 {
            c.serve(&prompt(20, 0, s, &[(15, Min5)]), 0, s);
        }
        assert_eq!(c.len(), 2);
        // The oldest was evicted: stream 0 writes again.
        assert_eq!(c.serve(&prompt(20, 0, 0, &[(15, Min5)]), 0, 10).read, 0);
        let mut off = AnthropicCacheSim::new(false, 100);
        let p = prompt(20, 20, 0, &[(15, Min5)]);
        off.serve(&p, 0, 0);
        assert_eq!(off.serve(&p, 0, 1), CacheUse::uncached(2010));
    }
}
