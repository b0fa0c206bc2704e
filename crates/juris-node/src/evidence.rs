//! The node's recording spool and its uploader: sessions record into
//! `node.data_dir/spool` (signed with the node key in `node.data_dir/node.key`),
//! and sealed chunks and manifests move from there to the node's region
//! object store in the background. Whatever the spool still holds from a
//! previous run (a crash) is recovered when it opens and uploaded like the
//! rest.

use std::path::Path;
use std::sync::Arc;

use juris_config::Deployment;
use juris_record::{NodeSigningKey, Spool, SpoolConfig, SpoolLimits, Uploader, UploaderConfig};
use tracing::info;

use crate::NodeError;

/// The recording half of a node's evidence.
pub struct Evidence {
    pub spool: Arc<Spool>,
    uploader: juris_record::UploaderHandle,
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
    let uploader = Uploader::new(&spool, store, uploads).spawn();
    Ok(Evidence {
        spool: Arc::new(spool),
        uploader,
    })
}

impl Evidence {
    /// After the last session has finished: one more upload pass, then
    /// stop. What could not be uploaded stays in the spool for the next
    /// start.
    pub async fn stop(self) {
        let stats = self.uploader.finish().await;
        info!(
            uploaded = stats.uploaded,
            pending = stats.pending,
            quarantined = stats.quarantined,
            "recording uploader stopped"
        );
        drop(self.spool);
    }
}
