//! `prefixcache analyze`: per strategy and per prefix family, the prompt lengths, the
//! prefix every request shares, the stable prefix most of them share, the article's
//! `optimal_granularity` and our recommended granularity, the share a provider could
//! cache, and the lint findings. The report ([`Analysis`]) is also the baseline format
//! of the deploy gate ([`crate::gate`]). Definitions: `docs/analysis.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use prefixcache_core::breakpoint::blocks::Outline;
use prefixcache_core::breakpoint::learn::BlockTokens;
use prefixcache_core::breakpoint::{Decision, Learner, Rules, Scope, TokenRates, request_blocks};
use prefixcache_core::key::{FamilyId, normalize_whitespace};
use prefixcache_core::lint::{
    self, Finding, PROVIDER_MIN_CACHEABLE_TOKENS, Rule, Severity, WhitespaceDrift,
};
use prefixcache_core::prefix::{FamilyMemo, PrefixScope, prefix_text, scoped_text};
use prefixcache_core::pricing::PriceTable;
use prefixcache_core::provider::cache::CacheRules;
use prefixcache_core::provider::prompt::request_prompt_seqs;
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::{Encoding, FirstTokens};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::AnalysisError;
use crate::findings::{FindingSummary, Summary};
use crate::input::{BadLines, LogInput, format_ts, parse_line};
use crate::parallel::map_lines;
use crate::prefixes::{
    LengthStats, MAX_PREFIX_TOKENS, REUSE_TOLERANCE, STABLE_SUPPORT, Sorted, Stable,
};
use crate::progress::Progress;
use crate::traffic::Traffic;

/// Version of the `--json` schema ([`Analysis::schema`]); bumped on incompatible change.
pub const SCHEMA: &str = "prefixcache.analyze/1";
/// Families listed per strategy: those with at least this share of its requests...
pub const FAMILY_MIN_SHARE: f64 = 0.01;
/// ...and at most this many, largest first.
pub const FAMILIES_LISTED: usize = 50;
/// Tokens of a stable prefix's end shown as text in reports.
const TAIL_TOKENS: usize = 12;

/// How to analyze.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub traffic: Traffic,
    /// Malformed lines tolerated before the run fails.
    pub max_bad_lines: u64,
    pub threads: usize,
}

/// The report: what `analyze --json` prints and `--baseline` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub schema: String,
    pub input: InputSummary,
    /// The definitions' constants, so a report says how it was computed.
    pub settings: Settings,
    pub strategies: Vec<StrategyReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    pub path: String,
    pub requests: u64,
    pub bad_lines: u64,
    #[serde(default)]
    pub first_ts: Option<String>,
    #[serde(default)]
    pub last_ts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Share of requests a stable prefix must exceed.
    pub stable_support: f64,
    /// Family hit rate the recommended granularity may give up.
    pub reuse_tolerance: f64,
    /// Tokens per request kept for prefix statistics.
    pub max_prefix_tokens: usize,
    /// The provider's minimum cacheable prefix.
    pub provider_min_tokens: usize,
}

/// One strategy (or service) of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyReport {
    pub name: String,
    pub requests: u64,
    /// Of all requests in the log.
    pub share: f64,
    /// Encoding the tokens are counted in (the most common model's).
    pub encoding: String,
    #[serde(default)]
    pub models: BTreeMap<String, u64>,
    /// The strategy's `prefix_granularity` (families are computed with it).
    pub granularity: usize,
    /// Prefix-text token counts.
    pub tokens: LengthStats,
    /// Tokens every request of the strategy starts with.
    pub shared_prefix_tokens: usize,
    pub stable_prefix: PrefixReport,
    /// The article's `optimal_granularity`: `int(avg tokens × 0.6)`.
    pub optimal_granularity: u64,
    /// The largest granularity whose family hit rate stays within `reuse_tolerance` of
    /// the best.
    pub recommended_granularity: usize,
    pub family_hit_rate: HitRates,
    pub provider_cacheable: Cacheable,
    pub families_total: usize,
    pub families: Vec<FamilyReport>,
    #[serde(default)]
    pub findings: Vec<FindingSummary>,
}

/// A stable prefix: its length, who starts with it, its token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixReport {
    pub length: usize,
    /// Requests (of the strategy or family) that start with it.
    pub requests: u64,
    pub share: f64,
    pub tokens: Vec<u32>,
    /// Its last tokens decoded, for people.
    #[serde(default)]
    pub tail: String,
}

/// Family hit rates at some granularities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HitRates {
    /// At granularity 1: the best any granularity gets.
    pub best: f64,
    pub at_configured: f64,
    pub at_optimal: f64,
    pub at_recommended: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cacheable {
    /// Requests sharing at least the provider's minimum (1024 tokens) with another one.
    pub requests: u64,
    pub share: f64,
}

/// One prefix family of a strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyReport {
    /// First 16 hex characters, as in `x-prefixcache-family`.
    pub id: String,
    pub requests: u64,
    /// Of the strategy's requests.
    pub share: f64,
    pub tokens: LengthStats,
    pub shared_prefix_tokens: usize,
    pub stable_prefix: PrefixReport,
    pub optimal_granularity: u64,
    pub recommended_granularity: usize,
    pub provider_cacheable: Cacheable,
    /// Models with explicit prompt-cache breakpoints (GPT-5.6 and later): what the
    /// proxy's learner makes of the family (`breakpoints = "auto"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakpoint: Option<FamilyBreakpoint>,
}

/// The proxy's learner run over one family's requests in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyBreakpoint {
    /// The latest learned boundary: the block's index, where a breakpoint goes, and the
    /// prompt tokens before it; `None` when the family's requests never shared one.
    pub block: Option<usize>,
    pub path: Option<String>,
    pub tokens: Option<u64>,
    /// Share of the family's requests that reused the prefix of an earlier one.
    pub recurrence: f64,
    /// Requests on which the proxy would place a breakpoint.
    pub injected: u64,
    /// Whether a breakpoint pays on the family's latest request.
    pub pays: bool,
    /// The latest decision (`injected`, `not_recurring`, `below_minimum`, ...).
    pub decision: String,
    /// Expected dollars saved by the breakpoints placed, under the pricing table.
    pub expected_saving_usd: f64,
    /// The family's prompts agree for more tokens than its last shared whole block: the
    /// stable text ends inside a content block, which would need splitting (at about
    /// this many tokens) for a breakpoint to sit where the prompt stops changing.
    pub split_at_tokens: Option<u64>,
}

/// A request's blocks as the breakpoint learner reads them.
struct BreakpointItem {
    scope: Scope,
    outline: Outline,
    /// (block index, prompt tokens through it) of the markable blocks.
    through: Box<[(u32, u64)]>,
}

impl BlockTokens for &BreakpointItem {
    fn through(&mut self, i: usize) -> u64 {
        self.through
            .iter()
            .find(|(b, _)| *b as usize == i)
            .map_or(0, |(_, t)| *t)
    }
}

/// What a request leaves behind for the statistics.
struct Item {
    line: u64,
    ts_ms: Option<i64>,
    group: String,
    model: String,
    encoding: Encoding,
    tokens: Box<[u32]>,
    length: u64,
    family: FamilyId,
    dynamic: Arc<[Finding]>,
    drift: Option<Finding>,
    tools: RawJson,
    /// The structured-output schema as sent (`response_format`, or Responses' `text`).
    schema: RawJson,
    breakpoint: Option<Box<BreakpointItem>>,
}

/// The token sequences of a run, kept for the gate.
#[derive(Debug, Default)]
pub struct Corpus {
    pub groups: BTreeMap<String, CorpusGroup>,
}

#[derive(Debug, Default)]
pub struct CorpusGroup {
    pub encoding: Option<Encoding>,
    pub seqs: Vec<Box<[u32]>>,
}

/// A finished analysis: the report, the sequences behind it, and the skipped lines.
#[derive(Debug)]
pub struct Analyzed {
    pub report: Analysis,
    pub corpus: Corpus,
    pub bad: BadLines,
}

/// Per-thread state of the line workers.
#[derive(Default)]
struct WorkerState {
    strategies: HashMap<String, prefixcache_core::config::Strategy>,
    dynamic: HashMap<FamilyId, Arc<[Finding]>>,
    heads: HeadMemo,
}

/// The settled tokens of static prompt parts (tools, system messages) seen more than
/// once, so each request's prefix text is tokenized only from where its own content
/// starts. Exact: `Encoding::extend_first` with `cut = true` takes only the tokens that
/// every continuation of the static text shares, and encoding resumes from there on the
/// full text (`docs/tokenizer.md`, "the cut rule").
#[derive(Default)]
struct HeadMemo {
    seen: rustc_hash::FxHashSet<u64>,
    heads: rustc_hash::FxHashMap<u64, (Box<str>, FirstTokens)>,
    held: usize,
}

/// Static parts shorter than this are not worth remembering.
const HEAD_MIN_BYTES: usize = 256;
/// Bytes of static text (and its tokens) held per thread before the memo starts over.
const HEAD_MAX_BYTES: usize = 64 << 20;

impl HeadMemo {
    /// The first `n` (at most [`MAX_PREFIX_TOKENS`]) tokens of `full`, whose start is
    /// `head`.
    fn first_tokens(&mut self, enc: Encoding, head: &str, full: &str, n: usize) -> Vec<u32> {
        use std::hash::Hasher as _;
        let n = n.min(MAX_PREFIX_TOKENS);
        if head.len() < HEAD_MIN_BYTES || !full.starts_with(head) {
            return enc.encode_first(full, n);
        }
        let mut h = rustc_hash::FxHasher::default();
        h.write_u8(enc as u8);
        h.write(head.as_bytes());
        let id = h.finish();
        let mut acc = match self.heads.get(&id) {
            Some((text, acc)) if **text == *head => acc.clone(),
            _ => {
                // Remembered up to the largest window asked for, whatever this call's `n`.
                let mut acc = FirstTokens::default();
                enc.extend_first(&mut acc, head, MAX_PREFIX_TOKENS, true);
                if !self.seen.insert(id) {
                    if self.held + head.len() > HEAD_MAX_BYTES {
                        self.heads.clear();
                        self.seen.clear();
                        self.held = 0;
                    }
                    self.held += head.len() + acc.tokens.len() * 4;
                    self.heads.insert(id, (head.into(), acc.clone()));
                }
                acc
            }
        };
        if acc.tokens.len() >= n {
            acc.tokens.truncate(n);
            return acc.tokens;
        }
        enc.extend_first(&mut acc, full, n, false);
        acc.tokens
    }
}

/// Reads and analyzes a log.
pub fn analyze(
    path: &Path,
    opts: &AnalyzeOptions,
    progress: &Progress,
) -> Result<Analyzed, AnalysisError> {
    let mut input = LogInput::open(path)?;
    let memo = FamilyMemo::default();
    let drift = WhitespaceDrift::default();
    let traffic = &opts.traffic;
    let (items, bad) = map_lines(
        &mut input,
        opts.threads,
        WorkerState::default,
        |w, line, n| item(w, traffic, &memo, &drift, line, n),
        progress,
    )?;
    bad.check(path, opts.max_bad_lines)?;
    if items.is_empty() {
        return Err(AnalysisError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(summarize(path, items, bad, traffic, opts.threads))
}

fn item(
    w: &mut WorkerState,
    traffic: &Traffic,
    memo: &FamilyMemo,
    drift: &WhitespaceDrift,
    line: &[u8],
    n: u64,
) -> Result<Option<Item>, String> {
    let Some(rec) = parse_line(line, n)? else {
        return Ok(None);
    };
    let group = traffic.group_of(&rec);
    let strategy = w
        .strategies
        .entry(group.clone())
        .or_insert_with(|| traffic.strategy(&group));
    let model = rec.request_model().to_string();
    let params = traffic.family_params(strategy, &model);
    let enc = params.encoding;
    let mut text = prefix_text(rec.route, &rec.body);
    let mut head = scoped_text(rec.route, &rec.body, PrefixScope::Static).unwrap_or_default();
    if params.normalize_whitespace {
        text = normalize_whitespace(&text).into_owned();
        head = normalize_whitespace(&head).into_owned();
    }
    let tokens = w.heads.first_tokens(enc, &head, &text, MAX_PREFIX_TOKENS);
    let length = if tokens.len() < MAX_PREFIX_TOKENS {
        tokens.len() as u64
    } else {
        enc.count(&text) as u64
    };
    let family = memo.family(rec.route, &rec.body, &params);
    let dynamic = w
        .dynamic
        .entry(family.id)
        .or_insert_with(|| lint::dynamic_prefix(&family).into())
        .clone();
    // Within the strategy first; then across strategies, so two services sending one
    // prompt formatted differently are caught too.
    let drift = drift
        .observe(group.as_str(), &family)
        .or_else(|| drift.observe(ALL_STRATEGIES, &family));
    let (tools, schema) = raw_definitions(line);
    let breakpoint = (matches!(rec.route, Route::ChatCompletions | Route::Responses)
        && CacheRules::for_model(&model) == CacheRules::Breakpoints)
        .then(|| {
            let outline = request_blocks(rec.route, &rec.body).outline();
            let seqs = request_prompt_seqs(rec.route, &rec.body, enc);
            let units = seqs.first().map_or(&[][..], |s| s.units.as_slice());
            let through = outline
                .marks
                .iter()
                .enumerate()
                .filter_map(|(b, m)| {
                    let m = (*m)?;
                    units
                        .iter()
                        .find(|u| u.item == m.item && u.part == m.part)
                        .map(|u| (b as u32, u.pos))
                })
                .collect();
            let ns = crate::traffic::namespace_of(rec.tenant);
            let mut namespace = [0u8; 16];
            namespace.copy_from_slice(&ns.as_bytes()[..16]);
            let mut fam = [0u8; 16];
            fam.copy_from_slice(&family.id.as_bytes()[..16]);
            Box::new(BreakpointItem {
                scope: Scope {
                    namespace,
                    family: fam,
                },
                outline,
                through,
            })
        });
    Ok(Some(Item {
        line: n,
        ts_ms: rec.ts_ms,
        group,
        model,
        encoding: enc,
        tokens: tokens.into(),
        length,
        family: family.id,
        dynamic,
        drift,
        tools,
        schema,
        breakpoint,
    }))
}

/// The whitespace-drift key under which every strategy's prefixes are also compared (a
/// name no strategy can have: it starts with a NUL).
const ALL_STRATEGIES: &str = "\u{0}all strategies";

/// A JSON value's bytes as sent, when present and not `null`.
type RawJson = Option<Box<[u8]>>;

/// The `tools` array and the structured-output schema (`response_format`, or the
/// Responses API's `text`) of a logged request exactly as they were sent: key order
/// matters for `unstable-tools`, and the parsed body has lost it.
pub(crate) fn raw_definitions(line: &[u8]) -> (RawJson, RawJson) {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default)]
        request: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tools: Option<&'a RawValue>,
        #[serde(borrow, default)]
        response_format: Option<&'a RawValue>,
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
    }
    let has = |name: &[u8]| memchr::memmem::find(line, name).is_some();
    if !(has(b"\"tools\"") || has(b"\"response_format\"") || has(b"\"text\"")) {
        return (None, None);
    }
    let Ok(outer) = serde_json::from_slice::<Fields<'_>>(line) else {
        return (None, None);
    };
    let f = match outer.request {
        Some(r) => match serde_json::from_str::<Fields<'_>>(r.get()) {
            Ok(f) => f,
            Err(_) => return (None, None),
        },
        None => outer,
    };
    let own = |v: Option<&RawValue>| -> RawJson {
        v.filter(|r| r.get() != "null")
            .map(|r| r.get().as_bytes().into())
    };
    (own(f.tools), own(f.response_format.or(f.text)))
}

fn summarize(
    path: &Path,
    items: Vec<Item>,
    bad: BadLines,
    traffic: &Traffic,
    threads: usize,
) -> Analyzed {
    let total = items.len();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        groups.entry(it.group.clone()).or_default().push(i);
    }
    let (first_ts, last_ts) = (
        items.iter().filter_map(|i| i.ts_ms).min(),
        items.iter().filter_map(|i| i.ts_ms).max(),
    );
    // Strategies are independent: each thread takes the next one.
    let list: Vec<(&String, &Vec<usize>)> = groups.iter().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, StrategyReport)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, list.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, idx)) = list.get(i) else {
                            return out;
                        };
                        out.push((i, strategy_report(name, idx, &items, total, traffic)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker only panics on a bug; its strategies are then missing.
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let strategies: Vec<StrategyReport> = done.into_iter().map(|(_, r)| r).collect();
    let mut corpus = Corpus::default();
    let mut items = items;
    for (name, idx) in groups {
        let group = corpus.groups.entry(name).or_default();
        group.encoding = majority_encoding(idx.iter().map(|&i| items[i].encoding));
        for i in idx {
            group.seqs.push(std::mem::take(&mut items[i].tokens));
        }
    }
    Analyzed {
        report: Analysis {
            schema: SCHEMA.to_string(),
            input: InputSummary {
                path: path.display().to_string(),
                requests: total as u64,
                bad_lines: bad.count,
                first_ts: first_ts.map(format_ts),
                last_ts: last_ts.map(format_ts),
            },
            settings: Settings {
                stable_support: STABLE_SUPPORT,
                reuse_tolerance: REUSE_TOLERANCE,
                max_prefix_tokens: MAX_PREFIX_TOKENS,
                provider_min_tokens: PROVIDER_MIN_CACHEABLE_TOKENS,
            },
            strategies,
            gate: None,
        },
        corpus,
        bad,
    }
}

fn majority_encoding(encs: impl Iterator<Item = Encoding>) -> Option<Encoding> {
    let mut counts: Vec<(Encoding, usize)> = Vec::new();
    for e in encs {
        match counts.iter_mut().find(|(x, _)| *x == e) {
            Some((_, c)) => *c += 1,
            None => counts.push((e, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(e, _)| e)
}

fn prefix_report(enc: Encoding, seqs: &[&[u32]], st: Stable, n: usize) -> PrefixReport {
    let tokens = seqs
        .get(st.example)
        .map_or(&[][..], |s| &s[..st.len.min(s.len())]);
    let tail = &tokens[tokens.len().saturating_sub(TAIL_TOKENS)..];
    PrefixReport {
        length: st.len,
        requests: st.count as u64,
        share: ratio(st.count as u64, n as u64),
        tokens: tokens.to_vec(),
        tail: String::from_utf8_lossy(&enc.decode_bytes(tail)).into_owned(),
    }
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn strategy_report(
    name: &str,
    idx: &[usize],
    items: &[Item],
    total: usize,
    traffic: &Traffic,
) -> StrategyReport {
    let n = idx.len();
    let strategy = traffic.strategy(name);
    let enc =
        majority_encoding(idx.iter().map(|&i| items[i].encoding)).unwrap_or(Encoding::O200kBase);
    let mut models: BTreeMap<String, u64> = BTreeMap::new();
    for &i in idx {
        *models.entry(items[i].model.clone()).or_default() += 1;
    }
    let seqs: Vec<&[u32]> = idx.iter().map(|&i| &*items[i].tokens).collect();
    let sorted = Sorted::new(&seqs);
    let mut lengths: Vec<u64> = idx.iter().map(|&i| items[i].length).collect();
    let tokens = LengthStats::of(&mut lengths);
    let stable = sorted.stable(0..n);
    let optimal = tokens.article_granularity();
    let recommended = sorted.recommended(0..n, REUSE_TOLERANCE, MAX_PREFIX_TOKENS);

    // Per request (by position in `idx`): does it share >= 1024 tokens with another?
    let shared_any = sorted.shared_with_any();
    let mut cacheable = vec![false; n];
    for (p, &local) in sorted.order.iter().enumerate() {
        cacheable[local] = shared_any[p] >= PROVIDER_MIN_CACHEABLE_TOKENS;
    }
    let cacheable_count = cacheable.iter().filter(|c| **c).count() as u64;

    // Families.
    let mut fams: HashMap<FamilyId, Vec<usize>> = HashMap::new();
    for (local, &i) in idx.iter().enumerate() {
        fams.entry(items[i].family).or_default().push(local);
    }
    let families_total = fams.len();
    let mut fam_list: Vec<(FamilyId, Vec<usize>)> = fams.into_iter().collect();
    fam_list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let families: Vec<FamilyReport> = fam_list
        .iter()
        .filter(|(_, m)| ratio(m.len() as u64, n as u64) >= FAMILY_MIN_SHARE)
        .take(FAMILIES_LISTED)
        .map(|(id, members)| {
            let fseqs: Vec<&[u32]> = members.iter().map(|&l| seqs[l]).collect();
            let fs = Sorted::new(&fseqs);
            let m = members.len();
            let mut flen: Vec<u64> = members.iter().map(|&l| items[idx[l]].length).collect();
            let ftokens = LengthStats::of(&mut flen);
            let fcache = members.iter().filter(|&&l| cacheable[l]).count() as u64;
            let stable = fs.stable(0..m);
            let breakpoint = family_breakpoint(members, idx, items, stable.len as u64);
            FamilyReport {
                id: id.short_hex(),
                requests: m as u64,
                share: ratio(m as u64, n as u64),
                tokens: ftokens,
                shared_prefix_tokens: fs.shared(0..m),
                stable_prefix: prefix_report(enc, &fseqs, stable, m),
                optimal_granularity: ftokens.article_granularity(),
                recommended_granularity: fs.recommended(0..m, REUSE_TOLERANCE, MAX_PREFIX_TOKENS),
                provider_cacheable: Cacheable {
                    requests: fcache,
                    share: ratio(fcache, m as u64),
                },
                breakpoint,
            }
        })
        .collect();

    // Findings: the core rules, per request, summarized.
    let mut summary = Summary::default();
    let mut tools: Vec<&[u8]> = Vec::new();
    let mut schemas: Vec<&[u8]> = Vec::new();
    let (mut first_tools_line, mut first_schema_line) = (0, 0);
    for &i in idx {
        let it = &items[i];
        for f in it.dynamic.iter() {
            summary.add(f, it.line);
        }
        if let Some(f) = &it.drift {
            summary.add(f, it.line);
        }
        if let Some(t) = &it.tools {
            if tools.is_empty() {
                first_tools_line = it.line;
            }
            tools.push(t);
        }
        if let Some(t) = &it.schema {
            if schemas.is_empty() {
                first_schema_line = it.line;
            }
            schemas.push(t);
        }
    }
    for f in lint::unstable_tools(tools) {
        summary.add(&f, first_tools_line);
    }
    for f in lint::unstable_tools(schemas) {
        summary.add(&f, first_schema_line);
    }
    // A family whose stable text ends inside a content block: the template needs that
    // block split for a breakpoint to sit where the prompt stops changing.
    for (report, (_, members)) in families.iter().zip(&fam_list) {
        if let Some(t) = report.breakpoint.as_ref().and_then(|b| b.split_at_tokens) {
            let first = members.first().map_or(0, |&l| items[idx[l]].line);
            summary.add_many(
                &breakpoint_split_finding(&report.id, t, report.breakpoint.as_ref()),
                first,
                members.len() as u64,
            );
        }
    }
    if stable.len < PROVIDER_MIN_CACHEABLE_TOKENS {
        let first = idx.first().map_or(0, |&i| items[i].line);
        summary.add_many(
            &short_prefix_finding(stable.len, ratio(stable.count as u64, n as u64)),
            first,
            n as u64,
        );
    }

    let reuse = |g: usize| sorted.reuse(0..n, g.max(1));
    StrategyReport {
        name: name.to_string(),
        requests: n as u64,
        share: ratio(n as u64, total as u64),
        encoding: enc.as_str().to_string(),
        models,
        granularity: strategy.prefix_granularity,
        tokens,
        shared_prefix_tokens: sorted.shared(0..n),
        stable_prefix: prefix_report(enc, &seqs, stable, n),
        optimal_granularity: optimal,
        recommended_granularity: recommended,
        family_hit_rate: HitRates {
            best: reuse(1),
            at_configured: reuse(strategy.prefix_granularity),
            at_optimal: reuse(optimal as usize),
            at_recommended: reuse(recommended),
        },
        provider_cacheable: Cacheable {
            requests: cacheable_count,
            share: ratio(cacheable_count, n as u64),
        },
        families_total,
        families,
        findings: summary.finish(),
    }
}

/// The proxy's breakpoint learner over one family's requests (those to models with
/// explicit breakpoints), in time order; `None` when it has none.
fn family_breakpoint(
    members: &[usize],
    idx: &[usize],
    items: &[Item],
    stable_tokens: u64,
) -> Option<FamilyBreakpoint> {
    let mut reqs: Vec<&Item> = members
        .iter()
        .map(|&l| &items[idx[l]])
        .filter(|it| it.breakpoint.is_some())
        .collect();
    if reqs.is_empty() {
        return None;
    }
    reqs.sort_by_key(|it| (it.ts_ms.unwrap_or(0), it.line));
    let prices = PriceTable::builtin();
    let mut learner = Learner::default();
    let mut out = FamilyBreakpoint {
        block: None,
        path: None,
        tokens: None,
        recurrence: 0.0,
        injected: 0,
        pays: false,
        decision: String::new(),
        expected_saving_usd: 0.0,
        split_at_tokens: None,
    };
    for (k, it) in reqs.iter().enumerate() {
        let Some(bp) = it.breakpoint.as_deref() else {
            continue;
        };
        let rates = prices
            .lookup(&it.model)
            .map_or(TokenRates::OPENAI_BREAKPOINTS, |(_, p)| {
                TokenRates::from_rates(&p.base)
            });
        // Untimed logs: one request a second, as replay spaces them.
        let now = it.ts_ms.unwrap_or(k as i64 * 1000).max(0) as u64;
        let mut count = bp;
        let plan = learner.plan_outline(
            bp.scope,
            &bp.outline,
            now,
            &Rules::openai(rates),
            &mut count,
        );
        out.recurrence = plan.recurrence;
        out.decision = plan.decision.as_str().to_string();
        out.pays = plan.decision == Decision::Inject;
        if let Some(b) = plan.boundary {
            out.block = Some(b.block);
            out.path = Some(b.path.to_string());
            out.tokens = Some(b.tokens);
        }
        if plan.decision == Decision::Inject {
            out.injected += 1;
            out.expected_saving_usd += plan.expected_value / 1e6;
        }
    }
    // The stable text runs well past the last whole shared block (or there is none):
    // it ends inside a block.
    let boundary = out.tokens.unwrap_or(0);
    if stable_tokens >= PROVIDER_MIN_CACHEABLE_TOKENS as u64 && stable_tokens >= boundary + 256 {
        out.split_at_tokens = Some(stable_tokens);
    }
    Some(out)
}

/// The `breakpoint-split` rule: family `id`'s prompts agree for `tokens` tokens, past
/// the last whole content block they share.
fn breakpoint_split_finding(id: &str, tokens: u64, b: Option<&FamilyBreakpoint>) -> Finding {
    let last = match b.and_then(|b| b.path.as_ref().zip(b.tokens)) {
        Some((path, t)) => format!("the last whole block they share ends at {t} tokens ({path})"),
        None => "they share no whole content block".to_string(),
    };
    Finding {
        rule: Rule::BreakpointSplit,
        severity: Severity::Info,
        kind: "breakpoint-split",
        message: format!(
            "family {id}: the prompts agree for {tokens} tokens, but {last}; a cache \
             breakpoint can only sit at the end of a content block"
        ),
        span: 0..0,
        token_span: 0..tokens as usize,
        excerpt: String::new(),
        fix: "split the content block where the shared text ends: the fixed text in one \
              content part, the changing text in the next, so the stable prefix ends on a \
              block boundary",
    }
}

/// The `short-prefix` rule applied to a log: the prefix most requests share is under
/// the provider's minimum, so the provider's cache cannot serve this strategy.
pub(crate) fn short_prefix_finding(len: usize, share: f64) -> Finding {
    Finding {
        rule: Rule::ShortPrefix,
        severity: Severity::Info,
        kind: "short-prefix",
        message: format!(
            "the prefix most requests share ({:.0}% of them) is {len} tokens; the provider \
             caches a prompt only when its first {PROVIDER_MIN_CACHEABLE_TOKENS} tokens repeat",
            share * 100.0
        ),
        span: 0..0,
        token_span: 0..len,
        excerpt: String::new(),
        fix: "put more of the static content (instructions, examples, tool schemas) first, \
              to reach 1024 tokens, or accept no provider discount",
    }
}

impl Analysis {
    /// The report for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{}: {} requests in {} strateg{}{}{}",
            self.input.path,
            self.input.requests,
            self.strategies.len(),
            if self.strategies.len() == 1 {
                "y"
            } else {
                "ies"
            },
            match (&self.input.first_ts, &self.input.last_ts) {
                (Some(a), Some(b)) => format!(", {a} .. {b}"),
                _ => String::new(),
            },
            if self.input.bad_lines > 0 {
                format!(" ({} malformed lines skipped)", self.input.bad_lines)
            } else {
                String::new()
            }
        );
        for s in &self.strategies {
            let _ = writeln!(
                o,
                "\nstrategy {}: {} requests ({:.1}%), {}, prefix_granularity {}",
                s.name,
                s.requests,
                s.share * 100.0,
                s.encoding,
                s.granularity
            );
            let t = &s.tokens;
            let _ = writeln!(
                o,
                "  prompt tokens       avg {:.1}, p50 {}, p95 {} (min {}, max {})",
                t.avg, t.p50, t.p95, t.min, t.max
            );
            let _ = writeln!(o, "  shared by all       {} tokens", s.shared_prefix_tokens);
            let _ = writeln!(
                o,
                "  stable prefix       {} tokens, {:.1}% of requests start with it (…{:?})",
                s.stable_prefix.length,
                s.stable_prefix.share * 100.0,
                s.stable_prefix.tail
            );
            let h = &s.family_hit_rate;
            let _ = writeln!(
                o,
                "  granularity         article optimal_granularity {} (family hit rate {:.1}%), recommended {} ({:.1}%; best {:.1}%, configured {} {:.1}%)",
                s.optimal_granularity,
                h.at_optimal * 100.0,
                s.recommended_granularity,
                h.at_recommended * 100.0,
                h.best * 100.0,
                s.granularity,
                h.at_configured * 100.0
            );
            let _ = writeln!(
                o,
                "  provider-cacheable  {} requests ({:.1}%) share >= {} tokens with another request",
                s.provider_cacheable.requests,
                s.provider_cacheable.share * 100.0,
                self.settings.provider_min_tokens
            );
            let _ = writeln!(
                o,
                "  families            {} at {} tokens{}",
                s.families_total,
                s.granularity,
                if s.families.len() < s.families_total {
                    format!(" ({} with >= 1% of requests shown)", s.families.len())
                } else {
                    String::new()
                }
            );
            for f in &s.families {
                let _ = writeln!(
                    o,
                    "    {}  {:>7} ({:>5.1}%)  avg {:.0}  shared {}  stable {}  optimal {}  recommended {}  cacheable {:.0}%",
                    f.id,
                    f.requests,
                    f.share * 100.0,
                    f.tokens.avg,
                    f.shared_prefix_tokens,
                    f.stable_prefix.length,
                    f.optimal_granularity,
                    f.recommended_granularity,
                    f.provider_cacheable.share * 100.0
                );
                if let Some(b) = &f.breakpoint {
                    let place = match (&b.path, b.tokens) {
                        (Some(p), Some(t)) => {
                            format!("block {} ({p}) at {t} tokens", b.block.unwrap_or(0))
                        }
                        _ => "no shared block".to_string(),
                    };
                    let _ = writeln!(
                        o,
                        "      breakpoint: {place}; recurrence {:.2}; {} ({}); {} placed, expected ${:.4} saved",
                        b.recurrence,
                        if b.pays { "pays" } else { "does not pay" },
                        b.decision,
                        b.injected,
                        b.expected_saving_usd
                    );
                    if let Some(t) = b.split_at_tokens {
                        let _ = writeln!(
                            o,
                            "      the prompts agree for {t} tokens, past the last whole block they share: split the content block where the shared text ends (a content part of its own) so a breakpoint can sit there"
                        );
                    }
                }
            }
            if s.findings.is_empty() {
                let _ = writeln!(o, "  findings            none");
            } else {
                let _ = writeln!(o, "  findings");
                for f in &s.findings {
                    let _ = writeln!(
                        o,
                        "    {} {} ({}): {} requests, first at line {}: {}",
                        f.severity, f.rule, f.kind, f.count, f.first_line, f.message
                    );
                    let _ = writeln!(o, "      fix: {}", f.fix);
                }
            }
        }
        if let Some(g) = &self.gate {
            o.push('\n');
            o.push_str(&g.to_text());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens resumed from a remembered static part equal tokens of the whole text, for
    /// static parts whose last pieces merge with what follows (spaces, newlines, words).
    #[test]
    fn remembered_heads_give_the_tokens_of_the_whole_text() {
        let enc = Encoding::O200kBase;
        let mut memo = HeadMemo::default();
        let statics = [
            format!("system\n{}\n", "Review the contract carefully. ".repeat(20)),
            format!("system\n{}   ", "Answer in French please ".repeat(15)),
            format!("system\n{}\n\n", "naïve café déjà vu 日本語 ".repeat(12)),
        ];
        let tails = [
            "user\nhello\n",
            "  user\n\n\nx",
            "user\n日本\n",
            "",
            "\n\nuser\nok",
        ];
        for round in 0..3 {
            for head in &statics {
                for tail in tails {
                    let full = format!("{head}{tail}");
                    for n in [5, 100, MAX_PREFIX_TOKENS] {
                        let got = memo.first_tokens(enc, head, &full, n);
                        assert_eq!(
                            got,
                            enc.encode_first(&full, n),
                            "round {round}, n {n}: {full:?}"
                        );
                    }
                }
            }
        }
        assert!(
            !memo.heads.is_empty(),
            "static parts seen twice are remembered"
        );
    }
}
