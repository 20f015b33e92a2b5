//! Invariants of the Messages stream code, shared by the `anthropic_assemble` fuzz target
//! and the proptests: they must hold for any input bytes.

use bytes::Bytes;

use super::{MessageAssembler, json_to_sse};
use crate::sse;

/// Assembling any bytes as a Messages stream never panics; a complete stream that
/// converts to JSON renders back to a stream that assembles to the same bytes.
pub fn messages_assemble(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let mut asm = MessageAssembler::new();
    for ev in sse::split_all(&bytes, true) {
        asm.push(&ev);
    }
    let _ = asm.usage();
    let _ = asm.model();
    if !asm.is_complete() {
        return;
    }
    let Ok(json) = asm.into_json() else {
        return;
    };
    let Ok(events) = json_to_sse(&json) else {
        panic!("a converted message does not render: {json:?}");
    };
    let mut again = MessageAssembler::new();
    for ev in sse::split_all(&Bytes::from(events.concat()), false) {
        again.push(&ev);
    }
    assert!(
        again.is_complete(),
        "the rendering of {json:?} is not complete"
    );
    match again.into_json() {
        Ok(back) => assert_eq!(back, json, "round trip changed the message"),
        Err(e) => panic!("a complete rendering does not convert: {e}"),
    }
}
