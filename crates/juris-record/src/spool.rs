//! The local spool: where a session's events become durable on the node
//! before anything is uploaded, so that a crash loses no acknowledged
//! evidence (DESIGN.md, residency invariant 4).
//!
//! Design: a [`Recorder`] is a per-session handle that serialises an
//! event on the caller's thread and hands the line to a bounded channel;
//! one writer thread per [`Spool`] appends lines to each session's
//! `events.jsonl`, fsyncs in batches (every `fsync_every_events` events or
//! `fsync_interval`, and always before a seal, a flush and the end of a
//! session) and seals chunks. This rather than buffered writes on the
//! caller's thread because the caller is a data-plane task on an async
//! runtime: `record` must cost a serialisation and a channel send, never
//! a write or fsync (which can stall for milliseconds on a busy disk).
//! One thread per spool (not per session) also gives group commit: one
//! wake-up writes and syncs the batches of every active session.
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
//! chunk reaches `chunk_target_bytes` of JSON Lines or `chunk_max_age`, the
//! writer compresses it into `chunk-NNNNNN.zst`, records it in
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
//! <spool>/<session_id>/events.jsonl   lines of the open chunk, fsync'd in batches
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::chunk::{ChunkHeader, GENESIS_HASH, encode_chunk, sha256_hex};
use crate::event::{Direction, EventKind, RecordEvent, SessionInfo};
use crate::fsutil::{file_size, sync_dir, write_atomic};
use crate::key::NodeSigningKey;
use crate::manifest::{ChunkEntry, Manifest, RecordingStatus};
use crate::store::{MANIFEST_NAME, chunk_file_name, session_prefix};
use crate::{RecordError, Result, io_err};

pub(crate) const SESSION_FILE: &str = "session.json";
/// A recorder ships its gathered events once this many have gathered...
const SHIP_AT: usize = 256;
/// ... and gathers at most this many while the writer is behind.
const MAX_BATCH: usize = 1024;
/// After a wake-up the writer waits this long for more before it drains
/// the queue.
const WRITER_LINGER: Duration = Duration::from_millis(2);
pub(crate) const EVENTS_FILE: &str = "events.jsonl";
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
    /// Seal a chunk when its JSON Lines reach this size (default 1 MiB).
    pub chunk_target_bytes: usize,
    /// ... or when its first event is this old (default 10 s: durability
    /// comes from the fsync'd spool, so the age only bounds how stale the
    /// object store's copy of a live session is, and every second would
    /// cost one PUT per active session per second).
    pub chunk_max_age: Duration,
    /// fsync a session's spool file after this many events (default 4096;
    /// an fsync costs milliseconds on many disks, so this bounds the rate
    /// a session can sustain, while the interval below bounds the loss
    /// window)...
    pub fsync_every_events: usize,
    /// ... or when its oldest unsynced event is this old (default 100 ms).
    pub fsync_interval: Duration,
    /// Events handed to the writer and not yet taken by it, however they
    /// are batched (default 4096): bounds the memory in flight. Beyond
    /// it recorders get [`RecordError::Busy`].
    pub queue_capacity: usize,
    /// An event whose JSON line is longer is replaced by a `Gap` (default
    /// 16 MiB, the reader's limit).
    pub max_event_bytes: usize,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            node: node.into(),
            limits: SpoolLimits::default(),
            chunk_target_bytes: 1 << 20,
            chunk_max_age: Duration::from_secs(10),
            fsync_every_events: 4096,
            fsync_interval: Duration::from_millis(100),
            queue_capacity: 4096,
            max_event_bytes: crate::DecodeLimits::default().max_event_bytes,
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

/// The events of a chunk that is not sealed yet.
#[derive(Debug, Default)]
struct OpenChunk {
    lines: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    first_at_ms: u64,
    last_at_ms: u64,
    last_elapsed_us: u64,
    lost_events: u64,
    opened: Option<Instant>,
}

impl OpenChunk {
    fn push(&mut self, seq: u64, at_ms: u64, elapsed_us: u64, lost: u64, line: &[u8]) {
        if self.lines.is_empty() {
            self.first_seq = seq;
            self.first_at_ms = at_ms;
            self.opened = Some(Instant::now());
        }
        self.last_seq = seq;
        self.last_at_ms = at_ms;
        self.last_elapsed_us = elapsed_us;
        self.lost_events += lost;
        self.lines.extend_from_slice(line);
    }
}

/// Compress `chunk` into `chunk-<index>.zst` durably: temporary file and
/// fsync, then the `chunks.jsonl` line and fsync, then rename and
/// directory fsync. A crash leaves either no chunk (its events are still
/// in `events.jsonl`) or a chunk that `chunks.jsonl` describes.
fn seal_chunk(
    dir: &Path,
    session_id: &str,
    index: u32,
    prev_hash: &str,
    chunk: &OpenChunk,
) -> Result<SealedChunk> {
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
    let bytes = encode_chunk(header, &chunk.lines)?;
    let name = chunk_file_name(index);
    let final_path = dir.join(&name);
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
    failure: Mutex<Option<String>>,
}

impl SessionShared {
    fn fail(&self, reason: String) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(reason);
        }
    }

    fn failure(&self) -> Option<String> {
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
    /// Several commands of one recorder, handled in order: one hand-over
    /// (and one wake-up of the writer) per batch instead of per event.
    Batch(Vec<Command>),
    Start {
        handle: u64,
        file: Box<SpoolSessionFile>,
        shared: Arc<SessionShared>,
    },
    Event {
        handle: u64,
        seq: u64,
        at_ms: u64,
        elapsed_us: u64,
        lost: u64,
        line: Vec<u8>,
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
            .spawn(move || writer.run(receiver))
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
            batch: RefCell::new(Vec::new()),
            sender: self.sender.clone(),
            budget: self.budget.clone(),
            shared,
            max_event_bytes: self.config.max_event_bytes,
            next_seq: 1,
            started: Instant::now(),
            lost_since_gap: 0,
            lost_total: 0,
            done: false,
        };
        // The session exists for the writer now: its first event must not
        // be refused (a retry would start it twice), so it waits for room
        // in the queue like `finish` does.
        recorder.send(started_at_ms, 0, Direction::Meta, &start_kind, true)?;
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

/// Bytes of event lines and chunk files in the spool (what the budget
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
                    if name == EVENTS_FILE || name.ends_with(".zst") {
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
    /// the end of a network read), or when [`SHIP_AT`] have gathered.
    batch: RefCell<Vec<Command>>,
    sender: SyncSender<Command>,
    budget: Arc<Budget>,
    shared: Arc<SessionShared>,
    max_event_bytes: usize,
    next_seq: u64,
    started: Instant,
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

impl Recorder {
    pub fn session_id(&self) -> &str {
        &self.session_id
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
        let at_ms = now_ms();
        let elapsed_us = self.started.elapsed().as_micros() as u64;
        self.record_at_ref(at_ms, elapsed_us, direction, kind)
    }

    /// Record an event with a given time (replays, tests).
    pub fn record_at(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        kind: EventKind,
    ) -> Result<u64> {
        self.record_at_ref(at_ms, elapsed_us, direction, &kind)
    }

    fn record_at_ref(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        kind: &EventKind,
    ) -> Result<u64> {
        if let Some(reason) = self.shared.failure() {
            return Err(self.failed(reason));
        }
        if self.lost_since_gap > 0 {
            let gap = EventKind::Gap {
                reason: "spool full".into(),
                lost_events: self.lost_since_gap,
            };
            if let Err(e) = self.send(at_ms, elapsed_us, Direction::Meta, &gap, false) {
                if matches!(e, RecordError::SpoolFull { .. }) {
                    self.lost_since_gap += 1;
                    self.lost_total += 1;
                }
                return Err(e);
            }
            self.lost_since_gap = 0;
        }
        match self.send(at_ms, elapsed_us, direction, kind, false) {
            Err(e @ RecordError::SpoolFull { .. }) => {
                self.lost_since_gap += 1;
                self.lost_total += 1;
                Err(e)
            }
            other => other,
        }
    }

    /// Serialise and queue one event; `force` bypasses the budget and
    /// waits for room in the queue (the end of a session must be
    /// recorded).
    fn send(
        &mut self,
        at_ms: u64,
        elapsed_us: u64,
        direction: Direction,
        kind: &EventKind,
        force: bool,
    ) -> Result<u64> {
        /// [`RecordEvent`]'s serialised form (same members, same order)
        /// over a borrowed kind.
        #[derive(serde::Serialize)]
        struct EventLine<'a> {
            seq: u64,
            at_ms: u64,
            elapsed_us: u64,
            direction: Direction,
            kind: &'a EventKind,
        }
        let seq = self.next_seq;
        let mut lost = match kind {
            EventKind::Gap { lost_events, .. } => *lost_events,
            _ => 0,
        };
        let mut event = EventLine {
            seq,
            at_ms,
            elapsed_us,
            direction,
            kind,
        };
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        if line.len() > self.max_event_bytes {
            let gap = EventKind::Gap {
                reason: format!(
                    "{} event of {} bytes exceeds the {}-byte event limit",
                    kind.name(),
                    line.len(),
                    self.max_event_bytes
                ),
                lost_events: 1,
            };
            event.kind = &gap;
            lost = 1;
            line.clear();
            serde_json::to_writer(&mut line, &event)?;
            line.push(b'\n');
        }
        let size = line.len() as u64;
        if force {
            self.budget.add(size);
        } else {
            self.budget.reserve(size)?;
        }
        let command = Command::Event {
            handle: self.handle,
            seq,
            at_ms,
            elapsed_us,
            lost,
            line,
        };
        if force {
            let sent = self.ship_blocking().and_then(|()| {
                self.budget.force_queue(1);
                self.sender
                    .send(command)
                    .map_err(|_| self.failed("the spool writer has stopped".into()))
            });
            if let Err(e) = sent {
                self.budget.release(size);
                return Err(e);
            }
            self.next_seq += 1;
            return Ok(seq);
        }
        // Never gather more than the writer's queue may hold at once.
        let cap = (MAX_BATCH as u64).min(self.budget.max_queued) as usize;
        if self.batch.borrow().len() >= cap
            && let Err(e) = self.ship()
        {
            // Busy: the writer is behind and this recorder holds all it
            // may; the caller waits and tries again.
            self.budget.release(size);
            return Err(e);
        }
        let gathered = {
            let mut batch = self.batch.borrow_mut();
            batch.push(command);
            batch.len()
        };
        self.next_seq += 1;
        if gathered >= SHIP_AT {
            match self.ship() {
                Ok(()) | Err(RecordError::Busy) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seq)
    }

    /// Hand the gathered events to the writer. [`RecordError::Busy`] when
    /// its queue is full: they stay gathered; try again shortly.
    pub fn ship(&self) -> Result<()> {
        let events = std::mem::take(&mut *self.batch.borrow_mut());
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len() as u64;
        if !self.budget.try_queue(count) {
            *self.batch.borrow_mut() = events;
            return Err(RecordError::Busy);
        }
        match self.sender.try_send(Command::Batch(events)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Command::Batch(events))) => {
                self.budget.dequeue(count);
                *self.batch.borrow_mut() = events;
                Err(RecordError::Busy)
            }
            Err(_) => {
                self.budget.dequeue(count);
                Err(self.failed("the spool writer has stopped".into()))
            }
        }
    }

    /// [`Recorder::ship`], waiting for room in the queue.
    fn ship_blocking(&self) -> Result<()> {
        let events = std::mem::take(&mut *self.batch.borrow_mut());
        if events.is_empty() {
            return Ok(());
        }
        self.budget.force_queue(events.len() as u64);
        self.sender
            .send(Command::Batch(events))
            .map_err(|_| self.failed("the spool writer has stopped".into()))
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
        let elapsed_us = self.started.elapsed().as_micros() as u64;
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
        let elapsed_us = self.started.elapsed().as_micros() as u64;
        self.queue_finish(now_ms(), elapsed_us, reason, ack)?;
        done.await.map_err(|_| RecordError::RecorderFailed {
            session,
            reason: "the spool writer has stopped".into(),
        })?
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
            self.send(at_ms, elapsed_us, Direction::Meta, &gap, true)?;
            self.lost_since_gap = 0;
        }
        let end = EventKind::SessionEnd {
            reason: reason.to_string(),
        };
        self.send(at_ms, elapsed_us, Direction::Meta, &end, true)?;
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
        if self.done {
            return;
        }
        let reason = "the session ended without closing its recording";
        let at_ms = now_ms();
        let elapsed_us = self.started.elapsed().as_micros() as u64;
        let end = EventKind::SessionEnd {
            reason: reason.to_string(),
        };
        if self
            .send(at_ms, elapsed_us, Direction::Meta, &end, false)
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
    /// Bytes of `chunk.lines` already written to `events.jsonl`.
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
            self.with_session(handle, |_, session| session.sync());
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
        let due: Vec<(u64, bool)> = self
            .sessions
            .iter()
            .filter_map(|(handle, s)| {
                let seal = s.chunk.lines.len() >= self.config.chunk_target_bytes
                    || s.chunk
                        .opened
                        .is_some_and(|t| now >= t + self.config.chunk_max_age);
                let sync = s.unsynced >= self.config.fsync_every_events
                    || s.unsynced_since
                        .is_some_and(|t| now >= t + self.config.fsync_interval);
                (seal || sync).then_some((*handle, seal))
            })
            .collect();
        for (handle, seal) in due {
            let budget = self.budget.clone();
            self.with_session(handle, |_, session| {
                if seal {
                    session.seal(&budget)
                } else {
                    session.sync()
                }
            });
        }
    }

    /// Run `f` on a session; on error the session is failed and dropped.
    fn with_session<T>(
        &mut self,
        handle: u64,
        f: impl FnOnce(&Writer, &mut OpenSession) -> Result<T>,
    ) -> Option<T> {
        let mut session = self.sessions.remove(&handle)?;
        match f(self, &mut session) {
            Ok(value) => {
                self.sessions.insert(handle, session);
                Some(value)
            }
            Err(e) => {
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
            Command::Batch(commands) => {
                for command in commands {
                    if !self.handle(command) {
                        return false;
                    }
                }
            }
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
            Command::Event {
                handle,
                seq,
                at_ms,
                elapsed_us,
                lost,
                line,
            } => {
                self.budget.dequeue(1);
                let Some(session) = self.sessions.get_mut(&handle) else {
                    // The session failed: its bytes will never be written.
                    self.budget.release(line.len() as u64);
                    return true;
                };
                session.chunk.push(seq, at_ms, elapsed_us, lost, &line);
                session.unsynced += 1;
                session.unsynced_since.get_or_insert_with(Instant::now);
                let seal = session.chunk.lines.len() >= self.config.chunk_target_bytes;
                let sync = session.unsynced >= self.config.fsync_every_events;
                if seal || sync {
                    let budget = self.budget.clone();
                    self.with_session(handle, |_, s| if seal { s.seal(&budget) } else { s.sync() });
                }
            }
            Command::Flush { handle, ack } => {
                let result = self.with_session(handle, |_, s| s.sync()).ok_or_else(gone);
                ack.send(result);
            }
            Command::Finish {
                handle,
                reason,
                ended_at_ms,
                ack,
            } => {
                let budget = self.budget.clone();
                let key = self.key.clone();
                let result = self
                    .with_session(handle, |_, s| {
                        s.seal(&budget)?;
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
                self.with_session(handle, |_, s| s.sync());
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
    /// renamed once `session.json` and an empty `events.jsonl` are on
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

    /// Write the unwritten lines and fsync them.
    fn sync(&mut self) -> Result<()> {
        if self.written < self.chunk.lines.len() {
            let path = self.dir.join(EVENTS_FILE);
            self.events
                .write_all(&self.chunk.lines[self.written..])
                .and_then(|()| self.events.sync_data())
                .map_err(io_err(&path))?;
            self.written = self.chunk.lines.len();
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

    /// Seal the open chunk (if it has events) and empty `events.jsonl`.
    fn seal(&mut self, budget: &Budget) -> Result<()> {
        if self.chunk.lines.is_empty() {
            return Ok(());
        }
        let index = self.sealed.len() as u32 + 1;
        let sealed = seal_chunk(
            &self.dir,
            &self.file.info.session_id,
            index,
            &self.prev_hash,
            &self.chunk,
        )?;
        // The chunk is durable: the spooled lines are redundant. No fsync
        // needed: if the truncation is lost in a crash, recovery skips
        // lines whose seq a sealed chunk already holds.
        let path = self.dir.join(EVENTS_FILE);
        self.events.set_len(0).map_err(io_err(&path))?;
        budget.release(self.chunk.lines.len() as u64);
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
    /// Complete event lines found unsealed in `events.jsonl`.
    pub events_recovered: u64,
    /// Torn (partial or unparseable) lines dropped, each counted in a
    /// `Gap` event.
    pub torn_lines_dropped: u64,
    pub manifest: Manifest,
}

/// Seal and sign every session in `spool_dir` that a crash left without
/// a manifest: sealed chunks are kept, complete lines of `events.jsonl`
/// become a last chunk (a torn last line is dropped and counted in a
/// `Gap`), a `SessionEnd` is added and the manifest says `interrupted`.
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

fn recover_session(dir: &Path, key: &NodeSigningKey) -> Result<Recovered> {
    let file = SpoolSessionFile::read(dir)?;
    let session_id = file.info.session_id.clone();

    // Sealed chunks, as chunks.jsonl lists them (a torn last line there
    // means the chunk was not renamed into place: its events are still
    // in events.jsonl).
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
    // are still in events.jsonl.
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

    let last_sealed_seq = sealed.last().map_or(0, |c| c.last_seq);
    let events_path = dir.join(EVENTS_FILE);
    let bytes = match fs::read(&events_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&events_path)(e)),
    };
    let mut chunk = OpenChunk::default();
    let mut next_seq = last_sealed_seq + 1;
    let mut torn = 0u64;
    let mut recovered_events = 0u64;
    let mut last_at_ms = sealed
        .last()
        .map_or(file.info.started_at_ms, |c| c.last_at_ms);
    let mut last_elapsed_us = 0;
    // Lines are appended and fsync'd in order, so only the tail can be
    // torn; from the first line that is partial, unreadable or out of
    // sequence on, every line is dropped and counted.
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if torn > 0 {
            torn += 1;
            continue;
        }
        let event = line
            .strip_suffix(b"\n")
            .and_then(|l| serde_json::from_slice::<RecordEvent>(l).ok());
        let Some(event) = event else {
            torn += 1;
            continue;
        };
        if event.seq < next_seq {
            continue; // sealed before the crash
        }
        if event.seq > next_seq {
            torn += 1;
            continue;
        }
        chunk.push(
            event.seq,
            event.at_ms,
            event.elapsed_us,
            match &event.kind {
                EventKind::Gap { lost_events, .. } => *lost_events,
                _ => 0,
            },
            line,
        );
        recovered_events += 1;
        last_at_ms = event.at_ms;
        last_elapsed_us = event.elapsed_us;
        next_seq += 1;
    }
    let mut append = |kind: EventKind, chunk: &mut OpenChunk| -> Result<()> {
        let lost = match &kind {
            EventKind::Gap { lost_events, .. } => *lost_events,
            _ => 0,
        };
        let event = RecordEvent {
            seq: next_seq,
            at_ms: last_at_ms,
            elapsed_us: last_elapsed_us,
            direction: Direction::Meta,
            kind,
        };
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        chunk.push(event.seq, event.at_ms, event.elapsed_us, lost, &line);
        next_seq += 1;
        Ok(())
    };
    if torn > 0 {
        append(
            EventKind::Gap {
                reason: "torn spool lines dropped in crash recovery".into(),
                lost_events: torn,
            },
            &mut chunk,
        )?;
    }
    let reason = "recording interrupted: the node stopped before the session ended; sealed from the spool on restart";
    append(
        EventKind::SessionEnd {
            reason: reason.into(),
        },
        &mut chunk,
    )?;
    let prev_hash = sealed
        .last()
        .map_or(GENESIS_HASH.to_string(), |c| c.sha256.clone());
    let last = seal_chunk(
        dir,
        &session_id,
        sealed.len() as u32 + 1,
        &prev_hash,
        &chunk,
    )?;
    sealed.push(last);
    let manifest = write_manifest(
        dir,
        &file,
        &sealed,
        RecordingStatus::Interrupted,
        reason,
        last_at_ms,
        key,
    )?;
    let _ = fs::remove_file(&events_path);
    sync_dir(dir)?;
    Ok(Recovered {
        session_id,
        events_recovered: recovered_events,
        torn_lines_dropped: torn,
        manifest,
    })
}
