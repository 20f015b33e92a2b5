//! Offline tools over request logs: `lint`, `analyze` and `replay` (DESIGN.md §8).
//! Not built yet.
