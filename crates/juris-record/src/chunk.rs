//! The chunk file: a self-describing header and the zstd-compressed JSON
//! Lines of a run of consecutive events.
//!
//! A chunk's hash is SHA-256 over its exact stored bytes, and each header
//! names the previous chunk's hash, so the chunks of a session form a
//! chain: editing, dropping, reordering or splicing in a chunk (even a
//! valid one from another session) breaks a link that the reader reports.
//!
//! Chunks come back from object stores and spool disks that the reader
//! does not trust, so [`decode_chunk`] is total: every length is checked
//! against [`DecodeLimits`] before anything is allocated or decompressed,
//! and every failure is an error, never a panic.

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::RecordEvent;
use crate::{RecordError, Result};

/// First 8 bytes of every chunk file.
pub const CHUNK_MAGIC: &[u8; 8] = b"JRECCHNK";
/// The chunk format version this crate writes and reads.
pub const CHUNK_VERSION: u16 = 1;
/// `prev_chunk_hash` of a session's first chunk.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest header the format allows.
pub const MAX_HEADER_BYTES: usize = 4096;
/// zstd level for chunk payloads: sealing runs on the spool writer's
/// thread, and on JSON Lines of rows level 1 measured both faster and no
/// larger than level 3.
const ZSTD_LEVEL: i32 = 1;
/// Largest zstd window the decoder accepts (2^23 = 8 MiB), so a crafted
/// frame cannot make the reader allocate a huge window. The writer's
/// level-1 frames of at most a few MiB stay far below it.
const MAX_WINDOW_LOG: u32 = 23;
const FIXED_PREFIX: usize = 8 + 2 + 4;

/// Bounds for decoding untrusted chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Stored (compressed) size of a chunk file.
    pub max_chunk_bytes: usize,
    /// Decompressed JSON Lines of one chunk.
    pub max_uncompressed_bytes: usize,
    /// One event's JSON line.
    pub max_event_bytes: usize,
    /// A manifest file.
    pub max_manifest_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_chunk_bytes: 64 << 20,
            max_uncompressed_bytes: 64 << 20,
            max_event_bytes: 16 << 20,
            max_manifest_bytes: 16 << 20,
        }
    }
}

/// The header of a chunk, stored as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkHeader {
    pub session_id: String,
    /// 1 for the first chunk of a session, then +1.
    pub index: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_at_ms: u64,
    pub last_at_ms: u64,
    /// Hash of chunk `index - 1`; [`GENESIS_HASH`] for chunk 1.
    pub prev_chunk_hash: String,
    /// Length of the decompressed JSON Lines.
    pub uncompressed_bytes: u64,
}

/// A decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedChunk {
    pub header: ChunkHeader,
    pub events: Vec<RecordEvent>,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub hash: String,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Build a chunk file from its header (without `uncompressed_bytes`,
/// which is filled in) and the events' JSON Lines.
pub(crate) fn encode_chunk(mut header: ChunkHeader, lines: &[u8]) -> Result<Vec<u8>> {
    header.uncompressed_bytes = lines.len() as u64;
    let header_bytes = header_bytes(&header)?;
    let payload = zstd::bulk::compress(lines, ZSTD_LEVEL).map_err(|e| RecordError::Corrupt {
        what: format!("chunk {} of session {}", header.index, header.session_id),
        reason: format!("zstd compression failed: {e}"),
    })?;
    let mut out = Vec::with_capacity(FIXED_PREFIX + header_bytes.len() + payload.len());
    out.extend_from_slice(CHUNK_MAGIC);
    out.extend_from_slice(&CHUNK_VERSION.to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn header_bytes(header: &ChunkHeader) -> Result<Vec<u8>> {
    let bytes = juris_audit::canonical::to_string(&serde_json::to_value(header)?).into_bytes();
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(RecordError::Invalid {
            what: "chunk header",
            value: header.session_id.clone(),
            reason: "longer than 4096 bytes",
        });
    }
    Ok(bytes)
}

/// Decode a chunk with the default [`DecodeLimits`]. Total: any input
/// gives `Ok` or `Err`, never a panic.
pub fn decode_chunk(bytes: &[u8]) -> Result<DecodedChunk> {
    decode_chunk_with(bytes, &DecodeLimits::default())
}

/// Read only the header of a chunk (bounded, total).
pub fn decode_header<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(ChunkHeader, &'a [u8])> {
    let corrupt = |reason: String| RecordError::Corrupt {
        what: "chunk".into(),
        reason,
    };
    if bytes.len() > limits.max_chunk_bytes {
        return Err(corrupt(format!(
            "{} bytes exceed the limit of {}",
            bytes.len(),
            limits.max_chunk_bytes
        )));
    }
    if bytes.len() < FIXED_PREFIX || &bytes[..8] != CHUNK_MAGIC {
        return Err(corrupt("not a Juris recording chunk (bad magic)".into()));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != CHUNK_VERSION {
        return Err(corrupt(format!(
            "unsupported chunk format version {version}"
        )));
    }
    let header_len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if header_len == 0 || header_len > MAX_HEADER_BYTES {
        return Err(corrupt(format!("header length {header_len} out of range")));
    }
    let rest = &bytes[FIXED_PREFIX..];
    if rest.len() < header_len {
        return Err(corrupt("truncated header".into()));
    }
    let (raw_header, payload) = rest.split_at(header_len);
    let header: ChunkHeader = serde_json::from_slice(raw_header)
        .map_err(|e| corrupt(format!("header is not valid JSON: {e}")))?;
    if header_bytes(&header)? != raw_header {
        return Err(corrupt("header is not in canonical form".into()));
    }
    crate::check_session_id(&header.session_id)?;
    if !juris_audit::canonical::is_hash(&header.prev_chunk_hash) {
        return Err(corrupt(
            "prev_chunk_hash is not 64 lower-case hex digits".into(),
        ));
    }
    if header.index == 0 {
        return Err(corrupt("chunk index 0 (indices start at 1)".into()));
    }
    if header.first_seq == 0 || header.last_seq < header.first_seq {
        return Err(corrupt(format!(
            "bad seq range {}..={}",
            header.first_seq, header.last_seq
        )));
    }
    Ok((header, payload))
}

/// Decode a chunk within `limits`. Total: any input gives `Ok` or `Err`.
pub fn decode_chunk_with(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedChunk> {
    let (header, payload) = decode_header(bytes, limits)?;
    let what = format!("chunk {} of session {}", header.index, header.session_id);
    let corrupt = |reason: String| RecordError::Corrupt {
        what: what.clone(),
        reason,
    };
    let claimed = header.uncompressed_bytes;
    if claimed > limits.max_uncompressed_bytes as u64 {
        return Err(corrupt(format!(
            "{claimed} uncompressed bytes exceed the limit of {}",
            limits.max_uncompressed_bytes
        )));
    }
    match zstd::zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => {}
        Ok(_) => return Err(corrupt("bytes after the zstd frame".into())),
        Err(_) => return Err(corrupt("payload is not one zstd frame".into())),
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(|e| corrupt(format!("zstd: {e}")))?
        .single_frame();
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    // Read at most one byte more than claimed, to detect a longer payload
    // without decompressing all of it.
    let mut lines = Vec::with_capacity((claimed as usize).min(1 << 20));
    decoder
        .take(claimed + 1)
        .read_to_end(&mut lines)
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    if lines.len() as u64 != claimed {
        return Err(corrupt(format!(
            "payload decompresses to {} bytes, header says {claimed}",
            lines.len()
        )));
    }
    let events = parse_lines(&lines, limits.max_event_bytes).map_err(corrupt)?;
    check_events_match_header(&header, &events).map_err(corrupt)?;
    Ok(DecodedChunk {
        header,
        events,
        hash: sha256_hex(bytes),
    })
}

/// Parse JSON Lines of events: every line ends with `\n`.
fn parse_lines(lines: &[u8], max_event_bytes: usize) -> Result<Vec<RecordEvent>, String> {
    if !lines.is_empty() && lines.last() != Some(&b'\n') {
        return Err("last event line is not terminated".into());
    }
    let mut events = Vec::new();
    for (number, line) in lines.split_inclusive(|b| *b == b'\n').enumerate() {
        if line.len() > max_event_bytes {
            return Err(format!(
                "event line {} has {} bytes, over the limit of {max_event_bytes}",
                number + 1,
                line.len()
            ));
        }
        let event: RecordEvent =
            serde_json::from_slice(line).map_err(|e| format!("event line {}: {e}", number + 1))?;
        events.push(event);
    }
    Ok(events)
}

fn check_events_match_header(header: &ChunkHeader, events: &[RecordEvent]) -> Result<(), String> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err("chunk holds no events".into());
    };
    for (offset, event) in events.iter().enumerate() {
        let expected = header.first_seq.checked_add(offset as u64);
        if Some(event.seq) != expected {
            return Err(format!(
                "event line {} has seq {}, expected {}",
                offset + 1,
                event.seq,
                expected.map_or("none".to_string(), |s| s.to_string())
            ));
        }
    }
    if last.seq != header.last_seq {
        return Err(format!(
            "events end at seq {}, header says {}",
            last.seq, header.last_seq
        ));
    }
    if first.at_ms != header.first_at_ms || last.at_ms != header.last_at_ms {
        return Err("event times differ from the header's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, EventKind};

    pub(crate) fn sample(session: &str, index: u32, first_seq: u64, n: u64, prev: &str) -> Vec<u8> {
        let mut lines = Vec::new();
        for seq in first_seq..first_seq + n {
            let event = RecordEvent {
                seq,
                at_ms: 1000 + seq,
                elapsed_us: seq * 10,
                direction: Direction::ClientToServer,
                kind: EventKind::Query {
                    text: format!("select {seq}"),
                },
            };
            serde_json::to_writer(&mut lines, &event).unwrap();
            lines.push(b'\n');
        }
        let header = ChunkHeader {
            session_id: session.into(),
            index,
            first_seq,
            last_seq: first_seq + n - 1,
            first_at_ms: 1000 + first_seq,
            last_at_ms: 1000 + first_seq + n - 1,
            prev_chunk_hash: prev.into(),
            uncompressed_bytes: 0,
        };
        encode_chunk(header, &lines).unwrap()
    }

    const SID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        let bytes = sample(SID, 1, 1, 5, GENESIS_HASH);
        let chunk = decode_chunk(&bytes).unwrap();
        assert_eq!(chunk.events.len(), 5);
        assert!(chunk.header.uncompressed_bytes > 0);
        assert_eq!(chunk.hash, sha256_hex(&bytes));
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_not_a_panic() {
        let bytes = sample(SID, 1, 1, 20, GENESIS_HASH);
        for len in 0..bytes.len() {
            assert!(decode_chunk(&bytes[..len]).is_err(), "prefix {len}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            // A flip may still decode (inside a string in the header is
            // refused by the canonical check; in the payload, zstd's
            // checksum is off by default) but must never panic.
            let _ = decode_chunk(&flipped);
        }
    }

    #[test]
    fn limits_are_enforced_before_work() {
        let bytes = sample(SID, 1, 1, 20, GENESIS_HASH);
        let small = DecodeLimits {
            max_chunk_bytes: bytes.len() - 1,
            ..DecodeLimits::default()
        };
        assert!(decode_chunk_with(&bytes, &small).is_err());
        let small = DecodeLimits {
            max_uncompressed_bytes: 10,
            ..DecodeLimits::default()
        };
        let err = decode_chunk_with(&bytes, &small).unwrap_err().to_string();
        assert!(err.contains("exceed the limit"), "{err}");
        let small = DecodeLimits {
            max_event_bytes: 10,
            ..DecodeLimits::default()
        };
        let err = decode_chunk_with(&bytes, &small).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }

    #[test]
    fn a_lying_header_is_refused() {
        // Claim fewer uncompressed bytes than the payload has.
        let bytes = sample(SID, 1, 1, 3, GENESIS_HASH);
        let (mut header, payload) = decode_header(&bytes, &DecodeLimits::default()).unwrap();
        header.uncompressed_bytes -= 1;
        let hb = header_bytes(&header).unwrap();
        let mut forged = Vec::new();
        forged.extend_from_slice(CHUNK_MAGIC);
        forged.extend_from_slice(&CHUNK_VERSION.to_be_bytes());
        forged.extend_from_slice(&(hb.len() as u32).to_be_bytes());
        forged.extend_from_slice(&hb);
        forged.extend_from_slice(payload);
        let err = decode_chunk(&forged).unwrap_err().to_string();
        assert!(err.contains("header says"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn decode_chunk_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = decode_chunk(&bytes);
        }

        #[test]
        fn decode_chunk_is_total_on_plausible_prefixes(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            cut in 0usize..400,
        ) {
            let mut bytes = sample(SID, 2, 10, 4, GENESIS_HASH);
            bytes.truncate(cut.min(bytes.len()));
            bytes.extend_from_slice(&tail);
            let _ = decode_chunk(&bytes);
        }
    }
}
