//! The money rule for a breakpoint: place one only when the reads it is expected to earn
//! are worth more than the writes it is expected to cost, at the model's prices.
//!
//! OpenAI's guide puts it as: a write costs 1.25x input and a read 0.1x, so writing a
//! prefix once and reading it once costs 1.35x against 2x uncached, and each further
//! read saves more. Which rate a token pays without the breakpoint depends on the
//! provider: under OpenAI's implicit mode the tokens before the implicit breakpoint are
//! written anyway (1.25x), so a breakpoint inside them adds no write at all; where
//! nothing would be cached (Anthropic without a marker, OpenAI's explicit mode) they
//! are plain input, and a write that is never read costs the premium.

use crate::pricing::Rates;

/// Prices per prompt token in any one unit (USD per million tokens from the price
/// table, or multiples of the input price when the model has no price).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenRates {
    pub input: f64,
    pub read: f64,
    pub write: f64,
}

impl TokenRates {
    /// The documented multiples for OpenAI's GPT-5.6 generation (30-minute writes),
    /// used when the model has no price: input 1, read 0.1, write 1.25.
    pub const OPENAI_BREAKPOINTS: TokenRates = TokenRates {
        input: 1.0,
        read: 0.1,
        write: 1.25,
    };

    /// A model's rates with the default-lifetime write price.
    pub fn from_rates(r: &Rates) -> TokenRates {
        TokenRates {
            input: r.input,
            read: r.cached_input,
            write: r.cache_write,
        }
    }
}

/// What the tokens before a new breakpoint pay when it is not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// They are written anyway (OpenAI's implicit breakpoint lies at or after it).
    Written,
    /// They are plain uncached input.
    Uncached,
}

/// The expected value of a breakpoint over `tokens` prompt tokens for one request, in
/// the unit of `rates` per token (USD per million tokens × tokens for the price table):
/// with probability `p` the prefix is read (saving the baseline rate less the read
/// rate), otherwise it is written (costing the write rate less the baseline rate, which
/// is nothing when the tokens are written anyway).
pub fn expected_value(p: f64, tokens: u64, rates: TokenRates, baseline: Baseline) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let base = match baseline {
        Baseline::Written => rates.write,
        Baseline::Uncached => rates.input,
    };
    let saving_on_read = (base - rates.read).max(0.0);
    let premium_on_write = (rates.write - base).max(0.0);
    let t = tokens as f64;
    p * saving_on_read * t - (1.0 - p) * premium_on_write * t
}

/// The share of requests that must read the prefix for a breakpoint to pay: the
/// break-even of [`expected_value`].
pub fn break_even(rates: TokenRates, baseline: Baseline) -> f64 {
    let base = match baseline {
        Baseline::Written => rates.write,
        Baseline::Uncached => rates.input,
    };
    let gain = (base - rates.read).max(0.0);
    let premium = (rates.write - base).max(0.0);
    if gain + premium == 0.0 {
        return 1.0;
    }
    premium / (gain + premium)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: TokenRates = TokenRates::OPENAI_BREAKPOINTS;

    #[test]
    fn the_guides_arithmetic() {
        // One write and one read: 1.25 + 0.1 = 1.35 against 2 uncached; the breakpoint
        // on a prefix read half the time is worth 0.5 * 0.9 - 0.5 * 0.25 = 0.325 a token.
        assert!((expected_value(0.5, 1, R, Baseline::Uncached) - 0.325).abs() < 1e-12);
        // Under implicit mode the write happens anyway: any chance of a read pays.
        assert!(expected_value(0.01, 1000, R, Baseline::Written) > 0.0);
        assert_eq!(expected_value(0.0, 1000, R, Baseline::Written), 0.0);
        // A prefix never read only costs the premium.
        assert!((expected_value(0.0, 1000, R, Baseline::Uncached) + 250.0).abs() < 1e-9);
        // Break-even: 0.25 / (0.9 + 0.25).
        assert!((break_even(R, Baseline::Uncached) - 0.25 / 1.15).abs() < 1e-12);
        assert_eq!(break_even(R, Baseline::Written), 0.0);
        // Anthropic's 1-hour writes (2x) need more reads.
        let long = TokenRates { write: 2.0, ..R };
        assert!(break_even(long, Baseline::Uncached) > break_even(R, Baseline::Uncached));
    }
}
