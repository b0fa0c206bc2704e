//! The local spool: where a session's events become durable on the node
//! before anything is uploaded, so that a crash loses no acknowledged
//! evidence (DESIGN.md, residency invariant 4).
//!
//! Design: a [`Recorder`] is a per-session handle that encodes an event
//! on the caller's thread as a binary frame ([`crate::frame`]; a server
//! message is its wire bytes behind a few bytes of framing) appended to
//! its batch buffer, and hands whole batches to a bounded channel (at the
//! end of each answer, or per 256 KiB of a large one:
//! [`Recorder::ship`]); one writer thread
//! per [`Spool`] appends each batch to the session's open chunk, syncs in
//! batches (every `fsync_every_events` events or `fsync_interval`, and
//! always before a flush and the end of a session; when one session's
//! interval is up, every session with unsynced events syncs with it) and
//! seals chunks. A
//! sync compresses the frames gathered since the last one into one zstd
//! frame, appends it to the session's `events.zframes` and fsyncs that:
//! the spool file holds exactly the bytes that become the chunk's payload
//! (chunk format 3), so an event is encoded once, compressed once and
//! written once, compressed, and sealing puts a header in front of bytes
//! already in memory. (Spooling raw frames and compressing at the seal
//! wrote every byte twice, the second time compressed; on 10,000-row
//! results the raw writes and their fsyncs cost more than the
//! compression.) This
//! rather than buffered writes on the caller's thread because the caller
//! is a data-plane task on an async runtime: `record` must cost a memcpy
//! and, per batch, a channel send, never a write or fsync (which can
//! stall for milliseconds on a busy disk). One thread per spool (not per
//! session) also gives group commit: one wake-up writes and syncs the
//! batches of every active session.
//!
//! Time: a recorder reads the clocks once per network read (the caller
//! says when one begins: [`Recorder::new_read`], which
//! [`Recorder::record_messages`] does by itself), when a batch starts and
//! every [`CLOCK_EVERY`] events, not per event: the events of one read
//! carry the time the relay read them off the network, give or take the
//! work on that read.
//!
//! Back-pressure is explicit, never blocking: the spool has a byte budget
//! ([`SpoolLimits::max_bytes`], covering events in flight, unsealed lines
//! and sealed chunks not yet uploaded) and the channel a capacity. When
//! the budget is exhausted `record` returns [`RecordError::SpoolFull`] at
//! once: the caller applies its mode (`strict` ends the session, and
//! `best_effort` carries on, in which case the recorder writes a `Gap`
//! with the number of lost events before the next event it accepts). When
//! only the channel is full (the writer is behind, the disk has room) it
//! returns [`RecordError::Busy`]: nothing was recorded or lost, and the
//! caller waits a moment and tries again, which slows the session to the
//! writer's pace instead of ending it.
//!
//! An event counts as written once [`Recorder::durable_seq`] has reached
//! it; [`Recorder::flush`] waits for that. Sealing: when a session's open
//! chunk reaches `chunk_target_bytes` of frames (or
//! [`OPEN_CHUNK_MAX_COMPRESSED`] compressed) or `chunk_max_age`, the
//! writer compresses what it has not synced yet, writes the chunk to
//! `chunk-NNNNNN.zst`, records it in
//! `chunks.jsonl`, renames it into place and syncs the directory; the
//! uploader only ever sees complete chunks. `finish` seals the last chunk
//! and writes the signed manifest; [`recover`] does the same, with status
//! `interrupted`, for sessions a crash left behind.
//!
//! Layout of a spool directory:
//!
//! ```text
//! <spool>/.lock                       flock held by the open Spool
//! <spool>/<session_id>/session.json   who, where, when (for recovery and keys)
//! <spool>/<session_id>/events.zframes zstd frames of the open chunk's frames, fsync'd in batches
//! <spool>/<session_id>/chunks.jsonl   one line per sealed chunk
//! <spool>/<session_id>/chunk-000001.zst  sealed, not yet uploaded
//! <spool>/<session_id>/manifest.json  written when the recording is finished
//! <spool>/quarantine/<object key>     uploads that kept failing
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::chunk::{
    ChunkHeader, CompressedPayload, GENESIS_HASH, compress_frame, decompress_frames, encode_chunk,
    sha256_hex,
};
use crate::event::{Direction, EventKind, RecordEvent, SessionInfo};
use crate::frame::{
    FrameCursor, FrameKind, MAX_FRAME_HEADER_BYTES, decode_frame, encode_frame, frame_event,
};
use crate::fsutil::{file_size, sync_dir, write_atomic};
use crate::key::NodeSigningKey;
use crate::manifest::{ChunkEntry, Manifest, RecordingStatus};
use crate::store::{MANIFEST_NAME, chunk_file_name, session_prefix};
use crate::{RecordError, Result, io_err};

pub(crate) const SESSION_FILE: &str = "session.json";
/// A recorder ships its gathered events once this many have gathered, or
/// this many bytes of frames (the bytes decide for result rows: a large
/// batch is one zstd frame, and zstd builds its entropy tables per frame,
/// which at 256 rows a batch was half its time on pgbench's rows)...
const SHIP_AT: u64 = 4096;
const SHIP_AT_BYTES: usize = 256 << 10;
/// ... and gathers at most this many (events, bytes) while the writer is
/// behind. The bytes bound a chunk too: the writer seals between batches,
/// so a chunk holds at most `chunk_target_bytes` plus one batch.
const MAX_BATCH: u64 = 4 * SHIP_AT;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// A batch reads the clocks when it starts and again after this many
/// events (a batch the writer keeps refusing does not get stale times).
const CLOCK_EVERY: u32 = 128;
/// A recorder reserves the spool's budget this many bytes at a time and
/// uses them up frame by frame: an atomic update of the shared budget
/// per row (a `lock cmpxchg` the recording cores contend for) was a third
/// of the per-row recording cost on large results. When the budget has
/// less left, a frame reserves exactly its own size, as before, so a full
/// spool refuses the same events.
const CREDIT_BLOCK: u64 = 64 << 10;
/// A batch of at least this many bytes of frames becomes one zstd frame
/// of its own, compressed by the recorder's thread as it ships it (see
/// [`Batch::compressed`]); smaller ones are gathered by the writer until
/// the next sync (a zstd frame per small batch would compress worse and
/// cost a call per network read of a busy interactive session).
const COMPRESS_BATCH_AT: usize = 16 << 10;
/// A chunk is sealed once its compressed bytes, which the writer holds in
/// memory until the seal, reach this many.
pub const OPEN_CHUNK_MAX_COMPRESSED: usize = 4 << 20;
/// After a wake-up the writer waits this long for more before it drains
/// the queue.
const WRITER_LINGER: Duration = Duration::from_millis(2);
pub(crate) const EVENTS_FILE: &str = "events.zframes";
/// The spool file of a node that spooled raw frames and compressed at the
/// seal (chunk format 2): still recovered after an upgrade.
pub(crate) const RAW_EVENTS_FILE: &str = "events.frames";
/// The spool file of a node that wrote chunk format 1 (JSON Lines):
/// still recovered after an upgrade.
pub(crate) const LEGACY_EVENTS_FILE: &str = "events.jsonl";
pub(crate) const CHUNKS_FILE: &str = "chunks.jsonl";
pub(crate) const QUARANTINE_DIR: &str = "quarantine";
const LOCK_FILE: &str = ".lock";
const SESSION_FILE_FORMAT: &str = "juris.recording.spool-session/1";

/// How much disk (and memory in flight) the spool may use across all
/// sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits { max_bytes: 1 << 30 }
    }
}

/// Knobs of a spool. [`SpoolConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// This node's name, written into manifests.
    pub node: String,
    pub limits: SpoolLimits,
    /// Seal a chunk when its frames (uncompressed) reach this size
    /// (default 32 MiB), or its compressed bytes reach
    /// [`OPEN_CHUNK_MAX_COMPRESSED`]. Each chunk costs a file, two fsyncs
    /// and an upload (at 8 MiB, result rows that compress 40-fold sealed
    /// a 200 KiB chunk every few 10,000-row results, and creating those
    /// files was a third of the spool writer's samples); the writer keeps the
    /// compressed bytes of the open chunk in memory, which the second
    /// bound limits however well the frames compress.
    pub chunk_target_bytes: usize,
    /// ... or when its first event is this old (default 10 s: durability
    /// comes from the fsync'd spool, so the age only bounds how stale the
    /// object store's copy of a live session is, and every second would
    /// cost one PUT per active session per second).
    pub chunk_max_age: Duration,
    /// fsync a session's spool file after this many events (default
    /// 65536; an fsync costs milliseconds on many disks, so this bounds
    /// the rate a session can sustain, while the interval below bounds the
    /// loss window; at 4096 a 10,000-row result paid two or three)...
    pub fsync_every_events: usize,
    /// ... or when its oldest unsynced event is this old (default 100 ms).
    pub fsync_interval: Duration,
    /// Events handed to the writer and not yet taken by it, however they
    /// are batched (default 65536): bounds the memory in flight. Beyond
    /// it recorders get [`RecordError::Busy`] and wait. The writer lingers
    /// 2 ms after each wake-up, so this must hold what busy sessions
    /// record meanwhile: at 4096, four clients reading 10,000-row results
    /// spent most of their time waiting (141 transactions a second
    /// recorded against 343 unrecorded; 306 at 65536).
    pub queue_capacity: usize,
    /// An event whose frame body (message or JSON) is longer is replaced
    /// by a `Gap` (default 16 MiB, the reader's limit).
    pub max_event_bytes: usize,
    /// Nice value of the writer thread (default 0; see [`crate::priority`]).
    pub writer_nice: i32,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            node: node.into(),
            limits: SpoolLimits::default(),
            chunk_target_bytes: 32 << 20,
            chunk_max_age: Duration::from_secs(10),
            fsync_every_events: 65536,
            fsync_interval: Duration::from_millis(100),
            queue_capacity: 65536,
            max_event_bytes: crate::DecodeLimits::default().max_event_bytes,
            writer_nice: 0,
        }
    }
}

/// The byte budget, shared by the recorders, the writer and the uploader,
/// and the count of events handed to the writer but not yet taken by it
/// (what bounds the memory in flight, however events are batched).
#[derive(Debug)]
pub(crate) struct Budget {
    max: u64,
    used: AtomicU64,
    max_queued: u64,
    queued: AtomicU64,
}

impl Budget {
    pub(crate) fn new(max: u64, used: u64) -> Self {
        Budget {
            max,
            used: AtomicU64::new(used),
            max_queued: u64::MAX,
            queued: AtomicU64::new(0),
        }
    }

    fn with_queue_limit(mut self, max_queued: u64) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Count `n` events into the writer's queue; false (nothing counted)
    /// when that would exceed its limit.
    fn try_queue(&self, n: u64) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(n)
                    .filter(|total| *total <= self.max_queued)
            })
            .is_ok()
    }

    /// Count `n` events in regardless of the limit (what must be recorded).
    fn force_queue(&self, n: u64) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    fn dequeue(&self, n: u64) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(n))
            });
    }

    fn reserve(&self, n: u64) -> Result<()> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .map(|_| ())
            .map_err(|used| RecordError::SpoolFull {
                used,
                max: self.max,
            })
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// `session.json` in a session's spool directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpoolSessionFile {
    pub(crate) format: String,
    pub(crate) node: String,
    pub(crate) info: SessionInfo,
}

impl SpoolSessionFile {
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SESSION_FILE);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let file: SpoolSessionFile =
            serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if file.format != SESSION_FILE_FORMAT {
            return Err(RecordError::Corrupt {
                what: path.display().to_string(),
                reason: format!("unknown format `{}`", file.format),
            });
        }
        crate::check_session_id(&file.info.session_id)?;
        crate::check_name("region", &file.info.region)?;
        Ok(file)
    }

    pub(crate) fn prefix(&self) -> String {
        session_prefix(
            &self.info.region,
            &self.info.session_id,
            self.info.started_at_ms,
        )
    }
}

/// One line of `chunks.jsonl`: a sealed chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealedChunk {
    pub(crate) index: u32,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) first_at_ms: u64,
    pub(crate) last_at_ms: u64,
    /// Sum of `lost_events` of the Gap events in this chunk.
    pub(crate) lost_events: u64,
}

/// Frames a recorder gathered and hands to the writer as one command,
/// with what the writer needs to know about them without decoding them.
/// Its first frame is always absolute (a fresh cursor per batch), so a
/// chunk, which starts at a batch, starts with one.
#[derive(Debug, Default)]
struct Batch {
    frames: Vec<u8>,
    cursor: FrameCursor,
    events: u64,
    first_seq: u64,
    last_seq: u64,
    first_at_ms: u64,
    last_at_ms: u64,
    /// Sum of `lost_events` of the Gap events in the batch.
    lost: u64,
    /// `frames` as one zstd frame, when the batch is large: compressed on
    /// the recorder's thread, so that the sessions' data-plane threads
    /// share the compression of large results instead of the spool's one
    /// writer thread doing all of it (which kept it busy three quarters
    /// of the time on 10,000-row results). `None` whenever `frames`
    /// changes after it was made; the writer then compresses the frames.
    compressed: Option<Vec<u8>>,
}

impl Batch {
    fn with_capacity(bytes: usize) -> Self {
        Batch {
            frames: Vec::with_capacity(bytes),
            ..Batch::default()
        }
    }

    /// Account for a frame just appended to `frames`.
    fn note(&mut self, seq: u64, at_ms: u64, lost: u64) {
        if self.events == 0 {
            self.first_seq = seq;
            self.first_at_ms = at_ms;
        }
        self.last_seq = seq;
        self.last_at_ms = at_ms;
        self.lost += lost;
        self.events += 1;
    }
}

/// `lost_events` of a frame that is a Gap event (0 for any other).
fn frame_lost_events(kind: FrameKind, body: &[u8]) -> u64 {
    if kind != FrameKind::MetaJson {
        return 0;
    }
    match serde_json::from_slice::<EventKind>(body) {
        Ok(EventKind::Gap { lost_events, .. }) => lost_events,
        _ => 0,
    }
}

/// Split `batch` after the frame that brings it to at least `room`
/// bytes: the head fills the open chunk up to its target size, the tail
/// starts the next chunk, its first frame re-encoded as absolute (a
/// chunk starts with one). Only the batch that crosses a chunk's target
/// is walked; the others are appended as they are. Returns the batch
/// whole if it does not reach `room` (or, defensively, if its frames do
/// not decode: they are this process's own).
fn split_batch(batch: Batch, room: usize) -> (Batch, Option<Batch>) {
    if batch.frames.len() < room {
        return (batch, None);
    }
    let frames = &batch.frames;
    let mut cursor = FrameCursor::new();
    let mut head = Batch::default();
    let mut at = 0;
    while at < frames.len() && at < room.max(1) {
        let Ok(Some((frame, used))) = decode_frame(&frames[at..], &mut cursor, usize::MAX) else {
            return (batch, None);
        };
        head.note(
            frame.seq,
            frame.at_ms,
            frame_lost_events(frame.kind, frame.body),
        );
        at += used;
    }
    if at >= frames.len() {
        return (batch, None);
    }
    let split_at = at;
    let mut tail = Batch::with_capacity(frames.len() - split_at + MAX_FRAME_HEADER_BYTES);
    let mut tail_cursor = FrameCursor::new();
    let mut copy_from = None;
    while at < frames.len() {
        let Ok(Some((frame, used))) = decode_frame(&frames[at..], &mut cursor, usize::MAX) else {
            return (batch, None);
        };
        if copy_from.is_none() {
            encode_frame(
                &mut tail.frames,
                &mut tail_cursor,
                frame.seq,
                frame.at_ms,
                frame.elapsed_us,
                frame.kind,
                &[frame.body],
            );
            copy_from = Some(at + used);
        }
        tail.note(
            frame.seq,
            frame.at_ms,
            frame_lost_events(frame.kind, frame.body),
        );
        at += used;
    }
    if let Some(from) = copy_from {
        tail.frames.extend_from_slice(&frames[from..]);
    }
    let mut head_frames = batch.frames;
    head_frames.truncate(split_at);
    head.frames = head_frames;
    (head, Some(tail))
}

/// The events of a chunk that is not sealed yet: its payload so far,
/// compressed (as it is, or will be after the next sync, in
/// `events.zframes`), and the frames gathered since the last sync.
#[derive(Debug, Default)]
struct OpenChunk {
    payload: CompressedPayload,
    /// Frames not compressed yet.
    frames: Vec<u8>,
    events: u64,
    first_seq: u64,
    last_seq: u64,
    first_at_ms: u64,
    last_at_ms: u64,
    lost_events: u64,
    opened: Option<Instant>,
}

impl OpenChunk {
    /// Append a batch (whose first frame is absolute). A batch of at
    /// least [`COMPRESS_BATCH_AT`] bytes is compressed at once, into its
    /// own zstd frame (after the pending frames, in one of theirs), so
    /// that the frames of large results are never copied: a smaller one
    /// waits, copied, for the next sync or large batch. Returns (frame
    /// bytes compressed, compressed size), for the budget.
    fn push_batch(&mut self, batch: Batch) -> std::io::Result<(usize, usize)> {
        if batch.events == 0 {
            return Ok((0, 0));
        }
        if self.events == 0 {
            self.first_seq = batch.first_seq;
            self.first_at_ms = batch.first_at_ms;
            self.opened = Some(Instant::now());
        }
        self.events += batch.events;
        self.last_seq = batch.last_seq;
        self.last_at_ms = batch.last_at_ms;
        self.lost_events += batch.lost;
        if batch.frames.len() >= COMPRESS_BATCH_AT {
            let (pending, pending_compressed) = self.compress_pending()?;
            let compressed = match &batch.compressed {
                Some(zframe) => self.payload.push_compressed(zframe, batch.frames.len()),
                None => self.payload.push(&batch.frames)?,
            };
            return Ok((
                pending + batch.frames.len(),
                pending_compressed + compressed,
            ));
        }
        if self.frames.is_empty() {
            self.frames = batch.frames;
        } else {
            self.frames.extend_from_slice(&batch.frames);
        }
        Ok((0, 0))
    }

    /// Length of all the chunk's frames, compressed or not.
    fn frame_bytes(&self) -> usize {
        self.payload.uncompressed as usize + self.frames.len()
    }

    /// Whether the chunk is due to be sealed for its size: `target` bytes
    /// of frames, or [`OPEN_CHUNK_MAX_COMPRESSED`] compressed.
    fn is_full(&self, target: usize) -> bool {
        self.frame_bytes() >= target || self.payload.bytes.len() >= OPEN_CHUNK_MAX_COMPRESSED
    }

    /// Compress the pending frames into one more zstd frame of the
    /// payload; returns (frame bytes compressed, compressed size).
    fn compress_pending(&mut self) -> std::io::Result<(usize, usize)> {
        let raw = self.frames.len();
        let compressed = self.payload.push(&self.frames)?;
        self.frames.clear();
        Ok((raw, compressed))
    }

    /// Account for a frame appended to `frames` directly (recovery).
    fn note(&mut self, seq: u64, at_ms: u64, lost: u64) {
        if self.events == 0 {
            self.first_seq = seq;
            self.first_at_ms = at_ms;
            self.opened = Some(Instant::now());
        }
        self.events += 1;
        self.last_seq = seq;
        self.last_at_ms = at_ms;
        self.lost_events += lost;
    }
}

/// Write `chunk` (its pending frames compressed first) to
/// `chunk-<index>.zst` durably: temporary file and fsync, then the
/// `chunks.jsonl` line and fsync, then rename and directory fsync. A
/// crash leaves either no chunk (its synced events are still in
/// `events.zframes`) or a chunk that `chunks.jsonl` describes.
fn seal_chunk(
    dir: &Path,
    session_id: &str,
    index: u32,
    prev_hash: &str,
    chunk: &mut OpenChunk,
) -> Result<SealedChunk> {
    let name = chunk_file_name(index);
    let final_path = dir.join(&name);
    chunk.compress_pending().map_err(|e| RecordError::Corrupt {
        what: format!("chunk {index} of session {session_id}"),
        reason: format!("zstd compression failed: {e}"),
    })?;
    let header = ChunkHeader {
        session_id: session_id.to_string(),
        index,
        first_seq: chunk.first_seq,
        last_seq: chunk.last_seq,
        first_at_ms: chunk.first_at_ms,
        last_at_ms: chunk.last_at_ms,
        prev_chunk_hash: prev_hash.to_string(),
        uncompressed_bytes: 0,
    };
    let bytes = encode_chunk(header, &chunk.payload)?;
    let temporary = dir.join(format!("{name}.tmp"));
    {
        let mut file = fs::File::create(&temporary).map_err(io_err(&temporary))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&temporary))?;
    }
    let sealed = SealedChunk {
        index,
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        first_seq: chunk.first_seq,
        last_seq: chunk.last_seq,
        first_at_ms: chunk.first_at_ms,
        last_at_ms: chunk.last_at_ms,
        lost_events: chunk.lost_events,
    };
    append_chunk_line(dir, &sealed)?;
    fs::rename(&temporary, &final_path).map_err(io_err(&final_path))?;
    sync_dir(dir)?;
    Ok(sealed)
}

fn append_chunk_line(dir: &Path, sealed: &SealedChunk) -> Result<()> {
    let path = dir.join(CHUNKS_FILE);
    let mut line = serde_json::to_vec(sealed)?;
    line.push(b'\n');
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(io_err(&path))
}

/// Build, sign and durably write a session's manifest.
fn write_manifest(
    dir: &Path,
    session: &SpoolSessionFile,
    chunks: &[SealedChunk],
    status: RecordingStatus,
    end_reason: &str,
    ended_at_ms: u64,
    key: &NodeSigningKey,
) -> Result<Manifest> {
    let prefix = session.prefix();
    let info = &session.info;
    let manifest = Manifest {
        format: String::new(),
        session_id: info.session_id.clone(),
        region: info.region.clone(),
        node: session.node.clone(),
        connection: info.connection.clone(),
        principal: info.principal.clone(),
        client_addr: info.client_addr.clone(),
        started_at_ms: info.started_at_ms,
        ended_at_ms,
        status,
        end_reason: end_reason.to_string(),
        event_count: chunks.last().map_or(0, |c| c.last_seq),
        lost_events: chunks.iter().map(|c| c.lost_events).sum(),
        chunks: chunks
            .iter()
            .map(|c| ChunkEntry {
                index: c.index,
                key: format!("{prefix}/{}", chunk_file_name(c.index)),
                size: c.size,
                sha256: c.sha256.clone(),
                first_seq: c.first_seq,
                last_seq: c.last_seq,
            })
            .collect(),
        chain_head: chunks
            .last()
            .map_or(GENESIS_HASH.to_string(), |c| c.sha256.clone()),
        total_bytes: chunks.iter().map(|c| c.size).sum(),
        public_key: String::new(),
        signature: String::new(),
    }
    .sign(key)?;
    write_atomic(&dir.join(MANIFEST_NAME), &manifest.to_file_bytes()?)?;
    Ok(manifest)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Per-session state the writer shares with the recorder.
#[derive(Debug, Default)]
struct SessionShared {
    durable_seq: AtomicU64,
    /// Set with `failure`: what a recorder checks per event (a load, not
    /// a lock).
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl SessionShared {
    fn fail(&self, reason: String) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// Where the writer reports completion: a blocking caller waits on a std
/// channel (which, unlike a tokio one, may block inside a runtime's
/// blocking section), an async caller awaits a oneshot.
enum Ack<T> {
    Blocking(std::sync::mpsc::SyncSender<T>),
    Async(oneshot::Sender<T>),
}

impl<T> Ack<T> {
    fn send(self, value: T) {
        match self {
            Ack::Blocking(sender) => {
                let _ = sender.try_send(value);
            }
            Ack::Async(sender) => {
                let _ = sender.send(value);
            }
        }
    }

    fn blocking() -> (Self, std::sync::mpsc::Receiver<T>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        (Ack::Blocking(sender), receiver)
    }

    fn async_() -> (Self, oneshot::Receiver<T>) {
        let (sender, receiver) = oneshot::channel();
        (Ack::Async(sender), receiver)
    }
}

enum Command {
    Start {
        handle: u64,
        file: Box<SpoolSessionFile>,
        shared: Arc<SessionShared>,
    },
    /// A recorder's gathered events: one hand-over (and one wake-up of
    /// the writer) per batch instead of per event.
    Events {
        handle: u64,
        batch: Batch,
    },
    Flush {
        handle: u64,
        ack: Ack<Result<()>>,
    },
    Finish {
        handle: u64,
        reason: String,
        ended_at_ms: u64,
        ack: Ack<Result<Manifest>>,
    },
    Abandon {
        handle: u64,
        ack: Ack<()>,
    },
    Shutdown,
}

/// A node's recording spool: the writer thread and the directory it owns.
pub struct Spool {
    config: Arc<SpoolConfig>,
    budget: Arc<Budget>,
    sender: SyncSender<Command>,
    writer: Option<std::thread::JoinHandle<()>>,
    next_handle: AtomicU64,
    recovered: Vec<Recovered>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.config.dir)
            .field("used_bytes", &self.budget.used())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Open (creating) the spool directory, take its lock, seal and sign
    /// what a crash left behind ([`Spool::recovered`]), and start the
    /// writer thread.
    pub fn open(config: SpoolConfig, key: Arc<NodeSigningKey>) -> Result<Self> {
        crate::check_name("node", &config.node)?;
        create_private_dir(&config.dir)?;
        let lock = lock_spool(&config.dir)?;
        let recovered = recover_locked(&config.dir, &key)?;
        let budget = Arc::new(
            Budget::new(config.limits.max_bytes, spool_bytes(&config.dir))
                .with_queue_limit(config.queue_capacity.max(1) as u64),
        );
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let config = Arc::new(config);
        let writer = Writer {
            config: config.clone(),
            budget: budget.clone(),
            key,
            sessions: HashMap::new(),
            _lock: lock,
        };
        let writer = std::thread::Builder::new()
            .name("juris-record-spool".into())
            .spawn(move || {
                if let Err(e) = crate::priority::lower_current_thread(writer.config.writer_nice) {
                    tracing::warn!("recording spool writer keeps its priority: {e}");
                }
                writer.run(receiver)
            })
            .map_err(io_err(&config.dir))?;
        Ok(Spool {
            config,
            budget,
            sender,
            writer: Some(writer),
            next_handle: AtomicU64::new(1),
            recovered,
        })
    }

    /// Sessions that [`Spool::open`] found unfinished and sealed as
    /// `interrupted`.
    pub fn recovered(&self) -> &[Recovered] {
        &self.recovered
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Bytes the spool currently accounts for.
    pub fn used_bytes(&self) -> u64 {
        self.budget.used()
    }

    pub(crate) fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    /// Start recording a session. Non-blocking: the session's directory
    /// is created by the writer thread, and the first event
    /// (`SessionStart`, seq 1) is queued. [`RecordError::Busy`] when the
    /// writer is behind: nothing was started, try again. A failure to create it shows as
    /// [`RecordError::RecorderFailed`] on a later call; call
    /// [`Recorder::flush`] to wait for it to be durable.
    pub fn start_session(&self, info: SessionInfo) -> Result<Recorder> {
        crate::check_session_id(&info.session_id)?;
        crate::check_name("region", &info.region)?;
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(SessionShared::default());
        let start_kind = EventKind::SessionStart {
            session_id: info.session_id.clone(),
            principal: info.principal.clone(),
            connection: info.connection.clone(),
            node: self.config.node.clone(),
            region: info.region.clone(),
            client_addr: info.client_addr.clone(),
        };
        let started_at_ms = info.started_at_ms;
        let file = SpoolSessionFile {
            format: SESSION_FILE_FORMAT.to_string(),
            node: self.config.node.clone(),
            info,
        };
        let session_id = file.info.session_id.clone();
        self.sender
            .try_send(Command::Start {
                handle,
                file: Box::new(file),
                shared: shared.clone(),
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => RecordError::Busy,
                TrySendError::Disconnected(_) => RecordError::RecorderFailed {
                    session: session_id.clone(),
                    reason: "the spool writer has stopped".into(),
                },
            })?;
        let mut recorder = Recorder {
            session_id,
            handle,
            batch: RefCell::new(Batch::default()),
            batch_capacity: std::cell::Cell::new(0),
            credit: std::cell::Cell::new(0),
            sender: self.sender.clone(),
            budget: self.budget.clone(),
            shared,
            max_event_bytes: self.config.max_event_bytes,
            next_seq: 1,
            started: Instant::now(),
            clock: (started_at_ms, 0),
            clock_uses: 0,
            ships: std::cell::Cell::new(0),
            lost_since_gap: 0,
            lost_total: 0,
            done: false,
        };
        // The session exists for the writer now: its first event must not
        // be refused (a retry would start it twice), so it waits for room
        // in the queue like `finish` does.
        recorder.send(
            started_at_ms,
            0,
            Direction::Meta,
            Body::Json(&start_kind),
            true,
        )?;
        Ok(recorder)
    }
}

impl Drop for Spool {
    /// Stops the writer after it has written and synced what it holds;
    /// sessions still open stay in the spool unsealed, as after a crash,
    /// and are recovered by the next [`Spool::open`]. A node drains
    /// (finishes) its sessions before dropping its spool.
    fn drop(&mut self) {
        let _ = self.sender.send(Command::Shutdown);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&quarantine)
        .map_err(io_err(&quarantine))
}

fn lock_spool(dir: &Path) -> Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RecordError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// Bytes of spooled events and chunk files in the spool (what the budget
/// counts), including quarantined files.
fn spool_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, total),
                Ok(t) if t.is_file() => {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if [EVENTS_FILE, RAW_EVENTS_FILE, LEGACY_EVENTS_FILE].contains(&&*name)
                        || name.ends_with(".zst")
                    {
                        *total += file_size(&path);
                    }
                }
                _ => {}
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

/// The per-session handle the data plane records through. `Send`, not
/// `Sync`: one task owns it.
pub struct Recorder {
    session_id: String,
    handle: u64,
    /// Events recorded but not yet handed to the writer: shipped as one
    /// command by [`Recorder::ship`] (the caller's natural boundary, e.g.
    /// the end of a network read), or when [`SHIP_AT`] events or
    /// [`SHIP_AT_BYTES`] have gathered.
    batch: RefCell<Batch>,
    /// Frame bytes of the last batch shipped: the next one's capacity.
    batch_capacity: std::cell::Cell<usize>,
    /// Budget reserved ahead and not yet used by frames (see
    /// [`CREDIT_BLOCK`]); given back whenever a batch is shipped.
    credit: std::cell::Cell<u64>,
    sender: SyncSender<Command>,
    budget: Arc<Budget>,
    shared: Arc<SessionShared>,
    max_event_bytes: usize,
    next_seq: u64,
    started: Instant,
    /// The batch's clock reading (`at_ms`, `elapsed_us`) and how many
    /// events have used it.
    clock: (u64, u64),
    clock_uses: u32,
    /// Batches handed to the writer so far.
    ships: std::cell::Cell<u64>,
    lost_since_gap: u64,
    lost_total: u64,
    done: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("session_id", &self.session_id)
            .field("next_seq", &self.next_seq)
            .field("lost_events", &self.lost_total)
            .finish_non_exhaustive()
    }
}

/// An event's body, as it becomes a frame.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// A wire message: type byte and body.
    Message {
        tag: u8,
        body: &'a [u8],
    },
    Json(&'a EventKind),
}

impl Recorder {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The time of an event recorded now: the clock reading taken when
    /// the batch started, at the last [`Recorder::new_read`] or
    /// [`CLOCK_EVERY`] events ago.
    fn now(&mut self) -> (u64, u64) {
        if self.clock_uses == 0
            || self.clock_uses >= CLOCK_EVERY
            || self.batch.get_mut().events == 0
        {
            let elapsed_us = self.started.elapsed().as_micros() as u64;
            // Monotonic even if a caller recorded with explicit times.
            self.clock = (now_ms(), elapsed_us.max(self.clock.1));
            self.clock_uses = 0;
        }
        self.clock_uses += 1;
        self.clock
    }

    /// The events recorded next came in another network read: they get a
    /// clock reading of their own rather than the batch's (a batch holds
    /// what a session recorded over up to two ship periods of the relay,
    /// queries and answers alike). [`Recorder::record_messages`] takes one
    /// by itself.
    pub fn new_read(&mut self) {
        self.clock_uses = 0;
    }

    /// Record an event now. Never blocks: on [`RecordError::SpoolFull`]
    /// the event is counted as lost (see the module doc); on
    /// [`RecordError::Busy`] nothing was recorded or counted (try again,
    /// or [`Recorder::skip`] it); on [`RecordError::RecorderFailed`]
    /// nothing more can be recorded.
    /// Returns the event's seq.
    pub fn record(&mut self, direction: Direction, kind: EventKind) -> Result<u64> {
        self.record_ref(direction, &kind)
    }

    /// [`Recorder::record`] by reference, so that a caller can try again
    /// after [`RecordError::Busy`] without copying the event.
    pub fn record_ref(&mut self, direction: Direction, kind: &EventKind) -> Result<u64> {
        let (at_ms, elapsed_us) = self.now();
        self.record_body(at_ms, elapsed_us, direction, Body::Json(kind))
    }

    /// Record a PostgreSQL message exactly as the client sent or received
    /// it: its type byte and body (without the 4-byte length), after
    /// masking. The cheap path for the data plane: the bytes are copied
    /// into the batch behind a few bytes of framing, and decoded only
    /// when the recording is read ([`crate::wire`] says what each type
    /// becomes). Errors as [`Recorder::record`]; `direction` must not be
    /// [`Direction::Meta`].
    pub fn record_message(&mut self, direction: Direction, tag: u8, body: &[u8]) -> Result<u64> {
        let (at_ms, elapsed_us) = self.now();
        self.record_body(at_ms, elapsed_us, direction, Body::Message { tag, body })
    }

    /// Record a run of complete PostgreSQL messages in wire form (type
    /// byte, 4-byte length, body), as [`Recorder::record_message`] would
    /// one by one, skipping those whose type `keep` refuses. The data
    /// plane's path for the rows of a result: one call (and one lock of
    /// whatever guards the recorder) per network read instead of one per
    /// row.
    ///
    /// Returns how many bytes of `wire` were dealt with (recorded or
    /// skipped) and the error that stopped the run, if any, at the message
    /// that failed (which, after [`RecordError::SpoolFull`], already counts
    /// as lost, like a refused `record_message`). Bytes that do not split
    /// into messages are refused with [`RecordError::Invalid`] at the first
    /// one that does not fit.
    pub fn record_messages(
        &mut self,
        direction: Direction,
        wire: &[u8],
        keep: impl Fn(u8) -> bool,
    ) -> (usize, Option<RecordError>) {
        self.new_read();
        let mut at = 0;
        while at < wire.len() {
            if let Some(kind) = FrameKind::message(direction) {
                at += self.append_run(kind, &wire[at..], &keep);
                if at == wire.len() {
                    break;
                }
            }
            // The next message needs the per-event path: to ship at a
            // threshold, reserve budget, write a gap, or report an error.
            let Some(&[tag, l0, l1, l2, l3]) = wire.get(at..at + 5) else {
                return (at, Some(not_a_message()));
            };
            let length = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            let end = at + 1 + length;
            if length < 4 || end > wire.len() {
                return (at, Some(not_a_message()));
            }
            if keep(tag) {
                let body = &wire[at + 5..end];
                if let Err(e) = self.record_message(direction, tag, body) {
                    return (at, Some(e));
                }
            }
            at = end;
        }
        (at, None)
    }

    /// The fast path of [`Recorder::record_messages`]: frames for the
    /// messages at the start of `wire`, byte for byte what
    /// [`Recorder::record_message`] would write, for as long as none needs
    /// more than appending: no failure or gap to report, the batch below
    /// the sizes at which it ships or is full, budget credit left for the
    /// frame, a body within the event limit. One clock reading for the
    /// run (it came in one read). Per row this is a header and a copy,
    /// without the per-event checks, which cost pgbench-sized rows more
    /// than the copy. Returns the bytes of `wire` dealt with.
    fn append_run(&mut self, kind: FrameKind, wire: &[u8], keep: &impl Fn(u8) -> bool) -> usize {
        if self.lost_since_gap > 0 || self.shared.failed.load(Ordering::Acquire) {
            return 0;
        }
        let (at_ms, elapsed_us) = self.now();
        let max_events = SHIP_AT.min(self.budget.max_queued);
        let mut credit = self.credit.get();
        let mut seq = self.next_seq;
        let batch = self.batch.get_mut();
        let mut at = 0;
        while let Some(&[tag, l0, l1, l2, l3]) = wire.get(at..at + 5) {
            let length = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            let end = at + 1 + length;
            if length < 4 || end > wire.len() {
                break;
            }
            if !keep(tag) {
                at = end;
                continue;
            }
            let body = &wire[at + 5..end];
            if batch.events >= max_events
                || batch.frames.len() >= SHIP_AT_BYTES
                || 1 + body.len() > self.max_event_bytes
                || credit < (MAX_FRAME_HEADER_BYTES + 1 + body.len()) as u64
            {
                break;
            }
            let start = batch.frames.len();
            encode_frame(
                &mut batch.frames,
                &mut batch.cursor,
                seq,
                at_ms,
                elapsed_us,
                kind,
                &[&[tag], body],
            );
            credit -= (batch.frames.len() - start) as u64;
            batch.note(seq, at_ms, 0);
            seq += 1;
            at = end;
        }
        self.credit.set(credit);
        self.next_seq = seq;
        at
    }

    /// Record an event with a given time (replays, tests).
    pub fn record_at(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        kind: EventKind,
    ) -> Result<u64> {
        self.record_body(at_ms, elapsed_us, direction, Body::Json(&kind))
    }

    fn record_body(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        body: Body<'_>,
    ) -> Result<u64> {
        if let Some(reason) = self.shared.failure() {
            return Err(self.failed(reason));
        }
        if self.lost_since_gap > 0 {
            let gap = EventKind::Gap {
                reason: "spool full".into(),
                lost_events: self.lost_since_gap,
            };
            if let Err(e) = self.send(at_ms, elapsed_us, Direction::Meta, Body::Json(&gap), false) {
                if matches!(e, RecordError::SpoolFull { .. }) {
                    self.lost_since_gap += 1;
                    self.lost_total += 1;
                }
                return Err(e);
            }
            self.lost_since_gap = 0;
        }
        match self.send(at_ms, elapsed_us, direction, body, false) {
            Err(e @ RecordError::SpoolFull { .. }) => {
                self.lost_since_gap += 1;
                self.lost_total += 1;
                Err(e)
            }
            other => other,
        }
    }

    /// Encode one event into the batch; `force` bypasses the budget and
    /// the batch limits and ships, waiting for room in the queue (the
    /// start and end of a session must be recorded).
    fn send(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        body: Body<'_>,
        force: bool,
    ) -> Result<u64> {
        let seq = self.next_seq;
        let json;
        let tag_byte: [u8; 1];
        let (kind, tag, payload, mut lost): (FrameKind, &[u8], &[u8], u64) = match body {
            Body::Message { tag, body } => {
                let Some(kind) = FrameKind::message(direction) else {
                    return Err(RecordError::Invalid {
                        what: "event direction",
                        value: "meta".into(),
                        reason: "a wire message goes to the client or from it",
                    });
                };
                tag_byte = [tag];
                (kind, &tag_byte[..], body, 0)
            }
            Body::Json(event) => {
                json = serde_json::to_vec(event)?;
                let lost = match event {
                    EventKind::Gap { lost_events, .. } => *lost_events,
                    _ => 0,
                };
                (FrameKind::json(direction), &[][..], &json[..], lost)
            }
        };
        let gap_body;
        let (kind, parts): (FrameKind, [&[u8]; 2]) =
            if tag.len() + payload.len() > self.max_event_bytes {
                let name = match body {
                    Body::Message { tag, .. } => format!("'{}' message", char::from(tag)),
                    Body::Json(event) => format!("{} event", event.name()),
                };
                let gap = EventKind::Gap {
                    reason: format!(
                        "{name} of {} bytes exceeds the {}-byte event limit",
                        tag.len() + payload.len(),
                        self.max_event_bytes
                    ),
                    lost_events: 1,
                };
                lost = 1;
                gap_body = serde_json::to_vec(&gap)?;
                (FrameKind::MetaJson, [&gap_body, &[]])
            } else {
                (kind, [tag, payload])
            };
        if !force {
            let cap = MAX_BATCH.min(self.budget.max_queued);
            let full = {
                let batch = self.batch.get_mut();
                batch.events >= cap || batch.frames.len() >= MAX_BATCH_BYTES
            };
            // Busy: the writer is behind and this recorder holds all it
            // may; the caller waits and tries again.
            if full {
                self.ship()?;
            }
        }
        let batch = self.batch.get_mut();
        let start = batch.frames.len();
        let cursor = batch.cursor;
        encode_frame(
            &mut batch.frames,
            &mut batch.cursor,
            seq,
            at_ms,
            elapsed_us,
            kind,
            &parts,
        );
        let size = (batch.frames.len() - start) as u64;
        if force {
            self.budget.add(size);
        } else if let Err(e) = reserve_with_credit(&self.budget, &self.credit, size) {
            batch.frames.truncate(start);
            batch.cursor = cursor;
            return Err(e);
        }
        batch.note(seq, at_ms, lost);
        let (gathered, bytes) = (batch.events, batch.frames.len());
        self.next_seq += 1;
        if force {
            self.ship_blocking()?;
        } else if gathered >= SHIP_AT || bytes >= SHIP_AT_BYTES {
            match self.ship() {
                Ok(()) | Err(RecordError::Busy) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seq)
    }

    /// Take the gathered batch, leaving an empty one sized like it.
    fn take_batch(&self) -> Batch {
        let capacity = self.batch_capacity.get();
        std::mem::replace(
            &mut *self.batch.borrow_mut(),
            Batch::with_capacity(capacity),
        )
    }

    /// Hand the gathered events to the writer. [`RecordError::Busy`] when
    /// its queue is full: they stay gathered; try again shortly.
    pub fn ship(&self) -> Result<()> {
        let count = self.batch.borrow().events;
        if count == 0 {
            return Ok(());
        }
        if !self.budget.try_queue(count) {
            return Err(RecordError::Busy);
        }
        let batch = self.take_batch();
        self.batch_capacity
            .set(batch.frames.len().min(MAX_BATCH_BYTES));
        match self.sender.try_send(Command::Events {
            handle: self.handle,
            batch: with_compressed(batch),
        }) {
            Ok(()) => {
                self.ships.set(self.ships.get() + 1);
                self.release_credit();
                Ok(())
            }
            Err(TrySendError::Full(Command::Events { mut batch, .. })) => {
                self.budget.dequeue(count);
                // More frames will be appended before it ships again.
                batch.compressed = None;
                *self.batch.borrow_mut() = batch;
                Err(RecordError::Busy)
            }
            Err(_) => {
                self.budget.dequeue(count);
                Err(self.failed("the spool writer has stopped".into()))
            }
        }
    }

    /// Give back the budget reserved ahead and not used.
    fn release_credit(&self) {
        let credit = self.credit.replace(0);
        if credit > 0 {
            self.budget.release(credit);
        }
    }

    /// [`Recorder::ship`], waiting for room in the queue.
    fn ship_blocking(&self) -> Result<()> {
        let count = self.batch.borrow().events;
        if count == 0 {
            return Ok(());
        }
        let batch = with_compressed(self.take_batch());
        self.budget.force_queue(count);
        self.sender
            .send(Command::Events {
                handle: self.handle,
                batch,
            })
            .map_err(|_| self.failed("the spool writer has stopped".into()))?;
        self.ships.set(self.ships.get() + 1);
        Ok(())
    }

    /// `Some(n)` while events wait to be shipped, `n` being how many
    /// batches were shipped before them; `None` when none wait. A caller
    /// that left events unshipped can tell by `n` whether they have been
    /// shipped since (by whoever shares this recorder).
    pub fn unshipped(&self) -> Option<u64> {
        (self.batch.borrow().events > 0).then(|| self.ships.get())
    }

    fn failed(&self, reason: String) -> RecordError {
        RecordError::RecorderFailed {
            session: self.session_id.clone(),
            reason,
        }
    }

    /// Give up on one event that was refused with [`RecordError::Busy`]:
    /// it counts as lost, and the next event recorded is preceded by a
    /// `Gap` saying so.
    pub fn skip(&mut self) {
        self.lost_since_gap += 1;
        self.lost_total += 1;
    }

    /// Events lost so far (refused with `SpoolFull`, or skipped).
    pub fn lost_events(&self) -> u64 {
        self.lost_total
    }

    /// The highest seq that is on disk (fsync'd); 0 before the first sync.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Block until every event recorded so far is fsync'd. Not from
    /// inside an async runtime (use [`Recorder::flush_async`]).
    pub fn flush(&self) -> Result<()> {
        self.ship_blocking()?;
        let (ack, done) = Ack::blocking();
        self.sender
            .send(Command::Flush {
                handle: self.handle,
                ack,
            })
            .map_err(|_| self.failed("the spool writer has stopped".into()))?;
        done.recv()
            .map_err(|_| self.failed("the spool writer has stopped".into()))?
    }

    /// [`Recorder::flush`] for async callers.
    pub async fn flush_async(&self) -> Result<()> {
        self.ship()?;
        let (ack, done) = Ack::async_();
        self.sender
            .try_send(Command::Flush {
                handle: self.handle,
                ack,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => RecordError::Busy,
                TrySendError::Disconnected(_) => self.failed("the spool writer has stopped".into()),
            })?;
        done.await
            .map_err(|_| self.failed("the spool writer has stopped".into()))?
    }

    /// End the recording: record `SessionEnd { reason }` (after a `Gap`
    /// for events still unaccounted for), seal the last chunk and write
    /// the signed manifest. Blocks until that is on disk; not from inside
    /// an async runtime (use [`Recorder::finish_async`]).
    pub fn finish(self, reason: &str) -> Result<Manifest> {
        let elapsed_us = self.end_elapsed_us();
        self.finish_at(now_ms(), elapsed_us, reason)
    }

    /// [`Recorder::finish`] with a given end time (replays, tests).
    pub fn finish_at(self, at_ms: u64, elapsed_us: u64, reason: &str) -> Result<Manifest> {
        let session = self.session_id.clone();
        let (ack, done) = Ack::blocking();
        self.queue_finish(at_ms, elapsed_us, reason, ack)?;
        done.recv().map_err(|_| RecordError::RecorderFailed {
            session,
            reason: "the spool writer has stopped".into(),
        })?
    }

    /// [`Recorder::finish`] for async callers.
    pub async fn finish_async(self, reason: &str) -> Result<Manifest> {
        let session = self.session_id.clone();
        let (ack, done) = Ack::async_();
        let elapsed_us = self.end_elapsed_us();
        self.queue_finish(now_ms(), elapsed_us, reason, ack)?;
        done.await.map_err(|_| RecordError::RecorderFailed {
            session,
            reason: "the spool writer has stopped".into(),
        })?
    }

    /// Elapsed time for the last event, never before an earlier one's.
    fn end_elapsed_us(&self) -> u64 {
        (self.started.elapsed().as_micros() as u64).max(self.clock.1)
    }

    fn queue_finish(
        mut self,
        at_ms: u64,
        elapsed_us: u64,
        reason: &str,
        ack: Ack<Result<Manifest>>,
    ) -> Result<()> {
        self.done = true;
        if let Some(failure) = self.shared.failure() {
            return Err(self.failed(failure));
        }
        if self.lost_since_gap > 0 {
            let gap = EventKind::Gap {
                reason: "spool full".into(),
                lost_events: self.lost_since_gap,
            };
            self.send(at_ms, elapsed_us, Direction::Meta, Body::Json(&gap), true)?;
            self.lost_since_gap = 0;
        }
        let end = EventKind::SessionEnd {
            reason: reason.to_string(),
        };
        self.send(at_ms, elapsed_us, Direction::Meta, Body::Json(&end), true)?;
        self.sender
            .send(Command::Finish {
                handle: self.handle,
                reason: reason.to_string(),
                ended_at_ms: at_ms,
                ack,
            })
            .map_err(|_| self.failed("the spool writer has stopped".into()))?;
        Ok(())
    }

    /// Stop recording without sealing, as if the node had died: what is
    /// durable stays in the spool for [`recover`]. Blocks until the
    /// writer has synced and closed the session's file.
    pub fn abandon(mut self) {
        self.done = true;
        let _ = self.ship_blocking();
        let (ack, done) = Ack::blocking();
        if self
            .sender
            .send(Command::Abandon {
                handle: self.handle,
                ack,
            })
            .is_ok()
        {
            let _ = done.recv();
        }
    }
}

impl Drop for Recorder {
    /// A recorder dropped without `finish` (the session task panicked or
    /// forgot) still ends its recording, without blocking.
    fn drop(&mut self) {
        self.release_credit();
        if self.done {
            return;
        }
        let reason = "the session ended without closing its recording";
        let at_ms = now_ms();
        let elapsed_us = self.end_elapsed_us();
        let end = EventKind::SessionEnd {
            reason: reason.to_string(),
        };
        if self
            .send(at_ms, elapsed_us, Direction::Meta, Body::Json(&end), false)
            .and_then(|_| self.ship())
            .is_ok()
        {
            let (ack, _done) = Ack::async_();
            let _ = self.sender.try_send(Command::Finish {
                handle: self.handle,
                reason: reason.to_string(),
                ended_at_ms: at_ms,
                ack,
            });
        }
        // The end event may have reserved a block that no ship gave back.
        self.release_credit();
    }
}

/// `batch` with [`Batch::compressed`] made, if it is large enough to be a
/// zstd frame of its own. If compression fails here the writer tries
/// again and reports the error.
fn with_compressed(mut batch: Batch) -> Batch {
    if batch.frames.len() >= COMPRESS_BATCH_AT {
        batch.compressed = compress_frame(&batch.frames).ok();
    }
    batch
}

/// Take `size` bytes of budget from `credit`, reserving another
/// [`CREDIT_BLOCK`] (or exactly what is missing, when the budget has less
/// left) from the shared budget when the credit runs short.
fn reserve_with_credit(budget: &Budget, credit: &std::cell::Cell<u64>, size: u64) -> Result<()> {
    let have = credit.get();
    if have >= size {
        credit.set(have - size);
        return Ok(());
    }
    let missing = size - have;
    if budget.reserve(missing.max(CREDIT_BLOCK)).is_ok() {
        credit.set(missing.max(CREDIT_BLOCK) - missing);
        return Ok(());
    }
    budget.reserve(missing)?;
    credit.set(0);
    Ok(())
}

fn not_a_message() -> RecordError {
    RecordError::Invalid {
        what: "wire messages",
        value: String::new(),
        reason: "the bytes do not split into whole PostgreSQL messages",
    }
}

/// The error for a session the writer no longer holds (it failed).
fn gone() -> RecordError {
    RecordError::RecorderFailed {
        session: String::new(),
        reason: "the session's recording failed earlier (see the node log)".into(),
    }
}

/// A session as the writer thread holds it.
struct OpenSession {
    file: SpoolSessionFile,
    dir: PathBuf,
    events: fs::File,
    shared: Arc<SessionShared>,
    chunk: OpenChunk,
    /// Bytes of `chunk.payload` already written to `events.zframes`.
    written: usize,
    /// Events appended since the last fsync, and when the first came.
    unsynced: usize,
    unsynced_since: Option<Instant>,
    sealed: Vec<SealedChunk>,
    prev_hash: String,
}

struct Writer {
    config: Arc<SpoolConfig>,
    budget: Arc<Budget>,
    key: Arc<NodeSigningKey>,
    sessions: HashMap<u64, OpenSession>,
    /// Held for the writer's lifetime: one process per spool.
    _lock: fs::File,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Command>) {
        'outer: loop {
            let timeout = self.next_deadline().map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            match receiver.recv_timeout(timeout) {
                Ok(command) => {
                    if !self.handle(command) {
                        break 'outer;
                    }
                    // Let more arrive without waking this thread for each
                    // (a wake-up per hand-over cost busy nodes more CPU
                    // than the recording itself), then drain what is
                    // queued before syncing: group commit.
                    std::thread::sleep(WRITER_LINGER);
                    for _ in 0..4096 {
                        match receiver.try_recv() {
                            Ok(command) => {
                                if !self.handle(command) {
                                    break 'outer;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.housekeeping();
        }
        let handles: Vec<u64> = self.sessions.keys().copied().collect();
        for handle in handles {
            self.with_session(handle, |budget, session| session.sync(budget));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        for session in self.sessions.values() {
            let candidates = [
                session
                    .unsynced_since
                    .map(|t| t + self.config.fsync_interval),
                session.chunk.opened.map(|t| t + self.config.chunk_max_age),
            ];
            for candidate in candidates.into_iter().flatten() {
                deadline = Some(deadline.map_or(candidate, |d| d.min(candidate)));
            }
        }
        deadline
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let config = &self.config;
        let seal_due = |s: &OpenSession| {
            s.chunk.is_full(config.chunk_target_bytes)
                || s.chunk
                    .opened
                    .is_some_and(|t| now >= t + config.chunk_max_age)
        };
        let sync_due = |s: &OpenSession| {
            s.unsynced >= config.fsync_every_events
                || s.unsynced_since
                    .is_some_and(|t| now >= t + config.fsync_interval)
        };
        // When one session's sync is due, every session with unsynced
        // events syncs with it: the fsyncs go back to back, so the file
        // system commits its journal about once for all of them rather
        // than once per session at scattered times, and the writer wakes
        // once per interval instead of once per session. No session waits
        // longer than it would have.
        let syncing = self.sessions.values().any(|s| sync_due(s) && !seal_due(s));
        let due: Vec<(u64, bool)> = self
            .sessions
            .iter()
            .filter_map(|(handle, s)| {
                let seal = seal_due(s);
                let sync = sync_due(s) || (syncing && s.unsynced > 0);
                (seal || sync).then_some((*handle, seal))
            })
            .collect();
        for (handle, seal) in due {
            self.with_session(handle, |budget, session| {
                if seal {
                    session.seal(budget)
                } else {
                    session.sync(budget)
                }
            });
        }
    }

    /// Run `f` on a session; on error the session is failed and dropped.
    fn with_session<T>(
        &mut self,
        handle: u64,
        f: impl FnOnce(&Budget, &mut OpenSession) -> Result<T>,
    ) -> Option<T> {
        let session = self.sessions.get_mut(&handle)?;
        match f(&self.budget, session) {
            Ok(value) => Some(value),
            Err(e) => {
                let session = self.sessions.remove(&handle)?;
                tracing::error!(
                    session = %session.file.info.session_id,
                    error = %e,
                    "recording failed; the session's spool is left for recovery"
                );
                session.shared.fail(e.to_string());
                None
            }
        }
    }

    /// Handle one command; false to stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Start {
                handle,
                file,
                shared,
            } => match OpenSession::create(&self.config.dir, *file, shared.clone()) {
                Ok(session) => {
                    self.sessions.insert(handle, session);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a recording");
                    shared.fail(e.to_string());
                }
            },
            Command::Events { handle, batch } => {
                self.budget.dequeue(batch.events);
                if !self.sessions.contains_key(&handle) {
                    // The session failed: its bytes will never be written.
                    self.budget.release(batch.frames.len() as u64);
                    return true;
                }
                let target = self.config.chunk_target_bytes;
                let sync_every = self.config.fsync_every_events;
                self.with_session(handle, |budget, s| {
                    s.append(batch, target, sync_every, budget)
                });
            }
            Command::Flush { handle, ack } => {
                let result = self
                    .with_session(handle, |budget, s| s.sync(budget))
                    .ok_or_else(gone);
                ack.send(result);
            }
            Command::Finish {
                handle,
                reason,
                ended_at_ms,
                ack,
            } => {
                let key = self.key.clone();
                let result = self
                    .with_session(handle, |budget, s| {
                        s.seal(budget)?;
                        let lost: u64 = s.sealed.iter().map(|c| c.lost_events).sum();
                        let status = if lost > 0 {
                            RecordingStatus::Incomplete
                        } else {
                            RecordingStatus::Complete
                        };
                        let manifest = write_manifest(
                            &s.dir,
                            &s.file,
                            &s.sealed,
                            status,
                            &reason,
                            ended_at_ms,
                            &key,
                        )?;
                        let _ = fs::remove_file(s.dir.join(EVENTS_FILE));
                        Ok(manifest)
                    })
                    .ok_or_else(gone);
                self.sessions.remove(&handle);
                ack.send(result);
            }
            Command::Abandon { handle, ack } => {
                self.with_session(handle, |budget, s| s.sync(budget));
                self.sessions.remove(&handle);
                ack.send(());
            }
            Command::Shutdown => return false,
        }
        true
    }
}

impl OpenSession {
    /// Create the session's directory atomically (under a temporary name,
    /// renamed once `session.json` and an empty `events.zframes` are on
    /// disk).
    fn create(spool: &Path, file: SpoolSessionFile, shared: Arc<SessionShared>) -> Result<Self> {
        let dir = spool.join(&file.info.session_id);
        if dir.exists() {
            return Err(RecordError::Invalid {
                what: "session id",
                value: file.info.session_id.clone(),
                reason: "a recording with this id is already in the spool",
            });
        }
        let temporary = spool.join(format!("{}.tmp", file.info.session_id));
        let _ = fs::remove_dir_all(&temporary);
        fs::create_dir(&temporary).map_err(io_err(&temporary))?;
        write_atomic(&temporary.join(SESSION_FILE), &serde_json::to_vec(&file)?)?;
        let events_path = temporary.join(EVENTS_FILE);
        fs::File::create(&events_path).map_err(io_err(&events_path))?;
        sync_dir(&temporary)?;
        fs::rename(&temporary, &dir).map_err(io_err(&dir))?;
        sync_dir(spool)?;
        let events_path = dir.join(EVENTS_FILE);
        let events = fs::OpenOptions::new()
            .append(true)
            .open(&events_path)
            .map_err(io_err(&events_path))?;
        Ok(OpenSession {
            file,
            dir,
            events,
            shared,
            chunk: OpenChunk::default(),
            written: 0,
            unsynced: 0,
            unsynced_since: None,
            sealed: Vec::new(),
            prev_hash: GENESIS_HASH.to_string(),
        })
    }

    /// Append a batch to the open chunk, sealing it whenever it reaches
    /// `target` bytes (a batch that crosses the target is split there),
    /// and sync once `sync_every` events are unsynced.
    fn append(
        &mut self,
        batch: Batch,
        target: usize,
        sync_every: usize,
        budget: &Budget,
    ) -> Result<()> {
        let mut next = Some(batch);
        while let Some(batch) = next.take() {
            let before = batch.frames.len();
            let room = target.saturating_sub(self.chunk.frame_bytes());
            let (head, tail) = split_batch(batch, room);
            if let Some(tail) = &tail {
                // The tail's first frame grew when it became absolute.
                let after = head.frames.len() + tail.frames.len();
                budget.add(after.saturating_sub(before) as u64);
            }
            self.unsynced += head.events as usize;
            self.unsynced_since.get_or_insert_with(Instant::now);
            let (raw, compressed) = self
                .chunk
                .push_batch(head)
                .map_err(|e| io_err(self.dir.join(EVENTS_FILE))(e))?;
            budget.add(compressed as u64);
            budget.release(raw as u64);
            if self.chunk.is_full(target) {
                self.seal(budget)?;
            }
            next = tail;
        }
        if self.unsynced >= sync_every {
            self.sync(budget)?;
        }
        Ok(())
    }

    /// Compress the pending frames into one zstd frame, append it to
    /// `events.zframes` and fsync that. The budget then counts the
    /// compressed bytes instead of the frames.
    fn sync(&mut self, budget: &Budget) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let (raw, compressed) = self.chunk.compress_pending().map_err(io_err(&path))?;
        budget.add(compressed as u64);
        budget.release(raw as u64);
        let payload = &self.chunk.payload.bytes;
        if self.written < payload.len() {
            self.events
                .write_all(&payload[self.written..])
                .and_then(|()| self.events.sync_data())
                .map_err(io_err(&path))?;
            self.written = payload.len();
        }
        self.unsynced = 0;
        self.unsynced_since = None;
        if self.chunk.last_seq > 0 {
            self.shared
                .durable_seq
                .store(self.chunk.last_seq, Ordering::Release);
        }
        Ok(())
    }

    /// Seal the open chunk (if it has events) and empty `events.zframes`.
    fn seal(&mut self, budget: &Budget) -> Result<()> {
        if self.chunk.events == 0 {
            return Ok(());
        }
        let index = self.sealed.len() as u32 + 1;
        // What the budget counts for the open chunk: synced compressed
        // bytes and pending frames.
        let counted = self.chunk.payload.bytes.len() + self.chunk.frames.len();
        let sealed = seal_chunk(
            &self.dir,
            &self.file.info.session_id,
            index,
            &self.prev_hash,
            &mut self.chunk,
        )?;
        // The chunk is durable: the spooled frames are redundant. No fsync
        // needed: if the truncation is lost in a crash, recovery skips
        // frames whose seq a sealed chunk already holds.
        let path = self.dir.join(EVENTS_FILE);
        self.events.set_len(0).map_err(io_err(&path))?;
        budget.release(counted as u64);
        budget.add(sealed.size);
        self.shared
            .durable_seq
            .store(sealed.last_seq, Ordering::Release);
        self.prev_hash = sealed.sha256.clone();
        self.sealed.push(sealed);
        self.chunk = OpenChunk::default();
        self.written = 0;
        self.unsynced = 0;
        self.unsynced_since = None;
        Ok(())
    }
}

/// What recovery did for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub session_id: String,
    /// Complete events found unsealed in the spool file.
    pub events_recovered: u64,
    /// Events dropped from the spool file's torn tail (a partial,
    /// undecodable or out-of-sequence frame and every one after it),
    /// counted in a `Gap` event. A tail that cannot be split into frames
    /// counts as one.
    pub torn_lines_dropped: u64,
    pub manifest: Manifest,
}

/// Seal and sign every session in `spool_dir` that a crash left without
/// a manifest: sealed chunks are kept, complete frames of `events.zframes`
/// (or of an older node's `events.frames` or `events.jsonl`) become a last chunk
/// (a torn tail is dropped and counted in a `Gap`), a `SessionEnd` is
/// added and the manifest says `interrupted`.
/// [`Spool::open`] calls this; call it directly only on a spool no node
/// is using (it takes the spool's lock).
pub fn recover(spool_dir: &Path, key: &NodeSigningKey) -> Result<Vec<Recovered>> {
    let _lock = lock_spool(spool_dir)?;
    recover_locked(spool_dir, key)
}

fn recover_locked(spool_dir: &Path, key: &NodeSigningKey) -> Result<Vec<Recovered>> {
    let mut recovered = Vec::new();
    let entries = fs::read_dir(spool_dir).map_err(io_err(spool_dir))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dir = spool_dir.join(&name);
        if let Some(session) = name.strip_suffix(".tmp")
            && crate::check_session_id(session).is_ok()
        {
            // Never renamed into place: no event of it was accepted.
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            continue;
        }
        if crate::check_session_id(&name).is_err() || dir.join(MANIFEST_NAME).exists() {
            continue;
        }
        match recover_session(&dir, key) {
            Ok(r) => {
                tracing::warn!(
                    session = %r.session_id,
                    events = r.events_recovered,
                    torn = r.torn_lines_dropped,
                    "recovered an interrupted recording from the spool"
                );
                recovered.push(r);
            }
            Err(e) => {
                // Leave it in place for an operator; other sessions are
                // still recovered.
                tracing::error!(dir = %dir.display(), error = %e, "cannot recover a recording");
            }
        }
    }
    Ok(recovered)
}

/// The last chunk of a recovered session, assembled from what the spool
/// file held.
struct Reassembly {
    chunk: OpenChunk,
    cursor: FrameCursor,
    next_seq: u64,
    last_at_ms: u64,
    last_elapsed_us: u64,
    recovered: u64,
    torn: u64,
}

impl Reassembly {
    /// Whether an event with `seq` continues the chunk: `Some(true)` yes,
    /// `Some(false)` it was sealed before the crash (skip it), `None` it
    /// is out of sequence (torn).
    fn accepts(&self, seq: u64) -> Option<bool> {
        match seq.cmp(&self.next_seq) {
            std::cmp::Ordering::Less => Some(false),
            std::cmp::Ordering::Equal => Some(true),
            std::cmp::Ordering::Greater => None,
        }
    }

    fn push(&mut self, event: &RecordEvent, kind: FrameKind, body: &[u8]) {
        let lost = match &event.kind {
            EventKind::Gap { lost_events, .. } => *lost_events,
            _ => 0,
        };
        encode_frame(
            &mut self.chunk.frames,
            &mut self.cursor,
            event.seq,
            event.at_ms,
            event.elapsed_us,
            kind,
            &[body],
        );
        self.chunk.note(event.seq, event.at_ms, lost);
        self.last_at_ms = event.at_ms;
        self.last_elapsed_us = event.elapsed_us;
        self.next_seq += 1;
    }

    /// Frames of the spool file (decompressed). They are appended and
    /// fsync'd in order, so only the tail can be torn: from the first
    /// frame that is partial, undecodable or out of sequence on, frames
    /// are dropped and counted (as far as they can still be told apart).
    fn take_frames(&mut self, bytes: &[u8], max_event_bytes: usize) {
        let mut cursor = FrameCursor::new();
        let mut at = 0;
        while at < bytes.len() {
            let frame = match decode_frame(&bytes[at..], &mut cursor, max_event_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => {
                    self.torn += 1;
                    return;
                }
            };
            let (frame, used) = frame;
            at += used;
            if self.torn > 0 {
                self.torn += 1;
                continue;
            }
            let Ok(event) = frame_event(&frame) else {
                self.torn += 1;
                continue;
            };
            match self.accepts(event.seq) {
                Some(true) => {
                    self.push(&event, frame.kind, frame.body);
                    self.recovered += 1;
                }
                Some(false) => {}
                None => self.torn += 1,
            }
        }
    }

    /// Lines of a version-1 node's `events.jsonl`, with the same rules.
    fn take_legacy_lines(&mut self, bytes: &[u8]) -> Result<()> {
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if self.torn > 0 {
                self.torn += 1;
                continue;
            }
            let event = line
                .strip_suffix(b"\n")
                .and_then(|l| serde_json::from_slice::<RecordEvent>(l).ok());
            let Some(event) = event else {
                self.torn += 1;
                continue;
            };
            match self.accepts(event.seq) {
                Some(true) => {
                    let body = serde_json::to_vec(&event.kind)?;
                    self.push(&event, FrameKind::json(event.direction), &body);
                    self.recovered += 1;
                }
                Some(false) => {}
                None => self.torn += 1,
            }
        }
        Ok(())
    }

    /// Append an event the node adds itself, at the last event's time.
    fn append_meta(&mut self, kind: EventKind) -> Result<()> {
        let event = RecordEvent {
            seq: self.next_seq,
            at_ms: self.last_at_ms,
            elapsed_us: self.last_elapsed_us,
            direction: Direction::Meta,
            kind,
        };
        let body = serde_json::to_vec(&event.kind)?;
        self.push(&event, FrameKind::MetaJson, &body);
        Ok(())
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn recover_session(dir: &Path, key: &NodeSigningKey) -> Result<Recovered> {
    let file = SpoolSessionFile::read(dir)?;
    let session_id = file.info.session_id.clone();

    // Sealed chunks, as chunks.jsonl lists them (a torn last line there
    // means the chunk was not renamed into place: its events are still
    // in the spool file).
    let mut sealed: Vec<SealedChunk> = Vec::new();
    let chunks_path = dir.join(CHUNKS_FILE);
    if let Ok(bytes) = fs::read(&chunks_path) {
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            let Ok(chunk) = serde_json::from_slice::<SealedChunk>(line) else {
                break;
            };
            if chunk.index as usize != sealed.len() + 1 {
                break;
            }
            sealed.push(chunk);
        }
    }
    // Finish a rename a crash interrupted; drop temporaries whose events
    // are still in the spool file.
    for chunk in &sealed {
        let name = chunk_file_name(chunk.index);
        let temporary = dir.join(format!("{name}.tmp"));
        if temporary.exists() {
            let bytes = fs::read(&temporary).map_err(io_err(&temporary))?;
            if sha256_hex(&bytes) == chunk.sha256 {
                fs::rename(&temporary, dir.join(&name)).map_err(io_err(&temporary))?;
            } else {
                fs::remove_file(&temporary).map_err(io_err(&temporary))?;
            }
        }
    }
    for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("chunk-") && name.ends_with(".tmp") {
            fs::remove_file(entry.path()).map_err(io_err(entry.path()))?;
        }
    }
    sync_dir(dir)?;

    let mut rebuilt = Reassembly {
        chunk: OpenChunk::default(),
        cursor: FrameCursor::new(),
        next_seq: sealed.last().map_or(0, |c| c.last_seq) + 1,
        last_at_ms: sealed
            .last()
            .map_or(file.info.started_at_ms, |c| c.last_at_ms),
        last_elapsed_us: 0,
        recovered: 0,
        torn: 0,
    };
    let events_path = dir.join(EVENTS_FILE);
    let raw_path = dir.join(RAW_EVENTS_FILE);
    let legacy_path = dir.join(LEGACY_EVENTS_FILE);
    let limits = crate::DecodeLimits::default();
    if let Some(bytes) = read_if_exists(&events_path)? {
        // zstd frames appended at each sync: a crash can only have torn
        // the last, which was never synced (so never acknowledged); its
        // events are lost and counted as one.
        let (frames, problem) = decompress_frames(&bytes, limits.max_uncompressed_bytes as u64);
        rebuilt.take_frames(&frames, limits.max_event_bytes);
        if problem.is_some() {
            rebuilt.torn += 1;
        }
    } else if let Some(bytes) = read_if_exists(&raw_path)? {
        rebuilt.take_frames(&bytes, limits.max_event_bytes);
    } else if let Some(bytes) = read_if_exists(&legacy_path)? {
        rebuilt.take_legacy_lines(&bytes)?;
    }
    let torn = rebuilt.torn;
    if torn > 0 {
        rebuilt.append_meta(EventKind::Gap {
            reason: "torn spool frames dropped in crash recovery".into(),
            lost_events: torn,
        })?;
    }
    let reason = "recording interrupted: the node stopped before the session ended; sealed from the spool on restart";
    rebuilt.append_meta(EventKind::SessionEnd {
        reason: reason.into(),
    })?;
    let prev_hash = sealed
        .last()
        .map_or(GENESIS_HASH.to_string(), |c| c.sha256.clone());
    let last = seal_chunk(
        dir,
        &session_id,
        sealed.len() as u32 + 1,
        &prev_hash,
        &mut rebuilt.chunk,
    )?;
    sealed.push(last);
    let manifest = write_manifest(
        dir,
        &file,
        &sealed,
        RecordingStatus::Interrupted,
        reason,
        rebuilt.last_at_ms,
        key,
    )?;
    for path in [&events_path, &raw_path, &legacy_path] {
        let _ = fs::remove_file(path);
    }
    sync_dir(dir)?;
    Ok(Recovered {
        session_id,
        events_recovered: rebuilt.recovered,
        torn_lines_dropped: torn,
        manifest,
    })
}
