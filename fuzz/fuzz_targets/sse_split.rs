//! Fuzz target: SSE framing is independent of chunking and loses no byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::fuzzing::sse_split(data);
});
