//! Gates: named latches that hold a response (before its head, or part way through its
//! body) until a test opens them, so tests order events across processes without
//! sleeping. A request names its gates in headers (`x-mock-head-gate`,
//! `x-mock-stream-gate`); the test opens a gate with [`Gates::open`] or
//! `POST /mock/gates/{name}/open`, after polling [`Gates::snapshot`] (or
//! `GET /mock/gates`) until the requests it expects are waiting there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

/// At most this many gates exist at once; a request naming a new gate beyond it is
/// refused (400), so a client cannot grow the mock's memory without bound.
pub const MAX_GATES: usize = 1024;
/// Longest gate name accepted.
pub const MAX_GATE_NAME: usize = 128;

#[derive(Debug)]
struct Gate {
    open: watch::Sender<bool>,
    /// Responses held at this gate now.
    waiting: usize,
    /// Responses that went through it (waited and were released, or found it open).
    passed: u64,
}

impl Gate {
    fn new() -> Gate {
        let (open, _) = watch::channel(false);
        Gate {
            open,
            waiting: 0,
            passed: 0,
        }
    }
}

/// One gate as a test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GateState {
    pub open: bool,
    pub waiting: usize,
    pub passed: u64,
}

/// Why a gate could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("gate name must be 1 to {MAX_GATE_NAME} characters of [A-Za-z0-9._-]")]
    BadName,
    #[error("too many gates (at most {MAX_GATES})")]
    TooMany,
}

/// The mock's gates, by name. A gate is created closed by the first request or test that
/// names it, and stays open once opened (later requests pass straight through).
#[derive(Debug, Default)]
pub struct Gates {
    gates: Mutex<HashMap<String, Gate>>,
}

/// Whether `name` is a valid gate name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GATE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Counts a response as waiting at a gate until dropped (released, or the client left).
struct Waiting<'a> {
    gates: &'a Gates,
    name: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.gates.lock().get_mut(self.name) {
            g.waiting = g.waiting.saturating_sub(1);
        }
    }
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gate>> {
        // Every update is a single field change: a poisoned map is still consistent.
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_gate<T>(&self, name: &str, f: impl FnOnce(&mut Gate) -> T) -> Result<T, GateError> {
        if !valid_name(name) {
            return Err(GateError::BadName);
        }
        let mut gates = self.lock();
        if !gates.contains_key(name) && gates.len() >= MAX_GATES {
            return Err(GateError::TooMany);
        }
        Ok(f(gates.entry(name.to_string()).or_insert_with(Gate::new)))
    }

    /// Checks that a request may wait at `name` (valid, and room for a new gate).
    pub fn check(&self, name: &str) -> Result<(), GateError> {
        self.with_gate(name, |_| ())
    }

    /// Opens `name` (creating it open if it does not exist): every response held there
    /// continues, and later ones pass without waiting.
    pub fn open(&self, name: &str) -> Result<(), GateError> {
        self.with_gate(name, |g| {
            g.open.send_replace(true);
        })
    }

    /// Waits until `name` is open, counted as waiting meanwhile. Returns at once if it is
    /// open. Cancel-safe: a response whose client left stops being counted.
    pub async fn wait(&self, name: &str) -> Result<(), GateError> {
        let mut rx = self.with_gate(name, |g| {
            g.waiting += 1;
            g.open.subscribe()
        })?;
        let waiting = Waiting { gates: self, name };
        // The sender lives in the map for the mock's lifetime, so this cannot fail; if it
        // somehow did, letting the response continue is the safe side.
        let _ = rx.wait_for(|open| *open).await;
        drop(waiting);
        let _ = self.with_gate(name, |g| g.passed += 1);
        Ok(())
    }

    /// Every gate with its state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, GateState> {
        self.lock()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    GateState {
                        open: *g.open.borrow(),
                        waiting: g.waiting,
                        passed: g.passed,
                    },
                )
            })
            .collect()
    }

    /// The state of one gate (closed and unused if nobody named it yet).
    pub fn state(&self, name: &str) -> GateState {
        self.lock().get(name).map_or(
            GateState {
                open: false,
                waiting: 0,
                passed: 0,
            },
            |g| GateState {
                open: *g.open.borrow(),
                waiting: g.waiting,
                passed: g.passed,
            },
        )
    }

    /// Opens every gate (shutdown: nothing may stay held).
    pub fn open_all(&self) {
        for g in self.lock().values() {
            g.open.send_replace(true);
        }
    }

    /// Forgets every gate (`/mock/reset`): held responses are released first.
    pub fn reset(&self) {
        self.open_all();
        self.lock().retain(|_, g| g.waiting > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_gate_holds_until_opened_and_counts_waiters() {
        let gates = Arc::new(Gates::default());
        // Awaited below: the test owns it.
        #[allow(clippy::disallowed_methods)]
        let held = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.wait("g").await })
        };
        while gates.state("g").waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!held.is_finished());
        assert_eq!(
            gates.state("g"),
            GateState {
                open: false,
                waiting: 1,
                passed: 0
            }
        );
        gates.open("g").unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(
            gates.state("g"),
            GateState {
                open: true,
                waiting: 0,
                passed: 1
            }
        );
        // Open stays open.
        gates.wait("g").await.unwrap();
        assert_eq!(gates.state("g").passed, 2);
    }

    #[tokio::test]
    async fn a_dropped_waiter_is_not_counted() {
        let gates = Gates::default();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(1), gates.wait("left")).await;
        assert!(waited.is_err(), "still closed");
        assert_eq!(gates.state("left").waiting, 0, "the timed-out waiter left");
        assert_eq!(gates.state("left").passed, 0);
    }

    #[test]
    fn names_and_the_gate_count_are_bounded() {
        let gates = Gates::default();
        assert_eq!(gates.check(""), Err(GateError::BadName));
        assert_eq!(gates.check("a b"), Err(GateError::BadName));
        assert_eq!(gates.check(&"x".repeat(129)), Err(GateError::BadName));
        for i in 0..MAX_GATES {
            gates.check(&format!("g{i}")).unwrap();
        }
        assert_eq!(gates.check("one-more"), Err(GateError::TooMany));
        gates.check("g0").unwrap();
        gates.reset();
        gates.check("one-more").unwrap();
    }
}
