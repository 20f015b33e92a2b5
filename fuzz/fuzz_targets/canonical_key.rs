//! Fuzz target: the raw JSON reader, the canonical form and the cache key
//! (`canonical::canonicalize`, `key::compute_keys`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::fuzzing::canonical_key(data);
});
