//! Fuzz target: request-body parsing, canonical keys (`key::compute_keys`) and the
//! bytes prepared for upstream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::fuzzing::request_body(data);
});
