//! `whitespace-drift`: a bounded, thread-safe detector of requests in one strategy whose
//! prefix windows are equal after whitespace normalization but differ before it (two
//! services formatting the same template differently, an editor adding CRLF, a template
//! that gained a blank line).
//!
//! # How it compares windows of N tokens
//!
//! Two windows of N tokens that differ only in whitespace do not cover the same text: the
//! one with more whitespace tokens ends a few words earlier. So the detector compares the
//! first W *words* of each window, with W quantized to buckets (4, 6, 8, 12, 16, 24, ...,
//! at most [`MAX_WORDS`]) and each window recorded under its two largest buckets, so two
//! windows a few words apart share a bucket. The last word of a window is never used (the
//! window may cut it). Per (strategy, bucket, normalized words) it keeps the hash of the
//! raw text of those words and, for locating the difference, one byte of hash per gap
//! between words.
//!
//! # What it remembers and forgets
//!
//! A fixed table of `slots` entries (2-way set-associative, [`DEFAULT_DRIFT_SLOTS`]
//! ≈ 1.3 MB), each holding up to two raw variants with request counts. The variant
//! seen more often is the reference; a request of the other variant is a finding (so
//! after a template fix, the fixed form takes over as soon as it is the majority). It
//! forgets: prefixes evicted by other prefixes landing in the same set (the one seen
//! less often goes, and the survivor's count is halved so a stale favourite ages out),
//! third and later variants beyond the two kept (the less frequent one is replaced), and
//! differences past the first [`MAX_WORDS`] words. Only hashes are kept, never text.

use std::hash::Hasher;
use std::sync::{Mutex, MutexGuard};

use super::{Finding, Rule, Severity, TokenOffsets, excerpt};
use crate::prefix::Family;

/// Default number of table entries.
pub const DEFAULT_DRIFT_SLOTS: usize = 4096;
/// Words of a window compared, at most.
pub const MAX_WORDS: usize = 128;
/// Fewer words than this are not compared (too little to say two texts are "the same").
const MIN_WORDS: usize = 4;
const BUCKETS: [usize; 11] = [4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128];
const SHARDS: usize = 16;

#[derive(Clone)]
struct Variant {
    raw: u64,
    count: u32,
    /// One byte of hash per gap before each word (gap 0: leading whitespace).
    gaps: Box<[u8]>,
}

#[derive(Clone, Default)]
struct Slot {
    key: u64,
    variants: Vec<Variant>,
}

impl Slot {
    fn total(&self) -> u64 {
        self.variants.iter().map(|v| u64::from(v.count)).sum()
    }

    fn cost(&self) -> usize {
        std::mem::size_of::<Slot>()
            + self
                .variants
                .iter()
                .map(|v| std::mem::size_of::<Variant>() + v.gaps.len())
                .sum::<usize>()
    }
}

/// Whose requests a window is compared with: one strategy's, within one tenant. A
/// finding tells a caller that *another* request had the same words, so the proxy
/// scopes it to the caller's own namespace: across tenants it would be an oracle on
/// other tenants' prompts. A bare `&str` is a strategy with no tenant (offline tools,
/// which read one log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftScope<'a> {
    pub tenant: &'a [u8],
    pub strategy: &'a str,
}

impl<'a> From<&'a str> for DriftScope<'a> {
    fn from(strategy: &'a str) -> DriftScope<'a> {
        DriftScope {
            tenant: b"",
            strategy,
        }
    }
}

/// The whitespace-drift detector. Cheap to share (`&self` methods, one mutex per shard).
///
/// ```
/// use prefixcache_core::lint::{DriftScope, WhitespaceDrift};
///
/// let drift = WhitespaceDrift::new(1024);
/// let a = "You are a helpful assistant.\nSummarize the text below in three sentences.\n";
/// let b = "You are a helpful assistant.\n\n\nSummarize the text below in three sentences.\n";
/// assert!(drift.observe_text("docs", a).is_none());
/// assert!(drift.observe_text("docs", a).is_none());
/// let f = drift.observe_text("docs", b).unwrap(); // the minority variant
/// assert_eq!(f.kind, "whitespace");
/// assert_eq!(&b[f.span.clone()], "\n\n\n");
/// assert!(drift.observe_text("other-strategy", b).is_none());
/// // Another tenant's requests are never compared with these.
/// let other = DriftScope { tenant: b"tenant-b", strategy: "docs" };
/// assert!(drift.observe_text(other, b).is_none());
/// ```
pub struct WhitespaceDrift {
    shards: Box<[Mutex<Vec<Slot>>]>,
    /// Sets per shard; each set is two slots.
    sets: usize,
}

impl std::fmt::Debug for WhitespaceDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhitespaceDrift")
            .field("slots", &(self.sets * 2 * SHARDS))
            .finish()
    }
}

impl Default for WhitespaceDrift {
    fn default() -> Self {
        WhitespaceDrift::new(DEFAULT_DRIFT_SLOTS)
    }
}

struct Words {
    /// Byte ranges of the words (at most MAX_WORDS + 1).
    spans: Vec<(usize, usize)>,
}

fn words(text: &str) -> Words {
    let mut spans = Vec::with_capacity(64);
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                spans.push((s, i));
                if spans.len() > MAX_WORDS {
                    return Words { spans };
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    Words { spans }
}

fn fx(bytes: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

/// A stronger mix for table keys and raw hashes (Fx alone clusters on similar input).
fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl WhitespaceDrift {
    /// A detector with about `slots` entries (rounded up to the shard layout).
    pub fn new(slots: usize) -> WhitespaceDrift {
        let sets = slots.div_ceil(2 * SHARDS).max(1);
        WhitespaceDrift {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![Slot::default(); sets * 2]))
                .collect(),
            sets,
        }
    }

    /// Observes a request's prefix window (the family's text) in `strategy`; a finding
    /// when another request of the strategy had the same words with other whitespace and
    /// this request's form is the less common one. Token spans are into `family.tokens`.
    /// (A strategy with `normalize_whitespace = true` has normalized windows: nothing to
    /// find, and the proxy need not call this.)
    pub fn observe<'a>(
        &self,
        scope: impl Into<DriftScope<'a>>,
        family: &Family,
    ) -> Option<Finding> {
        // The last token may end inside a character: stop before that character.
        let mut end = family.prefix_bytes.min(family.text.len());
        while !family.text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &family.text[..end];
        let mut f = self.observe_text(scope, text)?;
        f.token_span =
            TokenOffsets::new(family.encoding, &family.tokens).token_span(f.span.clone());
        f.message = format!(
            "{} (tokens {}..{})",
            f.message, f.token_span.start, f.token_span.end
        );
        Some(f)
    }

    /// [`WhitespaceDrift::observe`] for a plain text (token span `0..0`).
    pub fn observe_text<'a>(
        &self,
        scope: impl Into<DriftScope<'a>>,
        text: &str,
    ) -> Option<Finding> {
        let scope = scope.into();
        let w = words(text);
        // Drop the last word: the window may have cut it.
        let n = w.spans.len().saturating_sub(1).min(MAX_WORDS);
        if n < MIN_WORDS {
            return None;
        }
        let top = BUCKETS.iter().rposition(|&b| b <= n)?;
        let mut found = None;
        for &bucket in BUCKETS[top.saturating_sub(1)..=top].iter().rev() {
            if let Some(f) = self.record(scope, text, &w, bucket)
                && found.is_none()
            {
                found = Some(f);
            }
        }
        found
    }

    fn record(
        &self,
        scope: DriftScope<'_>,
        text: &str,
        w: &Words,
        bucket: usize,
    ) -> Option<Finding> {
        let strategy = scope.strategy;
        let spans = &w.spans[..bucket];
        let bytes = text.as_bytes();
        let mut kh = rustc_hash::FxHasher::default();
        kh.write_usize(scope.tenant.len());
        kh.write(scope.tenant);
        kh.write(strategy.as_bytes());
        kh.write_u8(0xff);
        kh.write_usize(bucket);
        for &(s, e) in spans {
            kh.write(&bytes[s..e]);
            kh.write_u8(0xff);
        }
        let key = mix(kh.finish()) | 1; // 0 marks an empty slot
        let raw_end = spans[bucket - 1].1;
        let raw = mix(fx(&bytes[..raw_end]));
        let gaps: Box<[u8]> = {
            let mut prev = 0usize;
            spans
                .iter()
                .map(|&(s, e)| {
                    let g = (fx(&bytes[prev..s]) & 0xff) as u8;
                    prev = e;
                    g
                })
                .collect()
        };

        let shard = &self.shards[(key as usize >> 8) % SHARDS];
        let mut slots = lock(shard);
        let set = ((key as usize) % self.sets) * 2;
        let idx = if slots[set].key == key {
            set
        } else if slots[set + 1].key == key {
            set + 1
        } else {
            // Evict the less-used slot of the set; age the survivor.
            let (victim, keep) = if slots[set].total() <= slots[set + 1].total() {
                (set, set + 1)
            } else {
                (set + 1, set)
            };
            for v in &mut slots[keep].variants {
                v.count = v.count.div_ceil(2);
            }
            slots[victim] = Slot {
                key,
                variants: vec![Variant {
                    raw,
                    count: 1,
                    gaps,
                }],
            };
            return None;
        };
        let slot = &mut slots[idx];
        let me = match slot.variants.iter().position(|v| v.raw == raw) {
            Some(i) => {
                slot.variants[i].count = slot.variants[i].count.saturating_add(1);
                i
            }
            None if slot.variants.len() < 2 => {
                slot.variants.push(Variant {
                    raw,
                    count: 1,
                    gaps,
                });
                slot.variants.len() - 1
            }
            None => {
                // Keep the more frequent variant; replace the other.
                let other = usize::from(slot.variants[0].count >= slot.variants[1].count);
                slot.variants[other] = Variant {
                    raw,
                    count: 1,
                    gaps,
                };
                other
            }
        };
        if slot.variants.len() < 2 {
            return None;
        }
        let (mine, theirs) = (&slot.variants[me], &slot.variants[1 - me]);
        // The reference is the more frequent variant (ties: the one seen first).
        let i_am_reference = mine.count > theirs.count || (mine.count == theirs.count && me == 0);
        if i_am_reference {
            return None;
        }
        let k = mine
            .gaps
            .iter()
            .zip(theirs.gaps.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let gap_start = if k == 0 { 0 } else { spans[k - 1].1 };
        let span = gap_start..spans[k].0;
        let (mc, tc) = (mine.count, theirs.count);
        drop(slots);
        let what = if span.is_empty() {
            "missing whitespace"
        } else {
            "whitespace"
        };
        Some(Finding {
            rule: Rule::WhitespaceDrift,
            severity: Severity::Warning,
            kind: "whitespace",
            message: format!(
                "the first {bucket} words of this prefix equal those of other requests of \
                 strategy {strategy:?} except for {what} at bytes {}..{} (this form: {mc} \
                 requests, the other: {tc}): different tokens, so neither prefix cache \
                 matches across the two",
                span.start, span.end
            ),
            excerpt: excerpt(text, span.clone()),
            span,
            token_span: 0..0,
            fix: "render this prompt with the same whitespace in every service (or set \
                  normalize_whitespace = true for the strategy)",
        })
    }

    /// Approximate bytes held (table plus variants), for tests and stats.
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).iter().map(Slot::cost).sum::<usize>())
            .sum()
    }
}

/// A poisoned shard only means a thread panicked mid-update: every slot is still a valid
/// slot (the worst case is one miscounted request), so keep using it.
fn lock(m: &Mutex<Vec<Slot>>) -> MutexGuard<'_, Vec<Slot>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::FamilyParams;
    use crate::tokenizer::Encoding;

    const SYSTEM: &str = "You are a document analyzer. Analyze the following contract and \
        extract: 1. Key entities 2. Main topics 3. Sentiment score (-1 to 1). Answer in JSON.";

    #[test]
    fn tenants_are_never_compared() {
        let d = WhitespaceDrift::new(1024);
        let a = DriftScope {
            tenant: b"tenant-a",
            strategy: "s",
        };
        let b = DriftScope {
            tenant: b"tenant-b",
            strategy: "s",
        };
        for _ in 0..3 {
            assert!(d.observe_text(a, SYSTEM).is_none());
        }
        let variant = SYSTEM.replace(". ", ".  ");
        assert!(
            d.observe_text(b, &variant).is_none(),
            "tenant b learns nothing of tenant a's prompt"
        );
        assert!(
            d.observe_text(a, &variant).is_some(),
            "tenant a's own drift is found"
        );
    }

    #[test]
    fn equal_text_is_not_drift() {
        let d = WhitespaceDrift::new(64);
        for _ in 0..5 {
            assert!(d.observe_text("s", SYSTEM).is_none());
        }
    }

    #[test]
    fn different_words_are_not_drift() {
        let d = WhitespaceDrift::new(64);
        assert!(d.observe_text("s", SYSTEM).is_none());
        let other = SYSTEM.replace("contract", "invoice");
        assert!(d.observe_text("s", &other).is_none());
        assert!(d.observe_text("s", &other.replace("  ", " ")).is_none());
    }

    #[test]
    fn the_minority_whitespace_form_is_reported_where_it_differs() {
        let d = WhitespaceDrift::new(64);
        let tabbed = SYSTEM.replace("Analyze the", "Analyze\tthe");
        for _ in 0..3 {
            assert!(d.observe_text("s", SYSTEM).is_none());
        }
        let f = d.observe_text("s", &tabbed).expect("drift");
        assert_eq!(f.rule, Rule::WhitespaceDrift);
        assert_eq!(&tabbed[f.span.clone()], "\t");
        assert_eq!(f.excerpt, "\\t");
        assert!(f.message.contains("strategy \"s\""), "{}", f.message);
        // The majority form stays quiet.
        assert!(d.observe_text("s", SYSTEM).is_none());
        // Once the tab form is the majority, the space form is the odd one.
        for _ in 0..6 {
            let _ = d.observe_text("s", &tabbed);
        }
        assert!(d.observe_text("s", &tabbed).is_none());
        let f = d.observe_text("s", SYSTEM).expect("drift the other way");
        assert_eq!(&SYSTEM[f.span.clone()], " ");
    }

    #[test]
    fn windows_of_n_tokens_with_extra_newlines_still_compare() {
        // The article's pitfall: "Summarize:\n\n\n" vs "Summarize:\n". With a token
        // window, the longer form covers fewer words; the buckets still meet.
        let enc = Encoding::O200kBase;
        let mut params = FamilyParams::new(enc);
        params.granularity = 40;
        let body = "Summarize the following support ticket for the on-call engineer. Keep it \
                    short, name the customer, the product, the severity and the next step. \
                    Ticket text follows.";
        let a = format!("Summarize:\n{body}");
        let b = format!("Summarize:\n\n\n{body}");
        let fa = Family::of_text(&a, &params);
        let fb = Family::of_text(&b, &params);
        assert_ne!(fa.id, fb.id);
        let d = WhitespaceDrift::new(64);
        assert!(d.observe("svc", &fa).is_none());
        assert!(d.observe("svc", &fa).is_none());
        let f = d.observe("svc", &fb).expect("drift");
        assert_eq!(&fb.text[f.span.clone()], "\n\n\n");
        let t = &fb.tokens[f.token_span.clone()];
        assert!(
            String::from_utf8_lossy(&enc.decode_bytes(t)).contains('\n'),
            "{:?}",
            f.token_span
        );
    }

    #[test]
    fn a_window_ending_inside_a_character_does_not_panic() {
        // Regression: the family's last token ends inside "é"; slicing there panicked.
        let enc = Encoding::O200kBase;
        let text = "a 🦀🧬🪐 龘靐 ".repeat(40);
        let mut checked = 0;
        for granularity in 5..80 {
            let mut params = FamilyParams::new(enc);
            params.granularity = granularity;
            let fam = Family::of_text(&text, &params);
            if fam.text.is_char_boundary(fam.prefix_bytes) {
                continue;
            }
            checked += 1;
            let d = WhitespaceDrift::new(16);
            assert!(d.observe("s", &fam).is_none());
            let _ = crate::lint::dynamic_prefix(&fam);
        }
        assert!(checked > 0, "no window ended inside a character");
    }

    #[test]
    fn leading_whitespace_is_drift_too() {
        let d = WhitespaceDrift::new(64);
        assert!(d.observe_text("s", SYSTEM).is_none());
        let lead = format!("\n{SYSTEM}");
        let f = d.observe_text("s", &lead).expect("drift");
        assert_eq!(f.span, 0..1);
    }

    #[test]
    fn short_windows_are_ignored() {
        let d = WhitespaceDrift::new(64);
        assert!(d.observe_text("s", "a b c").is_none());
        assert!(d.observe_text("s", "a  b  c").is_none());
    }

    #[test]
    fn memory_is_bounded_whatever_the_traffic() {
        let d = WhitespaceDrift::new(256);
        for i in 0..20_000 {
            let t = format!("{SYSTEM} request number {i} with some more words after it");
            let _ = d.observe_text("s", &t);
        }
        let bytes = d.memory_bytes();
        // 256 slots x (slot + one variant + at most MAX_WORDS gap bytes)
        let bound = 256
            * (std::mem::size_of::<Slot>() + std::mem::size_of::<Variant>() * 2 + 2 * MAX_WORDS);
        assert!(bytes <= bound, "{bytes} > {bound}");
        // A hot prefix survives the churn of unique ones and drift is still found.
        let d = WhitespaceDrift::new(256);
        for i in 0..5_000 {
            let _ = d.observe_text("s", SYSTEM);
            let _ = d.observe_text("s", &format!("unique prefix {i} {i} {i} {i} {i} {i}"));
        }
        assert!(d.observe_text("s", &SYSTEM.replace(". ", ".  ")).is_some());
    }

    #[test]
    fn shared_across_threads() {
        let d = std::sync::Arc::new(WhitespaceDrift::new(1024));
        let found = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let d = &d;
                let found = &found;
                s.spawn(move || {
                    for i in 0..500 {
                        let text = if t == 3 && i % 10 == 0 {
                            SYSTEM.replace(" and", "  and")
                        } else {
                            SYSTEM.to_string()
                        };
                        if d.observe_text("s", &text).is_some() {
                            found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(found.load(std::sync::atomic::Ordering::Relaxed), 50);
    }
}
