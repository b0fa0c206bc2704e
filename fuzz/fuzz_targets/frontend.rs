//! Arbitrary bytes as a stream of tagged frontend messages: framing and typed
//! decoding must never panic, and whatever decodes must re-encode to a frame
//! that decodes to the same message. The 'p' body helpers are fed every body
//! too, since which of them applies depends on state the fuzzer cannot see.
#![no_main]

use bytes::BytesMut;
use juris_pgwire::{FrontendMessage, Limits, SaslInitialResponse, decode_password, split_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small limit so the fuzzer also reaches the MessageTooLong path.
    let limits = Limits {
        max_message_len: 1 << 16,
        max_startup_len: 10_000,
    };
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, &limits) {
        if let Ok(message) = FrontendMessage::decode(&frame) {
            let mut out = BytesMut::new();
            message.encode(&mut out);
            assert_eq!(&out[5..], &frame.body[..], "re-encoding changed the body");
            let again = split_frame(&mut out, &limits)
                .expect("re-encoded frame")
                .expect("complete");
            assert_eq!(
                FrontendMessage::decode(&again).expect("re-decodes"),
                message
            );
        }
        if let Ok(password) = decode_password(&frame.body) {
            let mut out = BytesMut::new();
            juris_pgwire::password_message(&password, &mut out);
            assert_eq!(&out[5..], &frame.body[..]);
        }
        if let Ok(initial) = SaslInitialResponse::decode(&frame.body) {
            let mut out = BytesMut::new();
            initial.encode(&mut out);
            assert_eq!(&out[5..], &frame.body[..]);
        }
    }
});
