//! The client handshake: transport security, startup, authentication,
//! authorization to the connection, and the upstream login. Every refusal is
//! a FATAL ErrorResponse with the SQLSTATE PostgreSQL itself would use.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use juris_pgwire::{Authentication, BackendMessage, StartupPacket, TransactionStatus};
use juris_types::{Principal, SessionId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::cancel::{CancelRegistration, CancelTarget};
use crate::handover;
use crate::io::{read_frame, read_startup, send, send_fatal};
use crate::masking::{SessionLabels, SessionMasking};
use crate::recording::{RecordingFailure, SessionRecording};
use crate::relay::{self, SessionInfo};
use crate::transport::{ClientStream, ClientTransport, Rewind};
use crate::upstream::UpstreamTarget;
use crate::{ActiveGrant, GrantLookup, PRE_AUTH_LIMITS, ProxyContext};
use juris_audit::AuditEvent;
use juris_audit::event::{AuthFailure, AuthSuccess, ConnectionRefusal, SessionEnd, SessionStart};
use juris_config::{EffectiveRole, RecordingMode};
use juris_pgwire::handover::HandoverHeader;

/// Startup parameters passed on to the upstream. Anything else is dropped:
/// parameters such as `role`, `session_authorization` or `options` would
/// change privileges before the first statement is ever classified.
const FORWARDED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_read_only",
];

const TLS_RECORD_HANDSHAKE: u8 = 0x16;

/// Serve one client connection until it ends. Never panics on client input;
/// every outcome is logged in the session's span.
pub async fn serve_connection(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    terminate: CancellationToken,
) {
    let session_id = SessionId::random();
    let span = tracing::info_span!("session", id = %session_id, %peer, principal = tracing::field::Empty, connection = tracing::field::Empty);
    async move {
        let _ = tcp.set_nodelay(true);
        let started = std::time::Instant::now();
        let opened = tokio::time::timeout(
            ctx.settings.auth_timeout,
            accept(&ctx, tcp, session_id, peer),
        )
        .await;
        match opened {
            Err(_) => info!("handshake did not finish within the authentication timeout"),
            Ok(None) => {}
            Ok(Some(Opened::Here(accepted))) => {
                run_session(&ctx, *accepted, session_id, started, terminate).await;
            }
            Ok(Some(Opened::Elsewhere(outbound))) => {
                tracing::Span::current().record("connection", outbound.connection.as_str());
                handover::hand_over(&ctx, outbound, peer, session_id, terminate).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Serve a client's session that a node of another region handed over,
/// still encrypted: TLS is terminated here, with this region's certificate.
/// The client gets `cancel_key`, which the relaying node already knows.
pub(crate) async fn serve_handed_over(
    ctx: Arc<ProxyContext>,
    transport: ClientTransport,
    header: HandoverHeader,
    peer: SocketAddr,
    cancel_key: CancelRegistration,
    terminate: CancellationToken,
) {
    let session_id = SessionId::random();
    let span = tracing::info_span!("session", id = %session_id, %peer, via = %format_args!("{}@{}", header.from_node, header.from_region), principal = tracing::field::Empty, connection = tracing::field::Empty);
    async move {
        let started = std::time::Instant::now();
        let opened = tokio::time::timeout(ctx.settings.auth_timeout, async {
            let tls = terminate_tls(&ctx, transport, header.direct_tls).await?;
            authenticate(
                &ctx,
                tls,
                BytesMut::with_capacity(1024),
                session_id,
                peer,
                Some(cancel_key),
            )
            .await
        })
        .await;
        match opened {
            Err(_) => info!("handshake did not finish within the authentication timeout"),
            Ok(None) => {}
            Ok(Some(accepted)) => {
                info!(
                    "session handed over by a node of region {}",
                    header.from_region
                );
                run_session(&ctx, accepted, session_id, started, terminate).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// The relay and the session's end, for a client that passed the handshake.
async fn run_session(
    ctx: &Arc<ProxyContext>,
    accepted: Accepted,
    session_id: SessionId,
    started: std::time::Instant,
    terminate: CancellationToken,
) {
    tracing::Span::current().record("principal", accepted.info.principal.name());
    tracing::Span::current().record("connection", accepted.info.connection.as_str());
    info!(role = %accepted.info.role.role, level = %accepted.info.role.level, "session started");
    let traffic = relay::Traffic::default();
    let _listed = accepted.listed;
    let (ending, statements) = relay::run(
        ctx,
        accepted.client,
        accepted.upstream,
        accepted.info,
        terminate,
        &traffic,
    )
    .await;
    info!(?ending, %traffic, "session ended");
    ctx.audit.record(AuditEvent::SessionEnd(SessionEnd {
        session: session_id.to_string(),
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        statements,
        reason: ending.describe(),
    }));
}

/// A client that passed the handshake, with its upstream ready.
struct Accepted {
    client: ClientStream,
    upstream: relay::Upstream,
    info: SessionInfo,
    /// Lists the session among the node's live sessions until dropped.
    listed: crate::LiveGuard,
}

/// What the first bytes of a connection decided.
enum Opened {
    /// The session is served here.
    Here(Box<Accepted>),
    /// Another region owns the connection the TLS server name asks for.
    Elsewhere(handover::Outbound),
}

/// Terminate the client's TLS here. Direct TLS (PostgreSQL 17) must
/// negotiate ALPN `postgresql`, which stops other protocols' clients being
/// tricked into talking to us.
async fn terminate_tls(
    ctx: &ProxyContext,
    transport: ClientTransport,
    direct_tls: bool,
) -> Option<ClientStream> {
    let tls = ctx
        .tls
        .accept(transport)
        .await
        .map_err(|e| debug!("TLS handshake failed: {e}"))
        .ok()?;
    if direct_tls && tls.get_ref().1.alpn_protocol() != Some(juris_tls::ALPN_POSTGRESQL) {
        info!("direct TLS without ALPN \"postgresql\" refused");
        return None;
    }
    let named = tls
        .get_ref()
        .1
        .server_name()
        .zip(ctx.deployment.directory.as_ref())
        .and_then(|(name, directory)| directory.connection_of(name))
        .map(str::to_ascii_lowercase);
    ctx.metrics.tls_terminated(named.as_deref());
    Some(tls)
}

/// Read the ClientHello and decide where the session is decrypted: here
/// (then terminate TLS), or in the region that owns the connection it names.
async fn open_tls(
    ctx: &ProxyContext,
    mut tcp: TcpStream,
    direct_tls: bool,
) -> Option<Result<ClientStream, handover::Outbound>> {
    let hello = handover::read_client_hello(&mut tcp)
        .await
        .map_err(|e| debug!("no TLS session: {e}"))
        .ok()?;
    match handover::route(ctx, hello.server_name.as_deref()) {
        handover::Route::Local => {
            let transport = ClientTransport::Direct(Rewind::new(hello.bytes, tcp));
            terminate_tls(ctx, transport, direct_tls).await.map(Ok)
        }
        handover::Route::Elsewhere { connection, region } => Some(Err(handover::Outbound {
            tcp,
            hello: hello.bytes,
            connection,
            region,
            direct_tls,
        })),
    }
}

/// Run the handshake. `None` means the connection was dealt with (refused,
/// cancelled, or closed) and nothing more is to be done.
async fn accept(
    ctx: &Arc<ProxyContext>,
    mut tcp: TcpStream,
    session_id: SessionId,
    peer: SocketAddr,
) -> Option<Opened> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let mut buf = BytesMut::with_capacity(1024);
    let opened = if first[0] == TLS_RECORD_HANDSHAKE {
        open_tls(ctx, tcp, true).await?
    } else {
        loop {
            match read_startup(&mut tcp, &mut buf, &PRE_AUTH_LIMITS).await {
                Ok(Some(StartupPacket::SslRequest)) => {
                    if !buf.is_empty() {
                        // Bytes after the SSLRequest would be processed as if
                        // they had come through TLS (CVE-2021-23214's class).
                        let _ = send_fatal(&mut tcp, "08P01", "unexpected data after SSL request")
                            .await;
                        return None;
                    }
                    tcp.write_all(b"S").await.ok()?;
                    break open_tls(ctx, tcp, false).await?;
                }
                Ok(Some(StartupPacket::GssEncRequest)) => {
                    tcp.write_all(b"N").await.ok()?;
                }
                Ok(Some(StartupPacket::CancelRequest {
                    process_id,
                    secret_key,
                })) => {
                    forward_cancel(ctx, process_id, &secret_key, false).await;
                    return None;
                }
                Ok(Some(StartupPacket::Startup { .. })) => {
                    let _ = send_fatal(
                        &mut tcp,
                        "28000",
                        "this Juris gateway accepts only TLS connections: connect with sslmode=require or stronger",
                    )
                    .await;
                    return None;
                }
                Ok(None) => return None,
                Err(e) => {
                    info!("invalid startup packet: {e}");
                    let _ = send_fatal(&mut tcp, "08P01", &format!("invalid startup packet: {e}"))
                        .await;
                    return None;
                }
            }
        }
    };
    match opened {
        Ok(tls) => authenticate(ctx, tls, buf, session_id, peer, None)
            .await
            .map(|accepted| Opened::Here(Box::new(accepted))),
        Err(outbound) => Some(Opened::Elsewhere(outbound)),
    }
}

/// `cancel_key`: the key the session's client will be given, when it was
/// issued before the session opened (a handed-over session's, which the
/// relaying node already knows).
async fn authenticate(
    ctx: &Arc<ProxyContext>,
    mut client: ClientStream,
    mut buf: BytesMut,
    session_id: SessionId,
    peer: SocketAddr,
    cancel_key: Option<CancelRegistration>,
) -> Option<Accepted> {
    buf.clear();
    let parameters = match read_startup(&mut client, &mut buf, &PRE_AUTH_LIMITS).await {
        Ok(Some(StartupPacket::Startup { parameters, .. })) => parameters,
        Ok(Some(StartupPacket::CancelRequest {
            process_id,
            secret_key,
        })) => {
            forward_cancel(ctx, process_id, &secret_key, false).await;
            return None;
        }
        Ok(Some(_)) => {
            let _ = send_fatal(
                &mut client,
                "08P01",
                "unexpected negotiation request inside TLS",
            )
            .await;
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            info!("invalid startup packet: {e}");
            let _ = send_fatal(
                &mut client,
                "08P01",
                &format!("invalid startup packet: {e}"),
            )
            .await;
            return None;
        }
    };
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(user) = parameter("user") else {
        let _ = send_fatal(
            &mut client,
            "28000",
            "no user name specified in startup packet",
        )
        .await;
        return None;
    };
    if parameter("replication").is_some_and(|v| v != "false" && v != "off" && v != "0") {
        let _ = send_fatal(
            &mut client,
            "0A000",
            "replication connections are not supported through Juris",
        )
        .await;
        return None;
    }
    let connection = parameter("database").unwrap_or(user).to_string();
    if let Some(named) = ctx.deployment.directory.as_ref().and_then(|d| {
        let name = client.get_ref().1.server_name()?;
        d.connection_of(name).map(str::to_ascii_lowercase)
    }) && named != connection
    {
        // The name routed (and verified) the session; the startup packet
        // may not switch to another connection behind it.
        let _ = send_fatal(
            &mut client,
            "08004",
            &format!(
                "the TLS server name asks for connection \"{named}\" but the startup packet for \"{connection}\": use dbname={named}"
            ),
        )
        .await;
        return None;
    }
    let session = session_id.to_string();
    ctx.audit.record(AuditEvent::SessionStart(SessionStart {
        session: session.clone(),
        connection: connection.clone(),
        client: peer.to_string(),
        protocol: "postgres".into(),
    }));
    let refuse = |reason: String| {
        ctx.audit
            .record(AuditEvent::ConnectionRefusal(ConnectionRefusal {
                session: session.clone(),
                connection: connection.clone(),
                client: peer.to_string(),
                reason,
                owning_region: None,
            }));
    };

    send(
        &mut client,
        &[BackendMessage::Authentication(
            Authentication::CleartextPassword,
        )],
    )
    .await
    .ok()?;
    let token = match read_frame(&mut client, &mut buf, &PRE_AUTH_LIMITS).await {
        Ok(Some(frame)) if frame.tag == b'p' => match juris_pgwire::decode_password(&frame.body) {
            Ok(token) => token,
            Err(e) => {
                let _ = send_fatal(
                    &mut client,
                    "08P01",
                    &format!("invalid password message: {e}"),
                )
                .await;
                return None;
            }
        },
        Ok(Some(_)) => {
            let _ = send_fatal(&mut client, "08P01", "expected a password message").await;
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            let _ = send_fatal(
                &mut client,
                "08P01",
                &format!("invalid password message: {e}"),
            )
            .await;
            return None;
        }
    };
    if token.is_empty() {
        let _ = send_fatal(
            &mut client,
            "28000",
            "no token supplied: use your identity provider access token as the password (see `juris token`)",
        )
        .await;
        return None;
    }
    let principal: Principal = match ctx.authenticator.authenticate(&token).await {
        Ok(principal) => principal,
        Err(reason) => {
            info!(user, %connection, %reason, "authentication failed");
            ctx.audit.record(AuditEvent::AuthFailure(AuthFailure {
                session: session.clone(),
                connection: connection.clone(),
                client: peer.to_string(),
                reason: reason.clone(),
            }));
            let _ = send_fatal(
                &mut client,
                "28000",
                &format!("authentication failed: {reason}"),
            )
            .await;
            return None;
        }
    };
    drop(token);

    if let Some(foreign) = ctx
        .deployment
        .connection(&connection)
        .filter(|c| c.region != ctx.deployment.node.region)
    {
        // Residency: this node never decrypts, records or relays another
        // region's sessions; it says where the connection lives.
        let region = foreign.region.clone();
        let endpoint = ctx
            .deployment
            .region(&region)
            .and_then(|r| r.endpoint.clone());
        info!(principal = principal.name(), %connection, owning_region = %region, "connection belongs to another region");
        ctx.audit
            .record(AuditEvent::ConnectionRefusal(ConnectionRefusal {
                session: session.clone(),
                connection: connection.clone(),
                client: peer.to_string(),
                reason: format!("connection belongs to region {region}"),
                owning_region: Some(region.clone()),
            }));
        let to = endpoint
            .map(|e| format!("; connect to {e}"))
            .unwrap_or_default();
        let _ = send_fatal(
            &mut client,
            "08004",
            &format!(
                "connection \"{connection}\" belongs to region {region}, and this node serves region {}{to}",
                ctx.deployment.node.region
            ),
        )
        .await;
        return None;
    }
    let Some(target) = ctx.targets.get(&connection).cloned() else {
        info!(principal = principal.name(), %connection, "unknown connection");
        refuse("unknown connection".into());
        let _ = send_fatal(
            &mut client,
            "3D000",
            &format!("connection \"{connection}\" does not exist"),
        )
        .await;
        return None;
    };
    let (role, grant) = match resolve_access(ctx, &principal, &connection) {
        Ok(access) => access,
        Err(refusal) => {
            info!(principal = principal.name(), %connection, reason = %refusal.audit, "access refused");
            refuse(refusal.audit);
            let _ = send_fatal(&mut client, refusal.code, &refusal.message).await;
            return None;
        }
    };

    let forwarded: Vec<(String, String)> = parameters
        .iter()
        .filter(|(k, _)| FORWARDED_PARAMETERS.contains(&k.as_str()))
        .cloned()
        .collect();
    let upstream = match tokio::time::timeout(
        ctx.settings.upstream_connect_timeout,
        target.connect(&forwarded, &ctx.settings.limits),
    )
    .await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            warn!(%connection, error = ?e, "upstream unavailable");
            refuse(format!("upstream unavailable: {e}"));
            let _ = send_fatal(
                &mut client,
                "08006",
                &format!("connection \"{connection}\" is unavailable: {e}"),
            )
            .await;
            return None;
        }
        Err(_) => {
            warn!(%connection, "upstream did not answer in time");
            refuse("upstream did not answer in time".into());
            let _ = send_fatal(
                &mut client,
                "08006",
                &format!(
                    "connection \"{connection}\" is unavailable: the upstream server did not answer within {} s",
                    ctx.settings.upstream_connect_timeout.as_secs_f32()
                ),
            )
            .await;
            return None;
        }
    };

    let exempt = ctx
        .deployment
        .masking_exempt(&principal.groups, &connection);
    let connection_masking = ctx.masking.get(&connection).filter(|_| !exempt);
    let recording = match start_recording(
        ctx,
        session_id,
        &principal,
        &connection,
        peer,
        connection_masking.map(|m| m.masker.clone()),
    )
    .await
    {
        Ok(recording) => recording,
        Err(failure) => {
            info!(%connection, reason = %failure.message, "session refused: it cannot be recorded");
            refuse(failure.message.clone());
            let _ = send_fatal(&mut client, failure.sqlstate, &failure.message).await;
            return None;
        }
    };

    let upstream_key = crate::cancel::UpstreamKey {
        target: target.clone(),
        process_id: upstream.process_id,
        secret: upstream.secret_key.clone(),
    };
    let registration = match cancel_key {
        Some(reserved) => {
            reserved.bind(upstream_key);
            reserved
        }
        None => ctx.cancels.register(upstream_key),
    };
    let mut greeting = BytesMut::new();
    BackendMessage::Authentication(Authentication::Ok).encode(&mut greeting);
    for frame in &upstream.startup_frames {
        frame.encode(&mut greeting);
    }
    BackendMessage::BackendKeyData {
        process_id: registration.key.process_id,
        secret_key: bytes::Bytes::copy_from_slice(&registration.key.secret),
    }
    .encode(&mut greeting);
    BackendMessage::ReadyForQuery {
        status: TransactionStatus::Idle,
    }
    .encode(&mut greeting);
    client.write_all(&greeting).await.ok()?;
    client.flush().await.ok()?;

    ctx.audit.record(AuditEvent::AuthSuccess(AuthSuccess {
        session: session.clone(),
        principal: principal.name().to_string(),
        subject: principal.subject.clone(),
        groups: principal.groups.clone(),
        connection: connection.clone(),
        level: role.level.to_string(),
        role: role.role.clone(),
        grant: grant.as_ref().map(|g| g.id.clone()),
    }));
    if exempt && ctx.masking.contains_key(&connection) {
        info!(principal = principal.name(), %connection, "masking exemption applies");
    }
    let masking = connection_masking.map(|m| {
        SessionMasking::new(
            m.masker.clone(),
            m.catalog.clone(),
            ctx.audit.clone(),
            SessionLabels {
                session: session_id,
                principal: principal.name().to_string(),
                connection: connection.clone(),
            },
        )
    });
    let catalog = ctx.masking.get(&connection).map(|m| m.catalog.clone());
    let listed = ctx.live.register(juris_types::LiveSession {
        session: session_id,
        principal: principal.name().to_string(),
        issuer: principal.issuer.clone(),
        subject: principal.subject.clone(),
        connection: connection.clone(),
        role: role.role.clone(),
        grant: grant.as_ref().map(|g| g.id.clone()),
        client: peer.to_string(),
        started_ms: unix_ms(),
    });

    Some(Accepted {
        listed,
        client,
        upstream: relay::Upstream {
            stream: upstream.stream,
            leftover: upstream.leftover,
            _cancel: registration,
        },
        info: SessionInfo {
            session: session_id,
            principal,
            connection,
            role,
            client_leftover: buf,
            masking,
            catalog,
            grant_ended: grant
                .and_then(|g| ctx.grants.as_ref().map(|a| relay::GrantEnded(a.ended(&g)))),
            recording,
        },
    })
}

/// Wall-clock now, Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Start the session's recording under the connection's mode.
async fn start_recording(
    ctx: &ProxyContext,
    session_id: SessionId,
    principal: &Principal,
    connection: &str,
    peer: SocketAddr,
    masker: Option<Arc<juris_mask::Masker>>,
) -> Result<Option<SessionRecording>, RecordingFailure> {
    let config = ctx.deployment.connection(connection);
    let mode = config.map(|c| c.recording).unwrap_or_default();
    let region = config.map_or(ctx.deployment.node.region.as_str(), |c| c.region.as_str());
    if mode == RecordingMode::Off {
        return Ok(None);
    }
    let Some(spool) = &ctx.recordings else {
        return match mode {
            RecordingMode::BestEffort | RecordingMode::Off => Ok(None),
            RecordingMode::Strict => Err(RecordingFailure {
                sqlstate: "58030",
                message: format!(
                    "connection \"{connection}\" requires recording and this node has no recording spool"
                ),
            }),
        };
    };
    SessionRecording::start(
        spool,
        juris_record::SessionInfo::new(
            session_id,
            principal,
            connection,
            region,
            Some(peer),
            unix_ms(),
        ),
        mode,
        masker,
        ctx.audit.clone(),
    )
    .await
}

/// Why a principal may not open a session, in the client's and the audit's words.
struct AccessRefusal {
    code: &'static str,
    message: String,
    audit: String,
}

/// The role a session runs with: the strongest of the principal's standing
/// roles and of the `jit` roles for which the control plane holds an active
/// grant. A session that rides on a grant remembers it, so it can be ended
/// when the grant ends.
fn resolve_access(
    ctx: &ProxyContext,
    principal: &Principal,
    connection: &str,
) -> Result<(EffectiveRole, Option<ActiveGrant>), AccessRefusal> {
    let mut best: Option<(EffectiveRole, Option<ActiveGrant>)> = ctx
        .deployment
        .effective_role(&principal.groups, connection)
        .map(|role| (role, None));
    let mut requestable = Vec::new();
    let mut unavailable = None;
    for jit in ctx.deployment.jit_roles(&principal.groups, connection) {
        if best
            .as_ref()
            .is_some_and(|(role, _)| role.level >= jit.level)
        {
            continue;
        }
        let lookup = match &ctx.grants {
            Some(grants) => grants.lookup(principal, connection, &jit.name),
            None => GrantLookup::Unavailable(
                "this node has no control plane ([node.cluster] is not configured)".into(),
            ),
        };
        match lookup {
            GrantLookup::Active(grant) => {
                best = Some((
                    EffectiveRole {
                        role: jit.name.clone(),
                        level: jit.level,
                    },
                    Some(grant),
                ));
            }
            GrantLookup::NoGrant => requestable.push(jit.name.as_str()),
            GrantLookup::Unavailable(reason) => {
                requestable.push(jit.name.as_str());
                unavailable = Some(reason);
            }
        }
    }
    if let Some(access) = best {
        return Ok(access);
    }
    let name = principal.name();
    if let Some(reason) = unavailable {
        return Err(AccessRefusal {
            code: "57P03",
            message: format!(
                "cannot check grants for \"{name}\" on connection \"{connection}\": {reason}"
            ),
            audit: format!("grants cannot be checked: {reason}"),
        });
    }
    match requestable.first() {
        Some(role) => Err(AccessRefusal {
            code: "42501",
            message: format!(
                "permission denied: \"{name}\" holds no active grant on connection \"{connection}\"; request one with: juris access request {connection} --role {role} --for 1h --reason \"<why>\""
            ),
            audit: format!("{name} holds no active grant on the connection"),
        }),
        None => Err(AccessRefusal {
            code: "42501",
            message: format!(
                "permission denied: \"{name}\" holds no role on connection \"{connection}\""
            ),
            audit: format!("{name} holds no role on the connection"),
        }),
    }
}

/// Pass a client's cancel request on: to the upstream backend of a session
/// served here; for a session this node hands over to another region, to
/// the node serving it; for a key this node does not know, to the node
/// that issued it (see [`crate::cancel::KeyOrigin`]). A request that came
/// over a link is only acted on here: links never chain.
pub(crate) async fn forward_cancel(
    ctx: &ProxyContext,
    process_id: i32,
    secret: &[u8],
    from_link: bool,
) {
    match ctx.cancels.lookup(process_id, secret) {
        Some(CancelTarget::Relayed { region, endpoint }) if !from_link => {
            let key = crate::cancel::ClientKey {
                process_id,
                secret: secret.try_into().unwrap_or_default(),
            };
            crate::handover::relay_cancel(ctx, &region, &endpoint, key).await;
        }
        Some(CancelTarget::Upstream(key)) => {
            let target: Arc<UpstreamTarget> = key.target.clone();
            if let Err(e) = target.send_cancel(key.process_id, key.secret).await {
                warn!(connection = %target.connection, "could not forward cancel request: {e}");
            } else {
                info!(connection = %target.connection, "cancel request forwarded");
            }
        }
        None if !from_link => {
            // Reached the wrong node (a load balancer, geo-DNS): pass it,
            // once, to the node that issued the key, if it is one we know.
            let key = crate::cancel::ClientKey {
                process_id,
                secret: secret.try_into().unwrap_or_default(),
            };
            let Some((region, endpoint)) =
                ctx.cancels.issuer_elsewhere(process_id, &ctx.deployment)
            else {
                info!("cancel request with an unknown key ignored");
                return;
            };
            let Some(_permit) = ctx.cancels.forwarding_permit() else {
                warn!("too many cancel requests being passed on; one was dropped");
                return;
            };
            crate::handover::relay_cancel(ctx, &region, &endpoint, key).await;
        }
        Some(CancelTarget::Relayed { .. } | CancelTarget::Reserved) | None => {
            info!("cancel request with an unknown key ignored")
        }
    }
}
