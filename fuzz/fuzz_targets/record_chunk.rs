//! Arbitrary bytes as a stored recording chunk: the decoder must answer
//! with a chunk or an error, never panic, whatever a tampered or truncated
//! object holds (zstd frame, header, JSON Lines of events).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = juris_record::decode_chunk(data);
});
