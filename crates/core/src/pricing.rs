//! The cost model: a price table per model (the embedded `pricing.toml`, overridable from
//! config), model-name lookup by exact name then longest dated-snapshot prefix, and the
//! dollar cost of one response's [`Usage`], with cached and cache-write input priced at
//! their own rates (writes by lifetime: Anthropic's 5-minute and 1-hour writes, OpenAI's
//! 30-minute and 12-hour ones) and long-context tiers chosen by prompt size.
//!
//! ```
//! use prefixcache_core::pricing::PriceTable;
//! use prefixcache_core::usage::Usage;
//!
//! let table = PriceTable::builtin();
//! let (name, price) = table.lookup("gpt-4o-mini-2024-07-18").unwrap();
//! assert_eq!(name, "gpt-4o-mini");
//! let usage = Usage { prompt_tokens: 2_000, completion_tokens: 100, cached_tokens: 1_024, ..Usage::default() };
//! let cost = price.cost(&usage);
//! // 976 uncached at $0.15/M + 1024 cached at $0.075/M + 100 output at $0.60/M
//! let expected = (976.0 * 0.15 + 1024.0 * 0.075 + 100.0 * 0.60) / 1e6;
//! assert!((cost.usd - expected).abs() < 1e-12);
//! assert!(!table.is_known("my-local-llama"));
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::usage::Usage;

/// The built-in table, as shipped (`crates/core/pricing.toml`).
pub const BUILTIN_TOML: &str = include_str!("../pricing.toml");

/// Tokens per price unit: prices are US dollars per million tokens, as OpenAI lists them.
const PER: f64 = 1_000_000.0;

/// A pricing file or section that cannot be used, naming the model and field to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("pricing table is not valid TOML: {0}")]
    Toml(String),
    #[error("pricing for model {model:?}: {message}")]
    Invalid { model: String, message: String },
}

impl PricingError {
    /// Short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PricingError::Toml(_) => "toml",
            PricingError::Invalid { .. } => "invalid",
        }
    }
}

/// Rates of one model, US dollars per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_input: f64,
    /// Prompt tokens written to the provider's prompt cache with the default lifetime
    /// (Anthropic: 5 minutes; OpenAI: 30 minutes).
    pub cache_write: f64,
    /// Prompt tokens written with the provider's longer lifetime (Anthropic: 1 hour;
    /// OpenAI: 12 hours), [`Usage::cache_write_long_tokens`].
    pub cache_write_long: f64,
    /// Completion tokens (reasoning tokens included).
    pub output: f64,
}

/// A long-context tier: when a request has more than `above_prompt_tokens` prompt tokens,
/// the whole request is billed at `rates` (OpenAI bills the full request, not only the
/// tokens past the threshold).
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub above_prompt_tokens: u64,
    pub rates: Rates,
}

/// Prices of one model: base rates and long-context tiers (ascending thresholds).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    pub base: Rates,
    pub tiers: Vec<Tier>,
}

/// The dollar cost of one response, split by what was paid for. The parts sum to `usd`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub usd: f64,
    /// Uncached prompt tokens.
    pub input_usd: f64,
    /// Prompt tokens read from the provider's cache, at the cached rate.
    pub cached_usd: f64,
    /// Prompt tokens written to the provider's cache, at the cache-write rate of their
    /// lifetime.
    pub cache_write_usd: f64,
    /// Completion tokens.
    pub output_usd: f64,
}

impl ModelPrice {
    /// The rates that apply to a request with `prompt_tokens` prompt tokens: the highest
    /// tier whose threshold it exceeds, else the base rates.
    pub fn rates_for(&self, prompt_tokens: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|t| prompt_tokens > t.above_prompt_tokens)
            .map_or(&self.base, |t| &t.rates)
    }

    /// The cost of one response. `cached_tokens` and `cache_write_tokens` are parts of
    /// `prompt_tokens` (as the API reports them); a usage that claims more cached and
    /// written tokens than prompt tokens is taken at its word for those parts and has no
    /// uncached input, rather than a negative one.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let r = self.rates_for(usage.prompt_tokens);
        let uncached = usage
            .prompt_tokens
            .saturating_sub(usage.cached_tokens)
            .saturating_sub(usage.cache_write_tokens);
        let input_usd = uncached as f64 * r.input / PER;
        let cached_usd = usage.cached_tokens as f64 * r.cached_input / PER;
        let long = usage.cache_write_long_tokens.min(usage.cache_write_tokens);
        let short = usage.cache_write_tokens - long;
        let cache_write_usd =
            (short as f64 * r.cache_write + long as f64 * r.cache_write_long) / PER;
        let output_usd = usage.completion_tokens as f64 * r.output / PER;
        Cost {
            usd: input_usd + cached_usd + cache_write_usd + output_usd,
            input_usd,
            cached_usd,
            cache_write_usd,
            output_usd,
        }
    }
}

/// Prices by model name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    as_of: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    models: HashMap<String, RawModel>,
}

/// One model as written in TOML (also the shape of `[pricing.models."name"]` in config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    input: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    cache_write_long: Option<f64>,
    output: f64,
    #[serde(default)]
    tiers: Vec<RawTier>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    above_prompt_tokens: u64,
    input: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    cache_write_long: Option<f64>,
    output: f64,
}

/// The prices of one table entry or tier as written, before defaults are applied.
struct RawRates {
    input: f64,
    cached: Option<f64>,
    write: Option<f64>,
    write_long: Option<f64>,
    output: f64,
}

fn rates(model: &str, raw: RawRates) -> Result<Rates, PricingError> {
    let RawRates {
        input,
        cached,
        write,
        write_long,
        output,
    } = raw;
    for (field, v) in [
        ("input", Some(input)),
        ("cached_input", cached),
        ("cache_write", write),
        ("cache_write_long", write_long),
        ("output", Some(output)),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(PricingError::Invalid {
                model: model.to_string(),
                message: format!("`{field}` must be a price >= 0 in USD per 1M tokens, got {v}"),
            });
        }
    }
    let cache_write = write.unwrap_or(input);
    Ok(Rates {
        input,
        // Absent: the model has no cache discount, or no separate write price.
        cached_input: cached.unwrap_or(input),
        cache_write,
        // Absent: the model has one write lifetime, or one price for both.
        cache_write_long: write_long.unwrap_or(cache_write),
        output,
    })
}

impl RawModel {
    pub(crate) fn validate(self, model: &str) -> Result<ModelPrice, PricingError> {
        if model.is_empty() {
            return Err(PricingError::Invalid {
                model: String::new(),
                message: "model names must not be empty".into(),
            });
        }
        let base = rates(
            model,
            RawRates {
                input: self.input,
                cached: self.cached_input,
                write: self.cache_write,
                write_long: self.cache_write_long,
                output: self.output,
            },
        )?;
        let mut tiers = Vec::with_capacity(self.tiers.len());
        let mut last = 0u64;
        for t in self.tiers {
            if t.above_prompt_tokens <= last {
                return Err(PricingError::Invalid {
                    model: model.to_string(),
                    message: format!(
                        "tiers must have increasing `above_prompt_tokens` greater than 0, got {} after {last}",
                        t.above_prompt_tokens
                    ),
                });
            }
            last = t.above_prompt_tokens;
            tiers.push(Tier {
                above_prompt_tokens: t.above_prompt_tokens,
                rates: rates(
                    model,
                    RawRates {
                        input: t.input,
                        cached: t.cached_input,
                        write: t.cache_write,
                        write_long: t.cache_write_long,
                        output: t.output,
                    },
                )?,
            });
        }
        Ok(ModelPrice { base, tiers })
    }
}

impl PriceTable {
    /// The built-in table, parsed once per process.
    pub fn builtin() -> &'static PriceTable {
        static BUILTIN: OnceLock<PriceTable> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            #[allow(clippy::expect_used)] // the embedded file is parsed by a unit test
            PriceTable::from_toml(BUILTIN_TOML).expect("the embedded pricing.toml is valid")
        })
    }

    /// Parses a pricing file (the format of `pricing.toml`: optional `as_of` and
    /// `currency = "USD"`, and `[models."name"]` tables).
    pub fn from_toml(text: &str) -> Result<PriceTable, PricingError> {
        let raw: RawTable = toml::from_str(text).map_err(|e| PricingError::Toml(e.to_string()))?;
        let _ = raw.as_of; // informational only
        if let Some(c) = raw.currency
            && c != "USD"
        {
            return Err(PricingError::Invalid {
                model: String::new(),
                message: format!("only USD prices are supported, got currency = {c:?}"),
            });
        }
        PriceTable::from_raw(raw.models)
    }

    pub(crate) fn from_raw(models: HashMap<String, RawModel>) -> Result<PriceTable, PricingError> {
        let mut out = HashMap::with_capacity(models.len());
        for (name, raw) in models {
            let price = raw.validate(&name)?;
            out.insert(name, price);
        }
        Ok(PriceTable { models: out })
    }

    /// A table with one model's price (or `self` with it replaced).
    pub fn with_model(mut self, name: impl Into<String>, price: ModelPrice) -> PriceTable {
        self.models.insert(name.into(), price);
        self
    }

    /// This table with every model of `overrides` added or replaced. An override replaces
    /// the model's whole entry (rates and tiers), never single fields: a partial merge
    /// would silently keep, say, an old cached rate next to a new input price.
    pub fn merged(&self, overrides: &PriceTable) -> PriceTable {
        let mut models = self.models.clone();
        for (name, price) in &overrides.models {
            models.insert(name.clone(), price.clone());
        }
        PriceTable { models }
    }

    /// The price of `model` and the table name it matched: the exact name, else the
    /// longest table name `N` such that `model` starts with `N-` (dated snapshots and
    /// variants: `gpt-4o-2024-08-06` → `gpt-4o`, `gpt-4o-mini-2024-07-18` →
    /// `gpt-4o-mini`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`). Requiring the
    /// `-` keeps `gpt-4.5-preview` from being priced as `gpt-4` and `gpt-5.9` as `gpt-5`;
    /// and a part after `N-` that is a number of one or two digits is a version, not a
    /// snapshot (Anthropic writes versions with dashes), so `claude-opus-5-7` is not
    /// priced as `claude-opus-5`. An unknown model costs nothing, a wrong price misleads.
    /// Costs one hash lookup per `-` in the name.
    pub fn lookup(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        if let Some((name, price)) = self.models.get_key_value(model) {
            return Some((name.as_str(), price));
        }
        let mut end = model.len();
        while let Some(dash) = model[..end].rfind('-') {
            if let Some((name, price)) = self.models.get_key_value(&model[..dash])
                && !is_version_part(&model[dash + 1..])
            {
                return Some((name.as_str(), price));
            }
            end = dash;
        }
        None
    }

    /// Whether `model` has a price (as [`PriceTable::lookup`] finds it).
    pub fn is_known(&self, model: &str) -> bool {
        self.lookup(model).is_some()
    }

    /// The cost of a response from `model`, or `None` for a model without a price (the
    /// tokens still count; the dollars are unknown).
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        self.lookup(model).map(|(_, p)| p.cost(usage))
    }

    /// Model names in the table, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.models.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Whether the part of a model name after a table name starts with a version number
/// (`5`, `12`, as in `claude-opus-5-7`) rather than a snapshot date or a variant
/// (`20250929`, `2024`, `0613`, `mini`).
fn is_version_part(rest: &str) -> bool {
    let first = rest.split('-').next().unwrap_or("");
    (1..=2).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64, write: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_tokens: write,
            cache_write_long_tokens: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn builtin_parses_and_covers_the_required_models() {
        let t = PriceTable::builtin();
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o1",
            "o1-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-5.1",
            "gpt-5.2",
            "gpt-5.4",
            "gpt-5.4-mini",
            "gpt-5.4-nano",
            "gpt-5.5",
            "gpt-3.5-turbo",
            "gpt-4",
            "gpt-4-turbo",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
        ] {
            assert_eq!(t.lookup(m).map(|(n, _)| n), Some(m), "{m}");
        }
        assert!(t.len() >= 40, "{}", t.len());
    }

    #[test]
    fn builtin_cached_discounts_match_the_documented_shares() {
        // OpenAI's pricing: cached input is 50% (gpt-4o, o1), 25% (gpt-4.1, o3, o4-mini) or
        // 10% (gpt-5 family) of the input price.
        let t = PriceTable::builtin();
        let share = |m: &str| {
            let (_, p) = t.lookup(m).unwrap();
            p.base.cached_input / p.base.input
        };
        for (m, s) in [
            ("gpt-4o", 0.5),
            ("o1", 0.5),
            ("gpt-4.1", 0.25),
            ("o3", 0.25),
            ("o4-mini", 0.25),
            ("gpt-5", 0.1),
            ("gpt-5-mini", 0.1),
            ("gpt-5.4", 0.1),
            ("gpt-5.5", 0.1),
        ] {
            assert!(close(share(m), s), "{m}: {}", share(m));
        }
        // Writes are charged only from GPT-5.6 on, at 1.25x input, in every tier.
        for m in [
            "gpt-5.6",
            "gpt-5.6-sol",
            "gpt-5.6-terra",
            "gpt-5.6-luna",
            "gpt-6-sol",
            "gpt-6.1-sol",
            "gpt-6.2-sol",
            "gpt-6-luna",
            "gpt-6.1-terra",
        ] {
            let (_, p) = t.lookup(m).unwrap();
            for r in std::iter::once(&p.base).chain(p.tiers.iter().map(|t| &t.rates)) {
                assert!(close(r.cache_write, 1.25 * r.input), "{m}");
            }
        }
        let (_, g4o) = t.lookup("gpt-4o").unwrap();
        assert_eq!(g4o.base.cache_write, g4o.base.input);
    }

    #[test]
    fn snapshots_match_the_longest_prefix() {
        let t = PriceTable::builtin();
        let name = |m: &str| t.lookup(m).map(|(n, _)| n.to_string());
        assert_eq!(name("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        assert_eq!(
            name("gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            name("gpt-4o-2024-05-13").as_deref(),
            Some("gpt-4o-2024-05-13")
        );
        assert_eq!(
            name("gpt-4.1-nano-2025-04-14").as_deref(),
            Some("gpt-4.1-nano")
        );
        assert_eq!(name("gpt-4-0613").as_deref(), Some("gpt-4"));
        assert_eq!(
            name("gpt-4-turbo-2024-04-09").as_deref(),
            Some("gpt-4-turbo")
        );
        assert_eq!(name("gpt-3.5-turbo-0125").as_deref(), Some("gpt-3.5-turbo"));
        assert_eq!(name("o3-mini-2025-01-31").as_deref(), Some("o3-mini"));
        assert_eq!(name("o1-preview-2024-09-12").as_deref(), Some("o1"));
        assert_eq!(name("gpt-5-mini-2025-08-07").as_deref(), Some("gpt-5-mini"));
        assert_eq!(name("gpt-5.1-codex").as_deref(), Some("gpt-5.1"));
        assert_eq!(name("gpt-5.6-sol-pro").as_deref(), Some("gpt-5.6-sol"));
        assert_eq!(
            name("gpt-6.2-sol-2026-11-17").as_deref(),
            Some("gpt-6.2-sol")
        );
        // No "-" after the prefix: not the same model.
        assert_eq!(name("gpt-4.5-preview"), None);
        assert_eq!(name("gpt-5.9"), None);
        assert_eq!(name("gpt-4ox"), None);
        assert_eq!(name("ft:gpt-4o-mini-2024-07-18:acme::abc"), None);
        assert_eq!(name(""), None);
        assert_eq!(name("-"), None);
        assert!(!t.is_known("llama-3-70b"));
        assert!(t.is_known("gpt-4o-2024-11-20"));
    }

    #[test]
    fn cost_prices_each_part_at_its_rate() {
        let price = ModelPrice {
            base: Rates {
                input: 2.0,
                cached_input: 0.5,
                cache_write: 2.5,
                cache_write_long: 4.0,
                output: 8.0,
            },
            tiers: vec![],
        };
        let c = price.cost(&usage(10_000, 500, 4_096, 1_024));
        // computed by hand: 4880 * 2 + 4096 * 0.5 + 1024 * 2.5 + 500 * 8, per million
        let input = 4880.0 * 2.0 / 1e6;
        let cached = 4096.0 * 0.5 / 1e6;
        let write = 1024.0 * 2.5 / 1e6;
        let output = 500.0 * 8.0 / 1e6;
        assert!(close(c.input_usd, input));
        assert!(close(c.cached_usd, cached));
        assert!(close(c.cache_write_usd, write));
        assert!(close(c.output_usd, output));
        assert!(close(c.usd, 0.00976 + 0.002048 + 0.00256 + 0.004));
        // Inconsistent usage never goes negative.
        let c = price.cost(&usage(100, 0, 80, 80));
        assert_eq!(c.input_usd, 0.0);
        assert!(c.usd > 0.0);
        assert_eq!(price.cost(&Usage::default()), Cost::default());
    }

    #[test]
    fn long_context_tier_applies_to_the_whole_request() {
        let t = PriceTable::builtin();
        let (_, p) = t.lookup("gpt-5.4").unwrap();
        let at = p.cost(&usage(272_000, 1_000, 0, 0));
        assert!(close(at.usd, (272_000.0 * 2.5 + 1_000.0 * 15.0) / 1e6));
        let above = p.cost(&usage(272_001, 1_000, 100_000, 0));
        assert!(close(
            above.usd,
            (172_001.0 * 5.0 + 100_000.0 * 0.5 + 1_000.0 * 22.5) / 1e6
        ));
        // OpenAI's Luna page: ">272K input tokens are priced at 2x input".
        let (_, luna) = t.lookup("gpt-5.6-luna").unwrap();
        assert_eq!(luna.rates_for(272_000).input, 0.20);
        assert_eq!(luna.rates_for(272_001).input, 0.40);
    }

    #[test]
    fn a_gpt_5_6_write_costs_a_quarter_more_than_input() {
        // gpt-5.6-terra: $2.00 input, $0.20 cached, $2.50 write, $12.00 output per 1M.
        // 10_000 prompt tokens: 8_000 read, 1_900 written, 100 uncached; 200 output.
        let c = PriceTable::builtin()
            .cost("gpt-5.6-terra", &usage(10_000, 200, 8_000, 1_900))
            .unwrap();
        assert!(close(c.input_usd, 100.0 * 2.0 / 1e6));
        assert!(close(c.cached_usd, 8_000.0 * 0.2 / 1e6));
        assert!(close(c.cache_write_usd, 1_900.0 * 2.5 / 1e6));
        assert!(close(c.output_usd, 200.0 * 12.0 / 1e6));
        // 0.0002 + 0.0016 + 0.00475 + 0.0024
        assert!(close(c.usd, 0.00895));
    }

    #[test]
    fn claude_models_price_writes_by_lifetime() {
        let t = PriceTable::builtin();
        for m in [
            "claude-fable-5-1",
            "claude-fable-5",
            "claude-opus-5-5",
            "claude-opus-5",
            "claude-opus-4-8",
            "claude-opus-4-7",
            "claude-opus-4-6",
            "claude-opus-4-5",
            "claude-opus-4-1",
            "claude-sonnet-5-5",
            "claude-sonnet-5",
            "claude-sonnet-4-6",
            "claude-sonnet-4-5",
            "claude-haiku-5-5",
            "claude-haiku-4-5",
            "claude-3-5-haiku",
        ] {
            let (name, p) = t.lookup(m).unwrap();
            assert_eq!(name, m);
            for r in std::iter::once(&p.base).chain(p.tiers.iter().map(|t| &t.rates)) {
                // Anthropic: 5-minute writes 1.25x input, 1-hour writes 2x input.
                assert!(close(r.cache_write, 1.25 * r.input), "{m}");
                assert!(close(r.cache_write_long, 2.0 * r.input), "{m}");
                assert!(r.cached_input <= 0.1 * r.input + 1e-12, "{m}");
            }
        }
        // Haiku 3's writes are 1.2x / 2x (the pricing page's $0.30 and $0.50 on $0.25).
        let (_, h3) = t.lookup("claude-3-haiku").unwrap();
        assert_eq!(
            (h3.base.cache_write, h3.base.cache_write_long),
            (0.30, 0.50)
        );
    }

    #[test]
    fn a_one_hour_write_costs_twice_the_input() {
        // claude-sonnet-4-5: $3 input, $0.30 read, $3.75 5m write, $6 1h write, $15 output.
        // 12_000 prompt tokens: 2_000 read, 9_000 written of which 4_000 for an hour,
        // 1_000 uncached; 100 output. By hand: 1000*3 + 2000*0.3 + 5000*3.75 + 4000*6
        // + 100*15 = 3000 + 600 + 18750 + 24000 + 1500 = 47850 per million.
        let u = Usage {
            prompt_tokens: 12_000,
            completion_tokens: 100,
            cached_tokens: 2_000,
            cache_write_tokens: 9_000,
            cache_write_long_tokens: 4_000,
        };
        let c = PriceTable::builtin()
            .cost("claude-sonnet-4-5-20250929", &u)
            .unwrap();
        assert!(close(c.input_usd, 0.003));
        assert!(close(c.cached_usd, 0.0006));
        assert!(close(c.cache_write_usd, 0.01875 + 0.024));
        assert!(close(c.output_usd, 0.0015));
        assert!(close(c.usd, 0.04785));
        // Over 200K prompt tokens the whole request is at the long-context rates:
        // 250_000 uncached at $6 and 1_000 output at $22.50 = 1.5 + 0.0225.
        let big = Usage {
            prompt_tokens: 250_000,
            completion_tokens: 1_000,
            ..Usage::default()
        };
        let c = PriceTable::builtin()
            .cost("claude-sonnet-4-5", &big)
            .unwrap();
        assert!(close(c.usd, 1.5225));
        // A long part larger than the writes is clamped to them.
        let odd = Usage {
            prompt_tokens: 10,
            cache_write_tokens: 4,
            cache_write_long_tokens: 9,
            ..Usage::default()
        };
        let (_, p) = PriceTable::builtin().lookup("claude-opus-5").unwrap();
        assert!(close(p.cost(&odd).cache_write_usd, 4.0 * 10.0 / 1e6));
    }

    #[test]
    fn openai_12h_writes_cost_two_and_a_half_times_the_input() {
        // gpt-6.2-sol: $2 input, $2.50 30-minute write, $5 12-hour write (its model page).
        let u = Usage {
            prompt_tokens: 20_000,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 18_000,
            cache_write_long_tokens: 16_000,
        };
        let c = PriceTable::builtin().cost("gpt-6.2-sol", &u).unwrap();
        // 2000 uncached * 2 + 2000 * 2.5 + 16000 * 5 = 4000 + 5000 + 80000 per million.
        assert!(close(c.usd, 0.089));
        let t = PriceTable::builtin();
        for m in [
            "gpt-5.6-sol",
            "gpt-5.6-terra",
            "gpt-5.6-luna",
            "gpt-6-sol",
            "gpt-6-luna",
        ] {
            let (_, p) = t.lookup(m).unwrap();
            for r in std::iter::once(&p.base).chain(p.tiers.iter().map(|t| &t.rates)) {
                assert!(close(r.cache_write_long, 2.5 * r.input), "{m}");
            }
        }
        // Models with one write price: the long rate defaults to it.
        let (_, g4o) = t.lookup("gpt-4o").unwrap();
        assert_eq!(g4o.base.cache_write_long, g4o.base.cache_write);
    }

    #[test]
    fn claude_snapshots_find_their_model_and_versions_do_not() {
        let t = PriceTable::builtin();
        let name = |m: &str| t.lookup(m).map(|(n, _)| n.to_string());
        assert_eq!(
            name("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            name("claude-sonnet-4-20250514").as_deref(),
            Some("claude-sonnet-4")
        );
        assert_eq!(
            name("claude-3-5-haiku-20241022").as_deref(),
            Some("claude-3-5-haiku")
        );
        assert_eq!(name("claude-opus-5-5").as_deref(), Some("claude-opus-5-5"));
        assert_eq!(
            name("claude-haiku-4-5-20251001").as_deref(),
            Some("claude-haiku-4-5")
        );
        // A version after the name is another model, not a snapshot.
        assert_eq!(name("claude-opus-5-7"), None);
        assert_eq!(name("claude-sonnet-4-9-20270101"), None);
        assert_eq!(
            name("claude-opus-4-8-20261001").as_deref(),
            Some("claude-opus-4-8")
        );
        // OpenAI's four-digit snapshots are dates, not versions.
        assert_eq!(name("gpt-4-0613").as_deref(), Some("gpt-4"));
    }

    #[test]
    fn embeddings_cost_input_only() {
        let c = PriceTable::builtin()
            .cost("text-embedding-3-small", &usage(1_000_000, 0, 0, 0))
            .unwrap();
        assert!(close(c.usd, 0.02));
        assert!(
            PriceTable::builtin()
                .cost("unknown-model", &usage(1, 1, 0, 0))
                .is_none()
        );
    }

    #[test]
    fn overrides_replace_whole_entries() {
        let over = PriceTable::from_toml(
            r#"
[models."gpt-4o"]
input = 1.0
output = 2.0
[models."my-model"]
input = 0.5
cached_input = 0.1
output = 1.5
"#,
        )
        .unwrap();
        let t = PriceTable::builtin().merged(&over);
        let (_, g) = t.lookup("gpt-4o-2024-08-06").unwrap();
        assert_eq!(g.base.input, 1.0);
        // The builtin's cached rate is not kept: no cached_input means no discount.
        assert_eq!(g.base.cached_input, 1.0);
        assert!(t.is_known("my-model-v2"));
        assert!(t.is_known("gpt-4.1"));
        assert_eq!(t.len(), PriceTable::builtin().len() + 1);
        // The builtin itself is unchanged.
        assert_eq!(
            PriceTable::builtin().lookup("gpt-4o").unwrap().1.base.input,
            2.5
        );
    }

    #[test]
    fn invalid_tables_name_the_model() {
        let e = PriceTable::from_toml("[models.\"m\"]\ninput = -1.0\noutput = 1.0").unwrap_err();
        assert!(
            e.to_string().contains("\"m\"") && e.to_string().contains("input"),
            "{e}"
        );
        let e = PriceTable::from_toml("[models.\"m\"]\ninput = 1.0").unwrap_err();
        assert_eq!(e.metric_label(), "toml");
        let e = PriceTable::from_toml("[models.\"m\"]\ninput = 1.0\noutput = 1.0\nbogus = 2")
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = PriceTable::from_toml(
            "[models.\"m\"]\ninput = 1.0\noutput = 1.0\n[[models.\"m\".tiers]]\nabove_prompt_tokens = 0\ninput = 2.0\noutput = 2.0",
        )
        .unwrap_err();
        assert!(e.to_string().contains("above_prompt_tokens"), "{e}");
        let e = PriceTable::from_toml("currency = \"EUR\"").unwrap_err();
        assert!(e.to_string().contains("EUR"), "{e}");
        let e = PriceTable::from_toml("[models.\"m\"]\ninput = nan\noutput = 1.0").unwrap_err();
        assert_eq!(e.metric_label(), "invalid");
    }
}
