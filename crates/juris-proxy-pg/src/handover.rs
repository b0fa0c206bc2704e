//! Sessions whose connection another region owns (DESIGN §2, invariant 1).
//!
//! A client reaches whichever node geo-DNS gives it. Before decrypting
//! anything, the node reads the client's TLS ClientHello and its server
//! name, `<connection>.<directory domain>`. If another region owns that
//! connection, the node never terminates the client's TLS: it opens a
//! *handover link* to a node of the owning region (mutual TLS between
//! nodes, the peer verified as `<region>.relay.juris`), sends a short
//! [`HandoverHeader`], and forwards the client's bytes both ways. The
//! client's TLS session ends on the owning node, whose certificate is the
//! only one that covers the name.
//!
//! Every forwarded byte passes a [`TlsRecordScanner`]: the relaying node
//! forwards TLS records and nothing else (a stream that stops being TLS is
//! cut), and counts them, which is how a test proves the node relayed
//! ciphertext only.
//!
//! The owning node answers a link with the cancel key it will give the
//! client; the relaying node keeps it while it forwards the session, so a
//! client's plaintext CancelRequest, which reaches the node the client
//! connected to, goes on to the serving node over a cancel link.
//!
//! If no node of the owning region answers, the client is told so: the node
//! completes the handshake with its own certificate (which does not cover
//! the name, so a verifying client stops there) and sends a FATAL naming
//! the region, without reading a byte of the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use juris_audit::AuditEvent;
use juris_audit::event::ConnectionRefusal;
use juris_pgwire::handover::{
    CANCEL_KEY_LEN, CANCEL_KEY_MAGIC, CANCEL_LINK_MAGIC, ClientHelloProgress, HANDOVER_MAX_LEN,
    HandoverHeader, LinkCancelKey, LinkOpening, TLS_RECORD_HEADER_LEN, TlsRecordScanner,
    client_hello_progress,
};
use juris_types::SessionId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, warn};

use crate::ProxyContext;
use crate::forwarders::Forwarders;
use crate::io::send_fatal;
use crate::metrics::ProxyMetrics;
use crate::transport::{ClientTransport, Rewind};

/// Most bytes of ClientHello records a node buffers to find the server
/// name (a hello with post-quantum key shares is under 2 KiB).
const HELLO_LIMIT: usize = 32 * 1024;

/// The node-to-node side of hand-overs.
pub struct HandoverLinks {
    pub tls: juris_tls::MutualTls,
    /// Time one node of the owning region has to accept a link.
    pub connect_timeout: Duration,
    /// Where sessions handed over from here are forwarded.
    pub forwarders: Forwarders,
}

/// The client's first TLS records, as read, and the server name in them.
pub(crate) struct ClientHello {
    pub bytes: Vec<u8>,
    pub server_name: Option<String>,
}

/// Read whole handshake records until rustls can parse the ClientHello.
/// `Err` carries a reason for the log; the connection is then dropped.
pub(crate) async fn read_client_hello(tcp: &mut TcpStream) -> Result<ClientHello, String> {
    let mut bytes = Vec::with_capacity(2048);
    let mut want_record = false;
    loop {
        let need = match client_hello_progress(&bytes, HELLO_LIMIT).map_err(|e| e.to_string())? {
            ClientHelloProgress::NeedMore(n) => n,
            ClientHelloProgress::Records if want_record => TLS_RECORD_HEADER_LEN,
            ClientHelloProgress::Records => {
                let mut acceptor = tokio_rustls::rustls::server::Acceptor::default();
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    if acceptor.read_tls(&mut rest).map_err(|e| e.to_string())? == 0 {
                        break;
                    }
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => {
                        let server_name = accepted.client_hello().server_name().map(str::to_owned);
                        return Ok(ClientHello { bytes, server_name });
                    }
                    // The hello spans another record.
                    Ok(None) => {
                        want_record = true;
                        continue;
                    }
                    Err((e, _alert)) => return Err(format!("invalid TLS ClientHello: {e}")),
                }
            }
        };
        want_record = false;
        let start = bytes.len();
        bytes.resize(start + need, 0);
        tcp.read_exact(&mut bytes[start..])
            .await
            .map_err(|e| format!("client closed during its TLS hello: {e}"))?;
    }
}

/// Where a session is decrypted.
pub(crate) enum Route {
    /// Here.
    Local,
    /// On a node of `region`, which owns `connection`.
    Elsewhere { connection: String, region: String },
}

/// Decide from the TLS server name. A name outside the directory's domain,
/// no name, or an unknown connection stay local: the startup packet then
/// decides, and a foreign connection named only there is refused with the
/// owning region's endpoint.
pub(crate) fn route(ctx: &ProxyContext, server_name: Option<&str>) -> Route {
    let (Some(directory), Some(name)) = (&ctx.deployment.directory, server_name) else {
        return Route::Local;
    };
    let Some(label) = directory.connection_of(name) else {
        return Route::Local;
    };
    match ctx.deployment.connection(&label.to_ascii_lowercase()) {
        Some(c) if c.region != ctx.deployment.node.region => Route::Elsewhere {
            connection: c.name.clone(),
            region: c.region.clone(),
        },
        _ => Route::Local,
    }
}

/// A session to hand over, with the bytes read from the client so far.
pub(crate) struct Outbound {
    pub tcp: TcpStream,
    pub hello: Vec<u8>,
    pub connection: String,
    pub region: String,
    pub direct_tls: bool,
}

/// Hand `out` to a node of its region and forward until either side ends
/// or the node terminates, on one of the [`Forwarders`]. Runs outside the
/// authentication timeout: the client authenticates to the owning node, on
/// its clock.
pub(crate) async fn hand_over(
    ctx: &Arc<ProxyContext>,
    out: Outbound,
    peer: SocketAddr,
    session: SessionId,
    terminate: CancellationToken,
) {
    let Some(links) = &ctx.handover else {
        return relay_session(ctx, out, peer, session, terminate).await;
    };
    // The socket moves to the forwarder's own event loop.
    let tcp = match out.tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => return warn!("cannot hand the client's socket to a forwarder: {e}"),
    };
    let Outbound {
        hello,
        connection,
        region,
        direct_tls,
        ..
    } = out;
    let ctx = Arc::clone(ctx);
    let forwarding = async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => {
                let out = Outbound {
                    tcp,
                    hello,
                    connection,
                    region,
                    direct_tls,
                };
                relay_session(&ctx, out, peer, session, terminate).await;
            }
            Err(e) => warn!("a forwarder cannot take the client's socket: {e}"),
        }
    };
    let task = AbortOnDropHandle::new(
        links
            .forwarders
            .spawn(forwarding.instrument(tracing::Span::current())),
    );
    if let Err(e) = task.await {
        warn!("a handed-over session's forwarding task failed: {e}");
    }
}

/// [`hand_over`] on whichever runtime runs it.
async fn relay_session(
    ctx: &Arc<ProxyContext>,
    out: Outbound,
    peer: SocketAddr,
    session: SessionId,
    terminate: CancellationToken,
) {
    let Outbound {
        mut tcp,
        hello,
        connection,
        region,
        direct_tls,
    } = out;
    let header = HandoverHeader {
        client_addr: peer.to_string(),
        from_node: ctx.deployment.node.id.clone(),
        from_region: ctx.deployment.node.region.clone(),
        connection: connection.clone(),
        direct_tls,
    };
    let (link, endpoint, cancel_key) = match dial(ctx, &region, &header, &hello).await {
        Ok(dialed) => dialed,
        Err(tried) => {
            ProxyMetrics::add(&ctx.metrics.handovers_unreachable, 1);
            warn!(%connection, owning_region = %region, %tried, "no node of the owning region could take the session");
            ctx.audit
                .record(AuditEvent::ConnectionRefusal(ConnectionRefusal {
                    session: session.to_string(),
                    connection: connection.clone(),
                    client: peer.to_string(),
                    reason: format!("owning region {region} unreachable"),
                    owning_region: Some(region.clone()),
                }));
            let message = format!(
                "connection \"{connection}\" belongs to region {region}, and no node of region {region} can be reached now; try again later"
            );
            refuse_inside_tls(&ctx.tls, tcp, hello, &message).await;
            return;
        }
    };
    ProxyMetrics::add(&ctx.metrics.handovers_out, 1);
    let relayed_cancel_key = ctx.cancels.relay(cancel_key, &region, &endpoint);
    if relayed_cancel_key.is_none() {
        warn!(%connection, "the owning node's cancel key is in use here; the client cannot cancel through this node");
    }
    let metrics = &ctx.metrics;
    // The hello went out with the header; count its records too.
    let mut to_region = TlsRecordScanner::default();
    if let Ok(records) = to_region.feed(&hello) {
        ProxyMetrics::add(&metrics.handover_records_to_region, records);
        ProxyMetrics::add(&metrics.handover_bytes_to_region, hello.len() as u64);
    }
    info!(%connection, owning_region = %region, "session handed over, still encrypted, to the owning region");
    let (client_rd, client_wr) = tcp.split();
    let (link_rd, link_wr) = tokio::io::split(link);
    let forwarding = async {
        let (up, down) = tokio::join!(
            forward_records(
                client_rd,
                link_wr,
                to_region,
                &metrics.handover_records_to_region,
                &metrics.handover_bytes_to_region,
            ),
            forward_records(
                link_rd,
                client_wr,
                TlsRecordScanner::default(),
                &metrics.handover_records_to_client,
                &metrics.handover_bytes_to_client,
            ),
        );
        for (direction, result) in [("to the region", up), ("to the client", down)] {
            if let Err(e) = result {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    ProxyMetrics::add(&metrics.handovers_cut, 1);
                    warn!(%connection, "handed-over stream {direction} cut: {e}");
                } else {
                    debug!(%connection, "handed-over stream {direction} ended: {e}");
                }
            }
        }
    };
    tokio::select! {
        () = forwarding => info!(%connection, "handed-over session ended"),
        () = terminate.cancelled() => info!(%connection, "handed-over session ended by node shutdown"),
    }
}

type Link = tokio_rustls::client::TlsStream<TcpStream>;

/// Open a link to the first node of `region` that accepts one, send the
/// header and the client's hello, and read the node's answer. Returns the
/// link, the endpoint and the client's cancel key; `Err` lists what was
/// tried.
async fn dial(
    ctx: &ProxyContext,
    region: &str,
    header: &HandoverHeader,
    hello: &[u8],
) -> Result<(Link, String, LinkCancelKey), String> {
    let endpoints = ctx
        .deployment
        .region(region)
        .map(|r| r.relay.clone())
        .unwrap_or_default();
    if endpoints.is_empty() {
        return Err(format!("region {region} lists no relay endpoints"));
    }
    let mut opening = header
        .encode()
        .ok_or_else(|| "handover header field too long".to_string())?;
    opening.extend_from_slice(hello);
    // Spread sessions over the region's nodes; fall through on failure.
    let first = rand::random_range(0..endpoints.len());
    let mut tried = Vec::new();
    for endpoint in endpoints.iter().cycle().skip(first).take(endpoints.len()) {
        let attempt = async {
            let mut link = connect_link(ctx, region, endpoint, &opening).await?;
            let mut answer = [0u8; CANCEL_KEY_LEN];
            link.read_exact(&mut answer).await?;
            let key = LinkCancelKey::decode(CANCEL_KEY_MAGIC, &answer)
                .ok()
                .flatten()
                .ok_or_else(|| std::io::Error::other("the node's answer is not a cancel key"))?;
            Ok::<_, std::io::Error>((link, key))
        };
        match tokio::time::timeout(link_timeout(ctx), attempt).await {
            Ok(Ok((link, key))) => return Ok((link, endpoint.clone(), key)),
            Ok(Err(e)) => tried.push(format!("{endpoint}: {e}")),
            Err(_) => tried.push(format!("{endpoint}: timed out")),
        }
    }
    Err(tried.join("; "))
}

fn link_timeout(ctx: &ProxyContext) -> Duration {
    ctx.handover
        .as_ref()
        .map_or(Duration::from_secs(3), |links| links.connect_timeout)
}

/// Mutual TLS to `endpoint`, a node of `region`, and `opening` sent.
async fn connect_link(
    ctx: &ProxyContext,
    region: &str,
    endpoint: &str,
    opening: &[u8],
) -> std::io::Result<Link> {
    let Some(links) = &ctx.handover else {
        return Err(std::io::Error::other(
            "this node has no [node.relay] configured",
        ));
    };
    let name = ServerName::try_from(juris_config::relay_server_name(region))
        .map_err(|e| std::io::Error::other(format!("relay name of region {region}: {e}")))?;
    let tcp = TcpStream::connect(endpoint).await?;
    let _ = tcp.set_nodelay(true);
    let mut link = TlsConnector::from(links.tls.client.clone())
        .connect(name, tcp)
        .await?;
    link.write_all(opening).await?;
    link.flush().await?;
    Ok(link)
}

/// Pass a client's cancel request for a handed-over session to the node
/// serving it, at `endpoint` in `region`.
pub(crate) async fn relay_cancel(
    ctx: &ProxyContext,
    region: &str,
    endpoint: &str,
    key: LinkCancelKey,
) {
    let sent = tokio::time::timeout(link_timeout(ctx), async {
        let mut link = connect_link(ctx, region, endpoint, &key.encode(CANCEL_LINK_MAGIC)).await?;
        link.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {
            ProxyMetrics::add(&ctx.metrics.handover_cancels_out, 1);
            info!(owning_region = %region, %endpoint, "cancel request passed on to the node serving the session");
        }
        Ok(Err(e)) => {
            warn!(owning_region = %region, %endpoint, "could not pass a cancel request on: {e}")
        }
        Err(_) => {
            warn!(owning_region = %region, %endpoint, "could not pass a cancel request on: timed out")
        }
    }
}

/// Copy `from` to `to`, checking that every byte belongs to a TLS record.
/// Ends at EOF (shutting `to` down) or on the first error; a framing error
/// is `InvalidData`.
async fn forward_records<R, W>(
    mut from: R,
    mut to: W,
    mut scanner: TlsRecordScanner,
    records: &AtomicU64,
    bytes: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let complete = scanner
            .feed(&buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        ProxyMetrics::add(records, complete);
        ProxyMetrics::add(bytes, n as u64);
    }
}

/// Finish the handshake with this node's own certificate only to deliver
/// `message` as a FATAL; nothing the client sends is read.
async fn refuse_inside_tls(tls: &TlsAcceptor, tcp: TcpStream, hello: Vec<u8>, message: &str) {
    let transport = ClientTransport::Direct(Rewind::new(hello, tcp));
    match tls.accept(transport).await {
        Ok(mut stream) => {
            let _ = send_fatal(&mut stream, "08006", message).await;
        }
        Err(e) => debug!("client refused this node's certificate: {e}"),
    }
}

/// Serve one handover link from a node of another region: mutual TLS, the
/// header, then the client's session as if it had connected here.
pub async fn serve_link(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    link_peer: SocketAddr,
    acceptor: TlsAcceptor,
    terminate: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let opened = tokio::time::timeout(ctx.settings.auth_timeout, async {
        let mut link = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("handover link TLS: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match LinkOpening::decode(&buf).map_err(|e| e.to_string())? {
                Some((opening, used)) => {
                    let rest = buf.split_off(used);
                    return Ok((opening, link, rest));
                }
                None if buf.len() >= HANDOVER_MAX_LEN => {
                    return Err("handover header too long".to_string());
                }
                None => {
                    let n = link
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("handover link: {e}"))?;
                    if n == 0 {
                        return Err("handover link closed before its header".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
    .await;
    let (header, mut link, rest) = match opened {
        Ok(Ok((LinkOpening::Session(header), link, rest))) => (header, link, rest),
        Ok(Ok((LinkOpening::Cancel(key), _, _))) => {
            ProxyMetrics::add(&ctx.metrics.handover_cancels_in, 1);
            crate::session::forward_cancel(&ctx, key.process_id, &key.secret, true).await;
            return;
        }
        Ok(Err(reason)) => {
            warn!(%link_peer, "handover link refused: {reason}");
            return;
        }
        Err(_) => {
            warn!(%link_peer, "handover link did not send its header in time");
            return;
        }
    };
    let own = &ctx.deployment.node.region;
    let owned = ctx
        .deployment
        .connection(&header.connection)
        .is_some_and(|c| &c.region == own);
    if !owned {
        warn!(%link_peer, connection = %header.connection, from_region = %header.from_region, "handover link for a connection region {own} does not own refused");
        return;
    }
    // The client's cancel key, issued now so the relaying node, where the
    // client will send its cancel requests, can pass them on.
    let cancel_key = ctx.cancels.reserve();
    let answer = cancel_key.key.encode(CANCEL_KEY_MAGIC);
    if let Err(e) = async {
        link.write_all(&answer).await?;
        link.flush().await
    }
    .await
    {
        warn!(%link_peer, "handover link: {e}");
        return;
    }
    ProxyMetrics::add(&ctx.metrics.handovers_in, 1);
    let client: SocketAddr = header.client_addr.parse().unwrap_or(link_peer);
    let transport = ClientTransport::HandedOver(Box::new(Rewind::new(rest, link)));
    crate::session::serve_handed_over(ctx, transport, header, client, cancel_key, terminate).await;
}
