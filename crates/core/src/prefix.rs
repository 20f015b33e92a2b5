//! Prefix text and prefix families (`docs/tokenizer.md`): what the provider sees first in a
//! request, the hash of its first N tokens, a bounded memo of recent prefix windows,
//! and the conversation prefix behind the `prompt_cache_key = "conversation"` policy.
//!
//! The family of a request costs the same for a 2 KB prompt and a 1 MB one: the prefix
//! text is rendered only up to a byte cap, and only the tokens every continuation of
//! that cut shares are used ([`Encoding::extend_first`]); the cap grows only while the
//! first N tokens are not settled (a long whitespace run, say). `docs/tokenizer.md`
//! documents the rendering byte for byte and the argument for exactness.
//!
//! ```
//! use prefixcache_core::prefix::{family, prefix_text, FamilyParams};
//! use prefixcache_core::route::Route;
//! use prefixcache_core::tokenizer::Encoding;
//!
//! let body = serde_json::json!({
//!     "model": "gpt-4o",
//!     "messages": [
//!         {"role": "system", "content": "You are terse."},
//!         {"role": "user", "content": "Hi"}
//!     ]
//! });
//! let body = body.as_object().unwrap();
//! assert_eq!(prefix_text(Route::ChatCompletions, body), "system\nYou are terse.\nuser\nHi\n");
//!
//! let params = FamilyParams::new(Encoding::O200kBase);
//! let fam = family(Route::ChatCompletions, body, &params);
//! assert!(fam.whole); // fewer than min_prefix_tokens (20) tokens: the whole text
//! assert_eq!(fam.id.short_hex().len(), 16);
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Number, Value};

use crate::config::{
    DEFAULT_MIN_PREFIX_TOKENS, DEFAULT_PREFIX_GRANULARITY, PromptCacheKeyMode, Strategy,
};
use crate::key::{FamilyId, hex};
use crate::route::Route;
use crate::tokenizer::{Encoding, FirstTokens, encoding_for_model};

/// Which part of a request to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrefixScope {
    /// Everything the provider sees, in order: the prefix text.
    Full,
    /// Tools, schema, instructions, system/developer messages and the first user
    /// message: one conversation's stable start (`prompt_cache_key = "conversation"`).
    Conversation,
    /// Tools, schema, instructions and system/developer messages: the part a template
    /// shares across conversations.
    Static,
}

/// The prefix text of a request (see the module docs and `docs/tokenizer.md`).
/// Unbounded: for offline tools. The proxy uses [`family`] / [`FamilyMemo`], which
/// never render more than they tokenize.
pub fn prefix_text(route: Route, body: &Map<String, Value>) -> String {
    scoped_text(route, body, PrefixScope::Full).unwrap_or_default()
}

/// The conversation prefix: tools, response schema, instructions, every system and
/// developer message, and the first user message, rendered as in [`prefix_text`].
/// `None` for routes without conversations (completions, embeddings).
pub fn conversation_prefix_text(route: Route, body: &Map<String, Value>) -> Option<String> {
    scoped_text(route, body, PrefixScope::Conversation)
}

/// BLAKE3 of [`conversation_prefix_text`] (own derivation context), computed without
/// building the text: what a derived `prompt_cache_key` should be made from.
pub fn conversation_digest(route: Route, body: &Map<String, Value>) -> Option<[u8; 32]> {
    if !has_conversation(route) {
        return None;
    }
    let mut sink = HashSink::new("prefixcache conversation prefix v1");
    let _ = render(route, body, PrefixScope::Conversation, &mut sink);
    Some(*sink.finalize().as_bytes())
}

/// The `prompt_cache_key` prefixcache adds to a forwarded request that carries none
/// (`docs/design.md`, "The provider's routing key"): `conversation` pins every turn of
/// one conversation to one provider machine (`pfx-c-` + 16 bytes of
/// [`conversation_digest`]), `family` pins every request of a prefix family (`pfx-f-` +
/// 16 bytes of the family id), `off` adds none. Chat
/// completions and Responses only: the other routes do not accept the field. The proxy
/// and `replay` both derive it here, so the simulation sends what the proxy sends.
pub fn derived_prompt_cache_key(
    mode: PromptCacheKeyMode,
    route: Route,
    body: &Map<String, Value>,
    family: Option<&FamilyId>,
) -> Option<String> {
    if !has_conversation(route) {
        return None;
    }
    match mode {
        PromptCacheKeyMode::Off => None,
        // Resolved per family by the caller (`breakpoint::KeyShape`); unresolved, the
        // family's key, which routes like sending none.
        PromptCacheKeyMode::Auto => family.map(|f| format!("pfx-f-{}", hex(&f.as_bytes()[..16]))),
        PromptCacheKeyMode::Conversation => {
            conversation_digest(route, body).map(|d| format!("pfx-c-{}", hex(&d[..16])))
        }
        PromptCacheKeyMode::Family => family.map(|f| format!("pfx-f-{}", hex(&f.as_bytes()[..16]))),
    }
}

/// BLAKE3 of a scope's text (own derivation context), computed without building the
/// text; `None` when the route has no such part. Identifies e.g. a static prefix for a
/// memo of facts about it.
pub fn scope_digest(
    route: Route,
    body: &Map<String, Value>,
    scope: PrefixScope,
) -> Option<[u8; 32]> {
    if scope != PrefixScope::Full && !has_conversation(route) {
        return None;
    }
    let mut sink = HashSink::new("prefixcache scope text v1");
    let _ = render(route, body, scope, &mut sink);
    Some(*sink.finalize().as_bytes())
}

/// The text of one scope; `None` when the route has no such part.
pub fn scoped_text(route: Route, body: &Map<String, Value>, scope: PrefixScope) -> Option<String> {
    if scope != PrefixScope::Full && !has_conversation(route) {
        return None;
    }
    let mut sink = StringSink(String::new());
    let _ = render(route, body, scope, &mut sink);
    Some(sink.0)
}

/// Tokens of a scope's text, counted up to `limit` (returns `min(count, limit)`), at a
/// cost that grows with `limit`, not with the request. For "is the stable prefix at
/// least 1024 tokens?": `count_prefix_tokens(.., PrefixScope::Static, enc, false, 1024)`.
/// 0 when the route has no such scope.
pub fn count_prefix_tokens(
    route: Route,
    body: &Map<String, Value>,
    scope: PrefixScope,
    encoding: Encoding,
    normalize_whitespace: bool,
    limit: usize,
) -> usize {
    if scope != PrefixScope::Full && !has_conversation(route) {
        return 0;
    }
    let mut cap = initial_cap(limit);
    let max = window_limit(limit);
    let mut acc = FirstTokens::default();
    loop {
        let w = render_window(route, body, scope, normalize_whitespace, cap);
        if encoding.extend_first(&mut acc, &w.text, limit, w.truncated) {
            return acc.tokens.len();
        }
        if cap >= max {
            // Bounded like a family: the window counted as if the text ended there.
            encoding.extend_first(&mut acc, &w.text, limit, false);
            return acc.tokens.len();
        }
        cap = grow(cap).min(max);
    }
}

fn has_conversation(route: Route) -> bool {
    matches!(route, Route::ChatCompletions | Route::Responses)
}

// ---------------------------------------------------------------------------------------
// Families

/// How a strategy computes families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyParams {
    pub encoding: Encoding,
    /// Tokens in the family (`prefix_granularity`).
    pub granularity: usize,
    /// Prompts with fewer tokens are their own family (`min_prefix_tokens`).
    pub min_tokens: usize,
    /// Compute on whitespace-normalized text (the request sent upstream is unchanged).
    pub normalize_whitespace: bool,
}

impl FamilyParams {
    /// The defaults (granularity 50, minimum 20, no normalization) for an encoding.
    pub fn new(encoding: Encoding) -> FamilyParams {
        FamilyParams {
            encoding,
            granularity: DEFAULT_PREFIX_GRANULARITY,
            min_tokens: DEFAULT_MIN_PREFIX_TOKENS,
            normalize_whitespace: false,
        }
    }

    /// A strategy's parameters for a request to `model` (encoding from the model table;
    /// unknown models use `o200k_base`).
    pub fn for_strategy(strategy: &Strategy, model: &str) -> FamilyParams {
        FamilyParams {
            encoding: encoding_for_model(model).encoding,
            granularity: strategy.prefix_granularity,
            min_tokens: strategy.min_prefix_tokens,
            normalize_whitespace: strategy.normalize_whitespace,
        }
    }

    /// Tokens to find before deciding: the family's, or enough to know the text is
    /// shorter than the minimum.
    fn needed(&self) -> usize {
        self.granularity.max(self.min_tokens)
    }
}

/// A prefix family: the hash of the encoding and the first `granularity` tokens of the
/// prefix text, or of the whole text when it has fewer than `min_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: FamilyId,
    pub encoding: Encoding,
    /// The tokens hashed: the first `granularity` (or all, when `whole`).
    pub tokens: Arc<[u32]>,
    /// The text was shorter than `min_tokens` tokens and the family is the whole text.
    pub whole: bool,
    /// Bytes of the (normalized, if asked) prefix text that `tokens` decode to. The last
    /// token may end inside a character.
    pub prefix_bytes: usize,
    /// That text, extended to the end of the character the last token ends in, so the
    /// lint rules can map tokens back to text spans.
    pub text: Arc<str>,
}

impl Family {
    /// The family of a plain text (a prompt file, a template, a logged prompt), as the
    /// family of a request whose prefix text is `text`.
    pub fn of_text(text: &str, params: &FamilyParams) -> Family {
        let normalized;
        let text = if params.normalize_whitespace {
            normalized = crate::key::normalize_whitespace(text);
            normalized.as_ref()
        } else {
            text
        };
        let mut acc = FirstTokens::default();
        params
            .encoding
            .extend_first(&mut acc, text, params.needed(), false);
        finish(acc, text, params, false)
    }
}

/// The family of a request, computed without the memo.
pub fn family(route: Route, body: &Map<String, Value>, params: &FamilyParams) -> Family {
    let first = render_window(
        route,
        body,
        PrefixScope::Full,
        params.normalize_whitespace,
        initial_cap(params.needed()),
    );
    compute_from(route, body, params, first).0
}

/// Continues a family computation from the first window: grows the window until the
/// first N tokens are settled. Returns the family and the window it was decided on.
fn compute_from(
    route: Route,
    body: &Map<String, Value>,
    params: &FamilyParams,
    first: Window,
) -> (Family, Window) {
    let n = params.needed();
    let limit = window_limit(n);
    let mut acc = FirstTokens::default();
    let mut w = first;
    loop {
        if params
            .encoding
            .extend_first(&mut acc, &w.text, n, w.truncated)
        {
            let fam = finish(acc, &w.text, params, false);
            return (fam, w);
        }
        if w.cap >= limit {
            // N tokens are not settled within the largest window: one huge piece (a
            // word or whitespace run of hundreds of kilobytes). Decide on the window
            // as if the text ended there, so the cost stays bounded by the window, not
            // by the piece; such a family is marked apart from exact ones.
            let mut rest = acc;
            params.encoding.extend_first(&mut rest, &w.text, n, false);
            let fam = finish(rest, &w.text, params, true);
            return (fam, w);
        }
        let cap = grow(w.cap).min(limit);
        w = render_window(
            route,
            body,
            PrefixScope::Full,
            params.normalize_whitespace,
            cap,
        );
    }
}

/// `bounded`: decided on the largest window rather than on settled tokens.
fn finish(acc: FirstTokens, text: &str, params: &FamilyParams, bounded: bool) -> Family {
    let enc = params.encoding;
    let whole = acc.tokens.len() < params.min_tokens;
    let mut tokens = acc.tokens;
    if !whole {
        tokens.truncate(params.granularity);
    }
    let prefix_bytes: usize = tokens
        .iter()
        .map(|&t| enc.token_bytes(t).map_or(0, <[u8]>::len))
        .sum();
    let mut h = blake3::Hasher::new_derive_key("prefixcache family v1");
    h.update(enc.as_str().as_bytes());
    let kind = match (bounded, whole) {
        (true, _) => b'B',
        (false, true) => b'W',
        (false, false) => b'P',
    };
    h.update(&[0, kind]);
    for t in &tokens {
        h.update(&t.to_le_bytes());
    }
    let end = ceil_char_boundary(text, prefix_bytes);
    Family {
        id: FamilyId(*h.finalize().as_bytes()),
        encoding: enc,
        tokens: tokens.into(),
        whole,
        prefix_bytes,
        text: Arc::from(&text[..end]),
    }
}

/// First window: room for N tokens of dense text (JSON and code run ~3 bytes a token,
/// prose ~4.5) plus the two pieces held back, so one render almost always suffices.
fn initial_cap(n: usize) -> usize {
    n.saturating_mul(8).saturating_add(256)
}

fn grow(cap: usize) -> usize {
    cap.saturating_mul(4)
}

/// The largest window rendered and tokenized for N tokens: a fixed bound in bytes, so
/// no input (a 30 MB one-word system prompt) makes a family cost more than tokenizing
/// this many bytes. Ordinary text settles N tokens in the first window.
pub const MAX_WINDOW_BYTES: usize = 64 * 1024;

/// The window bound for N tokens: [`MAX_WINDOW_BYTES`], or the first window when a
/// strategy asks for so many tokens that it is larger.
pub fn window_limit(n: usize) -> usize {
    MAX_WINDOW_BYTES.max(initial_cap(n))
}

// ---------------------------------------------------------------------------------------
// The memo

/// Default memory budget of a [`FamilyMemo`].
pub const DEFAULT_MEMO_BYTES: usize = 8 * 1024 * 1024;
/// Windows larger than this (pathological whitespace runs) are not memoized.
const MEMO_MAX_WINDOW: usize = 64 * 1024;
const MEMO_SHARDS: usize = 16;

/// A bounded, thread-safe memo of recent prefix windows and their families, so the
/// static system prompt every request of a template starts with is tokenized once.
///
/// A hit renders the first window of the request (a few hundred bytes), and returns
/// the stored family only when that window, the parameters, and the window the family
/// was decided on all equal the stored ones byte for byte: a family depends on nothing
/// else, so a hit can never differ from [`family`]. Eviction is two-generation LRU per
/// shard: entries live in a young map; when it exceeds half the shard's budget, the old
/// map is dropped and the young one becomes old; a hit in the old map moves the entry
/// back to the young one.
///
/// ```
/// use prefixcache_core::prefix::{FamilyMemo, FamilyParams, family};
/// use prefixcache_core::route::Route;
/// use prefixcache_core::tokenizer::Encoding;
///
/// let memo = FamilyMemo::new(1 << 20);
/// let body = serde_json::json!({"messages": [{"role": "user", "content": "Hello there"}]});
/// let body = body.as_object().unwrap();
/// let params = FamilyParams::new(Encoding::O200kBase);
/// let a = memo.family(Route::ChatCompletions, body, &params);
/// let b = memo.family(Route::ChatCompletions, body, &params);
/// assert_eq!(a, b);
/// assert_eq!(a, family(Route::ChatCompletions, body, &params));
/// assert_eq!(memo.stats().hits, 1);
/// ```
pub struct FamilyMemo {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
}

/// Counters of a memo, summed over its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

type IdentityMap = HashMap<u64, MemoEntry, BuildHasherDefault<rustc_hash::FxHasher>>;

#[derive(Default)]
struct Shard {
    young: IdentityMap,
    old: IdentityMap,
    young_bytes: usize,
    old_bytes: usize,
    hits: u64,
    misses: u64,
}

struct MemoEntry {
    params: FamilyParams,
    /// The first window (what the lookup renders) and whether it was cut.
    first: Box<str>,
    first_truncated: bool,
    /// The window the family was decided on, when larger than the first.
    decided: Option<(Arc<str>, bool, usize)>,
    family: Family,
}

impl MemoEntry {
    fn cost(&self) -> usize {
        let decided = self.decided.as_ref().map_or(0, |(w, _, _)| w.len());
        self.first.len() + decided + self.family.text.len() + self.family.tokens.len() * 4 + 256
    }
}

impl Default for FamilyMemo {
    fn default() -> Self {
        FamilyMemo::new(DEFAULT_MEMO_BYTES)
    }
}

impl std::fmt::Debug for FamilyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FamilyMemo")
            .field("budget", &(self.shard_budget * self.shards.len()))
            .field("stats", &self.stats())
            .finish()
    }
}

impl FamilyMemo {
    /// A memo using at most about `budget_bytes` of memory (windows, tokens, overhead).
    pub fn new(budget_bytes: usize) -> FamilyMemo {
        FamilyMemo {
            shards: (0..MEMO_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            shard_budget: (budget_bytes / MEMO_SHARDS).max(1),
        }
    }

    /// The family of a request, equal to [`family`]; from the memo when the request's
    /// prefix window was seen recently.
    pub fn family(&self, route: Route, body: &Map<String, Value>, params: &FamilyParams) -> Family {
        let first = render_window(
            route,
            body,
            PrefixScope::Full,
            params.normalize_whitespace,
            initial_cap(params.needed()),
        );
        let hash = memo_hash(params, &first);
        let shard = &self.shards[(hash as usize) % self.shards.len()];

        let found = {
            let mut s = lock(shard);
            let hit = s.lookup(hash, params, &first);
            match &hit {
                Some((_, None)) => s.hits += 1,
                // counted once the larger window is compared
                Some((_, Some(_))) => {}
                None => s.misses += 1,
            }
            hit
        };
        if let Some((fam, decided)) = found {
            match decided {
                None => return fam,
                Some((window, truncated, cap)) => {
                    // Decided on a larger window: valid only if this request's is equal.
                    let w = render_window(
                        route,
                        body,
                        PrefixScope::Full,
                        params.normalize_whitespace,
                        cap,
                    );
                    let valid = w.truncated == truncated && *w.text == *window;
                    let mut s = lock(shard);
                    if valid {
                        s.hits += 1;
                        return fam;
                    }
                    s.misses += 1;
                }
            }
        }

        let first_text: Box<str> = first.text.as_str().into();
        let first_truncated = first.truncated;
        let first_cap = first.cap;
        let (fam, decided) = compute_from(route, body, params, first);
        if decided.text.len() <= MEMO_MAX_WINDOW {
            let entry = MemoEntry {
                params: *params,
                first: first_text,
                first_truncated,
                decided: (decided.cap != first_cap)
                    .then(|| (Arc::from(decided.text), decided.truncated, decided.cap)),
                family: fam.clone(),
            };
            lock(shard).insert(hash, entry, self.shard_budget);
        }
        fam
    }

    pub fn stats(&self) -> MemoStats {
        let mut st = MemoStats::default();
        for shard in &self.shards {
            let s = lock(shard);
            st.hits += s.hits;
            st.misses += s.misses;
            st.entries += s.young.len() + s.old.len();
            st.bytes += s.young_bytes + s.old_bytes;
        }
        st
    }
}

type Decided = Option<(Arc<str>, bool, usize)>;

impl Shard {
    fn lookup(
        &mut self,
        hash: u64,
        params: &FamilyParams,
        first: &Window,
    ) -> Option<(Family, Decided)> {
        let matches = |e: &MemoEntry| {
            e.params == *params && e.first_truncated == first.truncated && *e.first == *first.text
        };
        if let Some(e) = self.young.get(&hash) {
            return matches(e).then(|| (e.family.clone(), e.decided.clone()));
        }
        let e = self.old.remove(&hash)?;
        self.old_bytes -= e.cost();
        let out = matches(&e).then(|| (e.family.clone(), e.decided.clone()));
        if out.is_some() {
            self.young_bytes += e.cost();
            self.young.insert(hash, e);
        }
        out
    }

    fn insert(&mut self, hash: u64, entry: MemoEntry, budget: usize) {
        if self.young_bytes + entry.cost() > budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::take(&mut self.young_bytes);
        }
        if let Some(prev) = self.old.remove(&hash) {
            self.old_bytes -= prev.cost();
        }
        self.young_bytes += entry.cost();
        if let Some(prev) = self.young.insert(hash, entry) {
            self.young_bytes -= prev.cost();
        }
    }
}

/// A poisoned shard only means another thread panicked mid-update of a cache: the data
/// is still a valid map of valid entries, so keep using it.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn memo_hash(params: &FamilyParams, w: &Window) -> u64 {
    // Fx is not collision-resistant; it need not be: entries compare the full window,
    // so a collision costs a recomputation, never a wrong family.
    let mut h = rustc_hash::FxHasher::default();
    h.write_u8(params.encoding as u8);
    h.write_usize(params.granularity);
    h.write_usize(params.min_tokens);
    h.write_u8(u8::from(params.normalize_whitespace) | (u8::from(w.truncated) << 1));
    h.write(w.text.as_bytes());
    h.finish()
}

// ---------------------------------------------------------------------------------------
// Rendering

/// The start of a prefix text: at most `cap` bytes, cut at a character boundary.
#[derive(Debug)]
struct Window {
    text: String,
    /// Whether more text follows (the window is a strict prefix of the full text).
    truncated: bool,
    cap: usize,
}

fn render_window(
    route: Route,
    body: &Map<String, Value>,
    scope: PrefixScope,
    normalize: bool,
    cap: usize,
) -> Window {
    let mut sink = CapSink {
        out: String::with_capacity(cap.min(1 << 20)),
        cap,
        normalize,
        pending_space: false,
        truncated: false,
    };
    let _ = render(route, body, scope, &mut sink);
    Window {
        text: sink.out,
        truncated: sink.truncated,
        cap,
    }
}

/// Where rendered text goes; `Break` once it wants no more.
trait Sink {
    fn push(&mut self, s: &str) -> ControlFlow<()>;

    /// One ASCII byte (JSON punctuation): a separate method because a memo hit renders
    /// a few hundred of them, and a one-byte `push_str` is a `memcpy` call.
    fn push_ascii(&mut self, b: u8) -> ControlFlow<()> {
        let buf = [b];
        self.push(std::str::from_utf8(&buf).unwrap_or(""))
    }
}

struct StringSink(String);

impl Sink for StringSink {
    fn push(&mut self, s: &str) -> ControlFlow<()> {
        self.0.push_str(s);
        ControlFlow::Continue(())
    }
}

/// Hashes rendered text. The renderer pushes a few bytes at a time; BLAKE3 compresses
/// whole 1 KiB chunks in parallel (SIMD) only when an update hands it several at once,
/// and one 64-byte block at a time otherwise (in a profile of `replay`, that serial path
/// was the largest cost), so pieces are gathered into a buffer first. The digest is the
/// same: it covers the same bytes.
struct HashSink {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

/// Bytes gathered before they are hashed: 16 chunks, what AVX-512 hashes at once.
const HASH_SINK_BUFFER: usize = 16 * 1024;

impl HashSink {
    fn new(context: &str) -> HashSink {
        HashSink {
            hasher: blake3::Hasher::new_derive_key(context),
            buf: Vec::new(),
        }
    }

    fn finalize(mut self) -> blake3::Hash {
        self.hasher.update(&self.buf);
        self.hasher.finalize()
    }
}

impl Sink for HashSink {
    fn push(&mut self, s: &str) -> ControlFlow<()> {
        self.buf.extend_from_slice(s.as_bytes());
        if self.buf.len() >= HASH_SINK_BUFFER {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        ControlFlow::Continue(())
    }
}

/// Keeps the first `cap` bytes, optionally whitespace-normalized as
/// [`crate::key::normalize_whitespace`] does it (every run of whitespace becomes one
/// space; none at either end), so a normalized window is a prefix of the normalized text.
struct CapSink {
    out: String,
    cap: usize,
    normalize: bool,
    /// Whitespace was seen after some output; a space goes before the next word.
    pending_space: bool,
    truncated: bool,
}

impl CapSink {
    fn raw(&mut self, s: &str) -> ControlFlow<()> {
        let room = self.cap - self.out.len();
        if s.len() <= room {
            self.out.push_str(s);
            ControlFlow::Continue(())
        } else {
            let end = floor_char_boundary(s, room);
            self.out.push_str(&s[..end]);
            self.truncated = true;
            ControlFlow::Break(())
        }
    }

    /// A run of non-whitespace, preceded by the pending space if any.
    fn word(&mut self, s: &str) -> ControlFlow<()> {
        if self.pending_space {
            // The space goes out only with at least one character after it: a window
            // must stay a prefix of the normalized text, which never ends in a space.
            let first = s.chars().next().map_or(0, char::len_utf8);
            if self.cap - self.out.len() <= first {
                self.truncated = true;
                return ControlFlow::Break(());
            }
            self.out.push(' ');
            self.pending_space = false;
        }
        self.raw(s)
    }
}

impl Sink for CapSink {
    #[inline]
    fn push_ascii(&mut self, b: u8) -> ControlFlow<()> {
        if self.normalize || self.truncated || !b.is_ascii() || b.is_ascii_whitespace() {
            let buf = [b];
            return self.push(std::str::from_utf8(&buf).unwrap_or(""));
        }
        if self.out.len() < self.cap {
            self.out.push(char::from(b));
            ControlFlow::Continue(())
        } else {
            self.truncated = true;
            ControlFlow::Break(())
        }
    }

    fn push(&mut self, s: &str) -> ControlFlow<()> {
        if self.truncated {
            return ControlFlow::Break(());
        }
        if s.is_empty() {
            return ControlFlow::Continue(());
        }
        if !self.normalize {
            return self.raw(s);
        }
        let mut word_start: Option<usize> = None;
        for (i, c) in s.char_indices() {
            if c.is_whitespace() {
                if let Some(st) = word_start.take() {
                    self.word(&s[st..i])?;
                }
                if !self.out.is_empty() {
                    self.pending_space = true;
                }
            } else if word_start.is_none() {
                word_start = Some(i);
            }
        }
        if let Some(st) = word_start {
            self.word(&s[st..])?;
        }
        ControlFlow::Continue(())
    }
}

fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    (0..=i).rev().find(|&j| s.is_char_boundary(j)).unwrap_or(0)
}

fn ceil_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    (i..=s.len())
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(s.len())
}

/// Renders a request. The rendering is documented in `docs/tokenizer.md`; change both
/// together (and note that families change with it).
fn render(
    route: Route,
    body: &Map<String, Value>,
    scope: PrefixScope,
    sink: &mut impl Sink,
) -> ControlFlow<()> {
    match route {
        Route::ChatCompletions => {
            render_tools(body, sink)?;
            if let Some(rf) = body.get("response_format") {
                line(sink, "response_format ", rf)?;
            }
            render_messages(body.get("messages"), scope, sink)
        }
        Route::Responses => {
            render_tools(body, sink)?;
            if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
                line(sink, "response_format ", format)?;
            }
            let mut seen_user = false;
            match body.get("instructions") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => render_text_message(sink, "developer", s)?,
                // Instructions given as input items (a reused prompt's messages).
                Some(Value::Array(items)) => {
                    render_items(items, scope, &mut seen_user, sink)?;
                }
                Some(other) => line(sink, "instructions ", other)?,
            }
            match body.get("input") {
                Some(Value::String(s)) => {
                    if scope != PrefixScope::Static {
                        render_text_message(sink, "user", s)?;
                    }
                    ControlFlow::Continue(())
                }
                Some(Value::Array(items)) => render_items(items, scope, &mut seen_user, sink),
                None | Some(Value::Null) => ControlFlow::Continue(()),
                Some(other) => line(sink, "input ", other),
            }
        }
        Route::Completions => render_prompt(body.get("prompt"), model_encoding(body), sink),
        Route::Embeddings => render_prompt(body.get("input"), model_encoding(body), sink),
    }
}

fn model_encoding(body: &Map<String, Value>) -> Encoding {
    encoding_for_model(body.get("model").and_then(Value::as_str).unwrap_or("")).encoding
}

fn render_tools(body: &Map<String, Value>, sink: &mut impl Sink) -> ControlFlow<()> {
    // `functions` is the legacy form of `tools`; the API puts both first.
    for field in ["tools", "functions"] {
        match body.get(field) {
            Some(Value::Array(tools)) => {
                for tool in tools {
                    line(sink, "tool ", tool)?;
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => line(sink, "tool ", other)?,
        }
    }
    ControlFlow::Continue(())
}

/// `label` + canonical JSON of `value` + newline.
fn line(sink: &mut impl Sink, label: &str, value: &Value) -> ControlFlow<()> {
    sink.push(label)?;
    write_canonical(sink, value)?;
    sink.push("\n")
}

fn wanted(scope: PrefixScope, role: &str, seen_user: &mut bool) -> bool {
    match scope {
        PrefixScope::Full => true,
        PrefixScope::Static => matches!(role, "system" | "developer"),
        PrefixScope::Conversation => match role {
            "system" | "developer" => true,
            "user" if !*seen_user => {
                *seen_user = true;
                true
            }
            _ => false,
        },
    }
}

fn render_messages(
    messages: Option<&Value>,
    scope: PrefixScope,
    sink: &mut impl Sink,
) -> ControlFlow<()> {
    let Some(messages) = messages else {
        return ControlFlow::Continue(());
    };
    let Value::Array(messages) = messages else {
        return line(sink, "messages ", messages);
    };
    let mut seen_user = false;
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !wanted(scope, role, &mut seen_user) {
            continue;
        }
        render_message(sink, m)?;
    }
    ControlFlow::Continue(())
}

/// A chat message or a Responses message item:
/// `role[ name=NAME][ tool_call_id=ID]\n` + content + `\n` + one line per tool call.
fn render_message(sink: &mut impl Sink, m: &Value) -> ControlFlow<()> {
    let Value::Object(m) = m else {
        return line(sink, "message ", m);
    };
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    sink.push(role)?;
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        sink.push(" name=")?;
        sink.push(name)?;
    }
    if let Some(id) = m.get("tool_call_id").and_then(Value::as_str) {
        sink.push(" tool_call_id=")?;
        sink.push(id)?;
    }
    sink.push("\n")?;
    render_content(sink, m.get("content"))?;
    sink.push("\n")?;
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for call in calls {
            line(sink, "tool_call ", call)?;
        }
    }
    if let Some(call) = m.get("function_call").filter(|v| !v.is_null()) {
        line(sink, "function_call ", call)?;
    }
    ControlFlow::Continue(())
}

fn render_text_message(sink: &mut impl Sink, role: &str, text: &str) -> ControlFlow<()> {
    sink.push(role)?;
    sink.push("\n")?;
    sink.push(text)?;
    sink.push("\n")
}

/// Content: a string as is; parts joined by `\n` (text parts as their text, others as
/// a placeholder); null or absent as nothing.
fn render_content(sink: &mut impl Sink, content: Option<&Value>) -> ControlFlow<()> {
    match content {
        None | Some(Value::Null) => ControlFlow::Continue(()),
        Some(Value::String(s)) => sink.push(s),
        Some(Value::Array(parts)) => {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    sink.push("\n")?;
                }
                render_part(sink, part)?;
            }
            ControlFlow::Continue(())
        }
        Some(other) => write_canonical(sink, other),
    }
}

fn render_part(sink: &mut impl Sink, part: &Value) -> ControlFlow<()> {
    if let Value::String(s) = part {
        return sink.push(s);
    }
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    let text = match kind {
        "text" | "input_text" | "output_text" => part.get("text").and_then(Value::as_str),
        "refusal" => part.get("refusal").and_then(Value::as_str),
        _ => None,
    };
    match text {
        Some(t) => sink.push(t),
        None => placeholder(sink, kind, part),
    }
}

/// `<TYPE:HASH>`: a non-text part (image, audio, file, or a type this code does not
/// know) as 16 hex digits of BLAKE3 over its canonical JSON, URL or data included. The
/// whole part is hashed, however large: two different images must not look alike.
fn placeholder(sink: &mut impl Sink, kind: &str, part: &Value) -> ControlFlow<()> {
    let mut h = HashSink::new("prefixcache content part v1");
    let _ = write_canonical(&mut h, part);
    let digest = h.finalize();
    let kind = if !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        kind
    } else {
        "part"
    };
    sink.push("<")?;
    sink.push(kind)?;
    sink.push(":")?;
    sink.push(&hex(&digest.as_bytes()[..8]))?;
    sink.push(">")
}

/// Responses input items: messages as chat messages, anything else (function calls and
/// their outputs, reasoning, references) as `TYPE ` + canonical JSON.
fn render_items(
    items: &[Value],
    scope: PrefixScope,
    seen_user: &mut bool,
    sink: &mut impl Sink,
) -> ControlFlow<()> {
    for item in items {
        let kind = item.get("type").and_then(Value::as_str);
        let role = item.get("role").and_then(Value::as_str);
        match (kind, role) {
            (None | Some("message"), Some(role)) => {
                if wanted(scope, role, seen_user) {
                    render_message(sink, item)?;
                }
            }
            _ if scope != PrefixScope::Full => {}
            (Some(kind), _) => {
                sink.push(kind)?;
                sink.push(" ")?;
                write_canonical(sink, item)?;
                sink.push("\n")?;
            }
            (None, None) => line(sink, "item ", item)?,
        }
    }
    ControlFlow::Continue(())
}

/// A completions `prompt` or embeddings `input`: a string as is; an array of strings
/// joined by `\n`; token ids decoded with the model's encoding (ids outside the
/// vocabulary as `<token:ID>`).
fn render_prompt(prompt: Option<&Value>, enc: Encoding, sink: &mut impl Sink) -> ControlFlow<()> {
    match prompt {
        None | Some(Value::Null) => ControlFlow::Continue(()),
        Some(Value::String(s)) => sink.push(s),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            render_token_ids(items, enc, sink)
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sink.push("\n")?;
                }
                match item {
                    Value::String(s) => sink.push(s)?,
                    Value::Array(ids) if ids.iter().all(Value::is_number) => {
                        render_token_ids(ids, enc, sink)?
                    }
                    other => write_canonical(sink, other)?,
                }
            }
            ControlFlow::Continue(())
        }
        Some(other) => write_canonical(sink, other),
    }
}

fn render_token_ids(ids: &[Value], enc: Encoding, sink: &mut impl Sink) -> ControlFlow<()> {
    let mut pending: Vec<u8> = Vec::with_capacity(64);
    for id in ids {
        let bytes = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .and_then(|i| enc.token_bytes(i));
        match bytes {
            Some(b) => {
                pending.extend_from_slice(b);
                flush_utf8(&mut pending, false, sink)?;
            }
            None => {
                flush_utf8(&mut pending, true, sink)?;
                sink.push("<token:")?;
                sink.push(&id.to_string())?;
                sink.push(">")?;
            }
        }
    }
    flush_utf8(&mut pending, true, sink)
}

/// Pushes the valid UTF-8 in `buf` (U+FFFD for invalid bytes), keeping an incomplete
/// character at the end for the next token unless `end`.
fn flush_utf8(buf: &mut Vec<u8>, end: bool, sink: &mut impl Sink) -> ControlFlow<()> {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buf[start..]) {
            Ok(s) => {
                sink.push(s)?;
                buf.clear();
                return ControlFlow::Continue(());
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                if let Ok(s) = std::str::from_utf8(&buf[start..valid]) {
                    sink.push(s)?;
                }
                match e.error_len() {
                    Some(bad) => {
                        sink.push("\u{fffd}")?;
                        start = valid + bad;
                    }
                    None if end => {
                        sink.push("\u{fffd}")?;
                        buf.clear();
                        return ControlFlow::Continue(());
                    }
                    None => {
                        buf.drain(..valid);
                        return ControlFlow::Continue(());
                    }
                }
            }
        }
    }
}

/// Canonical JSON as [`crate::key::canonical_value`] writes it (sorted keys, one number
/// form, serde_json's string escapes), streamed so a window stops early.
fn write_canonical(sink: &mut impl Sink, value: &Value) -> ControlFlow<()> {
    match value {
        Value::Null => sink.push("null"),
        Value::Bool(true) => sink.push("true"),
        Value::Bool(false) => sink.push("false"),
        Value::Number(n) => sink.push(&canonical_number(n)),
        Value::String(s) => write_json_string(sink, s),
        Value::Array(items) => {
            sink.push_ascii(b'[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sink.push_ascii(b',')?;
                }
                write_canonical(sink, item)?;
            }
            sink.push_ascii(b']')
        }
        Value::Object(map) => {
            // serde_json's Map is sorted unless `preserve_order` is on somewhere in the
            // build; check rather than assume, and sort only when needed.
            let sorted = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b);
            sink.push_ascii(b'{')?;
            if sorted {
                write_entries(sink, map.iter())?;
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_entries(sink, entries.into_iter())?;
            }
            sink.push_ascii(b'}')
        }
    }
}

fn write_entries<'a>(
    sink: &mut impl Sink,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> ControlFlow<()> {
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            sink.push_ascii(b',')?;
        }
        write_json_string(sink, k)?;
        sink.push_ascii(b':')?;
        write_canonical(sink, v)?;
    }
    ControlFlow::Continue(())
}

/// The number forms of `key.rs`: integers (and integral floats below 2^53) as integers,
/// other floats in Rust's shortest round-trip exponent form.
fn canonical_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            (f as i64).to_string()
        } else {
            format!("{f:e}")
        }
    } else {
        String::new()
    }
}

/// A JSON string literal with serde_json's escapes, pushed in runs so a long string is
/// not copied past the window.
fn write_json_string(sink: &mut impl Sink, s: &str) -> ControlFlow<()> {
    sink.push_ascii(b'"')?;
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        if start < i {
            sink.push(&s[start..i])?;
        }
        if esc.is_empty() {
            sink.push(&format!("\\u{:04x}", b))?;
        } else {
            sink.push(esc)?;
        }
        start = i + 1;
    }
    if start < bytes.len() {
        sink.push(&s[start..])?;
    }
    sink.push_ascii(b'"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn chat_rendering() {
        let body = obj(json!({
            "model": "gpt-4o",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2.0}}}],
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "user", "content": "again"}
            ]
        }));
        let text = prefix_text(Route::ChatCompletions, &body);
        let img = text
            .split("<image_url:")
            .nth(1)
            .and_then(|r| r.get(..16))
            .unwrap()
            .to_string();
        assert_eq!(
            text,
            format!(
                "tool {{\"function\":{{\"name\":\"f\",\"parameters\":{{\"a\":2,\"b\":1}}}},\"type\":\"function\"}}\n\
                 response_format {{\"type\":\"json_object\"}}\n\
                 system\nBe brief.\n\
                 user name=ann\nLook:\n<image_url:{img}>\n\
                 assistant\n\ntool_call {{\"function\":{{\"arguments\":\"{{}}\",\"name\":\"f\"}},\"id\":\"c1\",\"type\":\"function\"}}\n\
                 tool tool_call_id=c1\n42\n\
                 user\nagain\n"
            )
        );
        let conv = conversation_prefix_text(Route::ChatCompletions, &body).unwrap();
        assert!(conv.ends_with(&format!("user name=ann\nLook:\n<image_url:{img}>\n")));
        assert!(!conv.contains("again"));
        assert!(!conv.contains("assistant"));
        let stat = scoped_text(Route::ChatCompletions, &body, PrefixScope::Static).unwrap();
        assert!(stat.ends_with("system\nBe brief.\n"));
    }

    #[test]
    fn image_placeholders_depend_on_the_image() {
        let with = |url: &str| {
            prefix_text(
                Route::ChatCompletions,
                &obj(json!({"messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}}
                ]}]})),
            )
        };
        assert_eq!(
            with("data:image/png;base64,AAAA"),
            with("data:image/png;base64,AAAA")
        );
        assert_ne!(
            with("data:image/png;base64,AAAA"),
            with("data:image/png;base64,AAAB")
        );
    }

    #[test]
    fn responses_rendering() {
        let body = obj(json!({
            "instructions": "Be kind.",
            "tools": [{"type": "web_search"}],
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "x"},
                {"type": "function_call_output", "call_id": "x", "output": "ok"},
                {"type": "message", "role": "user", "content": "more"}
            ]
        }));
        assert_eq!(
            prefix_text(Route::Responses, &body),
            "tool {\"type\":\"web_search\"}\ndeveloper\nBe kind.\nuser\nhi\n\
             function_call {\"arguments\":\"{}\",\"call_id\":\"x\",\"name\":\"f\",\"type\":\"function_call\"}\n\
             function_call_output {\"call_id\":\"x\",\"output\":\"ok\",\"type\":\"function_call_output\"}\n\
             user\nmore\n"
        );
        assert_eq!(
            conversation_prefix_text(Route::Responses, &body).unwrap(),
            "tool {\"type\":\"web_search\"}\ndeveloper\nBe kind.\nuser\nhi\n"
        );
        let s = obj(json!({"input": "just text"}));
        assert_eq!(prefix_text(Route::Responses, &s), "user\njust text\n");
    }

    #[test]
    fn completions_and_embeddings_rendering() {
        let p = |v: Value| {
            prefix_text(
                Route::Completions,
                &obj(json!({"model": "gpt-4o", "prompt": v})),
            )
        };
        assert_eq!(p(json!("Once upon")), "Once upon");
        assert_eq!(p(json!(["a", "b"])), "a\nb");
        assert_eq!(p(json!([24912, 2375])), "hello world");
        assert_eq!(p(json!([[24912], [2375]])), "hello\n world");
        assert_eq!(
            p(json!([24912, 4_000_000_000u64])),
            "hello<token:4000000000>"
        );
        assert_eq!(
            prefix_text(Route::Embeddings, &obj(json!({"input": "x"}))),
            "x"
        );
        assert_eq!(
            conversation_prefix_text(Route::Completions, &obj(json!({}))),
            None
        );
        assert_eq!(
            conversation_digest(Route::Embeddings, &obj(json!({}))),
            None
        );
    }

    #[test]
    fn token_ids_split_inside_a_character_decode_whole() {
        // "日本" in o200k may split a character across tokens; decode must rejoin it.
        let enc = Encoding::O200kBase;
        let text = "日本語のテキスト🧑‍🚀";
        let ids: Vec<Value> = enc.encode(text).into_iter().map(Value::from).collect();
        let body = obj(json!({"model": "gpt-4o", "prompt": ids}));
        assert_eq!(prefix_text(Route::Completions, &body), text);
    }

    /// The buffered hash sink hashes exactly the rendered bytes, across buffer flushes.
    #[test]
    fn conversation_digest_is_the_blake3_of_the_conversation_text() {
        for words in [3usize, 5_000, 20_000] {
            let body = obj(json!({"messages": [
                {"role": "system", "content": "policy ".repeat(words)},
                {"role": "user", "content": "U1"}
            ]}));
            let text = conversation_prefix_text(Route::ChatCompletions, &body).unwrap();
            let mut h = blake3::Hasher::new_derive_key("prefixcache conversation prefix v1");
            h.update(text.as_bytes());
            assert_eq!(
                conversation_digest(Route::ChatCompletions, &body).unwrap(),
                *h.finalize().as_bytes(),
                "{words} words"
            );
        }
    }

    #[test]
    fn conversation_digest_hashes_the_conversation_text() {
        let body = obj(json!({"messages": [
            {"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}
        ]}));
        let mut later = body.clone();
        later["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": "U3"}));
        let d = conversation_digest(Route::ChatCompletions, &body).unwrap();
        assert_eq!(
            d,
            conversation_digest(Route::ChatCompletions, &later).unwrap()
        );
        let mut other = body.clone();
        other["messages"][1]["content"] = json!("U1'");
        assert_ne!(
            d,
            conversation_digest(Route::ChatCompletions, &other).unwrap()
        );
    }

    #[test]
    fn canonical_writer_matches_key_rs() {
        let v = json!({"z": [1.0, -0.0, 0.5, 1e300, "a\"\\\n\u{1}\u{7f}é"], "a": {"y": null, "b": true}});
        let mut s = StringSink(String::new());
        let _ = write_canonical(&mut s, &v);
        assert_eq!(s.0.as_bytes(), crate::key::canonical_value(&v));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,6}|[\\x00-\\x1f\"\\\\\u{7f}é日]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_\"\\n]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The streamed canonical JSON is byte for byte `key::canonical_value`, so the
        /// prefix text shows tools exactly as the cache key sees them.
        #[test]
        fn streamed_canonical_json_equals_key_rs(v in arb_json()) {
            let mut s = StringSink(String::new());
            let _ = write_canonical(&mut s, &v);
            proptest::prop_assert_eq!(s.0.as_bytes(), &crate::key::canonical_value(&v)[..]);
        }
    }

    #[test]
    fn short_prompts_are_their_own_family() {
        let p = FamilyParams::new(Encoding::O200kBase);
        let a = Family::of_text("hello world", &p);
        assert!(a.whole);
        assert_eq!(&*a.tokens, &[24912, 2375]);
        assert_eq!(&*a.text, "hello world");
        let long = "word ".repeat(100);
        let b = Family::of_text(&long, &p);
        assert!(!b.whole);
        assert_eq!(b.tokens.len(), 50);
        assert_eq!(b.prefix_bytes, b.text.len());
        assert_eq!(b.id, Family::of_text(&"word ".repeat(200), &p).id);
        assert_ne!(
            b.id,
            Family::of_text(
                &long,
                &FamilyParams {
                    encoding: Encoding::Cl100kBase,
                    ..p
                }
            )
            .id
        );
    }

    /// A one-word system prompt larger than any window: the family reads the window,
    /// never the rest, so its cost is that of the window whatever the prompt's size.
    #[test]
    fn a_family_never_reads_past_the_largest_window() {
        let p = FamilyParams::new(Encoding::O200kBase);
        let body = |len: usize, tail: &str| {
            let word = format!("{}{tail}", "a".repeat(len));
            serde_json::json!({"messages": [
                {"role": "system", "content": word},
                {"role": "user", "content": "hi"},
            ]})
        };
        let fam = |v: &Value| family(Route::ChatCompletions, v.as_object().unwrap(), &p);
        let small = fam(&body(MAX_WINDOW_BYTES * 2, ""));
        // What lies beyond the window (the word's length, its end) changes nothing.
        assert_eq!(small, fam(&body(MAX_WINDOW_BYTES * 8, "b")));
        assert!(small.text.len() <= MAX_WINDOW_BYTES);
        // A memo gives the same family.
        let memo = FamilyMemo::default();
        let v = body(MAX_WINDOW_BYTES * 3, "c");
        let once = memo.family(Route::ChatCompletions, v.as_object().unwrap(), &p);
        let twice = memo.family(Route::ChatCompletions, v.as_object().unwrap(), &p);
        assert_eq!((&once, &twice), (&small, &small));
        assert_eq!(memo.stats().hits, 1);
        // Settled text is untouched by the bound: ordinary prompts keep exact families.
        let prose =
            serde_json::json!({"messages": [{"role": "user", "content": "word ".repeat(50_000)}]});
        let exact = Family::of_text(
            &prefix_text(Route::ChatCompletions, prose.as_object().unwrap()),
            &p,
        );
        assert_eq!(fam(&prose), exact);
        // Counting is bounded the same way.
        let n = count_prefix_tokens(
            Route::ChatCompletions,
            body(MAX_WINDOW_BYTES * 8, "").as_object().unwrap(),
            PrefixScope::Static,
            Encoding::O200kBase,
            false,
            1024,
        );
        assert!(n > 0 && n <= 1024);
    }
}
