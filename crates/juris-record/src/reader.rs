//! Reading recordings back: fetch, verify, list.
//!
//! Verification never stops at the first finding. A reader wants the
//! events it can still trust and an exact account of what is wrong
//! (which chunk, what mismatched), so [`open_recording`] returns the
//! events of every readable chunk of the session together with a
//! [`Verification`] listing each problem with its [`Location`]. Only a
//! recording whose manifest cannot be found or parsed at all is an error.
//!
//! Everything fetched is bounded by [`DecodeLimits`] before it is read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::chunk::{GENESIS_HASH, decode_chunk_with, sha256_hex};
use crate::event::{EventKind, RecordEvent};
use crate::manifest::{MANIFEST_FORMAT, Manifest, RecordingStatus};
use crate::spool::{QUARANTINE_DIR, SpoolSessionFile};
use crate::store::{
    MANIFEST_NAME, chunk_file_name, index_prefix, object_path, parse_index_name, session_prefix,
};
use crate::{DecodeLimits, RecordError, Result, io_err};

/// Largest index object accepted.
const MAX_INDEX_BYTES: usize = 64 << 10;

/// Where a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Manifest,
    /// The chunk with this index (as the manifest numbers them).
    Chunk {
        index: u32,
        key: String,
    },
    /// The session's index object (unsigned pointer).
    Index,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Manifest => f.write_str("manifest"),
            Location::Chunk { index, key } => write!(f, "chunk {index} ({key})"),
            Location::Index => f.write_str("index"),
        }
    }
}

/// One verification finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.what)
    }
}

/// The outcome of verifying a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// No problem found, and the signature verified.
    pub ok: bool,
    pub problems: Vec<Problem>,
    /// The public key the signature was checked against.
    pub checked_key: String,
    /// Whether that key was given by the caller (trusted) or taken from
    /// the manifest itself (which proves integrity, not authorship).
    pub key_was_given: bool,
}

/// A recording as read back.
#[derive(Debug, Clone)]
pub struct Recording {
    pub manifest: Manifest,
    pub manifest_key: String,
    /// Events of every readable chunk that belongs to this session, in
    /// seq order.
    pub events: Vec<RecordEvent>,
    pub verification: Verification,
}

/// Filters for [`list_sessions`] and [`list_spool_sessions`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Sessions still running at or after this time (ms since epoch).
    pub since_ms: Option<u64>,
    /// Sessions started before this time.
    pub until_ms: Option<u64>,
    pub connection: Option<String>,
    /// Matches the principal's name or subject.
    pub user: Option<String>,
}

/// Where a summary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummarySource {
    Store,
    Spool,
}

/// One line of a session listing. From the store it is the session's
/// index object: an unsigned convenience copy of manifest fields (open
/// the recording to verify them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSummary {
    pub session_id: String,
    pub region: String,
    pub node: String,
    pub connection: String,
    /// The principal's display name (else subject).
    pub user: String,
    pub subject: String,
    pub started_at_ms: u64,
    /// `None` while the session is still being recorded.
    pub ended_at_ms: Option<u64>,
    pub status: Option<RecordingStatus>,
    pub event_count: u64,
    pub chunk_count: u64,
    pub bytes: u64,
    pub manifest_key: String,
    pub source: SummarySource,
    /// Spool only: chunks and manifests not uploaded yet.
    pub pending_files: Option<u64>,
    /// Spool only: files of this session in quarantine.
    pub quarantined_files: Option<u64>,
}

impl SessionSummary {
    pub(crate) fn from_manifest(manifest: &Manifest, manifest_key: &str) -> Self {
        SessionSummary {
            session_id: manifest.session_id.clone(),
            region: manifest.region.clone(),
            node: manifest.node.clone(),
            connection: manifest.connection.clone(),
            user: manifest.principal.name.clone(),
            subject: manifest.principal.subject.clone(),
            started_at_ms: manifest.started_at_ms,
            ended_at_ms: Some(manifest.ended_at_ms),
            status: Some(manifest.status),
            event_count: manifest.event_count,
            chunk_count: manifest.chunks.len() as u64,
            bytes: manifest.total_bytes,
            manifest_key: manifest_key.to_string(),
            source: SummarySource::Store,
            pending_files: None,
            quarantined_files: None,
        }
    }

    fn matches(&self, filter: &ListFilter) -> bool {
        filter.until_ms.is_none_or(|u| self.started_at_ms < u)
            && filter
                .since_ms
                .is_none_or(|s| self.ended_at_ms.is_none_or(|e| e >= s))
            && filter
                .connection
                .as_ref()
                .is_none_or(|c| *c == self.connection)
            && filter
                .user
                .as_ref()
                .is_none_or(|u| *u == self.user || *u == self.subject)
    }
}

/// Fetch an object of at most `max` bytes; `None` if it does not exist.
async fn get_bounded(store: &dyn ObjectStore, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
    let path = object_path(key)?;
    let result = match store.get(&path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let too_big = |size: u64| RecordError::Corrupt {
        what: key.to_string(),
        reason: format!("object of {size} bytes exceeds the limit of {max}"),
    };
    if result.meta.size > max as u64 {
        return Err(too_big(result.meta.size));
    }
    let mut bytes = Vec::with_capacity(result.meta.size as usize);
    let mut stream = result.into_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if bytes.len() + piece.len() > max {
            return Err(too_big((bytes.len() + piece.len()) as u64));
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(Some(bytes))
}

/// The regions that have recordings in `store`.
async fn regions(store: &dyn ObjectStore) -> Result<Vec<String>> {
    let listing = store
        .list_with_delimiter(Some(&object_path("recordings")?))
        .await?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// Index names (start, session id) of a region, in key (= start) order.
async fn index_entries(store: &dyn ObjectStore, region: &str) -> Result<Vec<(u64, String)>> {
    let prefix = object_path(index_prefix(region).trim_end_matches('/'))?;
    let mut entries = Vec::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        if let Some((start, session)) = meta.location.filename().and_then(parse_index_name) {
            entries.push((start, session.to_string()));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Open a session's recording from a region's store: find it through the
/// index (in `region`, or in every region of the store), fetch the
/// manifest and chunks, and verify everything. `trusted_key` is the
/// node's public key (hex) if the caller knows it; otherwise the key the
/// manifest names is used and [`Verification::key_was_given`] is false.
pub async fn open_recording(
    store: &dyn ObjectStore,
    region: Option<&str>,
    session_id: &str,
    trusted_key: Option<&str>,
) -> Result<Recording> {
    crate::check_session_id(session_id)?;
    let candidates = match region {
        Some(region) => {
            crate::check_name("region", region)?;
            vec![region.to_string()]
        }
        None => regions(store).await?,
    };
    for region in candidates {
        let found = index_entries(store, &region)
            .await?
            .into_iter()
            .find(|(_, session)| session == session_id);
        if let Some((start, _)) = found {
            let key = format!(
                "{}/{MANIFEST_NAME}",
                session_prefix(&region, session_id, start)
            );
            return open_recording_at(store, &key, trusted_key).await;
        }
    }
    Err(RecordError::NotFound {
        session: session_id.to_string(),
        region: region.map(str::to_string),
    })
}

/// Open a recording from a local directory laid out like the object store
/// (for example an export, or a `LocalFileSystem` store's root).
pub async fn open_recording_in_dir(
    dir: &Path,
    region: Option<&str>,
    session_id: &str,
    trusted_key: Option<&str>,
) -> Result<Recording> {
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
    open_recording(&store, region, session_id, trusted_key).await
}

/// Open and verify the recording whose manifest is at `manifest_key`.
pub async fn open_recording_at(
    store: &dyn ObjectStore,
    manifest_key: &str,
    trusted_key: Option<&str>,
) -> Result<Recording> {
    let limits = DecodeLimits::default();
    let bytes = get_bounded(store, manifest_key, limits.max_manifest_bytes)
        .await?
        .ok_or_else(|| RecordError::Corrupt {
            what: manifest_key.to_string(),
            reason: "manifest not found".into(),
        })?;
    let mut problems = Vec::new();
    let manifest_problem = |what: String| Problem {
        location: Location::Manifest,
        what,
    };
    // Parse leniently so that an edited manifest is reported, not refused.
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
        what: manifest_key.to_string(),
        reason: format!("not a manifest: {e}"),
    })?;
    if let Err(e) = Manifest::from_file_bytes(&bytes, limits.max_manifest_bytes) {
        problems.push(manifest_problem(format!("{e}")));
    }
    if manifest.format != MANIFEST_FORMAT {
        problems.push(manifest_problem(format!(
            "unknown format `{}`",
            manifest.format
        )));
    }
    let checked_key = trusted_key.unwrap_or(&manifest.public_key).to_string();
    if checked_key != manifest.public_key {
        problems.push(manifest_problem(format!(
            "signed-by key {} is not the trusted key {checked_key}",
            manifest.public_key
        )));
    }
    if let Err(e) = manifest.verify(&checked_key) {
        problems.push(manifest_problem(format!("signature: {e}")));
    }
    let prefix = session_prefix(
        &manifest.region,
        &manifest.session_id,
        manifest.started_at_ms,
    );
    if manifest_key != format!("{prefix}/{MANIFEST_NAME}") {
        problems.push(manifest_problem(format!(
            "stored at {manifest_key}, but its session, region and start belong at {prefix}/{MANIFEST_NAME}"
        )));
    }

    let mut events = Vec::new();
    let mut previous_hash = GENESIS_HASH.to_string();
    let mut previous_last_seq = 0u64;
    let mut lost_in_gaps = 0u64;
    for (position, entry) in manifest.chunks.iter().enumerate() {
        let location = Location::Chunk {
            index: entry.index,
            key: entry.key.clone(),
        };
        let mut problem = |what: String| {
            problems.push(Problem {
                location: location.clone(),
                what,
            })
        };
        let expected_index = position as u32 + 1;
        if entry.index != expected_index {
            problem(format!(
                "listed at position {expected_index} with index {}",
                entry.index
            ));
        }
        let expected_key = format!("{prefix}/{}", chunk_file_name(entry.index));
        if entry.key != expected_key {
            problem(format!("key should be {expected_key}"));
        }
        if entry.first_seq != previous_last_seq + 1 {
            problem(format!(
                "manifest says events {}..={}, but the previous chunk ended at {previous_last_seq}",
                entry.first_seq, entry.last_seq
            ));
        }
        let stored = match get_bounded(store, &entry.key, limits.max_chunk_bytes).await {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                problem("missing from the store".into());
                None
            }
            Err(e) => {
                problem(format!("cannot fetch: {e}"));
                None
            }
        };
        // The link to check the next chunk against: this chunk's actual
        // hash if we have it, else what the manifest says it should be.
        let mut actual_hash = entry.sha256.clone();
        if let Some(bytes) = stored {
            actual_hash = sha256_hex(&bytes);
            if bytes.len() as u64 != entry.size {
                problem(format!(
                    "size {} differs from the manifest's {}",
                    bytes.len(),
                    entry.size
                ));
            }
            if actual_hash != entry.sha256 {
                problem(format!(
                    "content hash {actual_hash} differs from the manifest's {}",
                    entry.sha256
                ));
            }
            match decode_chunk_with(&bytes, &limits) {
                Err(e) => problem(format!("unreadable: {e}")),
                Ok(chunk) => {
                    let header = &chunk.header;
                    let mut own_session = true;
                    if header.session_id != manifest.session_id {
                        own_session = false;
                        problem(format!(
                            "belongs to session {}, not {}",
                            header.session_id, manifest.session_id
                        ));
                    }
                    if header.index != entry.index {
                        problem(format!("header says index {}", header.index));
                    }
                    if header.prev_chunk_hash != previous_hash {
                        problem(format!(
                            "chain broken: prev_chunk_hash is {}, but the previous chunk hashes to {previous_hash}",
                            header.prev_chunk_hash
                        ));
                    }
                    if header.first_seq != entry.first_seq || header.last_seq != entry.last_seq {
                        problem(format!(
                            "holds events {}..={}, manifest says {}..={}",
                            header.first_seq, header.last_seq, entry.first_seq, entry.last_seq
                        ));
                    }
                    if own_session {
                        lost_in_gaps += chunk
                            .events
                            .iter()
                            .map(|e| match &e.kind {
                                EventKind::Gap { lost_events, .. } => *lost_events,
                                _ => 0,
                            })
                            .sum::<u64>();
                        events.extend(chunk.events);
                    }
                }
            }
        }
        previous_hash = actual_hash;
        previous_last_seq = entry.last_seq;
    }
    let head = manifest
        .chunks
        .last()
        .map_or(GENESIS_HASH, |c| c.sha256.as_str());
    if manifest.chain_head != head {
        problems.push(manifest_problem(format!(
            "chain_head {} is not the last chunk's hash {head}",
            manifest.chain_head
        )));
    }
    if manifest.chain_head != previous_hash {
        problems.push(manifest_problem(format!(
            "chain_head {} does not match the stored chain, which ends in {previous_hash}",
            manifest.chain_head
        )));
    }
    if manifest.event_count != previous_last_seq {
        problems.push(manifest_problem(format!(
            "event_count {} but the chunks end at seq {previous_last_seq}",
            manifest.event_count
        )));
    }
    let total: u64 = manifest.chunks.iter().map(|c| c.size).sum();
    if manifest.total_bytes != total {
        problems.push(manifest_problem(format!(
            "total_bytes {} but the chunks add up to {total}",
            manifest.total_bytes
        )));
    }
    let all_read = !problems
        .iter()
        .any(|p| matches!(p.location, Location::Chunk { .. }));
    if all_read && manifest.lost_events != lost_in_gaps {
        problems.push(manifest_problem(format!(
            "lost_events {} but the Gap events add up to {lost_in_gaps}",
            manifest.lost_events
        )));
    }
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    Ok(Recording {
        manifest_key: manifest_key.to_string(),
        manifest,
        events,
        verification: Verification {
            ok: problems.is_empty(),
            problems,
            checked_key,
            key_was_given: trusted_key.is_some(),
        },
    })
}

/// Sessions recorded in a region's store, from their index objects, in
/// start order.
pub async fn list_sessions(
    store: &dyn ObjectStore,
    region: &str,
    filter: &ListFilter,
) -> Result<Vec<SessionSummary>> {
    crate::check_name("region", region)?;
    let mut out = Vec::new();
    for (start, session) in index_entries(store, region).await? {
        if filter.until_ms.is_some_and(|u| start >= u) {
            continue;
        }
        let key = crate::store::index_key(region, &session, start);
        let Some(bytes) = get_bounded(store, &key, MAX_INDEX_BYTES).await? else {
            continue;
        };
        let summary: SessionSummary =
            serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
                what: key.clone(),
                reason: e.to_string(),
            })?;
        if summary.session_id != session || summary.started_at_ms != start {
            return Err(RecordError::Corrupt {
                what: key,
                reason: "index object does not match its name".into(),
            });
        }
        if summary.matches(filter) {
            out.push(summary);
        }
    }
    Ok(out)
}

/// Sessions still in a local spool (recording, or waiting for upload),
/// with what is pending and quarantined.
pub fn list_spool_sessions(spool_dir: &Path, filter: &ListFilter) -> Result<Vec<SessionSummary>> {
    let mut quarantined: BTreeMap<String, (u64, PathBuf)> = BTreeMap::new();
    let quarantine = spool_dir.join(QUARANTINE_DIR);
    let mut files = Vec::new();
    walk(&quarantine, &mut files);
    for file in files {
        // quarantine/recordings/<region>/<y>/<m>/<d>/<session>/<file>
        if let Some(session) = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .filter(|n| crate::check_session_id(n).is_ok())
        {
            let entry = quarantined
                .entry(session.to_string())
                .or_insert((0, file.clone()));
            entry.0 += 1;
        }
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(spool_dir).map_err(io_err(spool_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::check_session_id(&name).is_err() {
            continue;
        }
        let dir = entry.path();
        let Ok(file) = SpoolSessionFile::read(&dir) else {
            continue;
        };
        let manifest = std::fs::read(dir.join(MANIFEST_NAME))
            .ok()
            .and_then(|b| Manifest::from_file_bytes(&b, usize::MAX).ok());
        let chunk_files: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("chunk-") && n.ends_with(".zst")
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .collect();
        let prefix = file.prefix();
        let info = &file.info;
        let summary = SessionSummary {
            session_id: info.session_id.clone(),
            region: info.region.clone(),
            node: file.node.clone(),
            connection: info.connection.clone(),
            user: info.principal.name.clone(),
            subject: info.principal.subject.clone(),
            started_at_ms: info.started_at_ms,
            ended_at_ms: manifest.as_ref().map(|m| m.ended_at_ms),
            status: manifest.as_ref().map(|m| m.status),
            event_count: manifest.as_ref().map_or(0, |m| m.event_count),
            chunk_count: manifest
                .as_ref()
                .map_or(chunk_files.len() as u64, |m| m.chunks.len() as u64),
            bytes: manifest
                .as_ref()
                .map_or(chunk_files.iter().sum(), |m| m.total_bytes),
            manifest_key: format!("{prefix}/{MANIFEST_NAME}"),
            source: SummarySource::Spool,
            pending_files: Some(chunk_files.len() as u64 + u64::from(manifest.is_some())),
            quarantined_files: Some(
                quarantined
                    .remove(&info.session_id)
                    .map_or(0, |(count, _)| count),
            ),
        };
        if summary.matches(filter) {
            out.push(summary);
        }
    }
    // Sessions whose only remains are in quarantine.
    for (session, (count, sample)) in quarantined {
        let region = sample
            .strip_prefix(&quarantine)
            .ok()
            .and_then(|p| p.iter().nth(1))
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        let summary = SessionSummary {
            session_id: session,
            region,
            node: String::new(),
            connection: String::new(),
            user: String::new(),
            subject: String::new(),
            started_at_ms: 0,
            ended_at_ms: None,
            status: None,
            event_count: 0,
            chunk_count: 0,
            bytes: 0,
            manifest_key: String::new(),
            source: SummarySource::Spool,
            pending_files: Some(0),
            quarantined_files: Some(count),
        };
        if filter.connection.is_none() && filter.user.is_none() {
            out.push(summary);
        }
    }
    out.sort_by(|a, b| (a.started_at_ms, &a.session_id).cmp(&(b.started_at_ms, &b.session_id)));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&entry.path(), out),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}
