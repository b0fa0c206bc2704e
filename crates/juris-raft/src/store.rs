//! RocksDB-backed Raft storage: the log, the vote, and the state machine's
//! snapshot, in one database with three column families.
//!
//! Durability rule: anything openraft needs to survive a crash (appended
//! entries, the vote, truncation, a snapshot) is written with `sync = true`
//! before the call returns or the flush callback fires, so an
//! acknowledgement to the leader is never ahead of the disk. The state
//! machine itself lives in memory; after a restart it is rebuilt from the
//! stored snapshot and openraft re-applies the committed tail of the log
//! (the committed log id is saved for exactly that), which is why
//! `applied_state` reports the snapshot's position rather than a separately
//! persisted "last applied".

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes);
// the helpers here return it too rather than converting at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, StorageIOError, Vote,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};
use tokio::sync::watch;

use crate::StateMachine;
use crate::error::RaftError;
use crate::types::{
    ApplyResponse, Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// Opens (creating if needed) the node's database under `dir`.
pub(crate) fn open_db(dir: &Path) -> Result<Arc<DB>, RaftError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| RaftError::Storage(format!("create {}: {e}", dir.display())))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOG, CF_META, CF_SM]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|e| RaftError::Storage(format!("open RocksDB at {}: {e}", dir.display())))?;
    Ok(Arc::new(db))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // The three families are created by `open_db`; a missing one is a bug.
    db.cf_handle(name).expect("column family created at open")
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn read_json<T: serde::de::DeserializeOwned>(
    db: &DB,
    family: &str,
    key: &[u8],
    subject: ErrorSubject<NodeId>,
) -> Result<Option<T>, StorageError> {
    let Some(raw) = db
        .get_cf(cf(db, family), key)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| io_err(subject, ErrorVerb::Read, e))
}

/// Encodes `committed` as `index + 1` (0 = nothing committed yet) for a
/// lock-free read by [`crate::RaftNode::status`].
pub(crate) fn encode_committed(c: Option<LogId>) -> u64 {
    c.map_or(0, |l| l.index.saturating_add(1))
}

/// The log and vote half of the storage. Cheap to clone (the log reader is a
/// clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<DB>,
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, committed: Arc<AtomicU64>) -> Result<Self, RaftError> {
        let store = Self { db, committed };
        let c: Option<LogId> = read_json(&store.db, CF_META, KEY_COMMITTED, ErrorSubject::Store)
            .map_err(|e| RaftError::Storage(format!("read committed log id: {e}")))?;
        store
            .committed
            .store(encode_committed(c), Ordering::Relaxed);
        Ok(store)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        read_json(&self.db, CF_META, KEY_LAST_PURGED, ErrorSubject::Store)
    }

    fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
        let entry: Entry = serde_json::from_slice(value)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        if key_index(key) != Some(entry.log_id.index) {
            return Err(StorageIOError::new(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                AnyError::error(format!(
                    "log key does not match entry index {}",
                    entry.log_id.index
                )),
            )
            .into());
        }
        Ok(entry)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (key, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let Some(index) = key_index(&key) else {
                continue;
            };
            if !range.contains(&index) {
                break;
            }
            out.push(Self::decode_entry(&key, &value)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .next()
        {
            None => None,
            Some(item) => {
                let (key, value) =
                    item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(Self::decode_entry(&key, &value)?.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let json = serde_json::to_vec(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_META), KEY_VOTE, json, &synced())
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_json(&self.db, CF_META, KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-applying a shorter tail after a
        // crash (the entries themselves are durable), and the next synced
        // write carries it to disk anyway.
        let json = serde_json::to_vec(&committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.db
            .put_cf(cf(&self.db, CF_META), KEY_COMMITTED, json)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed
            .store(encode_committed(committed), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        read_json(&self.db, CF_META, KEY_COMMITTED, ErrorSubject::Store)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let family = cf(&self.db, CF_LOG);
        for entry in entries {
            let json = serde_json::to_vec(&entry)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(family, index_key(entry.log_id.index), json);
        }
        match self.db.write_opt(batch, &synced()) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One batch: the purge marker and the deletion are never seen apart.
        let json = serde_json::to_vec(&log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META), KEY_LAST_PURGED, json);
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// A snapshot as stored: openraft's metadata (JSON) next to the state
/// machine's own bytes (raw).
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn read_snapshot(db: &DB) -> Result<Option<StoredSnapshot>, StorageError> {
    let subject = ErrorSubject::Snapshot(None);
    let Some(meta) = read_json::<SnapshotMeta>(db, CF_SM, KEY_SNAPSHOT_META, subject.clone())?
    else {
        return Ok(None);
    };
    let data = db
        .get_cf(cf(db, CF_SM), KEY_SNAPSHOT_DATA)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
        .ok_or_else(|| {
            StorageError::from(StorageIOError::new(
                subject,
                ErrorVerb::Read,
                AnyError::error("snapshot metadata present but data missing"),
            ))
        })?;
    Ok(Some(StoredSnapshot { meta, data }))
}

fn write_snapshot(db: &DB, snap: &StoredSnapshot) -> Result<(), StorageError> {
    let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
    let meta =
        serde_json::to_vec(&snap.meta).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_SM), KEY_SNAPSHOT_META, meta);
    batch.put_cf(cf(db, CF_SM), KEY_SNAPSHOT_DATA, &snap.data);
    db.write_opt(batch, &synced())
        .map_err(|e| io_err(subject, ErrorVerb::Write, e))
}

fn to_snapshot(s: StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: s.meta,
        snapshot: Box::new(Cursor::new(s.data)),
    }
}

fn lock_write<S>(sm: &RwLock<S>) -> std::sync::RwLockWriteGuard<'_, S> {
    sm.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The state-machine half: drives the user's [`StateMachine`] and keeps the
/// snapshot in RocksDB.
pub(crate) struct SmStore<S: StateMachine> {
    db: Arc<DB>,
    sm: Arc<RwLock<S>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied_tx: watch::Sender<u64>,
}

impl<S: StateMachine> SmStore<S> {
    /// Restores the state machine from the stored snapshot, if any.
    pub(crate) fn open(
        db: Arc<DB>,
        sm: Arc<RwLock<S>>,
        applied_tx: watch::Sender<u64>,
    ) -> Result<Self, RaftError> {
        let mut store = Self {
            db,
            sm,
            last_applied: None,
            membership: StoredMembership::default(),
            applied_tx,
        };
        if let Some(snap) = read_snapshot(&store.db)
            .map_err(|e| RaftError::Storage(format!("read stored snapshot: {e}")))?
        {
            lock_write(&store.sm).restore(&snap.data).map_err(|e| {
                RaftError::Storage(format!("restore state machine from stored snapshot: {e}"))
            })?;
            store.last_applied = snap.meta.last_log_id;
            store.membership = snap.meta.last_membership.clone();
            store.publish_applied();
        }
        Ok(store)
    }

    fn publish_applied(&self) {
        let index = self.last_applied.map_or(0, |l| l.index);
        self.applied_tx.send_replace(index);
    }
}

/// Builds a snapshot from state captured when openraft asked for the
/// builder: the capture runs on the state-machine task, between applies, so
/// the bytes match `last_applied` exactly.
pub(crate) struct SnapshotBuilder {
    db: Arc<DB>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snap = StoredSnapshot {
            meta: self.meta.clone(),
            data: std::mem::take(&mut self.data),
        };
        write_snapshot(&self.db, &snap)?;
        Ok(to_snapshot(snap))
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for SmStore<S> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut out = Vec::with_capacity(entries.size_hint().0);
        {
            let mut sm = lock_write(&self.sm);
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                out.push(match entry.payload {
                    EntryPayload::Blank => ApplyResponse::default(),
                    EntryPayload::Normal(p) => ApplyResponse(
                        p.commands
                            .iter()
                            .map(|command| sm.apply(command, p.leader_time_ms))
                            .collect(),
                    ),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        ApplyResponse::default()
                    }
                });
            }
        }
        self.publish_applied();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let data = self
            .sm
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot();
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{unique}", l.leader_id, l.index),
            None => format!("none-{unique}"),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        lock_write(&self.sm).restore(&snap.data).map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                AnyError::error(format!("state machine refused snapshot: {e}")),
            ))
        })?;
        write_snapshot(&self.db, &snap)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish_applied();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(read_snapshot(&self.db)?.map(to_snapshot))
    }
}
