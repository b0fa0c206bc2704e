//! Session recording on the data path: each message the client sent and,
//! after masking, each message it received becomes a `juris-record` event.
//!
//! Recording never waits for the disk: [`juris_record::Recorder::record`]
//! only queues. Server messages, and client messages of sessions that
//! mask nothing, are recorded as the wire bytes the client received or
//! sent ([`juris_record::Recorder::record_message`]): a copy per message,
//! decoded into events only when the recording is read. What happens
//! when it cannot (the spool is full, its disk
//! failed) is the connection's [`RecordingMode`]: `strict` sessions end
//! with a FATAL before the client receives anything that was not recorded;
//! `best_effort` sessions continue, the loss is reported once to the audit
//! trail, and the recording itself carries a `gap` event.
//!
//! What the client sent is recorded with the connection's value detectors
//! applied (a literal SSN in a WHERE clause or a bind value is masked), so
//! a recording of a masked session never holds a value the policy covers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use juris_config::RecordingMode;
use juris_mask::{Findings, Masker};
use juris_pgwire::{Frame, FrontendMessage};
use juris_record::wire::{is_recorded_client_message, is_recorded_server_message};
use juris_record::{Direction, EventKind, RecordError, Recorder, Spool};
use tracing::{error, warn};

use crate::AuditSink;

/// How long a session waits between tries while the spool writer is behind.
const BUSY_RETRY: Duration = Duration::from_millis(1);
/// A writer behind for this long counts as failed.
const BUSY_LIMIT: Duration = Duration::from_secs(10);

/// Why a session cannot go on being recorded, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFailure {
    pub sqlstate: &'static str,
    pub message: String,
}

/// The recording of one session.
pub struct SessionRecording {
    /// `None` once a `best_effort` recording has failed for good.
    recorder: Mutex<Option<Recorder>>,
    mode: RecordingMode,
    /// The connection's value detectors, for what the client sent; `None`
    /// when the session is not masked.
    masker: Option<Arc<Masker>>,
    audit: Arc<dyn AuditSink>,
    session: String,
    connection: String,
    loss_reported: AtomicBool,
}

impl std::fmt::Debug for SessionRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecording")
            .field("session", &self.session)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SessionRecording {
    /// Start recording a session. `Ok(None)`: a `best_effort` session that
    /// could not be recorded at all (reported to the audit trail); `Err`: a
    /// `strict` session that must be refused.
    pub async fn start(
        spool: &Spool,
        info: juris_record::SessionInfo,
        mode: RecordingMode,
        masker: Option<Arc<Masker>>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Option<SessionRecording>, RecordingFailure> {
        let session = info.session_id.clone();
        let connection = info.connection.clone();
        let loss = |e: &RecordError| {
            report_loss(&*audit, &session, &connection, mode, e);
            failure(e)
        };
        let deadline = Instant::now() + BUSY_LIMIT;
        let started = loop {
            match spool.start_session(info.clone()) {
                Err(RecordError::Busy) if Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                other => break other,
            }
        };
        match started {
            Ok(recorder) => Ok(Some(SessionRecording {
                recorder: Mutex::new(Some(recorder)),
                mode,
                masker,
                audit: audit.clone(),
                session: session.clone(),
                connection: connection.clone(),
                loss_reported: AtomicBool::new(false),
            })),
            Err(e) => match mode {
                RecordingMode::Strict => Err(loss(&e)),
                RecordingMode::BestEffort | RecordingMode::Off => {
                    loss(&e);
                    Ok(None)
                }
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Recorder>> {
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is recorded next came in another network read (see
    /// [`Recorder::new_read`]): [`SessionRecording::client_message`]
    /// records one message at a time, so its caller says where a read
    /// begins.
    pub fn new_read(&self) {
        if let Some(active) = self.lock().as_mut() {
            active.new_read();
        }
    }

    /// Record a message the client sent (`body` without its 5-byte header).
    pub async fn client_message(&self, tag: u8, body: &[u8]) -> Result<(), RecordingFailure> {
        if !is_recorded_client_message(tag) {
            return Ok(());
        }
        if self.masker.is_none() {
            return self
                .record(|recorder| recorder.record_message(Direction::ClientToServer, tag, body))
                .await;
        }
        let kind = self.masked_client_event(tag, body);
        self.record(|recorder| recorder.record_ref(Direction::ClientToServer, &kind))
            .await
    }

    /// Record a message the gateway itself sends the client (a notice, a
    /// FATAL; `body` without its header), at its own time.
    pub async fn server_message(&self, tag: u8, body: &[u8]) -> Result<(), RecordingFailure> {
        if !is_recorded_server_message(tag) {
            return Ok(());
        }
        self.record(|recorder| {
            recorder.new_read();
            recorder.record_message(Direction::ServerToClient, tag, body)
        })
        .await
    }

    /// Record a run of whole backend messages in wire form, as the client
    /// receives them, with one lock of the recorder and one clock reading
    /// per run rather than per message (the rows of a result are one run
    /// per network read). On failure, says how
    /// many bytes of `wire` were recorded before it, so that exactly
    /// those can still reach the client.
    pub async fn server_messages(&self, wire: &[u8]) -> Result<(), (usize, RecordingFailure)> {
        let mut done = 0;
        let mut deadline: Option<Instant> = None;
        while done < wire.len() {
            let (used, error) = {
                let mut recorder = self.lock();
                let Some(active) = recorder.as_mut() else {
                    return Ok(());
                };
                let (used, error) = active.record_messages(
                    Direction::ServerToClient,
                    &wire[done..],
                    is_recorded_server_message,
                );
                let lost = || used + message_len(&wire[done + used..]);
                match error {
                    None => return Ok(()),
                    Some(RecordError::Busy)
                        if Instant::now() < *deadline.get_or_insert_with(busy_deadline) =>
                    {
                        (used, None)
                    }
                    // Stuck behind the writer: give up on this message.
                    Some(RecordError::Busy) => {
                        active.skip();
                        (lost(), Some((RecordError::Busy, used)))
                    }
                    // Counted as lost by the recorder already.
                    Some(e @ RecordError::SpoolFull { .. }) => (lost(), Some((e, used))),
                    Some(e) => (used, Some((e, used))),
                }
            };
            let recorded_before = done;
            done += used;
            match error {
                None => tokio::time::sleep(BUSY_RETRY).await,
                Some((e, recorded)) => {
                    if let Err(failure) = self.failed(e) {
                        return Err((recorded_before + recorded, failure));
                    }
                }
            }
        }
        Ok(())
    }

    /// Queue one event with `record`. While the spool's writer is behind
    /// (its queue is full, the disk budget is not) the session waits for
    /// it, a millisecond at a time, rather than losing the event:
    /// backpressure, like a slow client. Only a writer stuck for
    /// [`BUSY_LIMIT`] counts as a failure.
    async fn record(
        &self,
        mut record: impl FnMut(&mut Recorder) -> juris_record::Result<u64>,
    ) -> Result<(), RecordingFailure> {
        // The clock is read only once the writer is behind, not per event.
        let mut deadline: Option<Instant> = None;
        loop {
            let outcome = {
                let mut recorder = self.lock();
                let Some(active) = recorder.as_mut() else {
                    return Ok(());
                };
                match record(active) {
                    Err(RecordError::Busy)
                        if Instant::now() < *deadline.get_or_insert_with(busy_deadline) =>
                    {
                        None
                    }
                    Err(RecordError::Busy) => {
                        active.skip();
                        Some(Err(RecordError::Busy))
                    }
                    other => Some(other.map(|_| ())),
                }
            };
            match outcome {
                None => tokio::time::sleep(BUSY_RETRY).await,
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return self.failed(e),
            }
        }
    }

    /// Hand what was recorded to the spool's writer. The relay calls it
    /// when a direction's ship timer fires (within 40 ms of recording;
    /// the recorder ships by itself at 256 KiB): one hand-over per
    /// period of a busy session instead of one per message or answer.
    pub async fn ship(&self) -> Result<(), RecordingFailure> {
        let mut deadline: Option<Instant> = None;
        loop {
            let shipped = match self.lock().as_ref() {
                Some(active) => active.ship(),
                None => return Ok(()),
            };
            match shipped {
                Ok(()) => return Ok(()),
                Err(RecordError::Busy)
                    if Instant::now() < *deadline.get_or_insert_with(busy_deadline) =>
                {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(e) => return self.failed(e),
            }
        }
    }

    /// [`Recorder::unshipped`]: `Some(batches shipped before them)` while
    /// recorded events wait to be shipped.
    pub fn unshipped(&self) -> Option<u64> {
        self.lock().as_ref().and_then(Recorder::unshipped)
    }

    /// Apply the connection's mode to an event that could not be recorded.
    fn failed(&self, e: RecordError) -> Result<(), RecordingFailure> {
        let mut recorder = self.lock();
        let first = !self.loss_reported.swap(true, Ordering::Relaxed);
        if first || self.mode == RecordingMode::Strict {
            report_loss(&*self.audit, &self.session, &self.connection, self.mode, &e);
        }
        match (self.mode, &e) {
            (RecordingMode::Strict, _) => Err(failure(&e)),
            // Lost events are counted and a gap is written once the spool
            // has room again.
            (_, RecordError::SpoolFull { .. } | RecordError::Busy) => Ok(()),
            _ => {
                if let Some(failed) = recorder.take() {
                    failed.abandon();
                }
                Ok(())
            }
        }
    }

    /// Seal the recording with the reason the session ended.
    pub async fn finish(self, reason: &str) {
        let recorder = self.lock().take();
        if let Some(recorder) = recorder
            && let Err(e) = recorder.finish_async(reason).await
        {
            error!(session = %self.session, "recording could not be finished: {e}");
        }
    }

    fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.masker {
            Some(masker) if masker.has_value_rules() => {
                masker.mask_text(text, &mut Findings::default())
            }
            _ => std::borrow::Cow::Borrowed(text),
        }
    }

    /// The event for a message the client sent on a masked session: its
    /// text passed through the connection's value detectors.
    fn masked_client_event(&self, tag: u8, body: &[u8]) -> EventKind {
        let decoded = FrontendMessage::decode(&Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        });
        match decoded {
            Ok(FrontendMessage::Query { sql }) => EventKind::Query {
                text: self.mask(&sql).into_owned(),
            },
            Ok(FrontendMessage::Parse { name, sql, .. }) => EventKind::Parse {
                statement: name,
                text: self.mask(&sql).into_owned(),
            },
            Ok(FrontendMessage::Bind {
                portal,
                statement,
                params,
                ..
            }) => EventKind::Bind {
                portal,
                statement,
                params: params
                    .iter()
                    .map(|p| {
                        p.as_ref()
                            .map(|v| self.mask(&String::from_utf8_lossy(v)).into_owned())
                    })
                    .collect(),
            },
            Ok(FrontendMessage::Execute { portal, max_rows }) => EventKind::Execute {
                portal,
                max_rows: u32::try_from(max_rows).unwrap_or(0),
            },
            Ok(FrontendMessage::CopyData(data)) => EventKind::CopyData {
                text: self.mask(&String::from_utf8_lossy(&data)).into_owned(),
            },
            // A fast-path call's arguments may be anything: not kept on a
            // masked session.
            Ok(_) | Err(_) => EventKind::Gap {
                reason: format!("message '{}' not recorded on a masked session", tag as char),
                lost_events: 1,
            },
        }
    }
}

/// Length of the wire message at the start of `wire` (all of `wire` if
/// it does not hold a whole one, which the relay never passes on).
fn message_len(wire: &[u8]) -> usize {
    match wire.get(1..5) {
        Some(&[l0, l1, l2, l3]) => {
            (1 + u32::from_be_bytes([l0, l1, l2, l3]) as usize).clamp(5, wire.len())
        }
        _ => wire.len(),
    }
}

fn busy_deadline() -> Instant {
    Instant::now() + BUSY_LIMIT
}

fn failure(e: &RecordError) -> RecordingFailure {
    match e {
        RecordError::SpoolFull { .. } | RecordError::Busy => RecordingFailure {
            sqlstate: "53100",
            message: format!(
                "this session cannot be recorded: {e}; the connection requires recording (strict mode)"
            ),
        },
        _ => RecordingFailure {
            sqlstate: "58030",
            message: "this session cannot be recorded (the node's recording spool failed); the connection requires recording (strict mode)".into(),
        },
    }
}

fn report_loss(
    audit: &dyn AuditSink,
    session: &str,
    connection: &str,
    mode: RecordingMode,
    e: &RecordError,
) {
    let mode_name = match mode {
        RecordingMode::Strict => "strict",
        RecordingMode::BestEffort => "best_effort",
        RecordingMode::Off => "off",
    };
    warn!(%session, %connection, mode = mode_name, "recording loss: {e}");
    audit.record(juris_audit::AuditEvent::RecordingLoss(
        juris_audit::event::RecordingLoss {
            session: session.to_string(),
            connection: connection.to_string(),
            mode: mode_name.into(),
            reason: e.to_string(),
            session_ended: mode == RecordingMode::Strict,
        },
    ));
}
