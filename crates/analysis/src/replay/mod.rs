//! `prefixcache replay`: a what-if simulator. The log is replayed in timestamp order
//! through one simulated response cache per spec ([`spec`]: `none`, `exact`,
//! `prefix:N`, with TTL and capacity), and the requests each one would forward go
//! through the simulated provider prompt cache (`core::provider`) once per
//! `prompt_cache_key` policy (`off`, `conversation`, `family`, `auto`), each without and
//! with the proxy's automatic breakpoints (`breakpoints = "off" | "auto"`, decided by the
//! proxy's learner, `core::breakpoint`, on the requests forwarded so far). Models of
//! the GPT-5.6 generation are served under the breakpoint rules (their token sequences
//! with breakpoint marks), older ones under the block rules. Per spec, overall and per
//! strategy: hit rate, requests and tokens saved, dollars spent (cache writes included)
//! and saved under the pricing table, and the provider's cached and written tokens under
//! each policy.
//!
//! Exact keys are the proxy's (`core::key::compute_keys` over the logged request bytes,
//! with the logged tenant, strategy and route; the log keeps no query string, so none
//! is keyed), so `exact` hits agree with what the proxy did on the same traffic; so
//! are the derived `prompt_cache_key`s
//! (`core::prefix::derived_prompt_cache_key`). Definitions and the `--json` schema:
//! `docs/analysis.md`.

pub mod cache;
pub mod html;
pub mod spec;

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;

use prefixcache_core::breakpoint::blocks::Outline;
use prefixcache_core::breakpoint::learn::BlockTokens;
use prefixcache_core::breakpoint::{
    Decision, KeyShape, Learner, Rules, Scope, TokenRates, request_blocks,
};
use prefixcache_core::canonical::canonicalize;
use prefixcache_core::config::{BreakpointsMode, KeyMode, PromptCacheKeyMode};
use prefixcache_core::key::{CacheKey, KeyInput, Namespace, RequestHash, compute_keys};
use prefixcache_core::prefix::{FamilyMemo, FamilyParams, derived_prompt_cache_key, prefix_text};
use prefixcache_core::pricing::{ModelPrice, PriceTable};
use prefixcache_core::provider::cache::{
    BreakpointMode, CachePolicy, CacheRules, PromptCacheConfig, PromptCacheSim, Retention,
};
use prefixcache_core::provider::prompt::{
    Breakpoint, CacheTtl, PromptInfo, TextEncoder, explicit_breakpoints_at,
    request_prompt_seqs_with,
};
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::Encoding;
use prefixcache_core::usage::Usage;
use prefixcache_core::wire::request_flags;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::Value;

use crate::analyze::ratio;
use crate::error::AnalysisError;
use crate::input::{
    BadLines, LogInput, LoggedStatus, TenantId, format_ts, parse_line, request_bytes,
};
use crate::parallel::map_lines;
use crate::progress::Progress;
use crate::traffic::{Traffic, namespace_of};
use cache::SimCache;
use spec::{SimKind, SimSpec};

/// Version of the `--json` schema.
pub const SCHEMA: &str = "prefixcache.replay/2";
/// Spacing of requests in a log without timestamps: one a second.
pub const UNTIMED_INTERVAL_MS: i64 = 1000;
/// The `prompt_cache_key` policies, in the order of results.
pub const POLICIES: [PromptCacheKeyMode; 4] = [
    PromptCacheKeyMode::Off,
    PromptCacheKeyMode::Conversation,
    PromptCacheKeyMode::Family,
    PromptCacheKeyMode::Auto,
];
/// The `breakpoints` settings, in the order of results.
pub const BREAKPOINTS: [BreakpointsMode; 2] = [BreakpointsMode::Off, BreakpointsMode::Auto];

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub traffic: Traffic,
    pub specs: Vec<SimSpec>,
    /// The provider simulation; `None` turns it off (dollars then use the logged
    /// `cached_tokens`).
    pub provider: Option<PromptCacheConfig>,
    pub prices: PriceTable,
    pub max_bad_lines: u64,
    pub threads: usize,
    /// Seeds the provider simulation's overflow routing.
    pub seed: u64,
}

/// One prompt of a request as the provider simulation needs it.
#[derive(Debug)]
struct ProviderPrompt {
    tokens: u64,
    /// Prefix blocks (block rules); empty when the prompt is too short to be cached.
    blocks: Box<[u64]>,
    /// Its breakpoints (breakpoint rules): the caller's, the implicit and inherited ones.
    breakpoints: Box<[Breakpoint]>,
    /// Routing keys under `off`, `conversation`, `family` (`auto` picks one of the last
    /// two per request).
    routes: [u64; 3],
}

/// What the proxy's breakpoint learner reads of a request, and where a breakpoint on
/// each of its markable blocks would sit in its (first) prompt.
#[derive(Debug)]
struct Learnable {
    scope: Scope,
    outline: Outline,
    /// (block index, the breakpoint a marker there makes), by block index.
    candidates: Box<[(u32, Breakpoint)]>,
}

impl BlockTokens for &Learnable {
    fn through(&mut self, i: usize) -> u64 {
        self.candidates
            .iter()
            .find(|(b, _)| *b as usize == i)
            .map_or(0, |(_, bp)| bp.tokens)
    }
}

/// A logged request, reduced to what the simulations read.
#[derive(Debug)]
struct Req {
    ts_ms: Option<i64>,
    group: String,
    model: String,
    key: u128,
    hash: u128,
    /// Slot keys for each distinct `prefix:N` granularity, in [`Plan::grains`] order.
    slots: Box<[u128]>,
    /// Looked up at all (not a logged bypass, not sampled under `cache_sampled = false`,
    /// no duplicate key, not bound to server-side state).
    lookup: bool,
    /// Its response would be stored (a success, not sampled-and-skipped).
    storable: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    logged_cached: u64,
    usage_logged: bool,
    /// How the provider caches it (rules by model, the request's retention or
    /// `prompt_cache_options`).
    policy: CachePolicy,
    prompts: Box<[ProviderPrompt]>,
    /// Chat and Responses requests: what the breakpoint learner reads.
    learnable: Option<Box<Learnable>>,
}

/// What the line workers share.
struct Plan<'a> {
    traffic: &'a Traffic,
    memo: FamilyMemo,
    /// Distinct `prefix:N` granularities.
    grains: Vec<usize>,
    provider: Option<&'a PromptCacheConfig>,
}

/// Per-thread state of the line workers.
#[derive(Default)]
struct Worker {
    strategies: HashMap<String, prefixcache_core::config::Strategy>,
    namespaces: HashMap<TenantId, Namespace>,
    texts: TextMemo,
}

/// Tokens of texts seen more than once (system prompts, tool schemas), so a log of a
/// million requests sharing one long prompt tokenizes it once per thread. A text is
/// remembered on its second sighting: unique user content costs one hash, no memory.
/// Keyed by a fast hash and checked against the stored text, so a collision costs an
/// encoding, never wrong tokens.
#[derive(Default)]
struct TextMemo {
    seen: FxHashSet<u64>,
    tokens: FxHashMap<u64, (Box<str>, Arc<[u32]>)>,
    held: usize,
}

/// Texts shorter than this are encoded directly: hashing them costs as much.
const MEMO_MIN_BYTES: usize = 256;
/// Text bytes held per thread before the memo starts over.
const MEMO_MAX_BYTES: usize = 64 << 20;

impl TextEncoder for TextMemo {
    fn encode_into(&mut self, enc: Encoding, text: &str, out: &mut Vec<u32>) {
        if text.len() < MEMO_MIN_BYTES {
            out.extend(enc.encode(text));
            return;
        }
        let mut h = rustc_hash::FxHasher::default();
        h.write_u8(enc as u8);
        h.write(text.as_bytes());
        let id = h.finish();
        if let Some((t, tokens)) = self.tokens.get(&id)
            && **t == *text
        {
            out.extend_from_slice(tokens);
            return;
        }
        let tokens = enc.encode(text);
        out.extend_from_slice(&tokens);
        if self.seen.insert(id) {
            return;
        }
        if self.held + text.len() > MEMO_MAX_BYTES {
            self.tokens.clear();
            self.seen.clear();
            self.held = 0;
        }
        self.held += text.len() + tokens.len() * 4;
        self.tokens.insert(id, (text.into(), tokens.into()));
    }
}

fn u128_of(bytes: &[u8; 32]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(b)
}

fn key_u128(k: &CacheKey) -> u128 {
    u128_of(k.as_bytes())
}

fn hash_u128(h: &RequestHash) -> u128 {
    u128_of(h.as_bytes())
}

fn prepare(w: &mut Worker, plan: &Plan<'_>, line: &[u8], n: u64) -> Result<Option<Req>, String> {
    let Some(rec) = parse_line(line, n)? else {
        return Ok(None);
    };
    let traffic = plan.traffic;
    let group = traffic.group_of(&rec);
    let strategy = w
        .strategies
        .entry(group.clone())
        .or_insert_with(|| traffic.strategy(&group));
    let model = rec.request_model().to_string();
    let route = rec.route;
    let body = &rec.body;
    let ns = *w
        .namespaces
        .entry(rec.tenant)
        .or_insert_with(|| namespace_of(rec.tenant));
    let raw = request_bytes(line).ok_or_else(|| "request is not a JSON object".to_string())?;
    let canonical =
        canonicalize(route, raw, strategy.normalize_whitespace).map_err(|e| e.to_string())?;
    let exact = KeyInput {
        namespace: &ns,
        strategy: &group,
        method: "POST",
        route,
        query: "",
        body: &canonical,
        key_mode: KeyMode::Exact,
        family: None,
    };
    let keys = compute_keys(&exact).map_err(|e| e.to_string())?;
    let base = traffic.family_params(strategy, &model);
    let mut slots = Vec::with_capacity(plan.grains.len());
    for &g in &plan.grains {
        let fam = plan.memo.family(
            route,
            body,
            &FamilyParams {
                granularity: g,
                ..base
            },
        );
        let k = compute_keys(&KeyInput {
            key_mode: KeyMode::Prefix,
            family: Some(&fam.id),
            ..exact
        })
        .map_err(|e| e.to_string())?;
        slots.push(key_u128(&k.key));
    }
    let flags = request_flags(route, body);
    // As the proxy: sampled under `cache_sampled = false`, a duplicate key, or an answer
    // bound to server-side state is never looked up nor stored.
    let sampled_skip = (flags.sampled && !strategy.cache_sampled)
        || canonical.has_duplicate_keys()
        || flags.server_state.is_some();

    let retention =
        Retention::from_request(body.get("prompt_cache_retention").and_then(Value::as_str));
    let policy = match route {
        Route::ChatCompletions | Route::Responses
            if CacheRules::for_model(&model) == CacheRules::Breakpoints =>
        {
            let options = body.get("prompt_cache_options");
            let field = |k: &str| options.and_then(|o| o.get(k)).and_then(Value::as_str);
            CachePolicy::Breakpoints {
                mode: match field("mode") {
                    Some("explicit") => BreakpointMode::Explicit,
                    _ => BreakpointMode::Implicit,
                },
                ttl: field("ttl")
                    .and_then(CacheTtl::parse)
                    .unwrap_or(CacheTtl::Min30),
            }
        }
        _ => CachePolicy::Blocks(retention),
    };
    let mut prompts = Vec::new();
    let mut prompt_len = 0u64;
    let mut learnable = None;
    let needs_tokens = plan.provider.is_some() || rec.usage.is_none();
    if needs_tokens {
        let seqs = request_prompt_seqs_with(route, body, base.encoding, &mut w.texts);
        prompt_len = seqs.iter().map(|s| s.tokens.len() as u64).sum();
        if route == Route::Embeddings && rec.usage.is_none() {
            prompt_len = base.encoding.count(&prefix_text(route, body)) as u64;
        }
        if let Some(pc) = plan.provider {
            // A caller's own key is kept under every policy; otherwise the proxy's
            // derivation (the family at the strategy's own granularity).
            let own = body.get("prompt_cache_key").and_then(Value::as_str);
            let conversational = matches!(route, Route::ChatCompletions | Route::Responses);
            let family = conversational.then(|| plan.memo.family(route, body, &base).id);
            let derived = |mode: PromptCacheKeyMode| -> Option<String> {
                match own {
                    Some(k) => Some(k.to_string()),
                    None => derived_prompt_cache_key(mode, route, body, family.as_ref()),
                }
            };
            let keys: Vec<Option<String>> = POLICIES[..3].iter().map(|m| derived(*m)).collect();
            let breakpoint_rules = matches!(policy, CachePolicy::Breakpoints { .. });
            for s in &seqs {
                let info = PromptInfo::with_marks(
                    &s.tokens,
                    &s.marks,
                    pc.step_tokens,
                    pc.route_tokens,
                    None,
                );
                let blocks: Box<[u64]> = if s.tokens.len() >= pc.min_tokens && !breakpoint_rules {
                    info.blocks.clone().into()
                } else {
                    Box::new([])
                };
                prompts.push(ProviderPrompt {
                    tokens: info.tokens,
                    blocks,
                    breakpoints: if breakpoint_rules {
                        info.breakpoints.clone().into()
                    } else {
                        Box::new([])
                    },
                    routes: [
                        info.route_for(keys[0].as_deref()),
                        info.route_for(keys[1].as_deref()),
                        info.route_for(keys[2].as_deref()),
                    ],
                });
            }
            if let (Some(family), Some(seq)) = (family, seqs.first()) {
                let outline = request_blocks(route, body).outline();
                // Where a marker on each markable block would sit in the prompt.
                let mut at: Vec<(u32, u64)> = outline
                    .marks
                    .iter()
                    .enumerate()
                    .filter_map(|(b, m)| {
                        let m = (*m)?;
                        seq.units
                            .iter()
                            .find(|u| u.item == m.item && u.part == m.part)
                            .map(|u| (b as u32, u.pos))
                    })
                    .collect();
                at.sort_by_key(|(_, pos)| *pos);
                let positions: Vec<u64> = at.iter().map(|(_, pos)| *pos).collect();
                let points = explicit_breakpoints_at(&seq.tokens, &positions);
                let candidates: Box<[(u32, Breakpoint)]> = at
                    .iter()
                    .filter_map(|(b, pos)| {
                        points.iter().find(|p| p.tokens == *pos).map(|p| (*b, *p))
                    })
                    .collect();
                let mut ns16 = [0u8; 16];
                ns16.copy_from_slice(&ns.as_bytes()[..16]);
                let mut fam16 = [0u8; 16];
                fam16.copy_from_slice(&family.as_bytes()[..16]);
                learnable = Some(Box::new(Learnable {
                    scope: Scope {
                        namespace: ns16,
                        family: fam16,
                    },
                    outline,
                    candidates,
                }));
            }
        }
    }
    let usage = rec.usage.unwrap_or(Usage {
        prompt_tokens: prompt_len,
        ..Usage::default()
    });
    Ok(Some(Req {
        ts_ms: rec.ts_ms,
        lookup: !sampled_skip && rec.status != Some(LoggedStatus::Bypass),
        storable: !sampled_skip && !rec.failed(),
        usage_logged: rec.usage.is_some(),
        group,
        model,
        key: key_u128(&keys.key),
        hash: hash_u128(&keys.request_hash),
        slots: slots.into(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        logged_cached: usage.cached_tokens,
        policy,
        prompts: prompts.into(),
        learnable,
    }))
}

// ---------------------------------------------------------------------------------------
// Results

/// What `replay --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub schema: &'static str,
    pub input: ReplayInput,
    pub settings: ReplaySettings,
    /// One result per spec, over all requests.
    pub overall: Vec<SimResult>,
    /// Per strategy (or service) of the log, one result per spec each.
    pub groups: Vec<GroupResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayInput {
    pub path: String,
    pub requests: u64,
    pub bad_lines: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Requests whose timestamps were missing (placed after the previous line's).
    pub untimed: u64,
    /// Requests with logged usage; the rest have prompt tokens counted by the
    /// provider's recipe and no completion tokens.
    pub usage_logged: u64,
    pub usage_estimated: u64,
    /// Forwarded requests whose model has no price (counted in tokens, not dollars),
    /// and those models.
    pub unpriced_models: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplaySettings {
    pub provider_simulation: bool,
    pub machines: usize,
    pub overflow_rpm: u32,
    pub idle_ttl_s: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    pub name: String,
    pub requests: u64,
    /// The strategy's `prompt_cache_key` policy and `breakpoints` setting (the ones
    /// `usd_spent` is under).
    pub prompt_cache_key: String,
    pub breakpoints: String,
    pub results: Vec<SimResult>,
}

/// One spec over some requests.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    /// The spec: `none`, `exact`, `prefix:50`, `exact,ttl=1h,capacity=10000`, ...
    pub strategy: String,
    pub kind: &'static str,
    pub granularity: Option<usize>,
    pub requests: u64,
    /// Requests answered from the simulated cache: the requests saved.
    pub hits: u64,
    pub hit_rate: f64,
    /// Requests sent upstream.
    pub forwarded: u64,
    /// Prompt and completion tokens of the hits: not sent, not paid for.
    pub tokens_saved: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Dollars of the forwarded requests (provider discount as simulated under each
    /// strategy's `prompt_cache_key` policy).
    pub usd_spent: f64,
    /// Dollars the hits saved: the cost of the calls that filled their entries.
    pub usd_saved: f64,
    /// Forwarded requests whose model has no price.
    pub unpriced: u64,
    /// Entries evicted by the capacity.
    pub evictions: u64,
    /// The provider's cached-token share of the forwarded requests, per policy.
    pub provider: Option<ProviderResults>,
}

/// The provider simulation's figures per `prompt_cache_key` policy, without the proxy's
/// breakpoints (the policies' own fields) and with them (`breakpoints_auto`).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderResults {
    pub off: PolicyResult,
    pub conversation: PolicyResult,
    pub family: PolicyResult,
    pub auto: PolicyResult,
    /// The same policies with `breakpoints = "auto"`.
    pub breakpoints_auto: PolicySet,
    /// Forwarded requests on which the proxy's learner placed a breakpoint.
    pub breakpoints_injected: u64,
    /// Forwarded requests that carried the caller's own breakpoints.
    pub caller_breakpoints: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicySet {
    pub off: PolicyResult,
    pub conversation: PolicyResult,
    pub family: PolicyResult,
    pub auto: PolicyResult,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PolicyResult {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (GPT-5.6 rules; billed at the
    /// write price).
    pub cache_write_tokens: u64,
    pub cached_share: f64,
    /// Dollars of the forwarded requests, cache writes included.
    pub usd_spent: f64,
}

/// Running totals of one spec over one group.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    hits: u64,
    tokens_saved: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    usd_spent: f64,
    usd_saved: f64,
    unpriced: u64,
    /// By [`BREAKPOINTS`], then [`POLICIES`].
    provider: [[PolicyResult; 4]; 2],
    injected: u64,
    caller_breakpoints: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.hits += o.hits;
        self.tokens_saved += o.tokens_saved;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.usd_spent += o.usd_spent;
        self.usd_saved += o.usd_saved;
        self.unpriced += o.unpriced;
        for (ra, rb) in self.provider.iter_mut().zip(&o.provider) {
            for (a, b) in ra.iter_mut().zip(rb) {
                a.prompt_tokens += b.prompt_tokens;
                a.cached_tokens += b.cached_tokens;
                a.cache_write_tokens += b.cache_write_tokens;
                a.usd_spent += b.usd_spent;
            }
        }
        self.injected += o.injected;
        self.caller_breakpoints += o.caller_breakpoints;
    }

    fn result(&self, spec: &SimSpec, evictions: u64, provider: bool) -> SimResult {
        let policy = |p: PolicyResult| PolicyResult {
            cached_share: ratio(p.cached_tokens, p.prompt_tokens),
            ..p
        };
        SimResult {
            strategy: spec.to_string(),
            kind: spec.kind_name(),
            granularity: spec.granularity(),
            requests: self.requests,
            hits: self.hits,
            hit_rate: ratio(self.hits, self.requests),
            forwarded: self.requests - self.hits,
            tokens_saved: self.tokens_saved,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            usd_spent: self.usd_spent,
            usd_saved: self.usd_saved,
            unpriced: self.unpriced,
            evictions,
            provider: provider.then(|| {
                let [off, auto] = self.provider;
                ProviderResults {
                    off: policy(off[0]),
                    conversation: policy(off[1]),
                    family: policy(off[2]),
                    auto: policy(off[3]),
                    breakpoints_auto: PolicySet {
                        off: policy(auto[0]),
                        conversation: policy(auto[1]),
                        family: policy(auto[2]),
                        auto: policy(auto[3]),
                    },
                    breakpoints_injected: self.injected,
                    caller_breakpoints: self.caller_breakpoints,
                }
            }),
        }
    }
}

/// Settings of one group during the simulation.
struct GroupSim {
    ttl_ms: i64,
    /// Index into [`POLICIES`] of the strategy's `prompt_cache_key`.
    policy: usize,
    /// Index into [`BREAKPOINTS`] of the strategy's `breakpoints`.
    breakpoints: usize,
}

/// Everything the simulations read, in replay order.
struct Prepared {
    reqs: Vec<Req>,
    order: Vec<usize>,
    times: Vec<i64>,
    group_of: Vec<u32>,
    model_of: Vec<u32>,
    groups: Vec<String>,
    models: Vec<String>,
    group_sims: Vec<GroupSim>,
    prices: Vec<Option<ModelPrice>>,
    grains: Vec<usize>,
}

/// Replays a log; also returns the malformed lines it skipped.
pub fn replay(
    path: &Path,
    opts: &ReplayOptions,
    progress: &Progress,
) -> Result<(ReplayReport, BadLines), AnalysisError> {
    let mut input = LogInput::open(path)?;
    let mut grains: Vec<usize> = opts.specs.iter().filter_map(SimSpec::granularity).collect();
    grains.sort_unstable();
    grains.dedup();
    let plan = Plan {
        traffic: &opts.traffic,
        memo: FamilyMemo::new(64 << 20),
        grains,
        provider: opts.provider.as_ref(),
    };
    let (reqs, bad) = map_lines(
        &mut input,
        opts.threads,
        Worker::default,
        |w, line, n| prepare(w, &plan, line, n),
        progress,
    )?;
    bad.check(path, opts.max_bad_lines)?;
    if reqs.is_empty() {
        return Err(AnalysisError::Empty {
            path: path.to_path_buf(),
        });
    }
    progress.message("simulating");
    let prepared = order(reqs, plan.grains, opts);
    let results = run_specs(&prepared, opts);
    let report = report(path, &prepared, results, &bad, opts);
    Ok((report, bad))
}

fn order(reqs: Vec<Req>, grains: Vec<usize>, opts: &ReplayOptions) -> Prepared {
    let any_ts = reqs.iter().any(|r| r.ts_ms.is_some());
    let mut times = Vec::with_capacity(reqs.len());
    let mut last = 0i64;
    for (i, r) in reqs.iter().enumerate() {
        let t = match r.ts_ms {
            Some(t) => t,
            None if any_ts => last,
            None => i as i64 * UNTIMED_INTERVAL_MS,
        };
        last = t;
        times.push(t);
    }
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    // Stable by line for equal timestamps; `sort_by_key` is stable.
    order.sort_by_key(|&i| times[i]);

    let mut group_ix: HashMap<&str, u32> = HashMap::new();
    let mut groups: Vec<String> = Vec::new();
    let mut model_ix: HashMap<&str, u32> = HashMap::new();
    let mut models: Vec<String> = Vec::new();
    let mut group_of = Vec::with_capacity(reqs.len());
    let mut model_of = Vec::with_capacity(reqs.len());
    for r in &reqs {
        let g = *group_ix.entry(r.group.as_str()).or_insert_with(|| {
            groups.push(r.group.clone());
            (groups.len() - 1) as u32
        });
        let m = *model_ix.entry(r.model.as_str()).or_insert_with(|| {
            models.push(r.model.clone());
            (models.len() - 1) as u32
        });
        group_of.push(g);
        model_of.push(m);
    }
    let group_sims = groups
        .iter()
        .map(|g| {
            let s = opts.traffic.strategy(g);
            GroupSim {
                ttl_ms: s.ttl.as_millis().min(i64::MAX as u128) as i64,
                policy: POLICIES
                    .iter()
                    .position(|p| *p == s.prompt_cache_key)
                    .unwrap_or(3),
                breakpoints: BREAKPOINTS
                    .iter()
                    .position(|b| *b == s.breakpoints)
                    .unwrap_or(1),
            }
        })
        .collect();
    let prices = models
        .iter()
        .map(|m| opts.prices.lookup(m).map(|(_, p)| p.clone()))
        .collect();
    Prepared {
        reqs,
        order,
        times,
        group_of,
        model_of,
        groups,
        models,
        group_sims,
        prices,
        grains,
    }
}

/// Per spec: per-group tallies and evictions.
type SpecRun = (Vec<Tally>, u64);

fn run_specs(p: &Prepared, opts: &ReplayOptions) -> Vec<SpecRun> {
    let threads = opts.threads.clamp(1, opts.specs.len().max(1));
    let mut out: Vec<Option<SpecRun>> = (0..opts.specs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..opts.specs.len())
                        .step_by(threads)
                        .map(|i| (i, simulate(&opts.specs[i], p, opts)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A simulation thread only panics on a bug; its specs then have no result.
            if let Ok(done) = h.join() {
                for (i, r) in done {
                    out[i] = Some(r);
                }
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| (vec![Tally::default(); p.groups.len()], 0)))
        .collect()
}

fn simulate(spec: &SimSpec, p: &Prepared, opts: &ReplayOptions) -> SpecRun {
    let mut cache = SimCache::new(spec.capacity);
    let slot = spec
        .granularity()
        .and_then(|g| p.grains.iter().position(|x| *x == g));
    let mut sims: Option<[[PromptCacheSim; 4]; 2]> = opts.provider.as_ref().map(|c| {
        std::array::from_fn(|_| std::array::from_fn(|_| PromptCacheSim::new(c.clone(), opts.seed)))
    });
    let mut learner = Learner::default();
    let rules: Vec<Rules> = p
        .prices
        .iter()
        .map(|pr| {
            Rules::openai(pr.as_ref().map_or(TokenRates::OPENAI_BREAKPOINTS, |pr| {
                TokenRates::from_rates(&pr.base)
            }))
        })
        .collect();
    let ttl_override = spec.ttl.map(|t| t.as_millis().min(i64::MAX as u128) as i64);
    let mut tallies = vec![Tally::default(); p.groups.len()];
    for &i in &p.order {
        let r = &p.reqs[i];
        let g = p.group_of[i] as usize;
        let now = p.times[i];
        let t = &mut tallies[g];
        t.requests += 1;
        t.prompt_tokens += r.prompt_tokens;
        t.completion_tokens += r.completion_tokens;
        let key = match (spec.kind, slot) {
            (SimKind::None, _) => None,
            (SimKind::Exact, _) => Some(r.key),
            (SimKind::Prefix(_), Some(s)) => r.slots.get(s).copied(),
            (SimKind::Prefix(_), None) => None,
        };
        if let Some(k) = key
            && r.lookup
            && let Some(saved) = cache.lookup(k, r.hash, now)
        {
            t.hits += 1;
            t.tokens_saved += r.prompt_tokens + r.completion_tokens;
            t.usd_saved += saved;
            continue;
        }
        // Forwarded: the provider sees it.
        let price = p.prices[p.model_of[i] as usize].as_ref();
        if price.is_none() {
            t.unpriced += 1;
        }
        let cost_with = |cached: u64, written: u64, written_long: u64| -> f64 {
            price.map_or(0.0, |pr| {
                let cached = cached.min(r.prompt_tokens);
                let written = written.min(r.prompt_tokens - cached);
                pr.cost(&Usage {
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    cached_tokens: cached,
                    cache_write_tokens: written,
                    cache_write_long_tokens: written_long.min(written),
                })
                .usd
            })
        };
        let cost = match &mut sims {
            Some(sims) => {
                // The proxy's learner sees the forwarded request: its key shape and,
                // under `breakpoints = "auto"`, the breakpoint it would place.
                let plan = r.learnable.as_deref().map(|l| {
                    let rules = &rules[p.model_of[i] as usize];
                    let mut count = l;
                    learner.plan_outline(l.scope, &l.outline, now.max(0) as u64, rules, &mut count)
                });
                let shape = plan.map_or(KeyShape::Family, |pl| pl.shape);
                let injected = match (r.policy, plan) {
                    (CachePolicy::Breakpoints { .. }, Some(pl))
                        if pl.decision == Decision::Inject =>
                    {
                        let block = pl.boundary.map(|b| b.block as u32);
                        r.learnable.as_deref().and_then(|l| {
                            l.candidates
                                .iter()
                                .find(|(b, _)| Some(*b) == block)
                                .map(|(_, bp)| *bp)
                        })
                    }
                    _ => None,
                };
                if injected.is_some() {
                    t.injected += 1;
                }
                if plan.is_some_and(|pl| pl.decision == Decision::Caller) {
                    t.caller_breakpoints += 1;
                }
                let mut costs = [[0.0f64; 4]; 2];
                for (bi, row) in sims.iter_mut().enumerate() {
                    for (pi, sim) in row.iter_mut().enumerate() {
                        let (mut cached, mut written, mut long) = (0u64, 0u64, 0u64);
                        for (k, pp) in r.prompts.iter().enumerate() {
                            let route = match (pi, shape) {
                                (3, KeyShape::Conversation) => pp.routes[1],
                                (3, KeyShape::Family) => pp.routes[2],
                                (pi, _) => pp.routes[pi],
                            };
                            let at = now.max(0) as u64;
                            let o = match r.policy {
                                CachePolicy::Blocks(retention) => {
                                    sim.serve_parts(pp.tokens, &pp.blocks, route, retention, at)
                                }
                                CachePolicy::Breakpoints { mode, ttl } => {
                                    match injected.filter(|_| bi == 1 && k == 0) {
                                        Some(bp) => {
                                            let mut list = pp.breakpoints.to_vec();
                                            let at_pos =
                                                list.partition_point(|b| b.tokens <= bp.tokens);
                                            list.insert(at_pos, bp);
                                            sim.serve_breakpoint_list(
                                                pp.tokens, &list, route, mode, ttl, at,
                                            )
                                        }
                                        None => sim.serve_breakpoint_list(
                                            pp.tokens,
                                            &pp.breakpoints,
                                            route,
                                            mode,
                                            ttl,
                                            at,
                                        ),
                                    }
                                }
                            };
                            cached += o.cached_tokens;
                            written += o.cache_write_tokens;
                            long += o.cache_write_12h_tokens;
                        }
                        let cached = cached.min(r.prompt_tokens);
                        let c = cost_with(cached, written, long);
                        let pr = &mut t.provider[bi][pi];
                        pr.prompt_tokens += r.prompt_tokens;
                        pr.cached_tokens += cached;
                        pr.cache_write_tokens += written.min(r.prompt_tokens - cached);
                        pr.usd_spent += c;
                        costs[bi][pi] = c;
                    }
                }
                let gs = &p.group_sims[g];
                costs[gs.breakpoints][gs.policy]
            }
            None => cost_with(r.logged_cached, 0, 0),
        };
        t.usd_spent += cost;
        if let Some(k) = key
            && r.storable
        {
            let ttl = ttl_override.unwrap_or(p.group_sims[g].ttl_ms);
            if ttl > 0 {
                cache.store(k, r.hash, now.saturating_add(ttl), cost);
            }
        }
    }
    (tallies, cache.evictions)
}

fn report(
    path: &Path,
    p: &Prepared,
    runs: Vec<SpecRun>,
    bad: &BadLines,
    opts: &ReplayOptions,
) -> ReplayReport {
    let provider = opts.provider.is_some();
    let mut overall = Vec::new();
    let mut per_group: Vec<Vec<SimResult>> = vec![Vec::new(); p.groups.len()];
    for (spec, (tallies, evictions)) in opts.specs.iter().zip(&runs) {
        let mut sum = Tally::default();
        for (g, t) in tallies.iter().enumerate() {
            sum.add(t);
            per_group[g].push(t.result(spec, 0, provider));
        }
        overall.push(sum.result(spec, *evictions, provider));
    }
    let mut groups: Vec<GroupResult> = p
        .groups
        .iter()
        .zip(per_group)
        .enumerate()
        .map(|(g, (name, results))| GroupResult {
            name: name.clone(),
            requests: results.first().map_or(0, |r| r.requests),
            prompt_cache_key: POLICIES[p.group_sims[g].policy].as_str().to_string(),
            breakpoints: BREAKPOINTS[p.group_sims[g].breakpoints]
                .as_str()
                .to_string(),
            results,
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let mut unpriced: Vec<String> = p
        .models
        .iter()
        .zip(&p.prices)
        .filter(|(_, price)| price.is_none())
        .map(|(m, _)| m.clone())
        .collect();
    unpriced.sort();
    let logged = p.reqs.iter().filter(|r| r.usage_logged).count() as u64;
    let pc = opts.provider.clone().unwrap_or_default();
    ReplayReport {
        schema: SCHEMA,
        input: ReplayInput {
            path: path.display().to_string(),
            requests: p.reqs.len() as u64,
            bad_lines: bad.count,
            first_ts: p.reqs.iter().filter_map(|r| r.ts_ms).min().map(format_ts),
            last_ts: p.reqs.iter().filter_map(|r| r.ts_ms).max().map(format_ts),
            untimed: p.reqs.iter().filter(|r| r.ts_ms.is_none()).count() as u64,
            usage_logged: logged,
            usage_estimated: p.reqs.len() as u64 - logged,
            unpriced_models: unpriced,
        },
        settings: ReplaySettings {
            provider_simulation: provider,
            machines: pc.machines,
            overflow_rpm: pc.overflow_rpm,
            idle_ttl_s: pc.idle_ttl.as_secs_f64(),
            seed: opts.seed,
        },
        overall,
        groups,
    }
}

impl ReplayReport {
    /// The side-by-side table for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let i = &self.input;
        let _ = writeln!(
            o,
            "{}: {} requests{}{}",
            i.path,
            i.requests,
            match (&i.first_ts, &i.last_ts) {
                (Some(a), Some(b)) => format!(", {a} .. {b}"),
                _ => String::new(),
            },
            if i.bad_lines > 0 {
                format!(" ({} malformed lines skipped)", i.bad_lines)
            } else {
                String::new()
            }
        );
        if i.usage_estimated > 0 {
            let _ = writeln!(
                o,
                "  {} requests without logged usage: prompt tokens counted, completion tokens unknown (0)",
                i.usage_estimated
            );
        }
        if !i.unpriced_models.is_empty() {
            let _ = writeln!(
                o,
                "  no price for {}: their tokens count, their dollars do not",
                i.unpriced_models.join(", ")
            );
        }
        if self.settings.provider_simulation {
            let _ = writeln!(
                o,
                "  provider cache simulated: {} machines, overflow past {} requests/min, {}s idle",
                self.settings.machines, self.settings.overflow_rpm, self.settings.idle_ttl_s
            );
        }
        let _ = writeln!(o, "\noverall");
        table(&mut o, &self.overall, self.settings.provider_simulation);
        provider_table(&mut o, &self.overall);
        for g in &self.groups {
            let _ = writeln!(
                o,
                "\nstrategy {} ({} requests, prompt_cache_key = {}, breakpoints = {})",
                g.name, g.requests, g.prompt_cache_key, g.breakpoints
            );
            table(&mut o, &g.results, self.settings.provider_simulation);
            provider_table(&mut o, &g.results);
        }
        o
    }
}

/// The provider's figures of the first spec by `prompt_cache_key` policy and
/// `breakpoints` setting: cached share, tokens written, dollars with writes.
fn provider_table(o: &mut String, rows: &[SimResult]) {
    use std::fmt::Write as _;
    let Some((r, p)) = rows
        .first()
        .and_then(|r| r.provider.as_ref().map(|p| (r, p)))
    else {
        return;
    };
    let _ = writeln!(
        o,
        "  provider prompt cache under {} (forwarded requests; {} with the proxy's breakpoint, {} with the caller's own):",
        r.strategy, p.breakpoints_injected, p.caller_breakpoints
    );
    let _ = writeln!(
        o,
        "    {:<17} {:<12} {:>13} {:>15} {:>15} {:>12}",
        "prompt_cache_key",
        "breakpoints",
        "cached share",
        "cached tokens",
        "written tokens",
        "$ spent"
    );
    let b = &p.breakpoints_auto;
    for (name, off, auto) in [
        ("off", &p.off, &b.off),
        ("conversation", &p.conversation, &b.conversation),
        ("family", &p.family, &b.family),
        ("auto", &p.auto, &b.auto),
    ] {
        for (bp, x) in [("off", off), ("auto", auto)] {
            let _ = writeln!(
                o,
                "    {:<17} {:<12} {:>12.1}% {:>15} {:>15} {:>12.4}",
                name,
                bp,
                x.cached_share * 100.0,
                x.cached_tokens,
                x.cache_write_tokens,
                x.usd_spent
            );
        }
    }
}

fn table(o: &mut String, rows: &[SimResult], provider: bool) {
    use std::fmt::Write as _;
    let w = rows
        .iter()
        .map(|r| r.strategy.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = write!(
        o,
        "  {:<w$}  {:>9}  {:>9}  {:>8}  {:>13}  {:>11}  {:>11}",
        "strategy", "requests", "hits", "hit rate", "tokens saved", "$ spent", "$ saved"
    );
    if provider {
        let _ = write!(
            o,
            "  provider cached share: off / conversation / family / auto"
        );
    }
    o.push('\n');
    for r in rows {
        let _ = write!(
            o,
            "  {:<w$}  {:>9}  {:>9}  {:>7.1}%  {:>13}  {:>11.4}  {:>11.4}",
            r.strategy,
            r.requests,
            r.hits,
            r.hit_rate * 100.0,
            r.tokens_saved,
            r.usd_spent,
            r.usd_saved
        );
        if let Some(p) = &r.provider {
            let _ = write!(
                o,
                "  {:>5.1}% / {:>5.1}% / {:>5.1}% / {:>5.1}%",
                p.off.cached_share * 100.0,
                p.conversation.cached_share * 100.0,
                p.family.cached_share * 100.0,
                p.auto.cached_share * 100.0
            );
        }
        o.push('\n');
    }
}
