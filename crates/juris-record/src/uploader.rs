//! Moves sealed chunks and manifests from the spool to the region's
//! object store.
//!
//! The spool directory is the uploader's only input (it scans it each
//! pass), so it needs no coordination with the writer beyond the order in
//! which the writer makes files appear: a chunk is renamed into place only
//! when it is complete and durable, and a manifest is written only after
//! the session's last chunk. Each file is uploaded to a key derived from
//! the session (region, start date, id) and deleted from the spool only
//! after the store acknowledged it. A crash between the two re-uploads the
//! same bytes to the same key, which is harmless: content is never
//! duplicated, only overwritten with itself.
//!
//! Per session: chunks first, then (once no chunk is left in the session's
//! directory) the manifest, then the index object; then the directory is
//! removed. Failures back off exponentially with jitter; a file that
//! fails `max_attempts` times is moved to `<spool>/quarantine/<object key>`
//! (never deleted), counted, and retried every `quarantine_retry`. A
//! quarantined chunk does not hold back its manifest: the recording is
//! listed, and replay reports the chunk as missing until it arrives.
//!
//! `object_store` has its own retry loop (by default up to 10 retries over
//! 3 minutes per request); give the store a short one
//! (`ClientOptions`/`RetryConfig`) so that these retries, which know about
//! quarantine and keep other sessions moving, are the ones that count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Notify;

use crate::fsutil::sync_dir;
use crate::manifest::Manifest;
use crate::reader::SessionSummary;
use crate::spool::{Budget, QUARANTINE_DIR, Spool, SpoolSessionFile};
use crate::store::{MANIFEST_NAME, index_key, object_path};
use crate::{DecodeLimits, RecordError, Result, io_err};

/// Retry policy of the uploader.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// Attempts before a file goes to quarantine (default 8).
    pub max_attempts: u32,
    /// First retry delay (default 500 ms), doubled per attempt...
    pub base_backoff: Duration,
    /// ... up to this (default 60 s). Each delay is drawn uniformly from
    /// its upper half (jitter), so nodes that lost the store together do
    /// not retry in lockstep.
    pub max_backoff: Duration,
    /// How often a quarantined file is tried again (default 10 min).
    pub quarantine_retry: Duration,
    /// Pause between passes of a spawned uploader (default 1 s).
    pub poll_interval: Duration,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        UploaderConfig {
            max_attempts: 8,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            quarantine_retry: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Counters of an uploader. `uploaded` and `failures` count since start;
/// `pending` and `quarantined` are the files waiting after the last pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploaderStats {
    /// Chunks and manifests stored.
    pub uploaded: u64,
    /// Chunks and manifests in the spool, not quarantined.
    pub pending: u64,
    /// Files in `<spool>/quarantine`.
    pub quarantined: u64,
    /// Failed upload attempts.
    pub failures: u64,
}

#[derive(Debug)]
struct Retry {
    attempts: u32,
    next_at: Instant,
}

#[derive(Debug, Default)]
struct Schedule {
    retries: HashMap<PathBuf, Retry>,
    quarantine_next: HashMap<PathBuf, Instant>,
}

/// Uploads a spool directory to an object store.
pub struct Uploader {
    dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    config: UploaderConfig,
    budget: Arc<Budget>,
    schedule: tokio::sync::Mutex<Schedule>,
    stats: Mutex<UploaderStats>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("dir", &self.dir)
            .field("store", &self.store.to_string())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Uploaded,
    Waiting,
    Quarantined,
}

impl Uploader {
    /// An uploader for a running spool (it frees the spool's byte budget
    /// as files leave).
    pub fn new(spool: &Spool, store: Arc<dyn ObjectStore>, config: UploaderConfig) -> Self {
        Self::with_budget(spool.dir().to_path_buf(), spool.budget(), store, config)
    }

    /// An uploader for a spool directory no [`Spool`] is using (tools;
    /// run [`crate::recover`] on it first).
    pub fn for_dir(dir: &Path, store: Arc<dyn ObjectStore>, config: UploaderConfig) -> Self {
        Self::with_budget(
            dir.to_path_buf(),
            Arc::new(Budget::new(u64::MAX, 0)),
            store,
            config,
        )
    }

    fn with_budget(
        dir: PathBuf,
        budget: Arc<Budget>,
        store: Arc<dyn ObjectStore>,
        config: UploaderConfig,
    ) -> Self {
        Uploader {
            dir,
            store,
            config,
            budget,
            schedule: tokio::sync::Mutex::new(Schedule::default()),
            stats: Mutex::new(UploaderStats::default()),
        }
    }

    pub fn stats(&self) -> UploaderStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut UploaderStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            f(&mut stats);
        }
    }

    /// One pass over the spool: upload what is due, then the quarantine
    /// files that are due. Returns the counters after the pass. Errors
    /// reading the spool itself are logged, not returned: the next pass
    /// tries again.
    pub async fn run_once(&self) -> UploaderStats {
        let mut schedule = self.schedule.lock().await;
        let mut pending = 0u64;
        for session_dir in self.session_dirs() {
            match self.upload_session(&session_dir, &mut schedule).await {
                Ok(waiting) => pending += waiting,
                Err(e) => {
                    tracing::warn!(dir = %session_dir.display(), error = %e, "recording upload pass failed");
                    pending += count_files(&session_dir);
                }
            }
        }
        let quarantined = self.retry_quarantine(&mut schedule).await;
        self.count(|s| {
            s.pending = pending;
            s.quarantined = quarantined;
        });
        self.stats()
    }

    fn session_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| crate::check_session_id(&e.file_name().to_string_lossy()).is_ok())
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs
    }

    /// Upload one session's files; returns how many are still waiting.
    async fn upload_session(&self, dir: &Path, schedule: &mut Schedule) -> Result<u64> {
        let session = SpoolSessionFile::read(dir)?;
        let prefix = session.prefix();
        let mut chunks: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("chunk-") && n.ends_with(".zst"))
            })
            .collect();
        chunks.sort();
        let mut waiting = 0;
        for chunk in &chunks {
            let Some(name) = chunk.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let key = format!("{prefix}/{name}");
            match self.upload_file(chunk, &key, None, schedule).await? {
                Outcome::Waiting => waiting += 1,
                Outcome::Uploaded | Outcome::Quarantined => {}
            }
        }
        let manifest_path = dir.join(MANIFEST_NAME);
        if waiting > 0 || !manifest_path.exists() {
            return Ok(waiting + u64::from(manifest_path.exists()));
        }
        let manifest_bytes = tokio::fs::read(&manifest_path)
            .await
            .map_err(io_err(&manifest_path))?;
        let manifest =
            Manifest::from_file_bytes(&manifest_bytes, DecodeLimits::default().max_manifest_bytes)?;
        let key = format!("{prefix}/{MANIFEST_NAME}");
        if let Outcome::Waiting = self
            .upload_file(&manifest_path, &key, Some(&manifest), schedule)
            .await?
        {
            return Ok(1);
        }
        // Everything of this session has left: the directory goes.
        tokio::fs::remove_dir_all(dir).await.map_err(io_err(dir))?;
        sync_dir(&self.dir)?;
        Ok(0)
    }

    /// Try to upload one spooled file now if its backoff allows; for a
    /// manifest, also its index object (before the file is deleted, so a
    /// failure of either retries both).
    async fn upload_file(
        &self,
        path: &Path,
        key: &str,
        manifest: Option<&Manifest>,
        schedule: &mut Schedule,
    ) -> Result<Outcome> {
        let now = Instant::now();
        if schedule.retries.get(path).is_some_and(|r| r.next_at > now) {
            return Ok(Outcome::Waiting);
        }
        let bytes = tokio::fs::read(path).await.map_err(io_err(path))?;
        let size = bytes.len() as u64;
        let mut result = self.put(key, bytes).await;
        if let (Ok(()), Some(manifest)) = (&result, manifest) {
            result = self.put_index(manifest, key).await;
        }
        match result {
            Ok(()) => {
                schedule.retries.remove(path);
                tokio::fs::remove_file(path).await.map_err(io_err(path))?;
                if key.ends_with(".zst") {
                    self.budget.release(size);
                }
                self.count(|s| s.uploaded += 1);
                tracing::debug!(key, "uploaded");
                Ok(Outcome::Uploaded)
            }
            Err(e) => {
                self.count(|s| s.failures += 1);
                let retry = schedule.retries.entry(path.to_path_buf()).or_insert(Retry {
                    attempts: 0,
                    next_at: now,
                });
                retry.attempts += 1;
                if retry.attempts >= self.config.max_attempts {
                    tracing::error!(key, error = %e, attempts = retry.attempts, "upload keeps failing; quarantined");
                    schedule.retries.remove(path);
                    let target = self.dir.join(QUARANTINE_DIR).join(key);
                    move_durably(path, &target)?;
                    schedule
                        .quarantine_next
                        .insert(target, now + self.config.quarantine_retry);
                    Ok(Outcome::Quarantined)
                } else {
                    let delay = backoff(&self.config, retry.attempts);
                    tracing::warn!(key, error = %e, attempt = retry.attempts, retry_in_ms = delay.as_millis() as u64, "upload failed");
                    retry.next_at = now + delay;
                    Ok(Outcome::Waiting)
                }
            }
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = object_path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(RecordError::from)
    }

    async fn put_index(&self, manifest: &Manifest, manifest_key: &str) -> Result<()> {
        let summary = SessionSummary::from_manifest(manifest, manifest_key);
        let key = index_key(
            &manifest.region,
            &manifest.session_id,
            manifest.started_at_ms,
        );
        self.put(&key, serde_json::to_vec(&summary)?).await
    }

    /// Retry due quarantined files; returns how many remain.
    async fn retry_quarantine(&self, schedule: &mut Schedule) -> u64 {
        let root = self.dir.join(QUARANTINE_DIR);
        let mut files = Vec::new();
        walk_files(&root, &mut files);
        files.sort();
        let now = Instant::now();
        let mut remaining = 0;
        for file in files {
            let due = *schedule.quarantine_next.entry(file.clone()).or_insert(now);
            if due > now {
                remaining += 1;
                continue;
            }
            let Some(key) = file
                .strip_prefix(&root)
                .ok()
                .and_then(|k| k.to_str())
                .map(str::to_string)
            else {
                remaining += 1;
                continue;
            };
            match self.retry_quarantined(&file, &key).await {
                Ok(()) => {
                    schedule.quarantine_next.remove(&file);
                    remove_empty_parents(&file, &root);
                    self.count(|s| s.uploaded += 1);
                    tracing::info!(key, "quarantined recording file uploaded");
                }
                Err(e) => {
                    self.count(|s| s.failures += 1);
                    schedule
                        .quarantine_next
                        .insert(file.clone(), now + self.config.quarantine_retry);
                    tracing::warn!(key, error = %e, "quarantined recording file still fails");
                    remaining += 1;
                }
            }
        }
        remaining
    }

    async fn retry_quarantined(&self, file: &Path, key: &str) -> Result<()> {
        let bytes = tokio::fs::read(file).await.map_err(io_err(file))?;
        let size = bytes.len() as u64;
        let manifest = if key.ends_with(MANIFEST_NAME) {
            Some(Manifest::from_file_bytes(
                &bytes,
                DecodeLimits::default().max_manifest_bytes,
            )?)
        } else {
            None
        };
        self.put(key, bytes).await?;
        if let Some(manifest) = manifest {
            self.put_index(&manifest, key).await?;
        }
        tokio::fs::remove_file(file).await.map_err(io_err(file))?;
        if key.ends_with(".zst") {
            self.budget.release(size);
        }
        Ok(())
    }

    /// Run passes in the background until [`UploaderHandle::shutdown`].
    pub fn spawn(self) -> UploaderHandle {
        let uploader = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = {
            let uploader = uploader.clone();
            let wake = wake.clone();
            tokio::spawn(async move {
                loop {
                    uploader.run_once().await;
                    tokio::select! {
                        _ = tokio::time::sleep(uploader.config.poll_interval) => {}
                        _ = wake.notified() => {}
                        _ = stopped.changed() => break,
                    }
                }
            })
        };
        UploaderHandle {
            uploader,
            wake,
            stop,
            task,
        }
    }
}

/// Reads an uploader's counters.
#[derive(Debug, Clone)]
pub struct UploaderMonitor(Arc<Uploader>);

impl UploaderMonitor {
    pub fn stats(&self) -> UploaderStats {
        self.0.stats()
    }
}

/// A running uploader.
#[derive(Debug)]
pub struct UploaderHandle {
    uploader: Arc<Uploader>,
    wake: Arc<Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl UploaderHandle {
    pub fn stats(&self) -> UploaderStats {
        self.uploader.stats()
    }

    /// A reader of the counters that outlives the handle (for metrics).
    pub fn monitor(&self) -> UploaderMonitor {
        UploaderMonitor(self.uploader.clone())
    }

    /// Start the next pass now (a session just finished).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stop after the current pass.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stop, then make one last pass (files whose retry is due), so that
    /// what the last sessions sealed leaves before a node stops. Returns
    /// the counters after it.
    pub async fn finish(self) -> UploaderStats {
        let uploader = self.uploader.clone();
        self.shutdown().await;
        uploader.run_once().await
    }
}

/// Exponential backoff with jitter: a delay drawn from the upper half of
/// `base * 2^(attempt-1)`, capped at `max`.
fn backoff(config: &UploaderConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = config
        .base_backoff
        .saturating_mul(1u32 << exponent)
        .min(config.max_backoff);
    let half = ceiling / 2;
    half + ceiling.saturating_sub(half).mul_f64(rand::random::<f64>())
}

fn move_durably(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    std::fs::rename(from, to).map_err(io_err(to))?;
    sync_dir(parent)?;
    sync_dir(from.parent().unwrap_or(Path::new(".")))
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), out),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}

fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".zst") || name == MANIFEST_NAME
                })
                .count() as u64
        })
        .unwrap_or(0)
}

/// Remove directories left empty between `file` and `root`.
fn remove_empty_parents(file: &Path, root: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let config = UploaderConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..UploaderConfig::default()
        };
        for _ in 0..100 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(&config, 40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }
}
