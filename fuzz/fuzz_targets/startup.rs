//! Arbitrary bytes as the first packets of a connection: never panics, and
//! whatever decodes re-encodes to exactly the bytes it came from.
#![no_main]

use bytes::BytesMut;
use juris_pgwire::{Limits, decode_startup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        let Ok(Some(packet)) = decode_startup(&mut buf, &limits) else {
            break;
        };
        let consumed = before.len() - buf.len();
        let mut out = BytesMut::new();
        packet.encode(&mut out);
        assert_eq!(
            &out[..],
            &before[..consumed],
            "re-encoding changed the packet"
        );
        assert_eq!(
            decode_startup(&mut out, &limits).expect("re-decodes"),
            Some(packet)
        );
    }
});
