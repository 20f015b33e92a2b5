//! Token-prefix statistics over many prompts: the numbers `analyze` reports and the
//! gate compares (definitions in `docs/analysis.md`).
//!
//! Everything is read off one lexicographic sort of the token sequences: sequences that
//! share a prefix are contiguous in that order, so
//! - the prefix shared by a set is the minimum of its neighbours' common prefixes (LCP),
//! - the longest prefix that more than half of a set share is the best window of
//!   `⌊n/2⌋+1` neighbours by minimum LCP,
//! - the number of distinct first-G-token prefixes is one plus the number of neighbour
//!   pairs that differ within their first G tokens, which gives the family hit rate at
//!   every granularity at once.

use std::ops::Range;

/// Tokens kept per request for prefix statistics: beyond this no granularity or stable
/// prefix is measured (8192 tokens is far past any useful family and 8x the provider's
/// 1024-token minimum). Lengths are still counted in full.
pub const MAX_PREFIX_TOKENS: usize = 8192;

/// Share of a set that must start with a prefix for it to be the set's stable prefix:
/// strictly more than half ("most of the requests").
pub const STABLE_SUPPORT: f64 = 0.5;

/// How much family hit rate the recommended granularity may give up against the best
/// granularity: one percentage point, so a handful of odd requests do not pin it.
pub const REUSE_TOLERANCE: f64 = 0.01;

/// Length of the common prefix of two sequences.
pub fn lcp(a: &[u32], b: &[u32]) -> usize {
    // Compare 32 tokens at a time first (slice equality is a `bcmp`): template prefixes
    // run into the thousands of tokens.
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 32 <= n && a[i..i + 32] == b[i..i + 32] {
        i += 32;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Lexicographic order of token sequences, as `a.cmp(b)`, found through [`lcp`]: the
/// element-by-element comparison of `Ord` crawls through shared templates.
pub fn compare(a: &[u32], b: &[u32]) -> std::cmp::Ordering {
    let l = lcp(a, b);
    match (a.get(l), b.get(l)) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => a.len().cmp(&b.len()),
    }
}

/// Sequences in lexicographic order with their neighbours' common prefixes.
#[derive(Debug)]
pub struct Sorted<'a> {
    seqs: &'a [&'a [u32]],
    /// `order[p]` is the index (into `seqs`) at sorted position `p`.
    pub order: Vec<usize>,
    /// `lcp[p]` = common prefix of positions `p` and `p + 1`.
    pub lcp: Vec<usize>,
    /// Whether positions `p` and `p + 1` are different sequences.
    pub differ: Vec<bool>,
}

/// The longest prefix shared by more than [`STABLE_SUPPORT`] of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stable {
    /// Its length in tokens.
    pub len: usize,
    /// How many sequences of the set start with it.
    pub count: usize,
    /// The index (into the sequences) of one that does, to read the tokens from.
    pub example: usize,
}

impl<'a> Sorted<'a> {
    pub fn new(seqs: &'a [&'a [u32]]) -> Sorted<'a> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_unstable_by(|&a, &b| compare(seqs[a], seqs[b]).then(a.cmp(&b)));
        let mut lcps = Vec::with_capacity(order.len().saturating_sub(1));
        let mut differ = Vec::with_capacity(lcps.capacity());
        for w in order.windows(2) {
            let (a, b) = (seqs[w[0]], seqs[w[1]]);
            let l = lcp(a, b);
            lcps.push(l);
            differ.push(!(l == a.len() && l == b.len()));
        }
        Sorted {
            seqs,
            order,
            lcp: lcps,
            differ,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The sequence at sorted position `p`.
    pub fn at(&self, p: usize) -> &'a [u32] {
        self.seqs[self.order[p]]
    }

    /// Common prefix of every sequence in the positions `range`.
    pub fn shared(&self, range: Range<usize>) -> usize {
        match range.len() {
            0 => 0,
            1 => self.at(range.start).len(),
            _ => self.lcp[range.start..range.end - 1]
                .iter()
                .copied()
                .min()
                .unwrap_or(0),
        }
    }

    /// The stable prefix of the positions `range` (see [`Stable`]).
    pub fn stable(&self, range: Range<usize>) -> Stable {
        let n = range.len();
        if n == 0 {
            return Stable {
                len: 0,
                count: 0,
                example: 0,
            };
        }
        let need = ((n as f64 * STABLE_SUPPORT).floor() as usize + 1).min(n);
        let (mut best_len, mut best_at) = (0usize, range.start);
        if need == 1 {
            for p in range.clone() {
                if self.at(p).len() > best_len {
                    (best_len, best_at) = (self.at(p).len(), p);
                }
            }
        } else {
            // Minimum over each window of `need - 1` consecutive neighbour LCPs, with a
            // monotone deque.
            let w = need - 1;
            let lo = range.start;
            let pairs = &self.lcp[lo..range.end - 1];
            let mut dq: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
            for i in 0..pairs.len() {
                while dq.back().is_some_and(|&j| pairs[j] >= pairs[i]) {
                    dq.pop_back();
                }
                dq.push_back(i);
                if dq.front().is_some_and(|&j| j + w <= i) {
                    dq.pop_front();
                }
                // The first full window starts at `lo`, the default `best_at`.
                if i + 1 >= w
                    && let Some(&j) = dq.front()
                    && pairs[j] > best_len
                {
                    best_len = pairs[j];
                    best_at = lo + i + 1 - w;
                }
            }
        }
        // Everyone around the window that also starts with it.
        let (mut a, mut b) = (best_at, best_at);
        while a > range.start && self.lcp[a - 1] >= best_len {
            a -= 1;
        }
        while b + 1 < range.end && self.lcp[b] >= best_len {
            b += 1;
        }
        Stable {
            len: best_len,
            count: b - a + 1,
            example: self.order[best_at],
        }
    }

    /// The largest granularity `G` whose family hit rate over `range` stays within
    /// `tolerance` of the best (that at `G = 1`), capped at `cap`. The family hit rate at
    /// `G` is the share of the set whose first `G` tokens some other member shares:
    /// `(n − distinct first-G prefixes) / n`.
    pub fn recommended(&self, range: Range<usize>, tolerance: f64, cap: usize) -> usize {
        let n = range.len();
        if n == 0 {
            return 0;
        }
        let mut drops: Vec<usize> = (range.start..range.end.saturating_sub(1))
            .filter(|&p| self.differ[p] && self.lcp[p] >= 1)
            .map(|p| self.lcp[p])
            .collect();
        let allowed = (tolerance * n as f64 + 1e-9).floor() as usize;
        let longest = range.clone().map(|p| self.at(p).len()).max().unwrap_or(0);
        if drops.len() <= allowed {
            return longest.min(cap);
        }
        drops.select_nth_unstable(allowed);
        drops[allowed].min(cap)
    }

    /// Family hit rate over `range` at granularity `g` (see [`Sorted::recommended`]).
    pub fn reuse(&self, range: Range<usize>, g: usize) -> f64 {
        let n = range.len();
        if n == 0 {
            return 0.0;
        }
        let splits = (range.start..range.end - 1)
            .filter(|&p| self.differ[p] && self.lcp[p] < g)
            .count();
        (n - 1 - splits) as f64 / n as f64
    }

    /// For each sorted position, the longest prefix it shares with any other sequence
    /// of the set (the part a cache could have seen before).
    pub fn shared_with_any(&self) -> Vec<usize> {
        (0..self.len())
            .map(|p| {
                let left = if p > 0 { self.lcp[p - 1] } else { 0 };
                let right = self.lcp.get(p).copied().unwrap_or(0);
                left.max(right)
            })
            .collect()
    }
}

/// Summary of a list of lengths: nearest-rank percentiles.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LengthStats {
    pub avg: f64,
    pub p50: u64,
    pub p95: u64,
    pub min: u64,
    pub max: u64,
}

impl LengthStats {
    pub fn of(values: &mut [u64]) -> LengthStats {
        if values.is_empty() {
            return LengthStats {
                avg: 0.0,
                p50: 0,
                p95: 0,
                min: 0,
                max: 0,
            };
        }
        values.sort_unstable();
        let n = values.len();
        let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        LengthStats {
            avg: values.iter().sum::<u64>() as f64 / n as f64,
            p50: rank(0.50),
            p95: rank(0.95),
            min: values[0],
            max: values[n - 1],
        }
    }

    /// The article's `optimal_granularity`: 60% of the average length, truncated.
    pub fn article_granularity(&self) -> u64 {
        (self.avg * 0.6) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: &[Vec<u32>]) -> Vec<&[u32]> {
        v.iter().map(Vec::as_slice).collect()
    }

    /// Brute force: longest prefix of some member shared by > half of the set.
    fn stable_naive(v: &[Vec<u32>]) -> (usize, usize) {
        let n = v.len();
        let mut best = (0, 0);
        for s in v {
            for l in 0..=s.len() {
                let count = v.iter().filter(|t| t.starts_with(&s[..l])).count();
                if count * 2 > n && l >= best.0 {
                    best = (l, count);
                }
            }
        }
        best
    }

    fn reuse_naive(v: &[Vec<u32>], g: usize) -> f64 {
        let mut heads: Vec<&[u32]> = v.iter().map(|s| &s[..g.min(s.len())]).collect();
        heads.sort();
        heads.dedup();
        (v.len() - heads.len()) as f64 / v.len() as f64
    }

    /// A deterministic pseudo-random set: a template, a few variants, user tails.
    fn sample(seed: u64, n: usize) -> Vec<Vec<u32>> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        (0..n)
            .map(|_| {
                let mut s: Vec<u32> = (0..(next() % 12)).collect();
                let variant = next() % 3;
                s.push(100 + variant);
                s.extend((0..(next() % 4)).map(|i| 200 + i));
                let tail = next() % 3;
                s.extend((0..tail).map(|_| next() % 5));
                s
            })
            .collect()
    }

    #[test]
    fn stable_prefix_matches_brute_force() {
        for seed in 0..200 {
            let v = sample(seed, 1 + (seed as usize % 9));
            let s = seqs(&v);
            let sorted = Sorted::new(&s);
            let st = sorted.stable(0..v.len());
            assert_eq!((st.len, st.count), stable_naive(&v), "seed {seed}: {v:?}");
            assert!(v[st.example].len() >= st.len);
        }
    }

    #[test]
    fn reuse_and_recommendation_match_brute_force() {
        for seed in 0..200 {
            let v = sample(seed, 2 + (seed as usize % 30));
            let s = seqs(&v);
            let sorted = Sorted::new(&s);
            let n = v.len();
            let longest = v.iter().map(Vec::len).max().unwrap();
            for g in 1..=longest + 1 {
                assert!(
                    (sorted.reuse(0..n, g) - reuse_naive(&v, g)).abs() < 1e-12,
                    "seed {seed} g {g}"
                );
            }
            for tol in [0.0, 0.05, 0.2] {
                let best = reuse_naive(&v, 1);
                let expected = (1..=longest)
                    .filter(|&g| reuse_naive(&v, g) >= best - tol - 1e-9)
                    .max()
                    .unwrap();
                assert_eq!(
                    sorted.recommended(0..n, tol, usize::MAX),
                    expected,
                    "seed {seed} tol {tol}"
                );
            }
        }
    }

    #[test]
    fn compare_is_lexicographic_order() {
        let v = sample(9, 300);
        for a in &v {
            for b in &v {
                assert_eq!(compare(a, b), a.cmp(b));
            }
        }
        let long: Vec<u32> = (0..100).collect();
        let mut other = long.clone();
        other[70] = 0;
        assert_eq!(compare(&long, &other), long.cmp(&other));
        assert_eq!(compare(&long[..40], &long), std::cmp::Ordering::Less);
    }

    #[test]
    fn shared_and_neighbours() {
        let v = vec![vec![1, 2, 3, 4], vec![1, 2, 3, 9], vec![1, 2, 7], vec![5]];
        let s = seqs(&v);
        let sorted = Sorted::new(&s);
        assert_eq!(sorted.shared(0..3), 2);
        assert_eq!(sorted.shared(0..4), 0);
        assert_eq!(sorted.shared(3..4), 1);
        assert_eq!(sorted.shared_with_any(), vec![3, 3, 2, 0]);
        assert_eq!(lcp(&[1; 20], &[1; 17]), 17);
        let mut b = vec![1; 20];
        b[13] = 2;
        assert_eq!(lcp(&[1; 20], &b), 13);
    }

    #[test]
    fn length_stats_nearest_rank() {
        let mut v: Vec<u64> = (1..=20).collect();
        let s = LengthStats::of(&mut v);
        assert_eq!((s.p50, s.p95, s.min, s.max), (10, 19, 1, 20));
        assert!((s.avg - 10.5).abs() < 1e-12);
        assert_eq!(s.article_granularity(), 6);
    }
}
