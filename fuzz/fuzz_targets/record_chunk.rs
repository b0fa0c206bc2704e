//! Arbitrary bytes as a stored recording chunk: the decoder must answer
//! with a chunk or an error, never panic, whatever a tampered or truncated
//! object holds (zstd frames, header, JSON Lines of version 1, event
//! frames of versions 2 and 3). The same bytes are also fed to the
//! event-frame decoder directly, as decompressed spool frames would be,
//! because a fuzzer rarely gets through zstd to reach it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = juris_record::decode_chunk(data);
    let mut cursor = juris_record::frame::FrameCursor::new();
    let mut at = 0;
    while let Ok(Some((frame, used))) =
        juris_record::frame::decode_frame(&data[at..], &mut cursor, 1 << 20)
    {
        let _ = juris_record::frame::frame_event(&frame);
        at += used;
    }
});
