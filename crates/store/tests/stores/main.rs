//! Integration tests of the stores: the conformance suite against every backend, then
//! what is specific to each (disk restarts and eviction, tiered freshness, `open`).
//!
//! One test binary for all of them: each binary links the whole dependency tree, and
//! on a 2-core machine that is most of the build time.

#![allow(clippy::disallowed_methods)] // tests own their spawned tasks via JoinSet
// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod disk;
mod golden;
mod memory;
mod open;
mod redis;
mod tiered;
