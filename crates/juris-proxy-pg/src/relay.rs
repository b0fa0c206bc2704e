//! The relay: client and upstream bytes flow both ways with bounded buffers.
//!
//! Complete frames are forwarded straight out of the read buffer (no copy,
//! no per-message allocation); only frames that carry SQL (Query, Parse,
//! FunctionCall) are decoded, and only ErrorResponses are looked at on the
//! way back while a denial is outstanding.
//!
//! **Denials keep PostgreSQL's semantics.** A statement beyond the role is
//! not dropped: it is replaced by a statement that cannot parse and carries
//! a per-session marker (`juris_denied_<nonce>_<n>`). The upstream therefore
//! fails at exactly that point of the pipeline, skips to the next Sync and
//! aborts the transaction, just as it would for its own permission error;
//! the relay then swaps that error for Juris's 42501 message. A denial whose
//! statement the upstream skipped (an earlier error in the same batch) is
//! retired when the batch's ReadyForQuery passes.
//!
//! **Masking.** When the session's connection masks results (and the
//! principal is not exempt), server messages that carry data are handed to
//! [`SessionMasking`]. DataRows need their columns' description, which the
//! extended protocol only sends when asked; so before every Execute whose
//! portal the client did not just describe, the relay asks itself (an
//! injected `Describe` portal) and swallows the answer. Describe answers are
//! matched to their requests by batch, like denials. Output is assembled
//! per read: untouched frames go out straight from the read buffer, and only
//! a read in which something was replaced is copied.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use juris_config::EffectiveRole;
use juris_pgwire::{BackendMessage, ErrorFields, Frame, FrontendMessage, Target};
use juris_policy::{CopyDataFormat, CopyOut, Decision, FingerprintKey, ReviewPolicy};
use juris_types::{AccessLevel, Principal, SessionId, StatementClass};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::cancel::CancelRegistration;
use crate::catalog::Catalog;
use crate::io::BoxedStream;
use crate::masking::SessionMasking;
use crate::recording::{RecordingFailure, SessionRecording};
use crate::statements::{Described, StatementLog};
use crate::{HeldStatement, HoldOutcome, ProxyContext};

const READ_CHUNK: usize = 64 * 1024;
/// What a session recorded is handed to the spool's writer within two of
/// these, or as soon as 256 KiB have gathered (see [`ShipTimer`]): well
/// inside the spool's fsync interval, which bounds what a crash can lose
/// anyway.
const SHIP_PERIOD: std::time::Duration = std::time::Duration::from_millis(20);
const MARKER_PREFIX: &str = "juris_denied_";

/// Resolves with the text of a FATAL once a session's grant ends.
pub struct GrantEnded(pub Pin<Box<dyn Future<Output = String> + Send>>);

impl std::fmt::Debug for GrantEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantEnded")
    }
}

/// Who the session is for and what it may do.
#[derive(Debug)]
pub struct SessionInfo {
    pub session: SessionId,
    pub principal: Principal,
    pub connection: String,
    pub role: EffectiveRole,
    /// Client bytes read during the handshake but not yet consumed.
    pub client_leftover: BytesMut,
    /// Result masking, when the connection masks and the principal is not exempt.
    pub masking: Option<SessionMasking>,
    /// The connection's catalog cache, told when the session runs DDL.
    pub catalog: Option<Arc<Catalog>>,
    /// Resolves with the reason once the grant the session rides on ends.
    pub grant_ended: Option<GrantEnded>,
    /// The session's recording; `None` only for a `best_effort` connection
    /// whose session could not be recorded at all.
    pub recording: Option<SessionRecording>,
}

/// The authenticated upstream half of a session.
pub struct Upstream {
    pub stream: BoxedStream,
    pub leftover: BytesMut,
    /// Keeps the session's cancel key alive exactly as long as the relay.
    pub _cancel: CancelRegistration,
}

/// Bytes moved by a session, in each direction, as plaintext PostgreSQL
/// protocol. Logged when the session ends: when a client reports a hang,
/// these say on which side the conversation stopped.
#[derive(Debug, Default)]
pub struct Traffic {
    pub from_client: AtomicU64,
    pub to_upstream: AtomicU64,
    pub from_upstream: AtomicU64,
    pub to_client: AtomicU64,
    /// Tag of the last message forwarded each way (0 before the first).
    pub last_to_upstream: std::sync::atomic::AtomicU8,
    pub last_to_client: std::sync::atomic::AtomicU8,
}

impl std::fmt::Display for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = |t: &std::sync::atomic::AtomicU8| match t.load(Ordering::Relaxed) {
            0 => '-',
            t => t as char,
        };
        write!(
            f,
            "client→gateway {} B, gateway→upstream {} B (last '{}'), upstream→gateway {} B, gateway→client {} B (last '{}')",
            self.from_client.load(Ordering::Relaxed),
            self.to_upstream.load(Ordering::Relaxed),
            tag(&self.last_to_upstream),
            self.from_upstream.load(Ordering::Relaxed),
            self.to_client.load(Ordering::Relaxed),
            tag(&self.last_to_client),
        )
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum Ending {
    ClientTerminated,
    ClientClosed,
    UpstreamClosed,
    ShutDown,
    /// The grant the session depended on expired or was revoked.
    GrantEnded(String),
    ProtocolViolation(String),
    /// Masking could not be done safely, so the session was ended.
    MaskingFailed(String),
    /// The connection requires recording and the session could not be
    /// recorded any more.
    RecordingFailed(RecordingFailure),
    Io(String),
}

impl Ending {
    /// Plain words for the audit trail.
    pub fn describe(&self) -> String {
        match self {
            Ending::ClientTerminated => "client terminated".into(),
            Ending::ClientClosed => "client closed the connection".into(),
            Ending::UpstreamClosed => "upstream closed the connection".into(),
            Ending::ShutDown => "node shutdown".into(),
            Ending::GrantEnded(reason) => reason.clone(),
            Ending::ProtocolViolation(reason) => format!("protocol violation: {reason}"),
            Ending::MaskingFailed(reason) => format!("masking failed: {reason}"),
            Ending::RecordingFailed(failure) => format!("recording failed: {}", failure.message),
            Ending::Io(reason) => format!("I/O error: {reason}"),
        }
    }
}

/// A denial waiting for its marker error to come back.
struct Denial {
    sequence: u64,
    /// Number of batches (Query/Sync/FunctionCall) the client had sent before it.
    batch: u64,
    error: ErrorFields,
}

/// Denials shared between the two directions.
struct Denials {
    marker: String,
    pending: AtomicUsize,
    queue: Mutex<VecDeque<Denial>>,
}

impl Denials {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Denial>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, denial: Denial) {
        self.lock().push_back(denial);
        self.pending.fetch_add(1, Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// The replacement for an upstream error, if it is one of our markers.
    fn take_for(&self, fields: &ErrorFields) -> Option<ErrorFields> {
        let message = fields.message()?;
        let start = message.find(&self.marker)? + self.marker.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let sequence: u64 = digits.parse().ok()?;
        let mut queue = self.lock();
        let index = queue.iter().position(|d| d.sequence == sequence)?;
        let denial = queue.remove(index)?;
        self.pending.fetch_sub(1, Ordering::Release);
        Some(denial.error)
    }

    /// Forget denials whose batch has completed without their error showing.
    fn retire(&self, batches_completed: u64) {
        let mut queue = self.lock();
        let before = queue.len();
        queue.retain(|d| d.batch >= batches_completed);
        let removed = before - queue.len();
        if removed > 0 {
            self.pending.fetch_sub(removed, Ordering::Release);
        }
    }
}

/// Requests whose answers the upstream direction must recognise: Describe
/// answers (some injected by the relay and swallowed) and COPY TO
/// statements (whose format and columns the CopyOutResponse does not say).
/// Each is tagged with its batch, so entries skipped after an error retire
/// at the batch's ReadyForQuery.
#[derive(Default)]
struct Expected {
    describes: Mutex<VecDeque<(u64, bool)>>,
    copies: Mutex<VecDeque<(u64, Option<CopyOut>)>>,
    /// A DDL statement was sent: drop the catalog cache once it has finished.
    ddl_pending: AtomicBool,
}

impl Expected {
    /// The front entry of `queue` if it belongs to batch `current`, dropping stale ones.
    fn take<T>(queue: &Mutex<VecDeque<(u64, T)>>, current: u64) -> Option<T> {
        let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
        while queue.front().is_some_and(|(batch, _)| *batch < current) {
            queue.pop_front();
        }
        if queue.front().is_some_and(|(batch, _)| *batch == current) {
            queue.pop_front().map(|(_, value)| value)
        } else {
            None
        }
    }

    fn push<T>(queue: &Mutex<VecDeque<(u64, T)>>, batch: u64, value: T) {
        queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((batch, value));
    }

    fn retire<T>(queue: &Mutex<VecDeque<(u64, T)>>, batches_completed: u64) {
        queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(batch, _)| *batch >= batches_completed);
    }
}

/// What goes out after one pass over a read buffer. Untouched bytes are
/// written straight from the buffer; once something is replaced or
/// inserted, the output is assembled here and written in one go.
#[derive(Default)]
struct Splice {
    out: BytesMut,
    /// Start of the buffer bytes not yet accounted for.
    from: usize,
    assembled: bool,
}

impl Splice {
    /// Replace `buf[start..end]` with `with`.
    fn replace(&mut self, buf: &[u8], start: usize, end: usize, with: &[u8]) {
        self.out.extend_from_slice(&buf[self.from..start]);
        self.out.extend_from_slice(with);
        self.from = end;
        self.assembled = true;
    }

    /// Insert `with` before `buf[at..]`.
    fn insert(&mut self, buf: &[u8], at: usize, with: &[u8]) {
        self.replace(buf, at, at, with);
    }

    /// Write everything up to `buf[..upto]` and start over.
    async fn write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        out: &mut W,
        buf: &[u8],
        upto: usize,
    ) -> std::io::Result<usize> {
        let result = if self.assembled {
            self.out.extend_from_slice(&buf[self.from..upto]);
            out.write_all(&self.out).await.map(|()| self.out.len())
        } else if self.from < upto {
            out.write_all(&buf[self.from..upto])
                .await
                .map(|()| upto - self.from)
        } else {
            Ok(0)
        };
        self.out.clear();
        self.from = 0;
        self.assembled = false;
        result
    }
}

/// Relay until one side ends or the node terminates the session. Returns
/// how it ended and how many SQL-carrying messages the client sent.
pub async fn run(
    ctx: &ProxyContext,
    client: crate::transport::ClientStream,
    upstream: Upstream,
    info: SessionInfo,
    terminate: CancellationToken,
    traffic: &Traffic,
) -> (Ending, u64) {
    let Upstream {
        stream: upstream_stream,
        leftover: upstream_leftover,
        _cancel,
    } = upstream;
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream_stream);
    let denials = Denials {
        marker: format!("{MARKER_PREFIX}{:016x}_", rand::random::<u64>()),
        pending: AtomicUsize::new(0),
        queue: Mutex::new(VecDeque::new()),
    };
    let (end_tx, end_rx) = oneshot::channel::<(&'static str, String)>();
    let SessionInfo {
        session,
        principal,
        connection,
        role,
        client_leftover,
        masking,
        catalog,
        grant_ended,
        recording,
    } = info;
    let expected = Expected::default();
    let statements = AtomicU64::new(0);
    let log = StatementLog::new(
        session.to_string(),
        ctx.audit.clone(),
        masking.as_ref().map(|m| m.masker().clone()),
    )
    .enabled(
        ctx.deployment
            .connection(&connection)
            .is_none_or(|c| c.audit_statements),
    );
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let client_side = ClientSide {
        role: &role,
        principal: &principal,
        session_id: session,
        review: ctx.reviews.get(&connection),
        notices: notice_tx,
        connection: &connection,
        masking: masking.is_some(),
        catalog: catalog.as_deref(),
        session: session.to_string(),
        statements: &statements,
        traffic,
        recording: recording.as_ref(),
        log: &log,
    };

    // The two directions borrow the halves; the block ends those borrows so
    // the halves can be closed politely afterwards.
    let ending = {
        let to_upstream = client_to_upstream(
            ctx,
            &mut client_rd,
            &mut upstream_wr,
            client_leftover,
            &denials,
            &expected,
            &client_side,
        );
        let to_client = upstream_to_client(
            ctx,
            &mut upstream_rd,
            &mut client_wr,
            upstream_leftover,
            UpstreamSide {
                denials: &denials,
                expected: &expected,
                masking,
                catalog: catalog.as_deref(),
                traffic,
                grant_ended,
                notices: notice_rx,
                recording: recording.as_ref(),
                log: &log,
            },
            end_rx,
            &terminate,
        );
        tokio::pin!(to_upstream, to_client);

        tokio::select! {
            ending = &mut to_upstream => {
                match &ending {
                    Ending::ProtocolViolation(reason) => {
                        let _ = end_tx.send(("08P01", reason.clone()));
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut to_client).await;
                    }
                    Ending::RecordingFailed(failure) => {
                        let _ = end_tx.send((failure.sqlstate, failure.message.clone()));
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut to_client).await;
                    }
                    Ending::ClientTerminated => {
                        // The Terminate was forwarded; let the upstream close on its own.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut to_client).await;
                    }
                    _ => {}
                }
                ending
            }
            ending = &mut to_client => ending,
        }
    };
    // Whatever happened, tell the upstream politely that we are leaving.
    let mut terminate_message = BytesMut::new();
    FrontendMessage::Terminate.encode(&mut terminate_message);
    let _ = upstream_wr.write_all(&terminate_message).await;
    let _ = upstream_wr.shutdown().await;
    let _ = client_wr.shutdown().await;
    if let Some(recording) = recording {
        recording.finish(&ending.describe()).await;
    }
    (ending, statements.load(Ordering::Relaxed))
}

/// What the client direction needs to know about the session.
struct ClientSide<'a> {
    role: &'a EffectiveRole,
    principal: &'a Principal,
    session_id: SessionId,
    /// The connection's command review, if it has one.
    review: Option<&'a ReviewPolicy>,
    /// Notices for the client, written by the other direction between
    /// server messages (only the other direction writes to the client).
    notices: mpsc::UnboundedSender<String>,
    connection: &'a str,
    /// Results are masked: describe before Execute, track COPY, refuse binary COPY.
    masking: bool,
    catalog: Option<&'a Catalog>,
    session: String,
    /// SQL-carrying messages sent, for the session's audit record.
    statements: &'a AtomicU64,
    traffic: &'a Traffic,
    recording: Option<&'a SessionRecording>,
    /// Per-statement audit records.
    log: &'a StatementLog,
}

/// COPY TO statements by prepared statement and by portal, so that an
/// extended-protocol COPY is recognised when its portal is executed.
#[derive(Default)]
struct CopyTracking {
    statements: HashMap<String, CopyOut>,
    portals: HashMap<String, CopyOut>,
}

async fn client_to_upstream<R, W>(
    ctx: &ProxyContext,
    client: &mut R,
    upstream: &mut W,
    mut buf: BytesMut,
    denials: &Denials,
    expected: &Expected,
    side: &ClientSide<'_>,
) -> Ending
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let traffic = side.traffic;
    let limits = &ctx.settings.limits;
    let mut batches_sent: u64 = 0;
    let mut next_sequence: u64 = 0;
    let mut cache = DecisionCache::new(side.log.is_enabled());
    let mut copies = CopyTracking::default();
    // What each prepared statement and bound portal is, for the audit
    // record of its Executes (and whether the relay refused it).
    let mut prepared: HashMap<String, (Described, bool)> = HashMap::new();
    let mut portals: HashMap<String, (Described, bool)> = HashMap::new();
    // The portal the client's last message described, if that was a Describe.
    let mut described_portal: Option<String> = None;
    let mut splice = Splice::default();
    let mut ship_timer = ShipTimer::new();
    loop {
        let mut position = 0;
        let mut forwarded_tag = 0;
        // The length of a frame that has begun but not arrived whole.
        let mut pending = None;
        loop {
            let (tag, total) = match juris_pgwire::peek_frame(&buf[position..], limits) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Ending::ProtocolViolation(e.to_string()),
            };
            if buf.len() - position < total {
                pending = Some(total);
                break;
            }
            let frame_bytes = &buf[position..position + total];
            let body = &frame_bytes[5..];
            if let Some(recording) = side.recording
                && let Err(failure) = recording.client_message(tag, body).await
            {
                return Ending::RecordingFailed(failure);
            }
            let just_described = described_portal.take();
            match tag {
                b'Q' | b'P' | b'F' => {
                    side.statements.fetch_add(1, Ordering::Relaxed);
                    let frame = Frame {
                        tag,
                        body: bytes::Bytes::copy_from_slice(body),
                    };
                    let (verdict, sql) = match inspect(
                        &frame,
                        side.role.level,
                        side.masking,
                        side.review,
                        &mut cache,
                    ) {
                        Ok(inspected) => inspected,
                        Err(reason) => return Ending::ProtocolViolation(reason),
                    };
                    if verdict.ddl
                        && let Some(catalog) = side.catalog
                    {
                        catalog.invalidate();
                        expected.ddl_pending.store(true, Ordering::Release);
                    }
                    if side.masking {
                        match (tag, &frame) {
                            (b'Q', _) => {
                                for copy in verdict.copies.iter() {
                                    Expected::push(
                                        &expected.copies,
                                        batches_sent,
                                        Some(copy.clone()),
                                    );
                                }
                            }
                            (b'P', frame) => {
                                let name = statement_name(&frame.body);
                                match verdict.copies.first() {
                                    Some(copy) => {
                                        copies.statements.insert(name, copy.clone());
                                    }
                                    None => {
                                        copies.statements.remove(&name);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    let mut refusal = verdict.refusal;
                    if let Some(class) = verdict.held {
                        // What came before the held message goes out first,
                        // so its results reach the client while it waits.
                        if let Err(ending) = send_upstream(
                            &mut splice,
                            upstream,
                            &buf,
                            position,
                            traffic,
                            forwarded_tag,
                        )
                        .await
                        {
                            return ending;
                        }
                        buf.advance(position);
                        position = 0;
                        if let HoldOutcome::Refused { sqlstate, message } =
                            hold_for_review(ctx, side, &frame, class).await
                        {
                            refusal = Some(Refusal::Review {
                                class,
                                sqlstate,
                                message,
                            });
                        }
                    }
                    if let Some(refusal) = &refusal {
                        let sequence = next_sequence;
                        next_sequence += 1;
                        info!(refusal = %refusal.reason(), "statement denied");
                        ctx.audit
                            .record(refusal_event(&side.session, refusal, &frame));
                        denials.push(Denial {
                            sequence,
                            batch: batches_sent,
                            error: refusal.error(side.role, side.connection),
                        });
                        let mut replacement = BytesMut::new();
                        let sql = format!("{}{sequence}", denials.marker);
                        match tag {
                            b'P' => FrontendMessage::Parse {
                                name: statement_name(&frame.body),
                                sql,
                                param_types: Vec::new(),
                            }
                            .encode(&mut replacement),
                            _ => FrontendMessage::Query { sql }.encode(&mut replacement),
                        }
                        splice.replace(&buf, position, position + total, &replacement);
                    }
                    if let Some(class) = verdict.class {
                        let described = side.log.describe(&sql, class, verdict.fingerprint.clone());
                        match tag {
                            b'Q' => side
                                .log
                                .sent(batches_sent, true, described, refusal.is_some()),
                            b'P' => {
                                prepared.insert(
                                    statement_name(&frame.body),
                                    (described, refusal.is_some()),
                                );
                            }
                            _ => {}
                        }
                    }
                    if tag != b'P' {
                        batches_sent += 1;
                    }
                }
                b'D' if side.masking => {
                    if let Some((target, name)) = describe_target(body) {
                        Expected::push(&expected.describes, batches_sent, false);
                        if target == Target::Portal {
                            described_portal = Some(name);
                        }
                    }
                }
                b'B' => {
                    let (portal, statement) = bind_names(body);
                    match prepared.get(&statement) {
                        Some(described) => {
                            portals.insert(portal.clone(), described.clone());
                        }
                        None => {
                            portals.remove(&portal);
                        }
                    }
                    if side.masking {
                        match copies.statements.get(&statement) {
                            Some(copy) => {
                                copies.portals.insert(portal, copy.clone());
                            }
                            None => {
                                copies.portals.remove(&portal);
                            }
                        }
                    }
                }
                b'E' => {
                    let portal = statement_name(body);
                    if let Some((described, refused)) = portals.get(&portal) {
                        side.log
                            .sent(batches_sent, false, described.clone(), *refused);
                    }
                    if side.masking && just_described.as_deref() != Some(portal.as_str()) {
                        // Ask for the portal's columns (formats included),
                        // and hide the answer from the client.
                        let mut describe = BytesMut::new();
                        FrontendMessage::Describe {
                            target: Target::Portal,
                            name: portal.clone(),
                        }
                        .encode(&mut describe);
                        splice.insert(&buf, position, &describe);
                        Expected::push(&expected.describes, batches_sent, true);
                    }
                    if side.masking
                        && let Some(copy) = copies.portals.get(&portal)
                    {
                        Expected::push(&expected.copies, batches_sent, Some(copy.clone()));
                    }
                }
                // Close: forget what the client closed (Close has the
                // same body as Describe).
                b'C' => match describe_target(body) {
                    Some((Target::Statement, name)) => {
                        prepared.remove(&name);
                    }
                    Some((Target::Portal, name)) => {
                        portals.remove(&name);
                    }
                    None => {}
                },
                b'S' => batches_sent += 1,
                b'X' => {
                    let _ = splice.write(upstream, &buf, position + total).await;
                    return Ending::ClientTerminated;
                }
                _ => {}
            }
            forwarded_tag = tag;
            position += total;
        }
        if let Some(recording) = side.recording {
            ship_timer.arm(recording);
        }
        if let Err(ending) = send_upstream(
            &mut splice,
            upstream,
            &buf,
            position,
            traffic,
            forwarded_tag,
        )
        .await
        {
            return ending;
        }
        buf.advance(position);
        reserve_for_next_read(&mut buf, pending);
        let read = loop {
            tokio::select! {
                read = client.read_buf(&mut buf) => break read,
                () = ship_timer.sleep.as_mut(), if ship_timer.is_armed() => {
                    if let Err(failure) = ship_timer.fired(side.recording).await {
                        return Ending::RecordingFailed(failure);
                    }
                }
            }
        };
        match read {
            Ok(0) => return Ending::ClientClosed,
            Ok(n) => {
                traffic.from_client.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(recording) = side.recording {
                    recording.new_read();
                }
            }
            Err(e) => return Ending::Io(e.to_string()),
        }
    }
}

/// Hold a statement until the region's reviewers decide on it.
async fn hold_for_review(
    ctx: &ProxyContext,
    side: &ClientSide<'_>,
    frame: &Frame,
    class: StatementClass,
) -> HoldOutcome {
    let sql = match FrontendMessage::decode(frame) {
        Ok(FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. }) => sql,
        _ => String::new(),
    };
    let Some(fingerprint) = juris_policy::fingerprint(&sql) else {
        return HoldOutcome::Refused {
            sqlstate: "42501",
            message: format!(
                "permission denied: connection \"{}\" reviews statements like this one, and this one cannot be reviewed because it does not parse",
                side.connection
            ),
        };
    };
    let Some(review) = ctx.command_review.as_ref() else {
        return HoldOutcome::Refused {
            sqlstate: "57P03",
            message: format!(
                "connection \"{}\" holds this statement for review, but this node has no control plane to file it with",
                side.connection
            ),
        };
    };
    let notices = side.notices.clone();
    let held = HeldStatement {
        principal: side.principal.clone(),
        connection: side.connection.to_string(),
        session: side.session_id,
        statement: sql,
        fingerprint,
        class,
    };
    info!(%class, "statement held for review");
    let outcome = review
        .hold(
            held,
            Box::new(move |line| {
                let _ = notices.send(line);
            }),
        )
        .await;
    match &outcome {
        HoldOutcome::Run { approval } => info!(%approval, "held statement approved; running it"),
        HoldOutcome::Refused { message, .. } => info!(%message, "held statement not run"),
    }
    outcome
}

/// Write what the client direction assembled up to `upto`, count it, and
/// flush (TLS may hold encrypted bytes back until flushed).
async fn send_upstream<W: AsyncWrite + Unpin + ?Sized>(
    splice: &mut Splice,
    upstream: &mut W,
    buf: &[u8],
    upto: usize,
    traffic: &Traffic,
    last_tag: u8,
) -> Result<(), Ending> {
    let written = splice
        .write(upstream, buf, upto)
        .await
        .map_err(|e| Ending::Io(e.to_string()))?;
    count(
        &traffic.to_upstream,
        &traffic.last_to_upstream,
        written,
        last_tag,
    );
    upstream
        .flush()
        .await
        .map_err(|e| Ending::Io(e.to_string()))
}

fn count(bytes: &AtomicU64, last: &std::sync::atomic::AtomicU8, written: usize, tag: u8) {
    if written > 0 {
        bytes.fetch_add(written as u64, Ordering::Relaxed);
        if tag != 0 {
            last.store(tag, Ordering::Relaxed);
        }
    }
}

/// The first C string of a body: a Parse's statement, an Execute's portal.
fn statement_name(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// A Bind's portal and statement names.
fn bind_names(body: &[u8]) -> (String, String) {
    let portal = statement_name(body);
    let rest = body.get(portal.len() + 1..).unwrap_or_default();
    (portal, statement_name(rest))
}

fn describe_target(body: &[u8]) -> Option<(Target, String)> {
    let (kind, name) = body.split_first()?;
    let target = match kind {
        b'S' => Target::Statement,
        b'P' => Target::Portal,
        _ => return None,
    };
    Some((target, statement_name(name)))
}

/// The audit record of a refused statement.
fn refusal_event(session: &str, refusal: &Refusal, frame: &Frame) -> juris_audit::AuditEvent {
    let text = match FrontendMessage::decode(frame) {
        Ok(FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. }) => sql,
        _ => "(fast-path function call)".into(),
    };
    let class = match refusal {
        Refusal::Role { class, .. } => *class,
        Refusal::BinaryCopy => StatementClass::Read,
        Refusal::FastPathMasked => StatementClass::Administration,
        Refusal::Review { class, .. } => *class,
    };
    juris_audit::AuditEvent::PolicyRefusal(juris_audit::event::PolicyRefusal {
        session: session.to_string(),
        fingerprint: juris_policy::fingerprint(&text).unwrap_or_default(),
        text,
        class,
        reason: refusal.reason(),
        sqlstate: refusal.sqlstate().into(),
    })
}

/// Why a statement is refused before it reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// Beyond the role's access level.
    Role {
        class: StatementClass,
        summary: &'static str,
    },
    /// Binary COPY output cannot be masked.
    BinaryCopy,
    /// Fast-path function results cannot be masked.
    FastPathMasked,
    /// Held for command review and not approved (denied, not decided in
    /// time, or review unavailable).
    Review {
        class: StatementClass,
        sqlstate: &'static str,
        message: String,
    },
}

impl Refusal {
    fn reason(&self) -> String {
        match self {
            Refusal::Role { class, summary } => format!("{class} ({summary})"),
            Refusal::BinaryCopy => "binary COPY of masked results".into(),
            Refusal::FastPathMasked => "fast-path function call on a masked session".into(),
            Refusal::Review { message, .. } => message.clone(),
        }
    }

    fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::Review { sqlstate, .. } => sqlstate,
            _ => "42501",
        }
    }

    fn error(&self, role: &EffectiveRole, connection: &str) -> ErrorFields {
        match self {
            Refusal::Role { class, summary } => ErrorFields::new(
                "ERROR",
                "42501",
                format!(
                    "permission denied: role \"{}\" ({} access) may not run {} statements ({summary}) on connection \"{connection}\"",
                    role.role, role.level, class
                ),
            ),
            Refusal::BinaryCopy => ErrorFields::new(
                "ERROR",
                "42501",
                format!(
                    "permission denied: COPY TO STDOUT in binary format is not allowed on connection \"{connection}\" because its results are masked"
                ),
            )
            .with_hint("Use COPY … TO STDOUT in text or CSV format; masking applies to those."),
            Refusal::FastPathMasked => ErrorFields::new(
                "ERROR",
                "42501",
                format!(
                    "permission denied: fast-path function calls are not allowed on connection \"{connection}\" because its results are masked"
                ),
            )
            .with_hint("Call the function with SELECT instead."),
            Refusal::Review {
                sqlstate, message, ..
            } => ErrorFields::new("ERROR", sqlstate, message.clone()),
        }
    }
}

/// What the relay does with one SQL-carrying message.
#[derive(Debug, Clone, Default)]
struct Verdict {
    refusal: Option<Refusal>,
    /// Some statement changes the schema (catalog caches must be dropped).
    ddl: bool,
    /// The message's `COPY … TO STDOUT` statements, in order.
    copies: Arc<[CopyOut]>,
    /// The connection's command review holds it: the class of the held
    /// statement.
    held: Option<StatementClass>,
    /// The most privileged class among its statements (for the audit
    /// record); `None` for messages that carry no SQL text.
    class: Option<StatementClass>,
    /// `pg_query` fingerprint of the text: empty if it does not parse, or
    /// if the session's statements are not audited.
    fingerprint: Arc<str>,
}

/// Verdicts by SQL text, so a statement parsed again and again (an unnamed
/// statement per transaction, as `pgbench -M extended` does) is classified
/// once. Bounded: cleared when full, which only costs re-parsing.
#[derive(Default)]
struct DecisionCache {
    verdicts: HashMap<String, Verdict>,
    /// `Some` when verdicts carry the text's fingerprint: fingerprints by
    /// the key that texts differing only in constant values share. Only
    /// the statement audit record uses a fingerprint, and computing one
    /// parses the text a second time, so a session whose statements are
    /// not audited goes without; an audited one parses a second time only
    /// for a statement of a shape it has not seen.
    fingerprints: Option<HashMap<FingerprintKey, Arc<str>>>,
}

/// Longest fingerprint key kept: a long statement is rare, and its parse
/// small next to its own size.
const MAX_FINGERPRINT_KEY_BYTES: usize = 2048;

const DECISION_CACHE_ENTRIES: usize = 512;

impl DecisionCache {
    fn new(fingerprints: bool) -> Self {
        DecisionCache {
            verdicts: HashMap::new(),
            fingerprints: fingerprints.then(HashMap::new),
        }
    }

    /// The fingerprint of `sql` (whose key is `key`) if this session wants
    /// fingerprints, else empty; empty too if it does not parse.
    fn fingerprint(&mut self, sql: &str, key: Option<FingerprintKey>) -> Arc<str> {
        let Some(by_key) = self.fingerprints.as_mut() else {
            return Arc::from("");
        };
        let key = key.filter(|key| key.len() <= MAX_FINGERPRINT_KEY_BYTES);
        if let Some(known) = key.as_ref().and_then(|key| by_key.get(key)) {
            return known.clone();
        }
        let Some(fingerprint) = juris_policy::fingerprint(sql).map(Arc::<str>::from) else {
            return Arc::from("");
        };
        if let Some(key) = key {
            if by_key.len() >= DECISION_CACHE_ENTRIES {
                by_key.clear();
            }
            by_key.insert(key, fingerprint.clone());
        }
        fingerprint
    }

    fn decide(
        &mut self,
        sql: &str,
        level: AccessLevel,
        masking: bool,
        review: Option<&ReviewPolicy>,
    ) -> Verdict {
        if let Some(verdict) = self.verdicts.get(sql) {
            return verdict.clone();
        }
        let (statements, key) = juris_policy::classify_keyed(sql);
        let mut verdict = Verdict {
            refusal: match juris_policy::authorize(level, &statements) {
                Decision::Allow => None,
                Decision::Deny { class, summary } => Some(Refusal::Role { class, summary }),
            },
            ddl: statements.iter().any(|s| s.class == StatementClass::Ddl),
            copies: Arc::from([]),
            held: None,
            class: statements.iter().map(|s| s.class).reduce(|a, b| {
                if b.required_level() > a.required_level() {
                    b
                } else {
                    a
                }
            }),
            fingerprint: self.fingerprint(sql, key),
        };
        if masking && statements.iter().any(|s| s.summary == "COPY TO") {
            let copies = juris_policy::copy_outs(sql);
            if verdict.refusal.is_none()
                && copies.iter().any(|c| c.format == CopyDataFormat::Binary)
            {
                verdict.refusal = Some(Refusal::BinaryCopy);
            }
            verdict.copies = copies.into();
        }
        // Only what would otherwise run is held: a refused message is not
        // worth a reviewer's time.
        if verdict.refusal.is_none()
            && let Some(policy) = review
        {
            verdict.held = policy.held(sql, &statements).map(|s| s.class);
        }
        if self.verdicts.len() >= DECISION_CACHE_ENTRIES {
            self.verdicts.clear();
        }
        self.verdicts.insert(sql.to_string(), verdict.clone());
        verdict
    }
}

/// Decide on a SQL-carrying frame.
fn inspect(
    frame: &Frame,
    level: AccessLevel,
    masking: bool,
    review: Option<&ReviewPolicy>,
    cache: &mut DecisionCache,
) -> Result<(Verdict, String), String> {
    let sql = match FrontendMessage::decode(frame).map_err(|e| format!("invalid message: {e}"))? {
        FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => sql,
        // The fast-path interface calls any function by OID, bypassing SQL:
        // only administrators may use it.
        FrontendMessage::FunctionCall { .. } => {
            let refusal = if level < AccessLevel::Admin {
                Some(Refusal::Role {
                    class: StatementClass::Administration,
                    summary: "fast-path function call",
                })
            } else {
                // Its result is one untyped value outside any row: nothing
                // to plan masking with, so not on a masked session.
                masking.then_some(Refusal::FastPathMasked)
            };
            return Ok((
                Verdict {
                    refusal,
                    ..Verdict::default()
                },
                String::new(),
            ));
        }
        _ => return Ok((Verdict::default(), String::new())),
    };
    Ok((cache.decide(&sql, level, masking, review), sql))
}

/// Make room for the next read once the handled frames are dropped from
/// the front of `buf`: the rest of a frame that has begun (`pending`, its
/// total length) and at least 4 KiB. Reserving only now lets `BytesMut`
/// reuse its allocation; reserving while the handled frames were still in
/// it grew the buffer by everything read so far, again and again while the
/// upstream kept it full (a 200 MB result grew it to 64 MiB).
fn reserve_for_next_read(buf: &mut BytesMut, pending: Option<usize>) {
    if let Some(total) = pending {
        buf.reserve(total.saturating_sub(buf.len()));
    }
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_CHUNK);
    }
}

/// What the upstream direction works with.
struct UpstreamSide<'a> {
    denials: &'a Denials,
    expected: &'a Expected,
    masking: Option<SessionMasking>,
    catalog: Option<&'a Catalog>,
    traffic: &'a Traffic,
    /// Resolves once the grant the session rides on ends.
    grant_ended: Option<GrantEnded>,
    /// Notices from the client direction (a statement held for review).
    notices: mpsc::UnboundedReceiver<String>,
    recording: Option<&'a SessionRecording>,
    log: &'a StatementLog,
}

/// What to do with one server frame.
enum Action {
    Forward,
    /// Replace it with the frame in the scratch buffer.
    Replace,
    /// Drop it (the answer to an injected Describe).
    Swallow,
}

async fn upstream_to_client<R, W>(
    ctx: &ProxyContext,
    upstream: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    mut side: UpstreamSide<'_>,
    end: oneshot::Receiver<(&'static str, String)>,
    terminate: &CancellationToken,
) -> Ending
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let traffic = side.traffic;
    let mut grant_ended = side.grant_ended.take();
    let mut notices_open = true;
    let limits = &ctx.settings.limits;
    let mut batches_completed: u64 = 0;
    let mut end = Some(end);
    let mut splice = Splice::default();
    let mut scratch = BytesMut::new();
    let mut ship_timer = ShipTimer::new();
    loop {
        let mut position = 0;
        // What this read passed on and the recording does not have yet;
        // recorded before any of it is written to the client.
        let mut unrecorded = Unrecorded::default();
        let mut forwarded_tag = 0;
        // The length of a frame that has begun but not arrived whole.
        let mut pending = None;
        loop {
            let (tag, total) = match juris_pgwire::peek_frame(&buf[position..], limits) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Ending::Io(format!("upstream sent an invalid message: {e}")),
            };
            if buf.len() - position < total {
                pending = Some(total);
                break;
            }
            let frame = &buf[position..position + total];
            let action =
                match server_frame(&mut side, tag, frame, batches_completed, &mut scratch).await {
                    Ok(action) => action,
                    Err(failure) => {
                        let message = failure.to_string();
                        tracing::warn!(%message, "masking failed; ending the session");
                        let recorded = unrecorded.record(side.recording, &buf, position).await;
                        let sent = recorded.err().map_or(position, |(recorded, _)| recorded);
                        let _ = splice.write(client, &buf, sent).await;
                        let _ = send_fatal(client, side.recording, "XX000", &message).await;
                        return Ending::MaskingFailed(message);
                    }
                };
            if side.recording.is_some() && !matches!(action, Action::Forward) {
                let recorded = match action {
                    Action::Replace => {
                        unrecorded
                            .replace(side.recording, &buf, position, total, &scratch)
                            .await
                    }
                    _ => {
                        unrecorded
                            .swallow(side.recording, &buf, position, total)
                            .await
                    }
                };
                if let Err((recorded, failure)) = recorded {
                    // What was recorded goes out; nothing after it does.
                    let _ = splice.write(client, &buf, recorded).await;
                    let _ = send_fatal(client, None, failure.sqlstate, &failure.message).await;
                    return Ending::RecordingFailed(failure);
                }
            }
            match action {
                Action::Forward => side.log.answered(batches_completed, tag, &frame[5..]),
                Action::Replace => side
                    .log
                    .answered(batches_completed, scratch[0], &scratch[5..]),
                Action::Swallow => {}
            }
            match action {
                Action::Forward => {}
                Action::Replace => splice.replace(&buf, position, position + total, &scratch),
                Action::Swallow => splice.replace(&buf, position, position + total, &[]),
            }
            if tag == b'Z' {
                batches_completed += 1;
                if !side.denials.is_empty() {
                    side.denials.retire(batches_completed);
                }
                if side.masking.is_some() {
                    Expected::retire(&side.expected.describes, batches_completed);
                    Expected::retire(&side.expected.copies, batches_completed);
                }
                // Once the DDL's transaction is over, its catalog changes are visible.
                if let Some(catalog) = side.catalog
                    && frame.get(5) == Some(&b'I')
                    && side.expected.ddl_pending.swap(false, Ordering::AcqRel)
                {
                    catalog.invalidate();
                }
            }
            forwarded_tag = tag;
            position += total;
        }
        if let Err((recorded, failure)) = unrecorded.record(side.recording, &buf, position).await {
            let _ = splice.write(client, &buf, recorded).await;
            let _ = send_fatal(client, None, failure.sqlstate, &failure.message).await;
            return Ending::RecordingFailed(failure);
        }
        if let Some(recording) = side.recording
            && position > 0
        {
            ship_timer.arm(recording);
        }
        match splice.write(client, &buf, position).await {
            Ok(written) => count(
                &traffic.to_client,
                &traffic.last_to_client,
                written,
                forwarded_tag,
            ),
            Err(e) => return Ending::Io(e.to_string()),
        }
        buf.advance(position);
        if let Err(e) = client.flush().await {
            return Ending::Io(e.to_string());
        }
        reserve_for_next_read(&mut buf, pending);
        tokio::select! {
            biased;
            reason = async {
                match end.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((code, message)) = reason {
                    // A recording failure was reported by the other
                    // direction: it cannot be recorded either.
                    let recording = side.recording.filter(|_| code == "08P01");
                    let _ = send_fatal(client, recording, code, &message).await;
                    return Ending::ProtocolViolation(message);
                }
                // The other direction ended without a reason: keep relaying
                // until the upstream closes.
                end = None;
            }
            _ = terminate.cancelled() => {
                debug!("terminating session for shutdown");
                let _ = send_fatal(
                    client,
                    side.recording,
                    "57P01",
                    "terminating connection because the Juris node is shutting down",
                )
                .await;
                return Ending::ShutDown;
            }
            reason = async {
                match grant_ended.as_mut() {
                    Some(ended) => ended.0.as_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                info!(%reason, "ending session: its grant ended");
                let _ = send_fatal(client, side.recording, "42501", &reason).await;
                return Ending::GrantEnded(reason);
            }
            () = ship_timer.sleep.as_mut(), if ship_timer.is_armed() => {
                if let Err(failure) = ship_timer.fired(side.recording).await {
                    let _ = send_fatal(client, None, failure.sqlstate, &failure.message).await;
                    return Ending::RecordingFailed(failure);
                }
            }
            notice = side.notices.recv(), if notices_open => match notice {
                Some(text) => {
                    // Between server messages: every complete frame read so
                    // far has been written, so a notice cannot split one.
                    let mut out = BytesMut::new();
                    BackendMessage::NoticeResponse(ErrorFields::new("NOTICE", "00000", text))
                        .encode(&mut out);
                    if let Some(recording) = side.recording {
                        // A failure shows again at the next server message.
                        let _ = recording.server_message(b'N', &out[5..]).await;
                    }
                    if let Err(e) = client.write_all(&out).await {
                        return Ending::Io(e.to_string());
                    }
                    if let Err(e) = client.flush().await {
                        return Ending::Io(e.to_string());
                    }
                }
                None => notices_open = false,
            },
            read = upstream.read_buf(&mut buf) => match read {
                Ok(0) => return Ending::UpstreamClosed,
                Ok(n) => {
                    traffic.from_upstream.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => return Ending::Io(e.to_string()),
            }
        }
    }
}

/// When one direction of a session hands what it recorded to the spool's
/// writer. Every message is recorded (in the recorder's batch, within
/// the spool's budget) before it is passed on; handing batches over is
/// only what makes them durable, and the writer syncs a session's spool
/// file every 100 ms at most. So a direction does not ship per message,
/// per read or per answer: after recording it sets this timer, unless it
/// is set, and when it fires ships what was already waiting when it was
/// set (a busy session: one hand-over per period, not one per statement;
/// and one timer per period, since a timer per statement cost more than
/// the hand-over it saved). The recorder ships by itself once 256 KiB
/// have gathered, so a large result still goes over in large batches.
struct ShipTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set: how many batches the recorder had shipped when it was.
    armed_at: Option<u64>,
}

impl ShipTimer {
    fn new() -> Self {
        ShipTimer {
            sleep: Box::pin(tokio::time::sleep(SHIP_PERIOD)),
            armed_at: None,
        }
    }

    fn is_armed(&self) -> bool {
        self.armed_at.is_some()
    }

    /// Something may have been recorded: set the timer if it waits to be
    /// shipped and the timer is not set.
    fn arm(&mut self, recording: &SessionRecording) {
        if self.armed_at.is_none()
            && let Some(ships) = recording.unshipped()
        {
            self.set(ships);
        }
    }

    fn set(&mut self, ships: u64) {
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + SHIP_PERIOD);
        self.armed_at = Some(ships);
    }

    /// The timer fired: ship what has waited since it was set, or give
    /// what was recorded since the last hand-over a period of its own.
    async fn fired(
        &mut self,
        recording: Option<&SessionRecording>,
    ) -> Result<(), RecordingFailure> {
        let armed_at = self.armed_at.take();
        let Some(recording) = recording else {
            return Ok(());
        };
        match recording.unshipped() {
            Some(ships) if Some(ships) == armed_at => recording.ship().await,
            Some(ships) => {
                self.set(ships);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Send the client a FATAL the gateway itself decided on, recording it
/// first (best effort: the session is ending anyway).
async fn send_fatal<W: AsyncWrite + Unpin + ?Sized>(
    client: &mut W,
    recording: Option<&SessionRecording>,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    BackendMessage::ErrorResponse(ErrorFields::new("FATAL", code, message)).encode(&mut out);
    if let Some(recording) = recording {
        let _ = recording.server_message(b'E', &out[5..]).await;
    }
    client.write_all(&out).await?;
    client.flush().await
}

/// What the relay passed on from one read of the upstream and has not
/// recorded yet, in order: messages that replaced upstream ones (copied
/// here), then a run of forwarded ones, `buf[run_from..position]` (never
/// copied). Recorded in one call each ([`SessionRecording::server_messages`])
/// rather than one per row, and always before what they stand for is
/// written to the client. `Err` from the methods carries the offset in
/// `buf` up to which the client may still be sent its bytes (everything
/// before it was recorded) and the failure.
#[derive(Default)]
struct Unrecorded {
    replaced: Vec<u8>,
    /// Offset in `buf` of the first message `replaced` stands for.
    replaced_from: usize,
    run_from: usize,
}

impl Unrecorded {
    /// Record everything before `position`.
    async fn record(
        &mut self,
        recording: Option<&SessionRecording>,
        buf: &[u8],
        position: usize,
    ) -> Result<(), (usize, RecordingFailure)> {
        let Some(recording) = recording else {
            return Ok(());
        };
        if !self.replaced.is_empty() {
            let recorded = recording.server_messages(&self.replaced).await;
            self.replaced.clear();
            recorded.map_err(|(_, failure)| (self.replaced_from, failure))?;
        }
        if self.run_from < position {
            recording
                .server_messages(&buf[self.run_from..position])
                .await
                .map_err(|(recorded, failure)| (self.run_from + recorded, failure))?;
        }
        self.run_from = position;
        Ok(())
    }

    /// The message at `buf[position..position + total]` goes to the client
    /// as `replacement` (a whole wire message).
    async fn replace(
        &mut self,
        recording: Option<&SessionRecording>,
        buf: &[u8],
        position: usize,
        total: usize,
        replacement: &[u8],
    ) -> Result<(), (usize, RecordingFailure)> {
        if self.run_from < position {
            self.record(recording, buf, position).await?;
        }
        if self.replaced.is_empty() {
            self.replaced_from = position;
        }
        self.replaced.extend_from_slice(replacement);
        self.run_from = position + total;
        Ok(())
    }

    /// The message at `buf[position..position + total]` does not reach
    /// the client.
    async fn swallow(
        &mut self,
        recording: Option<&SessionRecording>,
        buf: &[u8],
        position: usize,
        total: usize,
    ) -> Result<(), (usize, RecordingFailure)> {
        self.record(recording, buf, position).await?;
        self.run_from = position + total;
        Ok(())
    }
}

/// Decide what happens to one complete server frame (`frame` includes its
/// header). Replacements are written into `scratch`.
async fn server_frame(
    side: &mut UpstreamSide<'_>,
    tag: u8,
    frame: &[u8],
    batch: u64,
    scratch: &mut BytesMut,
) -> Result<Action, crate::masking::MaskingFailure> {
    let body = &frame[5..];
    let decode = || {
        BackendMessage::decode(&Frame {
            tag,
            body: bytes::Bytes::copy_from_slice(body),
        })
    };
    if tag == b'E'
        && !side.denials.is_empty()
        && let Ok(BackendMessage::ErrorResponse(fields)) = decode()
        && let Some(replacement) = side.denials.take_for(&fields)
    {
        scratch.clear();
        BackendMessage::ErrorResponse(replacement).encode(scratch);
        if let Some(masking) = side.masking.as_mut() {
            masking.statement_done();
        }
        return Ok(Action::Replace);
    }
    let Some(masking) = side.masking.as_mut() else {
        return Ok(Action::Forward);
    };
    let malformed = |what| crate::masking::MaskingFailure::Malformed(what);
    match tag {
        b'D' => Ok(if masking.data_row(body, scratch)? {
            Action::Replace
        } else {
            Action::Forward
        }),
        b'T' => {
            let injected = Expected::take(&side.expected.describes, batch).unwrap_or(false);
            let Ok(BackendMessage::RowDescription { fields }) = decode() else {
                return Err(malformed("row description"));
            };
            masking.describe(&fields).await?;
            Ok(if injected {
                Action::Swallow
            } else {
                Action::Forward
            })
        }
        b'n' => {
            let injected = Expected::take(&side.expected.describes, batch).unwrap_or(false);
            masking.no_rows();
            Ok(if injected {
                Action::Swallow
            } else {
                Action::Forward
            })
        }
        b'H' => {
            let copy = Expected::take(&side.expected.copies, batch).flatten();
            let Ok(BackendMessage::CopyOutResponse(response)) = decode() else {
                return Err(malformed("copy response"));
            };
            masking.copy_out(&response, copy).await?;
            Ok(Action::Forward)
        }
        b'd' => Ok(if masking.copy_data(body, scratch)? {
            Action::Replace
        } else {
            Action::Forward
        }),
        b'c' => {
            masking.copy_done();
            Ok(Action::Forward)
        }
        b'C' | b's' | b'I' => {
            masking.statement_done();
            Ok(Action::Forward)
        }
        b'E' | b'N' if masking.has_value_rules() => {
            let notice = tag == b'N';
            let (Ok(BackendMessage::ErrorResponse(mut fields))
            | Ok(BackendMessage::NoticeResponse(mut fields))) = decode()
            else {
                return Err(malformed("error response"));
            };
            let changed = masking.error_fields(&mut fields, notice);
            if !notice {
                masking.statement_done();
            }
            if !changed {
                return Ok(Action::Forward);
            }
            scratch.clear();
            if notice {
                BackendMessage::NoticeResponse(fields).encode(scratch);
            } else {
                BackendMessage::ErrorResponse(fields).encode(scratch);
            }
            Ok(Action::Replace)
        }
        b'E' => {
            masking.statement_done();
            Ok(Action::Forward)
        }
        b'A' if masking.has_value_rules() => {
            let Ok(BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }) = decode()
            else {
                return Err(malformed("notification"));
            };
            let Some(payload) = masking.notification(&payload) else {
                return Ok(Action::Forward);
            };
            scratch.clear();
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
            .encode(scratch);
            Ok(Action::Replace)
        }
        _ => Ok(Action::Forward),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denials() -> Denials {
        Denials {
            marker: "juris_denied_00ff_".into(),
            pending: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn denial(sequence: u64, batch: u64) -> Denial {
        Denial {
            sequence,
            batch,
            error: ErrorFields::new("ERROR", "42501", format!("denial {sequence}")),
        }
    }

    fn upstream_error(message: &str) -> ErrorFields {
        ErrorFields::new("ERROR", "42601", message)
    }

    #[test]
    fn marker_errors_are_swapped_and_other_errors_pass() {
        let d = denials();
        d.push(denial(0, 0));
        d.push(denial(1, 2));
        assert!(d.take_for(&upstream_error("division by zero")).is_none());
        assert!(
            d.take_for(&upstream_error(
                "syntax error at or near \"juris_denied_ffff_0\""
            ))
            .is_none(),
            "another session's marker"
        );
        let swapped = d
            .take_for(&upstream_error(
                "syntax error at or near \"juris_denied_00ff_1\"",
            ))
            .unwrap();
        assert_eq!(swapped.message(), Some("denial 1"));
        assert!(!d.is_empty());
        let swapped = d
            .take_for(&upstream_error(
                "syntax error at or near \"juris_denied_00ff_0\"",
            ))
            .unwrap();
        assert_eq!(swapped.message(), Some("denial 0"));
        assert!(d.is_empty());
    }

    #[test]
    fn denials_skipped_by_the_upstream_retire_with_their_batch() {
        let d = denials();
        d.push(denial(0, 0));
        d.push(denial(1, 3));
        d.retire(1);
        assert_eq!(d.pending.load(Ordering::Acquire), 1);
        assert!(
            d.take_for(&upstream_error("at or near \"juris_denied_00ff_0\""))
                .is_none()
        );
        d.retire(4);
        assert!(d.is_empty());
    }

    #[test]
    fn binary_copy_is_refused_only_when_masking() {
        let mut cache = DecisionCache::default();
        let sql = "copy customers to stdout (format binary)";
        let plain = cache.decide(sql, AccessLevel::Read, false, None);
        assert!(plain.refusal.is_none() && plain.copies.is_empty());
        let mut cache = DecisionCache::default();
        let masked = cache.decide(sql, AccessLevel::Read, true, None);
        assert_eq!(masked.refusal, Some(Refusal::BinaryCopy));
        let csv = cache.decide(
            "copy customers to stdout with csv",
            AccessLevel::Read,
            true,
            None,
        );
        assert!(csv.refusal.is_none());
        assert_eq!(csv.copies.len(), 1);
        assert_eq!(csv.copies[0].format, CopyDataFormat::Csv);
    }

    #[test]
    fn expected_answers_match_their_batch_and_stale_ones_retire() {
        let queue: Mutex<VecDeque<(u64, bool)>> = Mutex::default();
        Expected::push(&queue, 0, true);
        Expected::push(&queue, 0, false);
        Expected::push(&queue, 2, true);
        assert_eq!(Expected::take(&queue, 0), Some(true));
        // Batch 0 failed before its second describe; batch 1 has none.
        assert_eq!(Expected::take(&queue, 1), None);
        assert_eq!(queue.lock().unwrap().len(), 1, "the stale entry is dropped");
        Expected::retire(&queue, 3);
        assert!(queue.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn splices_write_untouched_bytes_straight_and_replacements_in_order() {
        let buf = b"aaaabbbbcccc";
        let mut out = Vec::new();
        let mut splice = Splice::default();
        splice.write(&mut out, buf, 12).await.unwrap();
        assert_eq!(out, buf);

        let mut out = Vec::new();
        splice.replace(buf, 4, 8, b"XY");
        splice.insert(buf, 8, b"!");
        splice.write(&mut out, buf, 10).await.unwrap();
        assert_eq!(out, b"aaaaXY!cc");
        let mut out = Vec::new();
        splice.replace(buf, 0, 4, b"");
        splice.write(&mut out, buf, 12).await.unwrap();
        assert_eq!(out, b"bbbbcccc");
    }

    #[test]
    fn decisions_are_cached_and_the_cache_stays_bounded() {
        let mut cache = DecisionCache::default();
        assert_eq!(
            cache
                .decide("select 1", AccessLevel::Read, false, None)
                .refusal,
            None
        );
        let denied = cache.decide("drop table t", AccessLevel::Read, false, None);
        assert!(matches!(
            denied.refusal,
            Some(Refusal::Role {
                class: StatementClass::Ddl,
                ..
            })
        ));
        assert!(denied.ddl);
        for i in 0..(DECISION_CACHE_ENTRIES * 2) {
            cache.decide(&format!("select {i}"), AccessLevel::Read, false, None);
        }
        assert!(cache.verdicts.len() <= DECISION_CACHE_ENTRIES);
    }

    #[test]
    fn only_audited_sessions_fingerprint_their_statements() {
        let sql = "select abalance from pgbench_accounts where aid = 42";
        let audited = DecisionCache::new(true).decide(sql, AccessLevel::Read, false, None);
        assert_eq!(
            Some(&*audited.fingerprint),
            juris_policy::fingerprint(sql).as_deref()
        );
        assert!(!audited.fingerprint.is_empty());
        let unaudited = DecisionCache::new(false).decide(sql, AccessLevel::Read, false, None);
        assert_eq!(&*unaudited.fingerprint, "");
        assert_eq!(unaudited.class, audited.class);
    }

    #[test]
    fn statements_that_differ_in_values_are_fingerprinted_once() {
        let mut cache = DecisionCache::new(true);
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 77;",
            "select x::float(24) from t",
            "select x::float(53) from t",
            "select 1 +",
        ];
        for sql in texts {
            let verdict = cache.decide(sql, AccessLevel::Read, false, None);
            assert_eq!(
                &*verdict.fingerprint,
                juris_policy::fingerprint(sql).unwrap_or_default(),
                "{sql}"
            );
        }
        // One key for both pgbench statements; the casts have none.
        assert_eq!(cache.fingerprints.as_ref().map(HashMap::len), Some(1));
    }
}
