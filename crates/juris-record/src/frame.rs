//! Event frames: the compact binary form of events in chunk format
//! versions 2 and 3 and, compressed, in the spool's `events.zframes`.
//!
//! The data plane records hundreds of thousands of server messages per
//! second, so an event is written the way the client received it: the
//! PostgreSQL message itself (type byte and body, already masked), behind
//! a few bytes of framing. Nothing is decoded, escaped or allocated per
//! value on the hot path; turning a frame back into an [`EventKind`]
//! happens only when a recording is read ([`frame_event`]). Rare events
//! (session start and end, gaps, client messages of masked sessions) are
//! frames holding the event kind's JSON.
//!
//! A frame is a *kind* byte, then either absolute or delta times, then a
//! length and the body (`docs/formats/recording.md` §2.2). Seqs are
//! consecutive, so a delta frame's seq is implied; absolute frames start
//! every hand-over batch of a recorder, so that a chunk (which always
//! starts at a batch) and the spool file after a seal both start with
//! one, and a reader never needs state from outside the payload.
//!
//! Decoders here read bytes from object stores and crashed spools:
//! every length is checked against a limit before use, every addition is
//! checked, and every failure is an error, never a panic.

use crate::event::{Direction, EventKind, RecordEvent};
use crate::{RecordError, Result, wire};

/// Set on the kind byte of a frame that carries its seq and times in
/// full instead of as deltas from the previous frame.
pub const ABSOLUTE: u8 = 0x80;
/// Longest LEB128 encoding of a u64.
const MAX_VARINT_BYTES: usize = 10;
/// Longest frame header: kind, three absolute varints and the length.
pub const MAX_FRAME_HEADER_BYTES: usize = 1 + 4 * MAX_VARINT_BYTES;

/// What a frame's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The JSON of an [`EventKind`], sent by the client.
    ClientJson = 1,
    /// The JSON of an [`EventKind`], received by the client.
    ServerJson = 2,
    /// The JSON of an [`EventKind`], a fact the node added.
    MetaJson = 3,
    /// A PostgreSQL backend message as the client received it: type byte,
    /// then the body (without the 4-byte length).
    ServerMessage = 4,
    /// A PostgreSQL frontend message as the client sent it, same layout.
    ClientMessage = 5,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => FrameKind::ClientJson,
            2 => FrameKind::ServerJson,
            3 => FrameKind::MetaJson,
            4 => FrameKind::ServerMessage,
            5 => FrameKind::ClientMessage,
            _ => return None,
        })
    }

    /// The JSON frame kind for events going `direction`.
    pub fn json(direction: Direction) -> Self {
        match direction {
            Direction::ClientToServer => FrameKind::ClientJson,
            Direction::ServerToClient => FrameKind::ServerJson,
            Direction::Meta => FrameKind::MetaJson,
        }
    }

    /// The wire-message frame kind for messages going `direction`
    /// (`None` for [`Direction::Meta`]: the node's own facts are JSON).
    pub fn message(direction: Direction) -> Option<Self> {
        match direction {
            Direction::ClientToServer => Some(FrameKind::ClientMessage),
            Direction::ServerToClient => Some(FrameKind::ServerMessage),
            Direction::Meta => None,
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            FrameKind::ClientJson | FrameKind::ClientMessage => Direction::ClientToServer,
            FrameKind::ServerJson | FrameKind::ServerMessage => Direction::ServerToClient,
            FrameKind::MetaJson => Direction::Meta,
        }
    }
}

/// One decoded frame; the body borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    /// Whether the frame carried its seq and times in full.
    pub absolute: bool,
    pub seq: u64,
    pub at_ms: u64,
    pub elapsed_us: u64,
    pub body: &'a [u8],
}

/// Seq and times of the last frame written or read: what the next delta
/// frame is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameCursor {
    last: Option<(u64, u64, u64)>,
}

impl FrameCursor {
    /// A cursor for the start of a payload or batch: the next frame is
    /// absolute.
    pub fn new() -> Self {
        FrameCursor::default()
    }

    /// Seq of the last frame, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.last.map(|(seq, _, _)| seq)
    }
}

/// Write `value` as LEB128 into `out` at `at`; returns the position
/// after it. `out` must have room for [`MAX_VARINT_BYTES`] from `at`.
#[inline(always)]
fn put_varint(out: &mut [u8; MAX_FRAME_HEADER_BYTES], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// Append one frame. The frame is absolute when `cursor` has no previous
/// frame, when `seq` does not follow it, or when a time went back (a
/// wall clock may step back; deltas are unsigned). Inlined, and the
/// header assembled on the stack and appended at once: the recorder
/// calls it per row of a result.
#[inline]
pub fn encode_frame(
    out: &mut Vec<u8>,
    cursor: &mut FrameCursor,
    seq: u64,
    at_ms: u64,
    elapsed_us: u64,
    kind: FrameKind,
    body: &[&[u8]],
) {
    let length: usize = body.iter().map(|part| part.len()).sum();
    let mut header = [0u8; MAX_FRAME_HEADER_BYTES];
    let mut at = 1;
    match cursor.last {
        Some((last_seq, last_at, last_elapsed))
            if last_seq.checked_add(1) == Some(seq)
                && at_ms >= last_at
                && elapsed_us >= last_elapsed =>
        {
            header[0] = kind as u8;
            at = put_varint(&mut header, at, at_ms - last_at);
            at = put_varint(&mut header, at, elapsed_us - last_elapsed);
        }
        _ => {
            header[0] = kind as u8 | ABSOLUTE;
            at = put_varint(&mut header, at, seq);
            at = put_varint(&mut header, at, at_ms);
            at = put_varint(&mut header, at, elapsed_us);
        }
    }
    at = put_varint(&mut header, at, length as u64);
    out.reserve(at + length);
    out.extend_from_slice(&header[..at]);
    for part in body {
        out.extend_from_slice(part);
    }
    cursor.last = Some((seq, at_ms, elapsed_us));
}

/// Why a frame could not be decoded.
fn corrupt(reason: impl Into<String>) -> RecordError {
    RecordError::Corrupt {
        what: "event frame".into(),
        reason: reason.into(),
    }
}

/// Read a LEB128 varint: `Ok(None)` if `bytes` ends inside it. Refuses
/// encodings longer than needed and values over `u64::MAX`, so every
/// value has exactly one encoding.
fn get_varint(bytes: &[u8], at: &mut usize) -> Result<Option<u64>> {
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_BYTES {
        let Some(&byte) = bytes.get(*at + i) else {
            return Ok(None);
        };
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(corrupt("varint exceeds 64 bits"));
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(corrupt("varint is not minimally encoded"));
            }
            *at += i + 1;
            return Ok(Some(value));
        }
    }
    Err(corrupt("varint exceeds 64 bits"))
}

/// Decode the frame at the start of `bytes`, following `cursor` (which
/// it advances). `Ok(None)`: `bytes` ends inside the frame (need more
/// bytes; the cursor is unchanged). Bodies longer than
/// `max_event_bytes`, unknown kinds, a delta frame without a previous
/// frame and overflowing seqs or times are errors. Returns the frame and
/// its encoded length.
pub fn decode_frame<'a>(
    bytes: &'a [u8],
    cursor: &mut FrameCursor,
    max_event_bytes: usize,
) -> Result<Option<(Frame<'a>, usize)>> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let absolute = first & ABSOLUTE != 0;
    let kind = FrameKind::from_byte(first & !ABSOLUTE)
        .ok_or_else(|| corrupt(format!("unknown frame kind {first:#04x}")))?;
    let mut at = 1;
    macro_rules! varint {
        () => {
            match get_varint(bytes, &mut at)? {
                Some(value) => value,
                None => return Ok(None),
            }
        };
    }
    let (seq, at_ms, elapsed_us) = if absolute {
        let seq = varint!();
        let at_ms = varint!();
        let elapsed_us = varint!();
        (seq, at_ms, elapsed_us)
    } else {
        let at_delta = varint!();
        let elapsed_delta = varint!();
        let (last_seq, last_at, last_elapsed) = cursor
            .last
            .ok_or_else(|| corrupt("the first frame does not carry its seq and times"))?;
        (
            last_seq
                .checked_add(1)
                .ok_or_else(|| corrupt("seq overflows"))?,
            last_at
                .checked_add(at_delta)
                .ok_or_else(|| corrupt("at_ms overflows"))?,
            last_elapsed
                .checked_add(elapsed_delta)
                .ok_or_else(|| corrupt("elapsed_us overflows"))?,
        )
    };
    let length = varint!();
    if length > max_event_bytes as u64 {
        return Err(corrupt(format!(
            "frame body of {length} bytes exceeds the limit of {max_event_bytes}"
        )));
    }
    let length = length as usize;
    let Some(body) = bytes.get(at..at + length) else {
        return Ok(None);
    };
    if seq == 0 {
        return Err(corrupt("seq 0 (seqs start at 1)"));
    }
    cursor.last = Some((seq, at_ms, elapsed_us));
    Ok(Some((
        Frame {
            kind,
            absolute,
            seq,
            at_ms,
            elapsed_us,
            body,
        },
        at + length,
    )))
}

/// The event a frame stands for. JSON frames must hold a valid
/// [`EventKind`]; message frames are decoded as the client saw them
/// ([`wire`]), a message that does not decode becoming `raw`.
pub fn frame_event(frame: &Frame<'_>) -> Result<RecordEvent> {
    let kind = match frame.kind {
        FrameKind::ClientJson | FrameKind::ServerJson | FrameKind::MetaJson => {
            serde_json::from_slice::<EventKind>(frame.body)
                .map_err(|e| corrupt(format!("event {}: {e}", frame.seq)))?
        }
        FrameKind::ServerMessage | FrameKind::ClientMessage => {
            let Some((&tag, body)) = frame.body.split_first() else {
                return Err(corrupt(format!(
                    "event {}: a message frame without a type byte",
                    frame.seq
                )));
            };
            if frame.kind == FrameKind::ServerMessage {
                wire::server_message_event(tag, body)
            } else {
                wire::client_message_event(tag, body)
            }
            .unwrap_or_else(|| EventKind::raw(body))
        }
    };
    Ok(RecordEvent {
        seq: frame.seq,
        at_ms: frame.at_ms,
        elapsed_us: frame.elapsed_us,
        direction: frame.kind.direction(),
        kind,
    })
}

/// Encode `event` as a JSON frame (what the spool's recovery and tests
/// write; the data plane records messages with [`FrameKind::ServerMessage`]
/// and [`FrameKind::ClientMessage`]).
pub fn encode_event(
    out: &mut Vec<u8>,
    cursor: &mut FrameCursor,
    event: &RecordEvent,
) -> Result<()> {
    let body = serde_json::to_vec(&event.kind)?;
    encode_frame(
        out,
        cursor,
        event.seq,
        event.at_ms,
        event.elapsed_us,
        FrameKind::json(event.direction),
        &[&body],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 << 20;

    fn data_row_body() -> Vec<u8> {
        let mut body = vec![0, 2];
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"42");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut cursor = FrameCursor::new();
        let row = data_row_body();
        encode_frame(
            &mut out,
            &mut cursor,
            7,
            1_767_225_600_123,
            4200,
            FrameKind::ServerMessage,
            &[b"D", &row],
        );
        encode_frame(
            &mut out,
            &mut cursor,
            8,
            1_767_225_600_124,
            4300,
            FrameKind::ServerMessage,
            &[b"C", b"SELECT 1\0"],
        );
        // A wall clock that stepped back: absolute again.
        encode_event(
            &mut out,
            &mut cursor,
            &RecordEvent {
                seq: 9,
                at_ms: 1_767_225_600_000,
                elapsed_us: 4400,
                direction: Direction::Meta,
                kind: EventKind::SessionEnd {
                    reason: "bye".into(),
                },
            },
        )
        .unwrap();
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<RecordEvent>> {
        let mut cursor = FrameCursor::new();
        let mut at = 0;
        let mut events = Vec::new();
        while at < bytes.len() {
            let (frame, used) = decode_frame(&bytes[at..], &mut cursor, LIMIT)?
                .ok_or_else(|| corrupt("truncated"))?;
            events.push(frame_event(&frame)?);
            at += used;
        }
        Ok(events)
    }

    #[test]
    fn frames_decode_to_the_events_the_client_saw() {
        let bytes = sample();
        let events = decode_all(&bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            RecordEvent {
                seq: 7,
                at_ms: 1_767_225_600_123,
                elapsed_us: 4200,
                direction: Direction::ServerToClient,
                kind: EventKind::DataRow {
                    values: vec![Some("42".into()), None]
                },
            }
        );
        assert_eq!(events[1].seq, 8);
        assert_eq!(events[1].at_ms, 1_767_225_600_124);
        assert_eq!(events[1].elapsed_us, 4300);
        assert_eq!(
            events[1].kind,
            EventKind::CommandComplete {
                tag: "SELECT 1".into()
            }
        );
        assert_eq!(events[2].seq, 9);
        assert_eq!(events[2].at_ms, 1_767_225_600_000);
        assert_eq!(events[2].direction, Direction::Meta);
        // The second frame is a delta frame: small.
        let first_len = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(bytes[first_len], FrameKind::ServerMessage as u8);
    }

    #[test]
    fn every_truncation_needs_more_bytes_and_never_panics() {
        let bytes = sample();
        let first_len = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap()
            .1;
        for len in 0..first_len {
            let mut cursor = FrameCursor::new();
            assert!(
                decode_frame(&bytes[..len], &mut cursor, LIMIT)
                    .unwrap()
                    .is_none(),
                "prefix {len}"
            );
            assert_eq!(cursor, FrameCursor::new(), "cursor unchanged");
        }
    }

    #[test]
    fn a_delta_frame_first_is_refused() {
        let bytes = sample();
        let first_len = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap()
            .1;
        let err = decode_frame(&bytes[first_len..], &mut FrameCursor::new(), LIMIT).unwrap_err();
        assert!(err.to_string().contains("does not carry"), "{err}");
    }

    fn varint(value: u64) -> Vec<u8> {
        let mut out = [0; MAX_FRAME_HEADER_BYTES];
        let end = put_varint(&mut out, 0, value);
        out[..end].to_vec()
    }

    #[test]
    fn huge_lengths_are_refused_before_reading_the_body() {
        let mut bytes = vec![FrameKind::ServerMessage as u8 | ABSOLUTE, 1, 1, 1];
        bytes.extend_from_slice(&varint(u64::MAX));
        let err = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let mut bytes = vec![FrameKind::ServerMessage as u8 | ABSOLUTE, 1, 1, 1];
        bytes.extend_from_slice(&varint(101));
        assert!(decode_frame(&bytes, &mut FrameCursor::new(), 100).is_err());
    }

    #[test]
    fn bad_kinds_bad_varints_and_seq_zero_are_refused() {
        for kind in [0u8, 6, 0x7f, 0x80, 0x86, 0xff] {
            let bytes = [kind, 1, 1, 1, 1, b'C'];
            assert!(
                decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).is_err(),
                "kind {kind:#x}"
            );
        }
        // Eleven continuation bytes: more than 64 bits.
        let mut bytes = vec![FrameKind::MetaJson as u8 | ABSOLUTE];
        bytes.extend_from_slice(&[0xff; 11]);
        assert!(decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).is_err());
        // 2^64 exactly.
        let mut bytes = vec![FrameKind::MetaJson as u8 | ABSOLUTE];
        bytes.extend_from_slice(&[0x80; 9]);
        bytes.push(0x02);
        assert!(decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).is_err());
        // A two-byte encoding of 1.
        let bytes = [FrameKind::MetaJson as u8 | ABSOLUTE, 0x81, 0x00, 1, 1, 0];
        assert!(decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).is_err());
        // Seq 0.
        let bytes = [FrameKind::MetaJson as u8 | ABSOLUTE, 0, 1, 1, 0];
        assert!(decode_frame(&bytes, &mut FrameCursor::new(), LIMIT).is_err());
        // u64::MAX survives, and one more overflows.
        let mut bytes = vec![FrameKind::ServerMessage as u8 | ABSOLUTE];
        bytes.extend_from_slice(&varint(u64::MAX));
        bytes.extend_from_slice(&[1, 1, 1, b'C']);
        bytes.extend_from_slice(&[FrameKind::ServerMessage as u8, 0, 0, 1, b'C']);
        let mut cursor = FrameCursor::new();
        let (frame, used) = decode_frame(&bytes, &mut cursor, LIMIT).unwrap().unwrap();
        assert_eq!(frame.seq, u64::MAX);
        assert!(decode_frame(&bytes[used..], &mut cursor, LIMIT).is_err());
    }

    #[test]
    fn message_frames_need_a_type_byte_and_json_frames_valid_json() {
        let bytes = [FrameKind::ServerMessage as u8 | ABSOLUTE, 1, 1, 1, 0];
        let (frame, _) = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap();
        assert!(frame_event(&frame).is_err());
        let bytes = [FrameKind::MetaJson as u8 | ABSOLUTE, 1, 1, 1, 1, b'{'];
        let (frame, _) = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap();
        assert!(frame_event(&frame).is_err());
        // A malformed DataRow is kept as raw bytes, as the client got them.
        let bytes = [
            FrameKind::ServerMessage as u8 | ABSOLUTE,
            1,
            1,
            1,
            3,
            b'D',
            0,
            9,
        ];
        let (frame, _) = decode_frame(&bytes, &mut FrameCursor::new(), LIMIT)
            .unwrap()
            .unwrap();
        assert_eq!(frame_event(&frame).unwrap().kind, EventKind::raw(&[0, 9]));
    }

    proptest::proptest! {
        #[test]
        fn decoding_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut cursor = FrameCursor::new();
            let mut at = 0;
            while let Ok(Some((frame, used))) = decode_frame(&bytes[at..], &mut cursor, 1024) {
                proptest::prop_assert!(used > 0 && used <= bytes.len() - at);
                let _ = frame_event(&frame);
                at += used;
            }
        }

        #[test]
        fn what_is_encoded_decodes_back(
            steps in proptest::collection::vec((0u64..3, 0u64..5000, 0u64..2, proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 1..40)
        ) {
            let mut out = Vec::new();
            let mut cursor = FrameCursor::new();
            let (mut seq, mut at_ms, mut elapsed) = (1u64, 1_000u64, 0u64);
            let mut written = Vec::new();
            for (seq_step, elapsed_step, back, body) in steps {
                seq += seq_step;
                elapsed += elapsed_step;
                at_ms = if back == 1 { at_ms.saturating_sub(3) } else { at_ms + elapsed_step / 1000 };
                let mut full = vec![b'd'];
                full.extend_from_slice(&body);
                encode_frame(&mut out, &mut cursor, seq, at_ms, elapsed, FrameKind::ClientMessage, &[b"d", &body]);
                written.push((seq, at_ms, elapsed, full));
                seq += 1;
            }
            let mut cursor = FrameCursor::new();
            let mut at = 0;
            for (seq, at_ms, elapsed, full) in written {
                let (frame, used) = decode_frame(&out[at..], &mut cursor, 1024).unwrap().unwrap();
                proptest::prop_assert_eq!((frame.seq, frame.at_ms, frame.elapsed_us, frame.body), (seq, at_ms, elapsed, &full[..]));
                at += used;
            }
            proptest::prop_assert_eq!(at, out.len());
        }
    }
}
