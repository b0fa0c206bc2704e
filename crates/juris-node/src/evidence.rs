//! The node's recording spool and its uploader: sessions record into
//! `node.data_dir/spool` (signed with the node key in `node.data_dir/node.key`),
//! and sealed chunks and manifests move from there to the node's region
//! object store in the background. Whatever the spool still holds from a
//! previous run (a crash) is recovered when it opens and uploaded like the
//! rest. Sealed audit segments (`node.data_dir/audit`) are copied to the
//! same store.
//!
//! Uploads run on a thread and runtime of their own (`juris-upload`), at
//! `node.evidence_nice` like the evidence writers: reading spool files and
//! writing them to the store (for S3, signing and encrypting requests too)
//! takes a busy core's spare time, not a session's.

use std::path::Path;
use std::sync::Arc;

use juris_config::Deployment;
use std::time::Duration;

use juris_record::{
    AuditUploader, NodeSigningKey, Spool, SpoolConfig, SpoolLimits, Uploader, UploaderConfig,
};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::NodeError;

/// How often sealed audit segments are looked for.
const AUDIT_UPLOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The node's evidence on its way to the region's store.
pub struct Evidence {
    pub spool: Arc<Spool>,
    pub(crate) uploader: juris_record::UploaderHandle,
    audit_uploads: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
    uploads: UploadRuntime,
}

/// The thread (and its runtime) that the uploads run on.
struct UploadRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped or sent: the thread's runtime stops.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// How long a stopping upload runtime waits for blocking file work that
/// is still running (an upload pass has already finished by then).
const UPLOAD_RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

impl UploadRuntime {
    fn start(nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("juris-upload")
            // Its blocking threads (file reads and writes) too.
            .on_thread_start(move || {
                let _ = juris_record::priority::lower_current_thread(nice);
            })
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("juris-upload".into())
            .spawn(move || {
                if let Err(e) = juris_record::priority::lower_current_thread(nice) {
                    warn!("uploads keep their priority: {e}");
                }
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(UPLOAD_RUNTIME_SHUTDOWN);
            })?;
        Ok(UploadRuntime {
            handle,
            stop,
            thread,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Open the spool (recovering what a crash left) and start uploading.
pub fn start(deployment: &Deployment, data_dir: &Path) -> Result<Evidence, NodeError> {
    let node = &deployment.node;
    let (key, store_config) = deployment.region_store(&node.region).ok_or_else(|| {
        NodeError::Evidence(format!(
            "region `{}` (node.region) has no `store`",
            node.region
        ))
    })?;
    let store = juris_record::open_store(store_config, &key)
        .map_err(|e| NodeError::Evidence(e.to_string()))?;
    let signing_key = NodeSigningKey::load_or_generate(&data_dir.join("node.key"))
        .map_err(|e| NodeError::Evidence(format!("node.data_dir: {e}")))?;
    let mut config = SpoolConfig::new(data_dir.join("spool"), node.id.clone());
    config.limits = SpoolLimits {
        max_bytes: node.recording.spool_max_bytes,
    };
    config.writer_nice = node.evidence_nice;
    let spool = Spool::open(config, Arc::new(signing_key))
        .map_err(|e| NodeError::Evidence(format!("node.data_dir: recording spool: {e}")))?;
    info!(
        recovered = spool.recovered().len(),
        used_bytes = spool.used_bytes(),
        store = %store,
        "recording spool open"
    );
    let uploads = UploaderConfig {
        max_attempts: node.recording.upload_attempts,
        max_backoff: node.recording.upload_max_backoff,
        quarantine_retry: node.recording.quarantine_retry,
        ..UploaderConfig::default()
    };
    let audit = AuditUploader::new(&data_dir.join("audit"), store.clone(), &node.region)
        .map_err(|e| NodeError::Evidence(e.to_string()))?;
    let upload_runtime = UploadRuntime::start(node.evidence_nice)
        .map_err(|e| NodeError::Evidence(format!("upload thread: {e}")))?;
    // What the uploaders spawn runs on the upload thread.
    let (uploader, audit_uploads) = {
        let _on_upload_thread = upload_runtime.handle.enter();
        (
            Uploader::new(&spool, store, uploads).spawn(),
            spawn_audit_uploads(audit),
        )
    };
    Ok(Evidence {
        spool: Arc::new(spool),
        uploader,
        audit_uploads,
        uploads: upload_runtime,
    })
}

/// Copy sealed audit segments to the store every few seconds, and once
/// more when told to stop (the chain's last segment is sealed at shutdown).
fn spawn_audit_uploads(
    mut audit: AuditUploader,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(AUDIT_UPLOAD_INTERVAL) => false,
                _ = stopped.changed() => true,
            };
            match audit.run_once().await {
                Ok(0) => {}
                Ok(n) => info!(segments = n, "audit segments uploaded"),
                Err(e) => warn!("audit segment upload failed (retried): {e}"),
            }
            if stopping {
                break;
            }
        }
    });
    (stop, task)
}

impl Evidence {
    /// After the last session has finished: one more upload pass, then
    /// stop. What could not be uploaded stays in the spool for the next
    /// start.
    /// Call after the audit chain is closed, so its last segment goes too.
    pub async fn stop(self) {
        let (stop, task) = self.audit_uploads;
        let _ = stop.send(true);
        let _ = task.await;
        let stats = self.uploader.finish().await;
        info!(
            uploaded = stats.uploaded,
            pending = stats.pending,
            quarantined = stats.quarantined,
            "recording uploader stopped"
        );
        self.uploads.stop().await;
        drop(self.spool);
    }
}
