//! Fuzz target: stream assembly never panics, and complete streams round-trip through
//! JSON -> SSE -> JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::fuzzing::sse_assemble(data);
});
