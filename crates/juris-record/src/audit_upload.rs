//! Sealed audit segments go to the region's object store too, next to the
//! recordings, so that a region's evidence can be exported from its store
//! without reaching every node's disk:
//!
//! ```text
//! audit/<region>/<node>/<node>-<first seq>.jsonl
//! audit/<region>/<node>/<node>-<first seq>.jsonl.seal.json
//! ```
//!
//! A segment's files are written in order, its seal last: a seal in the
//! store means the segment it seals is there. Local segments are never
//! deleted here (the chain directory is the node's own copy).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::store::object_path;
use crate::{Result, io_err};

/// The prefix of a region's audit segments.
pub fn audit_prefix(region: &str) -> String {
    format!("audit/{region}/")
}

/// Copies a node's sealed audit segments to the store, each once.
pub struct AuditUploader {
    dir: std::path::PathBuf,
    store: Arc<dyn ObjectStore>,
    region: String,
    /// Seals known to be in the store.
    done: HashSet<String>,
}

impl AuditUploader {
    pub fn new(dir: &Path, store: Arc<dyn ObjectStore>, region: &str) -> Result<Self> {
        crate::check_name("region", region)?;
        Ok(AuditUploader {
            dir: dir.to_path_buf(),
            store,
            region: region.to_string(),
            done: HashSet::new(),
        })
    }

    /// Upload what is sealed and not yet in the store; returns how many
    /// segments were uploaded. A failure leaves the rest for the next pass.
    pub async fn run_once(&mut self) -> Result<usize> {
        let segments = match juris_audit::sealed_segments(&self.dir) {
            Ok(segments) => segments,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut uploaded = 0;
        for segment in segments {
            let Some(seal) = segment.files.last() else {
                continue;
            };
            let prefix = format!("{}{}/", audit_prefix(&self.region), segment.node);
            let seal_key = format!("{prefix}{seal}");
            if self.done.contains(&seal_key) {
                continue;
            }
            // After a restart: already there?
            if self.store.head(&object_path(&seal_key)?).await.is_ok() {
                self.done.insert(seal_key);
                continue;
            }
            for name in &segment.files {
                let path = self.dir.join(name);
                let bytes = std::fs::read(&path).map_err(io_err(&path))?;
                self.store
                    .put(
                        &object_path(&format!("{prefix}{name}"))?,
                        PutPayload::from(bytes),
                    )
                    .await?;
            }
            self.done.insert(seal_key);
            uploaded += 1;
        }
        Ok(uploaded)
    }
}
