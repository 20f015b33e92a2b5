//! Learning where each prefix family's prompt stops changing, and deciding per request
//! whether a breakpoint there pays.
//!
//! State is kept per scope (a tenant namespace and a prefix family), so no tenant's
//! traffic informs another's placement. For each scope the learner remembers its latest
//! requests' block chains ([`super::blocks`]). A request's **boundary** is its deepest
//! block that can carry a breakpoint and whose prefix it shares, byte for byte, with a
//! recent request of the scope (within the breakpoint's lifetime) that is not an earlier
//! turn of its own conversation: the part of the prompt that other requests reuse. Earlier
//! turns are left out because the provider already reads them (the implicit breakpoint of
//! the previous turn), and counting them would put the boundary on each conversation's
//! own history instead of on what the conversations share.
//!
//! The scope's **recurrence** is the share of its requests that found such a shared
//! prefix: the probability that a prefix written now is read. [`super::cost`] turns it
//! into money. The scope's **shape** (a growing conversation busy enough to overflow one
//! cache key, or not) picks the `prompt_cache_key` under `prompt_cache_key = "auto"`.

use std::collections::{HashMap, VecDeque};

use super::blocks::{BlockPath, Blocks, Content, Outline};
use super::cost::{Baseline, TokenRates, expected_value};
use crate::tokenizer::Encoding;

/// Scopes remembered; past it, the one idle longest is forgotten.
pub const DEFAULT_MAX_SCOPES: usize = 4096;
/// Requests remembered per scope.
pub const RECENT: usize = 8;
/// Counts are halved past this many requests, so a scope's figures follow its recent
/// traffic.
const WINDOW: u32 = 64;
/// Token counts of stable prefixes remembered per scope.
const TOKEN_MEMO: usize = 64;
/// Conversations whose key shape is remembered per scope.
const CONVERSATIONS: usize = 256;

/// Whose traffic a decision learns from: a tenant namespace and a prefix family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    pub namespace: [u8; 16],
    pub family: [u8; 16],
}

/// The rules a decision is made under (the provider's and the model's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The shortest prefix the provider caches at a breakpoint.
    pub min_tokens: u64,
    /// How long a written prefix lives (the breakpoint's TTL).
    pub ttl_ms: u64,
    pub rates: TokenRates,
    /// The provider writes the prefix before its implicit breakpoint anyway (OpenAI's
    /// implicit mode).
    pub implicit_writes: bool,
    /// Requests per minute per cache key past which the provider spreads them over
    /// machines (OpenAI: about 15).
    pub overflow_rpm: f64,
}

impl Rules {
    /// OpenAI's GPT-5.6 rules (1024 tokens, 30 minutes, implicit writes, ~15 requests a
    /// minute per key) at `rates`.
    pub fn openai(rates: TokenRates) -> Rules {
        Rules {
            min_tokens: 1024,
            ttl_ms: 30 * 60_000,
            rates,
            implicit_writes: true,
            overflow_rpm: 15.0,
        }
    }
}

/// Counts the prompt tokens up to the end of a block (the tokenizer, or exact positions
/// in replay).
pub trait BlockTokens {
    /// Prompt tokens from the start to the end of block `i`, framing included.
    fn through(&mut self, i: usize) -> u64;
}

/// Counts block tokens with an encoding: the block's text, its JSON for other content,
/// the fixed count of an image, plus the message framing (an estimate within a few
/// tokens of the provider's count).
#[derive(Debug)]
pub struct EncodingCounter<'b, 'a> {
    pub blocks: &'b Blocks<'a>,
    pub encoding: Encoding,
}

impl BlockTokens for EncodingCounter<'_, '_> {
    fn through(&mut self, i: usize) -> u64 {
        let mut total = 0u64;
        for b in self.blocks.blocks.iter().take(i + 1) {
            let content = match b.content {
                Content::Text(t) => self.encoding.count(t) as u64,
                Content::Json(v) => {
                    let text =
                        String::from_utf8_lossy(&crate::key::canonical_value(v)).into_owned();
                    self.encoding.count(&text) as u64
                }
                Content::Tokens(n) => u64::from(n),
            };
            total += content + u64::from(b.framing);
        }
        total
    }
}

/// Why no breakpoint was injected, or that one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A breakpoint is placed at the boundary.
    Inject,
    /// The caller placed its own breakpoints: the request is left as sent.
    Caller,
    /// The caller asked for `prompt_cache_options.mode: "explicit"`: its choice.
    CallerExplicitMode,
    /// No recent request of the scope shares a prefix that can carry one: the family
    /// does not recur within the breakpoint's lifetime (or is new).
    NotRecurring,
    /// The shared prefix is shorter than the provider's minimum.
    BelowMinimum,
    /// The shared prefix ends where the implicit breakpoint already is.
    AtImplicit,
    /// Expected reads do not pay for the writes.
    NotWorth,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Inject => "injected",
            Decision::Caller => "caller",
            Decision::CallerExplicitMode => "caller_explicit_mode",
            Decision::NotRecurring => "not_recurring",
            Decision::BelowMinimum => "below_minimum",
            Decision::AtImplicit => "at_implicit",
            Decision::NotWorth => "not_worth",
        }
    }
}

/// Which `prompt_cache_key` suits a scope under `prompt_cache_key = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShape {
    /// One key per conversation: conversations grow turn by turn and the scope is busy
    /// enough to overflow one key, so each conversation should stay on its machine.
    Conversation,
    /// One key for the family: requests share the stable prefix and vary after it, or
    /// the scope is quiet enough that one key (as without any) keeps it on one machine.
    Family,
}

/// Where the learned boundary of a request is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boundary {
    /// Index of the block among the request's blocks.
    pub block: usize,
    pub path: BlockPath,
    /// Prompt tokens up to the end of that block.
    pub tokens: u64,
    /// Recent requests of the scope that share it.
    pub support: u32,
}

/// The outcome of [`Learner::plan`] for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub decision: Decision,
    pub boundary: Option<Boundary>,
    /// The scope's recurrence: the share of its requests that found a shared prefix.
    pub recurrence: f64,
    /// The expected value of the breakpoint for this request, in the unit of the rates
    /// per token times tokens (USD per million tokens × tokens with a price table).
    pub expected_value: f64,
    pub shape: KeyShape,
}

#[derive(Debug)]
struct Seen {
    at_ms: u64,
    chain: Box<[u64]>,
}

#[derive(Debug, Default)]
struct ScopeState {
    recent: VecDeque<Seen>,
    observed: u32,
    recurred: u32,
    continuations: u32,
    injected: u64,
    first_ms: u64,
    last_ms: u64,
    /// Times of the latest requests, for the rate.
    times: VecDeque<u64>,
    tokens: Vec<(u64, u64)>,
    /// The key shape each recent conversation started with: a conversation keeps its
    /// key (and so its machine) for life, whatever the scope's shape becomes.
    conversations: VecDeque<(u64, KeyShape)>,
    last_boundary: Option<Boundary>,
    last_value: f64,
}

impl ScopeState {
    fn rpm(&self) -> f64 {
        let (Some(a), Some(b)) = (self.times.front(), self.times.back()) else {
            return 0.0;
        };
        let span = b.saturating_sub(*a);
        if span == 0 || self.times.len() < 2 {
            return 0.0;
        }
        (self.times.len() - 1) as f64 * 60_000.0 / span as f64
    }

    fn recurrence(&self) -> f64 {
        (f64::from(self.recurred) + 0.5) / (f64::from(self.observed) + 1.0)
    }

    fn shape(&self, rules: &Rules) -> KeyShape {
        let conversational = self.observed > 0 && self.continuations * 4 >= self.observed;
        if conversational && self.rpm() >= rules.overflow_rpm {
            KeyShape::Conversation
        } else {
            KeyShape::Family
        }
    }

    /// Tokens through block `b`, counted once per distinct prefix: a family's stable
    /// prefix recurs, so it is tokenized once.
    fn tokens_through(&mut self, chains: &[u64], b: usize, count: &mut dyn BlockTokens) -> u64 {
        if let Some(&(_, t)) = self.tokens.iter().find(|(c, _)| *c == chains[b]) {
            return t;
        }
        let total = count.through(b);
        if self.tokens.len() >= TOKEN_MEMO {
            self.tokens.remove(0);
        }
        self.tokens.push((chains[b], total));
        total
    }
}

/// A scope's figures, for `analyze` and the admin view.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSummary {
    pub scope: Scope,
    pub requests: u32,
    pub recurrence: f64,
    pub boundary: Option<Boundary>,
    /// Expected value of the latest decision (see [`Plan::expected_value`]).
    pub expected_value: f64,
    pub injected: u64,
    pub shape: KeyShape,
    pub rpm: f64,
}

/// Per-scope boundary learning (see the module docs). Bounded: at most `max_scopes`
/// scopes of at most [`RECENT`] requests of at most `blocks::MAX_BLOCKS` blocks each.
#[derive(Debug)]
pub struct Learner {
    scopes: HashMap<Scope, ScopeState>,
    max_scopes: usize,
}

impl Default for Learner {
    fn default() -> Self {
        Learner::new(DEFAULT_MAX_SCOPES)
    }
}

impl Learner {
    pub fn new(max_scopes: usize) -> Learner {
        Learner {
            scopes: HashMap::new(),
            max_scopes: max_scopes.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Decides for one request of `scope` at `now_ms` (a clock that does not go back),
    /// then learns from it. `count` gives block tokens; it is asked only for blocks up
    /// to a boundary not seen before.
    pub fn plan(
        &mut self,
        scope: Scope,
        blocks: &Blocks<'_>,
        now_ms: u64,
        rules: &Rules,
        count: &mut dyn BlockTokens,
    ) -> Plan {
        self.plan_outline(scope, &blocks.outline(), now_ms, rules, count)
    }

    /// [`Learner::plan`] on a request's [`Outline`].
    pub fn plan_outline(
        &mut self,
        scope: Scope,
        blocks: &Outline,
        now_ms: u64,
        rules: &Rules,
        count: &mut dyn BlockTokens,
    ) -> Plan {
        if !self.scopes.contains_key(&scope) && self.scopes.len() >= self.max_scopes {
            let idle = self
                .scopes
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| *k);
            if let Some(k) = idle {
                self.scopes.remove(&k);
            }
        }
        let st = self.scopes.entry(scope).or_default();
        let chains: &[u64] = &blocks.chains;

        // The deepest block shared with a recent request that is not an earlier turn of
        // this conversation, and how many share it; whether one is an earlier turn.
        let mut shared = 0usize;
        let mut support = 0u32;
        let mut continues = blocks.continues;
        for r in &st.recent {
            let lcp = r
                .chain
                .iter()
                .zip(chains)
                .take_while(|(a, b)| a == b)
                .count();
            let ancestor = lcp == r.chain.len() && lcp > 0;
            if ancestor {
                continues = true;
                continue;
            }
            if now_ms.saturating_sub(r.at_ms) > rules.ttl_ms || lcp == 0 {
                continue;
            }
            match lcp.cmp(&shared) {
                std::cmp::Ordering::Greater => {
                    shared = lcp;
                    support = 1;
                }
                std::cmp::Ordering::Equal => support += 1,
                std::cmp::Ordering::Less => {}
            }
        }
        let candidate = (0..shared)
            .rev()
            .find_map(|i| blocks.marks[i].map(|p| (i, p)));
        let boundary = candidate.map(|(b, path)| Boundary {
            block: b,
            path,
            tokens: st.tokens_through(chains, b, count),
            support: support.max(1),
        });

        // Learn from this request before deciding, so its own recurrence counts.
        if st.observed == 0 {
            st.first_ms = now_ms;
        }
        st.observed += 1;
        if boundary.is_some_and(|b| b.tokens >= rules.min_tokens) {
            st.recurred += 1;
        }
        if continues {
            st.continuations += 1;
        }
        if st.observed > WINDOW {
            st.observed /= 2;
            st.recurred /= 2;
            st.continuations /= 2;
        }
        st.last_ms = now_ms;
        st.times.push_back(now_ms);
        if st.times.len() > 16 {
            st.times.pop_front();
        }
        st.recent.push_back(Seen {
            at_ms: now_ms,
            chain: chains.into(),
        });
        if st.recent.len() > RECENT {
            st.recent.pop_front();
        }

        let recurrence = st.recurrence();
        let mut shape = st.shape(rules);
        if let Some(id) = blocks.conversation {
            match st.conversations.iter().find(|(c, _)| *c == id) {
                Some((_, kept)) => shape = *kept,
                None => {
                    if st.conversations.len() >= CONVERSATIONS {
                        st.conversations.pop_front();
                    }
                    st.conversations.push_back((id, shape));
                }
            }
        }
        let (decision, value) = match boundary {
            _ if blocks.caller_breakpoints => (Decision::Caller, 0.0),
            _ if blocks.caller_explicit_mode => (Decision::CallerExplicitMode, 0.0),
            None => (Decision::NotRecurring, 0.0),
            Some(b) if b.tokens < rules.min_tokens => (Decision::BelowMinimum, 0.0),
            Some(b) if Some(b.block) == blocks.implicit_end => (Decision::AtImplicit, 0.0),
            Some(b) => {
                let covered =
                    rules.implicit_writes && blocks.implicit_end.is_some_and(|e| e >= b.block);
                let baseline = if covered {
                    Baseline::Written
                } else {
                    Baseline::Uncached
                };
                let v = expected_value(recurrence, b.tokens, rules.rates, baseline);
                if v > 0.0 {
                    (Decision::Inject, v)
                } else {
                    (Decision::NotWorth, v)
                }
            }
        };
        if boundary.is_some() {
            st.last_boundary = boundary;
            st.last_value = value;
        }
        if decision == Decision::Inject {
            st.injected += 1;
        }
        Plan {
            decision,
            boundary,
            recurrence,
            expected_value: value,
            shape,
        }
    }

    /// The key shape of a scope as learned so far (`Family` for a scope not seen).
    pub fn shape(&self, scope: &Scope, rules: &Rules) -> KeyShape {
        self.scopes
            .get(scope)
            .map_or(KeyShape::Family, |s| s.shape(rules))
    }

    /// Every scope's figures, busiest first.
    pub fn summaries(&self, rules: &Rules) -> Vec<ScopeSummary> {
        let mut out: Vec<ScopeSummary> = self
            .scopes
            .iter()
            .map(|(scope, s)| ScopeSummary {
                scope: *scope,
                requests: s.observed,
                recurrence: s.recurrence(),
                boundary: s.last_boundary,
                expected_value: s.last_value,
                injected: s.injected,
                shape: s.shape(rules),
                rpm: s.rpm(),
            })
            .collect();
        out.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.scope.family.cmp(&b.scope.family))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breakpoint::blocks::request_blocks;
    use crate::route::Route;
    use serde_json::{Value, json};

    const SCOPE: Scope = Scope {
        namespace: [1; 16],
        family: [2; 16],
    };

    /// Counts every block as 600 tokens.
    struct Flat;
    impl BlockTokens for Flat {
        fn through(&mut self, i: usize) -> u64 {
            600 * (i as u64 + 1)
        }
    }

    fn rules() -> Rules {
        Rules::openai(TokenRates::OPENAI_BREAKPOINTS)
    }

    fn plan(l: &mut Learner, body: &Value, at_s: u64) -> Plan {
        let b = request_blocks(Route::ChatCompletions, body.as_object().unwrap());
        l.plan(SCOPE, &b, at_s * 1000, &rules(), &mut Flat)
    }

    fn agent(task: &str) -> Value {
        json!({"messages": [
            {"role": "system", "content": "rules part one"},
            {"role": "developer", "content": "rules part two"},
            {"role": "user", "content": task}]})
    }

    #[test]
    fn a_stable_prefix_with_a_changing_tail_gets_its_boundary() {
        let mut l = Learner::default();
        let first = plan(&mut l, &agent("task 1"), 0);
        assert_eq!(first.decision, Decision::NotRecurring);
        let second = plan(&mut l, &agent("task 2"), 60);
        assert_eq!(second.decision, Decision::Inject);
        let b = second.boundary.unwrap();
        assert_eq!((b.block, b.tokens), (1, 1200));
        assert_eq!(b.path.to_string(), "messages[1].content");
        assert!(second.expected_value > 0.0);
        assert_eq!(second.shape, KeyShape::Family);
    }

    #[test]
    fn requests_that_do_not_recur_within_the_ttl_get_nothing() {
        let mut l = Learner::default();
        for i in 0..5 {
            // 31 minutes apart: every earlier request is past the 30-minute lifetime.
            let p = plan(&mut l, &agent(&format!("task {i}")), i * 31 * 60);
            assert_eq!(p.decision, Decision::NotRecurring, "request {i}");
        }
    }

    #[test]
    fn short_prefixes_and_callers_choices() {
        let mut l = Learner::default();
        let short = |t: &str| json!({"messages": [{"role": "system", "content": "r"}, {"role": "user", "content": t}]});
        plan(&mut l, &short("a"), 0);
        assert_eq!(
            plan(&mut l, &short("b"), 1).decision,
            Decision::BelowMinimum
        );
        let mut l = Learner::default();
        plan(&mut l, &agent("a"), 0);
        let mut own = agent("b");
        own["messages"][2]["content"] =
            json!([{"type": "text", "text": "b", "prompt_cache_breakpoint": {"mode": "explicit"}}]);
        assert_eq!(plan(&mut l, &own, 1).decision, Decision::Caller);
        let mut explicit = agent("c");
        explicit["prompt_cache_options"] = json!({"mode": "explicit"});
        assert_eq!(
            plan(&mut l, &explicit, 2).decision,
            Decision::CallerExplicitMode
        );
    }

    #[test]
    fn a_conversations_own_history_is_not_its_boundary() {
        let mut l = Learner::default();
        let turn = |n: usize, conv: &str| {
            let mut msgs = vec![
                json!({"role": "system", "content": "rules part one"}),
                json!({"role": "developer", "content": "rules part two"}),
            ];
            for i in 0..n {
                msgs.push(json!({"role": "user", "content": format!("{conv} q{i}")}));
                msgs.push(json!({"role": "assistant", "content": format!("{conv} a{i}")}));
            }
            msgs.push(json!({"role": "user", "content": format!("{conv} q{n}")}));
            json!({ "messages": msgs })
        };
        plan(&mut l, &turn(0, "x"), 0);
        // The next turn of the same conversation: its history is an earlier request,
        // not a shared prefix.
        assert_eq!(
            plan(&mut l, &turn(1, "x"), 10).decision,
            Decision::NotRecurring
        );
        // Another conversation shares the two system blocks.
        let p = plan(&mut l, &turn(0, "y"), 20);
        assert_eq!(p.decision, Decision::Inject);
        assert_eq!(p.boundary.unwrap().block, 1);
        // Turn 3 of x: its boundary is still the shared system part.
        let p = plan(&mut l, &turn(2, "x"), 30);
        assert_eq!(p.boundary.unwrap().block, 1);
    }

    #[test]
    fn busy_conversations_get_their_own_keys() {
        let mut l = Learner::default();
        let conv = |c: usize, t: usize| {
            let mut msgs = vec![json!({"role": "system", "content": "rules"})];
            for i in 0..t {
                msgs.push(json!({"role": "user", "content": format!("c{c} q{i}")}));
                msgs.push(json!({"role": "assistant", "content": format!("c{c} a{i}")}));
            }
            msgs.push(json!({"role": "user", "content": format!("c{c} q{t}")}));
            json!({ "messages": msgs })
        };
        // 30 requests a minute of growing conversations: past one key's rate.
        let mut at = 0;
        for t in 0..3 {
            for c in 0..10 {
                let b = conv(c, t);
                let blocks = request_blocks(Route::ChatCompletions, b.as_object().unwrap());
                l.plan(SCOPE, &blocks, at, &rules(), &mut Flat);
                at += 2000;
            }
        }
        assert_eq!(l.shape(&SCOPE, &rules()), KeyShape::Conversation);
        // The same conversations once every ten minutes: one key is enough.
        let mut quiet = Learner::default();
        let mut at = 0;
        for t in 0..3 {
            for c in 0..3 {
                let b = conv(c, t);
                let blocks = request_blocks(Route::ChatCompletions, b.as_object().unwrap());
                quiet.plan(SCOPE, &blocks, at, &rules(), &mut Flat);
                at += 600_000;
            }
        }
        assert_eq!(quiet.shape(&SCOPE, &rules()), KeyShape::Family);
    }

    #[test]
    fn scopes_are_bounded_and_separate() {
        let mut l = Learner::new(2);
        let body = agent("a");
        let b = request_blocks(Route::ChatCompletions, body.as_object().unwrap());
        for ns in 0..3u8 {
            let scope = Scope {
                namespace: [ns; 16],
                family: [0; 16],
            };
            l.plan(scope, &b, u64::from(ns), &rules(), &mut Flat);
        }
        assert_eq!(l.len(), 2);
        // Another tenant's identical traffic is not a shared prefix for this one.
        let other = Scope {
            namespace: [9; 16],
            family: [0; 16],
        };
        let body2 = agent("b");
        let b2 = request_blocks(Route::ChatCompletions, body2.as_object().unwrap());
        assert_eq!(
            l.plan(other, &b2, 10, &rules(), &mut Flat).decision,
            Decision::NotRecurring
        );
    }
}
