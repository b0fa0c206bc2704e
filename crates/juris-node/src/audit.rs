//! The node's audit trail. Facts from the data plane (session start and
//! end, authentication, refusals, masking) are appended to this node's hash-chained segments
//! (`juris-audit`) under `node.data_dir/audit`, signed with the node key in
//! `node.data_dir/node.key`.
//!
//! Appends fsync, so they do not happen on the data path: sessions only
//! queue the event (bounded), and one thread writes the chain. When the
//! node stops, the queue drains and the last segment is sealed.
//! A full queue loses the event and says so in the log; refusing sessions
//! that cannot be audited (strict mode) comes with the evidence work.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use juris_audit::{AuditEvent, ChainWriter, NodeKey, Timestamp, WriterConfig};
use juris_proxy_pg::{AuditSink, LogAuditSink};
use juris_types::audit::MaskingEvent;
use tracing::{error, info, warn};

/// Events waiting for the writer thread.
const QUEUE: usize = 10_000;

/// Logs every fact and queues it for the chain writer.
pub struct ChainAuditSink {
    queue: SyncSender<AuditEvent>,
    lost: AtomicU64,
}

impl AuditSink for ChainAuditSink {
    fn masking(&self, event: &MaskingEvent) {
        // The chain is the record; a log line per masked statement would
        // cost a busy node a write to stderr per statement.
        if tracing::enabled!(target: "juris::audit", tracing::Level::DEBUG) {
            LogAuditSink.masking(event);
        }
        self.record(event.into());
    }

    fn record(&self, event: AuditEvent) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
                error!(
                    lost,
                    "audit queue full: an event was not written to the audit chain"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                error!("audit writer has stopped: an event was not written to the audit chain");
            }
        }
    }
}

/// Open the chain and start its writer thread.
pub fn start(
    data_dir: &Path,
    node: &str,
    region: &str,
    seal_every: Duration,
    nice: i32,
) -> Result<(Arc<ChainAuditSink>, JoinHandle<()>), juris_audit::AuditError> {
    let key = NodeKey::load_or_generate(&data_dir.join("node.key"))?;
    let now = Timestamp::from_system_time(std::time::SystemTime::now())?;
    let (writer, recovery) = ChainWriter::open(
        WriterConfig::new(data_dir.join("audit"), node, region),
        key,
        now,
    )?;
    info!(
        next_seq = writer.next_seq(),
        public_key = %writer.public_key_hex(),
        recovered = ?recovery,
        "audit chain open"
    );
    let (queue, events) = std::sync::mpsc::sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("juris-audit".into())
        .spawn(move || {
            if let Err(e) = juris_record::priority::lower_current_thread(nice) {
                warn!("audit writer keeps its priority: {e}");
            }
            write_events(writer, events, seal_every)
        })
        .map_err(|e| juris_audit::AuditError::Io {
            path: data_dir.to_path_buf(),
            source: e,
        })?;
    Ok((
        Arc::new(ChainAuditSink {
            queue,
            lost: AtomicU64::new(0),
        }),
        thread,
    ))
}

/// Most events appended with one fsync.
const GROUP_COMMIT: usize = 1024;
/// How long the writer gathers events before it writes and syncs them.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);

fn write_events(mut writer: ChainWriter, events: Receiver<AuditEvent>, seal_every: Duration) {
    let mut next_seal = Instant::now() + seal_every;
    loop {
        // Block for one event (or until the segment is due to be sealed).
        let first = match events.recv_timeout(next_seal.saturating_duration_since(Instant::now())) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if Instant::now() >= next_seal {
            next_seal = Instant::now() + seal_every;
            match writer.rotate() {
                Ok(Some(seal)) => info!(segment = %seal.segment, "audit segment sealed"),
                Ok(None) => {}
                Err(e) => error!("audit segment could not be sealed: {e}"),
            }
        }
        let Some(first) = first else {
            continue;
        };
        // Gather what arrives within a short window: under load many
        // records share one fsync instead of one each (the data plane never
        // waits for the disk, so the window costs no session any time).
        // Sleeping (rather than waiting on the queue) means senders do not
        // wake this thread for each event.
        let mut batch = vec![first];
        std::thread::sleep(GROUP_COMMIT_WINDOW);
        while batch.len() < GROUP_COMMIT {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let now = match Timestamp::from_system_time(std::time::SystemTime::now()) {
            Ok(now) => now,
            Err(e) => {
                error!(lost = batch.len(), "audit clock: {e}");
                continue;
            }
        };
        let count = batch.len();
        if let Err(e) = writer.append_many(batch.into_iter().map(|event| (now, event))) {
            error!(batch = count, "audit chain append failed: {e}");
        }
    }
    match writer.close() {
        Ok(seal) => info!(sealed = ?seal.map(|s| s.segment), "audit chain closed"),
        Err(e) => warn!("audit chain close failed: {e}"),
    }
}
