//! Fuzz target: the splices that carry `prompt_cache_key` and `include_usage` into the
//! caller's bytes (`wire::plan_splices`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::fuzzing::request_splice(data);
});
