//! Arbitrary bytes as a stream of tagged backend messages: framing and typed
//! decoding must never panic, and whatever decodes must re-encode to exactly
//! the bytes it came from (the gateway rewrites server messages, so a lossy
//! decode would silently change what a client sees).
#![no_main]

use bytes::BytesMut;
use juris_pgwire::{BackendMessage, Limits, split_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_len: 1 << 16,
        max_startup_len: 10_000,
    };
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, &limits) {
        if let Ok(message) = BackendMessage::decode(&frame) {
            let mut out = BytesMut::new();
            message.encode(&mut out);
            assert_eq!(out[0], frame.tag);
            assert_eq!(&out[5..], &frame.body[..], "re-encoding changed the body");
            let again = split_frame(&mut out, &limits)
                .expect("re-encoded frame")
                .expect("complete");
            assert_eq!(BackendMessage::decode(&again).expect("re-decodes"), message);
        }
    }
});
