//! A node's audit chain on local disk.
//!
//! Records are appended as lines to the current segment file
//! `<dir>/<node>-<first seq, 20 digits>.jsonl`; `append` returns only after
//! `sync_data`, so an acknowledged record survives a crash (DESIGN.md §2,
//! invariant 4). When a segment reaches its size or record bound (checked
//! before the next append), or on [`ChainWriter::rotate`] and
//! [`ChainWriter::close`], it is sealed: `<segment>.seal.json` is written
//! atomically and signed with the node key. A segment file is created only
//! with its first record, so there are no empty segments in normal
//! operation.
//!
//! Reopening continues the chain from the last segment (seq and
//! `prev_hash`). A segment left unsealed by a crash is checked line by line
//! and sealed; if it ends in a partial or unreadable line (a write cut
//! short before its fsync finished, so never acknowledged), those bytes are
//! moved to `<segment>.torn` before the segment is truncated and sealed.
//! Either way the first record the reopened writer appends is a `recovery`
//! event naming what it found, so the crash itself is in the chain. Damage
//! anywhere else (a bad line followed by good ones, a broken link, a
//! segment that contradicts its seal) is not something a crash produces,
//! and the writer refuses to open rather than extend a damaged chain.
//!
//! One writer per node and directory: an advisory lock on `<node>.lock`
//! makes a second one fail instead of interleaving lines.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::canonical::sha256_hex;
use crate::event::{
    AuditEvent, AuditRecord, GENESIS_HASH, LineFields, LineWriter, Recovered, Timestamp, TornTail,
};
use crate::key::NodeKey;
use crate::seal::Seal;
use crate::segment::{self, SEAL_SUFFIX, TORN_SUFFIX};
use crate::{AuditError, Result, check_name, io_err};

/// Where and how a node writes its chain.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dir: PathBuf,
    pub node: String,
    pub region: String,
    /// A segment is sealed before an append would take it past this size
    /// (a single larger record still gets a segment of its own).
    pub max_segment_bytes: u64,
    /// A segment is sealed once it holds this many records.
    pub max_segment_records: u64,
}

impl WriterConfig {
    /// Defaults: 16 MiB or 100,000 records per segment.
    pub fn new(dir: impl Into<PathBuf>, node: &str, region: &str) -> Self {
        WriterConfig {
            dir: dir.into(),
            node: node.to_string(),
            region: region.to_string(),
            max_segment_bytes: 16 << 20,
            max_segment_records: 100_000,
        }
    }
}

/// What [`ChainWriter::open`] found and did.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Segments left unsealed by a previous process, now sealed.
    pub sealed: Vec<String>,
    /// Segment files that held no record (after moving a torn tail aside)
    /// and were removed; their names are reused by the next segment.
    pub removed_empty: Vec<String>,
    pub torn: Option<TornTail>,
    /// The `recovery` record appended, when there was anything to recover.
    pub record: Option<AuditRecord>,
}

struct Current {
    name: String,
    path: PathBuf,
    file: File,
    first_seq: u64,
    first_prev_hash: String,
    first_time: Timestamp,
    last_time: Timestamp,
    bytes: u64,
    records: u64,
    /// Lines of a group commit not yet written: one `write` per group
    /// instead of one per record.
    pending: Vec<u8>,
    /// SHA-256 of every byte written to the segment so far: the seal
    /// states what this writer wrote without reading the file back (and
    /// so cannot sign a byte that something else put there).
    written_digest: Sha256,
}

impl Current {
    /// Write `bytes` at the end of the segment and add them to its digest.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(io_err(&self.path))?;
        self.written_digest.update(bytes);
        Ok(())
    }
}

/// Appends records to one node's chain. Dropping it without
/// [`close`](Self::close) leaves the current segment unsealed, exactly as a
/// crash would; the next [`open`](Self::open) seals it.
pub struct ChainWriter {
    config: WriterConfig,
    key: NodeKey,
    // Held for the writer's lifetime; the OS releases it when the process dies.
    _lock: File,
    next_seq: u64,
    prev_hash: String,
    last_time: Option<Timestamp>,
    current: Option<Current>,
    poisoned: bool,
    /// The line being appended, and what writes it: kept between records
    /// so that a busy chain allocates nothing per record.
    line: String,
    lines: LineWriter,
}

impl std::fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter")
            .field("dir", &self.config.dir)
            .field("node", &self.config.node)
            .field("next_seq", &self.next_seq)
            .field("current", &self.current.as_ref().map(|c| &c.name))
            .finish_non_exhaustive()
    }
}

impl ChainWriter {
    /// Open (or start) the node's chain in `config.dir`. `now` is the time
    /// of the `recovery` record, if one is needed.
    pub fn open(config: WriterConfig, key: NodeKey, now: Timestamp) -> Result<(Self, Recovery)> {
        check_name("node name", &config.node)?;
        check_name("region name", &config.region)?;
        let dir = config.dir.clone();
        // Statement text is sensitive: the directory is the node's alone.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let lock_path = dir.join(format!("{}.lock", config.node));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Locked { path: lock_path });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut writer = ChainWriter {
            config,
            key,
            _lock: lock,
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            last_time: None,
            current: None,
            poisoned: false,
            line: String::new(),
            lines: LineWriter::default(),
        };
        let mut recovery = Recovery::default();
        writer.recover(&mut recovery)?;
        if !recovery.sealed.is_empty()
            || !recovery.removed_empty.is_empty()
            || recovery.torn.is_some()
        {
            let event = AuditEvent::Recovery(Recovered {
                sealed_segment: recovery.sealed.last().cloned(),
                torn: recovery.torn.clone(),
            });
            recovery.record = Some(writer.append(now, event)?);
        }
        Ok((writer, recovery))
    }

    /// Seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hash of the last record ([`GENESIS_HASH`] before the first).
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }

    /// File name of the segment being written, if one is open.
    pub fn current_segment(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.name.as_str())
    }

    pub fn public_key_hex(&self) -> String {
        self.key.public_key_hex()
    }

    /// Append one event; returns once the record is on disk. A time earlier
    /// than the previous record's is raised to it, so time never decreases
    /// along a chain (a stepped-back clock cannot make records look
    /// reordered, and range export stays exact).
    pub fn append(&mut self, time: Timestamp, event: AuditEvent) -> Result<AuditRecord> {
        let seq = self.next_seq;
        let prev_hash = self.prev_hash.clone();
        let time = self.append_event(time, &event, true)?;
        Ok(AuditRecord {
            seq,
            time,
            node: self.config.node.clone(),
            region: self.config.region.clone(),
            prev_hash,
            event,
            hash: self.prev_hash.clone(),
        })
    }

    /// Append several events with one `fsync` at the end (group commit):
    /// a busy node's statement records would otherwise each wait for the
    /// disk. Returns once all of them are on disk; on an error, the
    /// records before the failing one were written but are durable only
    /// if the error came after the final sync was attempted, so the
    /// caller treats the whole batch as unacknowledged.
    pub fn append_many(
        &mut self,
        events: impl IntoIterator<Item = (Timestamp, AuditEvent)>,
    ) -> Result<usize> {
        let mut written = 0;
        let mut appended = Ok(());
        for (time, event) in events {
            if let Err(e) = self.append_event(time, &event, false) {
                appended = Err(e);
                break;
            }
            written += 1;
        }
        // What was appended before a failure is still written (and synced
        // below if the write works): the chain state already includes it.
        let flushed = self.write_pending();
        appended?;
        flushed?;
        if let Some(current) = &self.current {
            let synced = current.file.sync_data().map_err(io_err(&current.path));
            if synced.is_err() {
                self.poisoned = true;
            }
            synced?;
        }
        Ok(written)
    }

    /// Write the current segment's buffered lines to its file.
    fn write_pending(&mut self) -> Result<()> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut current.pending);
        let written = current.write(&pending);
        // The buffer is kept for the next group.
        current.pending = pending;
        current.pending.clear();
        if written.is_err() {
            self.poisoned = true;
        }
        written
    }

    /// Append one event's line (written at once and synced when `sync`,
    /// else left in `pending` for the group's write); returns the time
    /// it was recorded with.
    fn append_event(
        &mut self,
        time: Timestamp,
        event: &AuditEvent,
        sync: bool,
    ) -> Result<Timestamp> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let time = self.last_time.map_or(time, |last| time.max(last));
        self.line.clear();
        let hash = self.lines.write(
            &mut self.line,
            &LineFields {
                seq: self.next_seq,
                time,
                node: &self.config.node,
                region: &self.config.region,
                prev_hash: &self.prev_hash,
            },
            event,
        )?;
        let len = self.line.len() as u64;
        if let Some(current) = &self.current
            && (current.records >= self.config.max_segment_records
                || current.bytes + len > self.config.max_segment_bytes)
        {
            self.rotate()?;
        }
        // Any failure from here on may leave a partial line behind; the
        // writer stops rather than append after it (reopening cleans up).
        let result = self.write_line(time, sync);
        if result.is_err() {
            self.poisoned = true;
        }
        result?;
        self.next_seq += 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(hash.as_str());
        self.last_time = Some(time);
        Ok(time)
    }

    /// Add `self.line`, the line of record `self.next_seq`, to the current
    /// segment (opening one if there is none).
    fn write_line(&mut self, time: Timestamp, sync: bool) -> Result<()> {
        let current = match self.current.take() {
            Some(current) => current,
            None => {
                let name = segment::file_name(&self.config.node, self.next_seq);
                let path = self.config.dir.join(&name);
                let file = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?;
                sync_dir(&self.config.dir)?;
                Current {
                    name,
                    path,
                    file,
                    first_seq: self.next_seq,
                    first_prev_hash: self.prev_hash.clone(),
                    first_time: time,
                    last_time: time,
                    bytes: 0,
                    records: 0,
                    pending: Vec::new(),
                    written_digest: Sha256::new(),
                }
            }
        };
        let current = self.current.insert(current);
        current.pending.extend_from_slice(self.line.as_bytes());
        if sync {
            let pending = std::mem::take(&mut current.pending);
            current.write(&pending)?;
            current.file.sync_data().map_err(io_err(&current.path))?;
        }
        current.bytes += self.line.len() as u64;
        current.records += 1;
        current.last_time = time;
        Ok(())
    }

    /// Seal the current segment now (e.g. on a timer, so that a quiet
    /// node's records become uploadable). No-op without records.
    pub fn rotate(&mut self) -> Result<Option<Seal>> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        self.write_pending()?;
        let Some(current) = self.current.take() else {
            return Ok(None);
        };
        let result = (|| {
            let seal = Seal {
                format: String::new(),
                segment: current.name.clone(),
                node: self.config.node.clone(),
                region: self.config.region.clone(),
                first_seq: current.first_seq,
                last_seq: self.next_seq - 1,
                first_prev_hash: current.first_prev_hash.clone(),
                last_hash: self.prev_hash.clone(),
                first_time: current.first_time,
                last_time: current.last_time,
                size: current.bytes,
                sha256: hex::encode(current.written_digest.finalize()),
                public_key: String::new(),
                signature: String::new(),
            }
            .sign(&self.key)?;
            write_seal(&self.config.dir, &seal)?;
            Ok(seal)
        })();
        if result.is_err() {
            self.poisoned = true;
        }
        result.map(Some)
    }

    /// Seal the current segment and release the chain.
    pub fn close(mut self) -> Result<Option<Seal>> {
        self.rotate()
    }

    fn recover(&mut self, recovery: &mut Recovery) -> Result<()> {
        let dir = self.config.dir.clone();
        let mut segments: Vec<(u64, String)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some((node, seq)) = segment::parse_name(&name)
                && node == self.config.node
            {
                segments.push((seq, name));
            }
        }
        segments.sort();
        let count = segments.len();
        // Whether next_seq/prev_hash come from a segment seen here (older
        // segments may have been pruned after upload).
        let mut known = false;
        for (index, (first_seq, name)) in segments.into_iter().enumerate() {
            let is_last = index + 1 == count;
            let path = dir.join(&name);
            let corrupt = |reason: String| AuditError::Corrupt {
                path: path.clone(),
                reason,
            };
            let seal_path = dir.join(format!("{name}{SEAL_SUFFIX}"));
            let seal = match fs::read(&seal_path) {
                Ok(bytes) => {
                    Some(
                        Seal::from_file_bytes(&bytes).map_err(|e| AuditError::Corrupt {
                            path: seal_path.clone(),
                            reason: e.to_string(),
                        })?,
                    )
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&seal_path)(e)),
            };
            if known && first_seq != self.next_seq {
                return Err(corrupt(format!(
                    "starts at seq {first_seq} but the previous segment ends at seq {}",
                    self.next_seq - 1
                )));
            }
            if let Some(seal) = seal {
                if seal.segment != name || seal.first_seq != first_seq {
                    return Err(corrupt("its seal names another segment".into()));
                }
                if known && seal.first_prev_hash != self.prev_hash {
                    return Err(corrupt(
                        "first_prev_hash does not match the previous segment's last hash".into(),
                    ));
                }
                if is_last {
                    // The chain continues from here: make sure the file
                    // still says what its seal says.
                    let bytes = fs::read(&path).map_err(io_err(&path))?;
                    if sha256_hex(&bytes) != seal.sha256 {
                        return Err(corrupt("content does not match its seal".into()));
                    }
                }
                self.next_seq = seal.last_seq + 1;
                self.prev_hash = seal.last_hash.clone();
                self.last_time = Some(seal.last_time);
                known = true;
                continue;
            }
            // Unsealed: left by a crash (or a drop without close).
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let scan = segment::scan(
                &bytes,
                &self.config.node,
                Some(&self.config.region),
                first_seq,
            );
            let mut good = bytes.len();
            if let Some(finding) = scan.findings.first() {
                let tail_only = scan
                    .findings
                    .iter()
                    .all(|f| f.line == scan.lines && scan.bad_tail.is_some());
                if !(is_last && tail_only) {
                    return Err(corrupt(format!(
                        "line {}: {}",
                        finding.line, finding.message
                    )));
                }
                good = scan.bad_tail.unwrap_or(bytes.len());
                recovery.torn = Some(self.save_torn(&name, &bytes, good)?);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(good as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err(&path))?;
            }
            if let (Some(first), true) = (&scan.first, known)
                && first.prev_hash != self.prev_hash
            {
                return Err(corrupt(
                    "first record's prev_hash does not match the previous segment's last hash"
                        .into(),
                ));
            }
            let (Some(first), Some(last)) = (&scan.first, &scan.last) else {
                // Nothing acknowledged was ever in it.
                if !known && first_seq != 1 {
                    return Err(corrupt(
                        "holds no record and no earlier segment is left to continue the chain from"
                            .into(),
                    ));
                }
                fs::remove_file(&path).map_err(io_err(&path))?;
                sync_dir(&dir)?;
                recovery.removed_empty.push(name);
                continue;
            };
            let kept = &bytes[..good];
            let seal = Seal {
                format: String::new(),
                segment: name.clone(),
                node: self.config.node.clone(),
                region: self.config.region.clone(),
                first_seq: first.seq,
                last_seq: last.seq,
                first_prev_hash: first.prev_hash.clone(),
                last_hash: last.hash.clone(),
                first_time: first.time,
                last_time: last.time,
                size: kept.len() as u64,
                sha256: sha256_hex(kept),
                public_key: String::new(),
                signature: String::new(),
            }
            .sign(&self.key)?;
            write_seal(&dir, &seal)?;
            self.next_seq = last.seq + 1;
            self.prev_hash = last.hash.clone();
            self.last_time = Some(last.time);
            known = true;
            recovery.sealed.push(name);
        }
        Ok(())
    }

    /// Copy `bytes[from..]` to a new `<segment>.torn[.N]` file, durably,
    /// before anything is truncated.
    fn save_torn(&self, name: &str, bytes: &[u8], from: usize) -> Result<TornTail> {
        let dir = &self.config.dir;
        let tail = &bytes[from..];
        let mut attempt = 0u32;
        loop {
            let saved_as = if attempt == 0 {
                format!("{name}{TORN_SUFFIX}")
            } else {
                format!("{name}{TORN_SUFFIX}.{attempt}")
            };
            let path = dir.join(&saved_as);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(tail)
                        .and_then(|()| file.sync_all())
                        .map_err(io_err(&path))?;
                    sync_dir(dir)?;
                    return Ok(TornTail {
                        segment: name.to_string(),
                        offset: from as u64,
                        bytes: tail.len() as u64,
                        sha256: sha256_hex(tail),
                        saved_as,
                    });
                }
                // A crash during an earlier recovery left one already.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }
}

/// Write `<segment>.seal.json` via a temporary file and rename, so a seal
/// is either complete or absent.
fn write_seal(dir: &Path, seal: &Seal) -> Result<()> {
    let path = dir.join(format!("{}{SEAL_SUFFIX}", seal.segment));
    let temporary = dir.join(format!("{}{SEAL_SUFFIX}.tmp", seal.segment));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_err(&temporary))?;
    file.write_all(&seal.to_file_bytes()?)
        .and_then(|()| file.sync_all())
        .map_err(io_err(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Make a directory's entries (new files, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{append, config, key, statement, t};

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        names
    }

    fn lines(path: &Path) -> Vec<AuditRecord> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn appends_rotate_and_seal() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, recovery) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 2), key(1), t(0)).unwrap();
        assert!(recovery.record.is_none());
        append(&mut w, 0, 5);
        assert_eq!(w.current_segment(), Some("n1-00000000000000000005.jsonl"));
        let last = w.close().unwrap().unwrap();
        assert_eq!((last.first_seq, last.last_seq), (5, 5));
        assert_eq!(
            segments(tmp.path()),
            [
                "n1-00000000000000000001.jsonl",
                "n1-00000000000000000001.jsonl.seal.json",
                "n1-00000000000000000003.jsonl",
                "n1-00000000000000000003.jsonl.seal.json",
                "n1-00000000000000000005.jsonl",
                "n1-00000000000000000005.jsonl.seal.json",
            ]
        );
        let first = lines(&tmp.path().join("n1-00000000000000000001.jsonl"));
        assert_eq!(first[0].seq, 1);
        assert_eq!(first[0].prev_hash, GENESIS_HASH);
        assert_eq!(first[1].prev_hash, first[0].hash);
        let second = lines(&tmp.path().join("n1-00000000000000000003.jsonl"));
        assert_eq!(second[0].prev_hash, first[1].hash);
        let seal = Seal::from_file_bytes(
            &fs::read(tmp.path().join("n1-00000000000000000003.jsonl.seal.json")).unwrap(),
        )
        .unwrap();
        seal.verify(&key(1).public_key_hex()).unwrap();
        assert_eq!(seal.last_hash, second[1].hash);
        assert_eq!(
            seal.sha256,
            sha256_hex(&fs::read(tmp.path().join("n1-00000000000000000003.jsonl")).unwrap())
        );
    }

    #[test]
    fn group_commits_chain_like_single_appends_and_rotate() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 3), key(1), t(0)).unwrap();
        append(&mut w, 0, 1);
        let written = w
            .append_many((1..=5).map(|i| (t(i as i64), statement(i))))
            .unwrap();
        assert_eq!(written, 5);
        assert_eq!(w.next_seq(), 7);
        w.close().unwrap();
        let mut all = Vec::new();
        for name in segments(tmp.path())
            .iter()
            .filter(|n| n.ends_with(".jsonl"))
        {
            all.extend(lines(&tmp.path().join(name)));
        }
        assert_eq!(all.len(), 6);
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        assert_eq!(segments(tmp.path()).len(), 4, "rotated after 3 records");
        // A segment sealed in the middle of a group holds what its seal says
        // (the group's buffered lines were written before sealing).
        for name in segments(tmp.path())
            .iter()
            .filter(|n| n.ends_with(".jsonl"))
        {
            let path = tmp.path().join(name);
            let seal = Seal::from_file_bytes(
                &fs::read(tmp.path().join(format!("{name}.seal.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(seal.sha256, sha256_hex(&fs::read(&path).unwrap()), "{name}");
            assert_eq!(seal.last_hash, lines(&path).last().unwrap().hash, "{name}");
        }
    }

    #[test]
    fn rotates_on_size() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config(tmp.path(), "n1", "eu-west", 1000);
        c.max_segment_bytes = 700;
        let (mut w, _) = ChainWriter::open(c, key(1), t(0)).unwrap();
        append(&mut w, 0, 6);
        w.close().unwrap();
        for name in segments(tmp.path())
            .iter()
            .filter(|n| n.ends_with(".jsonl"))
        {
            assert!(fs::metadata(tmp.path().join(name)).unwrap().len() <= 700);
        }
        assert!(segments(tmp.path()).len() >= 4);
    }

    #[test]
    fn restart_continues_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 2), key(1), t(0)).unwrap();
        append(&mut w, 0, 3);
        let head = w.head_hash().to_string();
        w.close().unwrap();
        let (mut w, recovery) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 2), key(1), t(10)).unwrap();
        assert!(recovery.record.is_none(), "a clean close needs no recovery");
        assert_eq!(w.next_seq(), 4);
        let r = w.append(t(10), statement(4)).unwrap();
        assert_eq!((r.seq, r.prev_hash.as_str()), (4, head.as_str()));
    }

    #[test]
    fn time_never_goes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        w.append(t(50), statement(1)).unwrap();
        let r = w.append(t(10), statement(2)).unwrap();
        assert_eq!(r.time, t(50));
    }

    #[test]
    fn a_crash_leaves_a_segment_that_is_sealed_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        append(&mut w, 0, 3);
        let head = w.head_hash().to_string();
        drop(w);
        let (w, recovery) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(100)).unwrap();
        assert_eq!(recovery.sealed, ["n1-00000000000000000001.jsonl"]);
        assert!(recovery.torn.is_none());
        let record = recovery.record.unwrap();
        assert_eq!((record.seq, record.prev_hash.as_str()), (4, head.as_str()));
        assert_eq!(record.time, t(100));
        assert!(matches!(record.event, AuditEvent::Recovery(_)));
        assert_eq!(w.current_segment(), Some("n1-00000000000000000004.jsonl"));
        assert!(
            tmp.path()
                .join("n1-00000000000000000001.jsonl.seal.json")
                .exists()
        );
    }

    #[test]
    fn a_torn_last_line_is_moved_aside_and_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        append(&mut w, 0, 3);
        let head = w.head_hash().to_string();
        drop(w);
        let path = tmp.path().join("n1-00000000000000000001.jsonl");
        let good = fs::read(&path).unwrap();
        let partial = br#"{"event":{"class":"read","duration_us":1"#;
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(partial)
            .unwrap();
        let (_w, recovery) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(100)).unwrap();
        let torn = recovery.torn.clone().unwrap();
        assert_eq!(torn.offset, good.len() as u64);
        assert_eq!(torn.bytes, partial.len() as u64);
        assert_eq!(torn.saved_as, "n1-00000000000000000001.jsonl.torn");
        assert_eq!(fs::read(tmp.path().join(&torn.saved_as)).unwrap(), partial);
        assert_eq!(
            fs::read(&path).unwrap(),
            good,
            "truncated to the last whole record"
        );
        let record = recovery.record.unwrap();
        assert_eq!((record.seq, record.prev_hash.as_str()), (4, head.as_str()));
        let AuditEvent::Recovery(event) = record.event else {
            panic!("not a recovery event")
        };
        assert_eq!(event.torn, Some(torn));
    }

    #[test]
    fn a_segment_holding_only_a_torn_line_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 3), key(1), t(0)).unwrap();
        append(&mut w, 0, 3);
        w.rotate().unwrap();
        let head = w.head_hash().to_string();
        drop(w);
        // The crash hit the very first write of the next segment.
        let path = tmp.path().join("n1-00000000000000000004.jsonl");
        fs::write(&path, b"{\"ev").unwrap();
        let (w, recovery) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 3), key(1), t(100)).unwrap();
        assert_eq!(recovery.removed_empty, ["n1-00000000000000000004.jsonl"]);
        assert_eq!(recovery.torn.as_ref().unwrap().bytes, 4);
        let record = recovery.record.unwrap();
        assert_eq!((record.seq, record.prev_hash.as_str()), (4, head.as_str()));
        w.close().unwrap();
        assert_eq!(lines(&path)[0].seq, 4);
    }

    #[test]
    fn damage_before_the_last_line_refuses_to_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        append(&mut w, 0, 3);
        drop(w);
        let path = tmp.path().join("n1-00000000000000000001.jsonl");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replacen("customers", "customerz", 1);
        fs::write(&path, text).unwrap();
        let err = ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1: hash"), "{err}");
    }

    #[test]
    fn a_sealed_segment_that_changed_refuses_to_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        append(&mut w, 0, 2);
        w.close().unwrap();
        let path = tmp.path().join("n1-00000000000000000001.jsonl");
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&path, bytes).unwrap();
        let err = ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match its seal"), "{err}");
    }

    #[test]
    fn one_writer_per_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let (_w, _) =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap();
        let err =
            ChainWriter::open(config(tmp.path(), "n1", "eu-west", 10), key(1), t(0)).unwrap_err();
        assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        for (node, region) in [("../n", "eu"), ("n1", "eu/west"), ("", "eu")] {
            assert!(ChainWriter::open(config(tmp.path(), node, region, 10), key(1), t(0)).is_err());
        }
    }
}
