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

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BytesMut};
use juris_config::EffectiveRole;
use juris_pgwire::{BackendMessage, ErrorFields, Frame, FrontendMessage};
use juris_policy::Decision;
use juris_types::{AccessLevel, Principal, StatementClass};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::ProxyContext;
use crate::cancel::CancelRegistration;
use crate::io::BoxedStream;

const READ_CHUNK: usize = 64 * 1024;
const MARKER_PREFIX: &str = "juris_denied_";

/// Who the session is for and what it may do.
#[derive(Debug)]
pub struct SessionInfo {
    pub principal: Principal,
    pub connection: String,
    pub role: EffectiveRole,
    /// Client bytes read during the handshake but not yet consumed.
    pub client_leftover: BytesMut,
}

/// The authenticated upstream half of a session.
pub struct Upstream {
    pub stream: BoxedStream,
    pub leftover: BytesMut,
    /// Keeps the session's cancel key alive exactly as long as the relay.
    pub _cancel: CancelRegistration,
}

/// How a session ended.
#[derive(Debug)]
pub enum Ending {
    ClientTerminated,
    ClientClosed,
    UpstreamClosed,
    ShutDown,
    ProtocolViolation(String),
    Io(String),
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

/// Relay until one side ends or the node terminates the session.
pub async fn run(
    ctx: &ProxyContext,
    client: TlsStream<TcpStream>,
    upstream: Upstream,
    info: SessionInfo,
    terminate: CancellationToken,
) -> Ending {
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
        principal: _,
        connection,
        role,
        client_leftover,
    } = info;

    // The two directions borrow the halves; the block ends those borrows so
    // the halves can be closed politely afterwards.
    let ending = {
        let to_upstream = client_to_upstream(
            ctx,
            &mut client_rd,
            &mut upstream_wr,
            client_leftover,
            &denials,
            &role,
            &connection,
        );
        let to_client = upstream_to_client(
            ctx,
            &mut upstream_rd,
            &mut client_wr,
            upstream_leftover,
            &denials,
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
    ending
}

async fn client_to_upstream<R, W>(
    ctx: &ProxyContext,
    client: &mut R,
    upstream: &mut W,
    mut buf: BytesMut,
    denials: &Denials,
    role: &EffectiveRole,
    connection: &str,
) -> Ending
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let limits = &ctx.settings.limits;
    let mut batches_sent: u64 = 0;
    let mut next_sequence: u64 = 0;
    let mut cache = DecisionCache::default();
    loop {
        let mut forwarded_upto = 0;
        let mut position = 0;
        loop {
            let (tag, total) = match juris_pgwire::peek_frame(&buf[position..], limits) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Ending::ProtocolViolation(e.to_string()),
            };
            if buf.len() - position < total {
                buf.reserve(total - (buf.len() - position));
                break;
            }
            let frame_bytes = &buf[position..position + total];
            match tag {
                b'Q' | b'P' | b'F' => {
                    let frame = Frame {
                        tag,
                        body: bytes::Bytes::copy_from_slice(&frame_bytes[5..]),
                    };
                    let decision = match inspect(&frame, role.level, &mut cache) {
                        Ok(decision) => decision,
                        Err(reason) => return Ending::ProtocolViolation(reason),
                    };
                    if let Some((class, summary)) = decision {
                        let sequence = next_sequence;
                        next_sequence += 1;
                        info!(class = %class, statement = summary, "statement denied");
                        denials.push(Denial {
                            sequence,
                            batch: batches_sent,
                            error: denial_error(role, class, summary, connection),
                        });
                        let mut replacement = BytesMut::new();
                        let sql = format!("{}{sequence}", denials.marker);
                        match tag {
                            b'P' => {
                                let name = match FrontendMessage::decode(&frame) {
                                    Ok(FrontendMessage::Parse { name, .. }) => name,
                                    _ => String::new(),
                                };
                                FrontendMessage::Parse {
                                    name,
                                    sql,
                                    param_types: Vec::new(),
                                }
                                .encode(&mut replacement);
                            }
                            _ => FrontendMessage::Query { sql }.encode(&mut replacement),
                        }
                        if let Err(e) =
                            write_parts(upstream, &buf[forwarded_upto..position], &replacement)
                                .await
                        {
                            return Ending::Io(e.to_string());
                        }
                        forwarded_upto = position + total;
                    }
                    if tag != b'P' {
                        batches_sent += 1;
                    }
                }
                b'S' => batches_sent += 1,
                b'X' => {
                    let _ = upstream
                        .write_all(&buf[forwarded_upto..position + total])
                        .await;
                    return Ending::ClientTerminated;
                }
                _ => {}
            }
            position += total;
        }
        if forwarded_upto < position
            && let Err(e) = upstream.write_all(&buf[forwarded_upto..position]).await
        {
            return Ending::Io(e.to_string());
        }
        buf.advance(position);
        // TLS may hold encrypted bytes back until flushed.
        if let Err(e) = upstream.flush().await {
            return Ending::Io(e.to_string());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) => return Ending::ClientClosed,
            Ok(_) => {}
            Err(e) => return Ending::Io(e.to_string()),
        }
    }
}

async fn write_parts<W: AsyncWrite + Unpin + ?Sized>(
    out: &mut W,
    first: &[u8],
    second: &[u8],
) -> std::io::Result<()> {
    if !first.is_empty() {
        out.write_all(first).await?;
    }
    out.write_all(second).await
}

/// Verdicts by SQL text, so a statement parsed again and again (an unnamed
/// statement per transaction, as `pgbench -M extended` does) is classified
/// once. Bounded: cleared when full, which only costs re-parsing.
#[derive(Default)]
struct DecisionCache {
    verdicts: HashMap<String, Verdict>,
}

type Verdict = Option<(StatementClass, &'static str)>;

const DECISION_CACHE_ENTRIES: usize = 512;

impl DecisionCache {
    fn decide(&mut self, sql: String, level: AccessLevel) -> Verdict {
        if let Some(verdict) = self.verdicts.get(&sql) {
            return *verdict;
        }
        let statements = juris_policy::classify(&sql);
        let verdict = match juris_policy::authorize(level, &statements) {
            Decision::Allow => None,
            Decision::Deny { class, summary } => Some((class, summary)),
        };
        if self.verdicts.len() >= DECISION_CACHE_ENTRIES {
            self.verdicts.clear();
        }
        self.verdicts.insert(sql, verdict);
        verdict
    }
}

/// Decide on a SQL-carrying frame: `None` to forward, `Some` to deny.
fn inspect(
    frame: &Frame,
    level: AccessLevel,
    cache: &mut DecisionCache,
) -> Result<Verdict, String> {
    let sql = match FrontendMessage::decode(frame).map_err(|e| format!("invalid message: {e}"))? {
        FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => sql,
        // The fast-path interface calls any function by OID, bypassing SQL:
        // only administrators may use it.
        FrontendMessage::FunctionCall { .. } => {
            return Ok((level < AccessLevel::Admin)
                .then_some((StatementClass::Administration, "fast-path function call")));
        }
        _ => return Ok(None),
    };
    Ok(cache.decide(sql, level))
}

fn denial_error(
    role: &EffectiveRole,
    class: StatementClass,
    summary: &str,
    connection: &str,
) -> ErrorFields {
    ErrorFields::new(
        "ERROR",
        "42501",
        format!(
            "permission denied: role \"{}\" ({} access) may not run {} statements ({summary}) on connection \"{connection}\"",
            role.role, role.level, class
        ),
    )
}

async fn upstream_to_client<R, W>(
    ctx: &ProxyContext,
    upstream: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    denials: &Denials,
    end: oneshot::Receiver<(&'static str, String)>,
    terminate: &CancellationToken,
) -> Ending
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let limits = &ctx.settings.limits;
    let mut batches_completed: u64 = 0;
    let mut end = Some(end);
    loop {
        let mut forwarded_upto = 0;
        let mut position = 0;
        loop {
            let (tag, total) = match juris_pgwire::peek_frame(&buf[position..], limits) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Ending::Io(format!("upstream sent an invalid message: {e}")),
            };
            if buf.len() - position < total {
                buf.reserve(total - (buf.len() - position));
                break;
            }
            match tag {
                b'E' if !denials.is_empty() => {
                    let frame = Frame {
                        tag,
                        body: bytes::Bytes::copy_from_slice(&buf[position + 5..position + total]),
                    };
                    if let Ok(BackendMessage::ErrorResponse(fields)) =
                        BackendMessage::decode(&frame)
                        && let Some(replacement) = denials.take_for(&fields)
                    {
                        let mut out = BytesMut::new();
                        BackendMessage::ErrorResponse(replacement).encode(&mut out);
                        if let Err(e) =
                            write_parts(client, &buf[forwarded_upto..position], &out).await
                        {
                            return Ending::Io(e.to_string());
                        }
                        forwarded_upto = position + total;
                    }
                }
                b'Z' => {
                    batches_completed += 1;
                    if !denials.is_empty() {
                        denials.retire(batches_completed);
                    }
                }
                _ => {}
            }
            position += total;
        }
        if forwarded_upto < position
            && let Err(e) = client.write_all(&buf[forwarded_upto..position]).await
        {
            return Ending::Io(e.to_string());
        }
        buf.advance(position);
        if let Err(e) = client.flush().await {
            return Ending::Io(e.to_string());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            reason = async {
                match end.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((code, message)) = reason {
                    let mut out = BytesMut::new();
                    BackendMessage::ErrorResponse(ErrorFields::new("FATAL", code, message.clone())).encode(&mut out);
                    let _ = client.write_all(&out).await;
                    let _ = client.flush().await;
                    return Ending::ProtocolViolation(message);
                }
                // The other direction ended without a reason: keep relaying
                // until the upstream closes.
                end = None;
            }
            _ = terminate.cancelled() => {
                debug!("terminating session for shutdown");
                let mut out = BytesMut::new();
                BackendMessage::ErrorResponse(ErrorFields::new(
                    "FATAL",
                    "57P01",
                    "terminating connection because the Juris node is shutting down",
                ))
                .encode(&mut out);
                let _ = client.write_all(&out).await;
                let _ = client.flush().await;
                return Ending::ShutDown;
            }
            read = upstream.read_buf(&mut buf) => match read {
                Ok(0) => return Ending::UpstreamClosed,
                Ok(_) => {}
                Err(e) => return Ending::Io(e.to_string()),
            }
        }
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
    fn decisions_are_cached_and_the_cache_stays_bounded() {
        let mut cache = DecisionCache::default();
        assert_eq!(cache.decide("select 1".into(), AccessLevel::Read), None);
        let denied = cache.decide("drop table t".into(), AccessLevel::Read);
        assert_eq!(denied.map(|(class, _)| class), Some(StatementClass::Ddl));
        for i in 0..(DECISION_CACHE_ENTRIES * 2) {
            cache.decide(format!("select {i}"), AccessLevel::Read);
        }
        assert!(cache.verdicts.len() <= DECISION_CACHE_ENTRIES);
    }
}
