//! The dashboard in the binary: `GET /dashboard` (a self-contained page) and `GET
//! /admin/summary` (its JSON), both on the admin surface. This component owns the
//! history and the family tracker the page shows; it reads the proxy's metrics rather
//! than counting again, and it knows nothing of the state that holds it.
//!
//! # Layout
//! - [`history`]: readings of the metrics every 10 s for an hour, in a bounded ring.
//! - [`families`]: the busiest prefix families, their hit rates and live findings.
//! - [`summary`]: the JSON the page polls (`docs/dashboard.md` documents it).
//! - [`page`]: the embedded HTML, CSS and script, served under a strict CSP.

pub mod families;
pub mod history;
pub mod page;
pub mod summary;

use crate::metrics::Metrics;
use families::Families;
use history::{History, Reading};
use summary::{Identity, Live, Summary};

/// What the dashboard keeps about this replica.
#[derive(Debug)]
pub struct Dashboard {
    /// `requests_total` strategy labels in the order they are shown: the configured
    /// strategies, then `none` (passthrough and requests refused before a strategy).
    strategies: Vec<&'static str>,
    history: History,
    /// Fed by accounting (each answered request) and the live lint.
    pub families: Families,
    started_at_ms: u64,
    host: String,
}

impl Dashboard {
    /// A dashboard whose history starts now with `metrics` as they are.
    pub fn new(
        strategies: impl IntoIterator<Item = &'static str>,
        metrics: &Metrics,
        now_ms: u64,
    ) -> Dashboard {
        let mut strategies: Vec<&'static str> = strategies.into_iter().collect();
        if !strategies.contains(&"none") {
            strategies.push("none");
        }
        let start = Reading::read(metrics, &strategies, now_ms);
        Dashboard {
            history: History::new(start),
            strategies,
            families: Families::default(),
            started_at_ms: now_ms,
            host: host_name(),
        }
    }

    /// Takes one reading of `metrics` into the history (every
    /// [`history::RESOLUTION_MS`], see [`Dashboard::run_sampler`]).
    pub fn sample(&self, metrics: &Metrics, now_ms: u64) {
        self.history
            .record(Reading::read(metrics, &self.strategies, now_ms));
    }

    /// Samples every [`history::RESOLUTION_MS`] until dropped; never returns. Runs
    /// inside `serve`, which drops it at shutdown: no task of its own to wait for.
    pub async fn run_sampler(
        &self,
        metrics: &Metrics,
        now_ms: impl Fn() -> u64,
    ) -> std::convert::Infallible {
        let mut tick =
            tokio::time::interval(std::time::Duration::from_millis(history::RESOLUTION_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(metrics, now_ms());
        }
    }

    /// The summary as of now. `live` brings what other components own (the store's
    /// health, flights); its `now` reading is taken by [`Dashboard::read_now`].
    pub fn summary(&self, live: Live) -> Summary {
        let now_ms = live.now.at_ms;
        let families = self.families.top(summary::TOP_FAMILIES, now_ms);
        let tracked = self.families.len();
        let tallies = self.families.tallies();
        let who = Identity {
            host: &self.host,
            started_at_ms: self.started_at_ms,
            strategies: &self.strategies,
        };
        self.history
            .with(|rings| summary::build(who, rings, families, tracked, tallies, live))
    }

    /// A reading of `metrics` now, for [`Live::now`].
    pub fn read_now(&self, metrics: &Metrics, now_ms: u64) -> Reading {
        Reading::read(metrics, &self.strategies, now_ms)
    }
}

/// The machine's name (the pod name under Kubernetes), so a page behind a load
/// balancer says which replica it shows.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this replica".to_string())
}
