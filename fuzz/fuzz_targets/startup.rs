//! Arbitrary bytes as the first packets of a connection: never panics, and
//! whatever decodes re-encodes to the same packet.
#![no_main]

use bytes::BytesMut;
use juris_pgwire::{Limits, decode_startup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decode_startup(&mut buf, &limits) {
        let mut out = BytesMut::new();
        packet.encode(&mut out);
        assert_eq!(decode_startup(&mut out, &limits).expect("re-decodes"), Some(packet));
    }
});
