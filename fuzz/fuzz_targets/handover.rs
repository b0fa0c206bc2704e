//! The relay's view of a client's TLS stream and the node-to-node handover
//! header, link openings and cancel keys: no input may panic, and the record scanner must agree with
//! itself however the stream is split.
#![no_main]

use juris_pgwire::handover::{
    CANCEL_KEY_MAGIC, HandoverHeader, LinkCancelKey, LinkOpening, TlsRecordScanner,
    client_hello_progress,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = HandoverHeader::decode(data);
    let _ = LinkOpening::decode(data);
    let _ = LinkCancelKey::decode(CANCEL_KEY_MAGIC, data);
    let _ = client_hello_progress(data, 16 * 1024);
    let whole = TlsRecordScanner::default().feed(data);
    let split = data.len() / 2;
    let mut pieces = TlsRecordScanner::default();
    let first = pieces.feed(&data[..split]);
    if let (Ok(whole), Ok(first)) = (&whole, first) {
        let second = pieces.feed(&data[split..]).expect("same bytes, same verdict");
        assert_eq!(*whole, first + second);
    }
});
