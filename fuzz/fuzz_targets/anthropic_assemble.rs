//! Fuzz target: Anthropic Messages stream assembly never panics, and converted messages
//! round-trip through render and assembly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prefixcache_core::wire::anthropic::fuzzing::messages_assemble(data);
});
