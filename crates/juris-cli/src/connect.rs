//! `juris connect`: a local listener that speaks plain PostgreSQL to local
//! tools and TLS (with SNI, verify-full) to the gateway, answering the
//! gateway's password request with the caller's token.
//!
//! The listener binds loopback only: the plaintext leg must never leave the
//! machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::BytesMut;
use juris_pgwire::{Authentication, BackendMessage, Limits, StartupPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tracing::{info, warn};

/// What `juris connect` needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connection: String,
    /// Gateway address, `host:port`.
    pub gateway: String,
    /// Name to send as SNI and to verify; defaults to the gateway host.
    pub server_name: Option<String>,
    /// CA that signs the gateway certificate; public roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Local port (127.0.0.1); 0 picks one.
    pub port: u16,
}

/// Produces the token to present for each new session.
pub type TokenSource = Arc<dyn Fn() -> anyhow::Result<String> + Send + Sync>;

/// Listen and serve until Ctrl-C. Prints where it listens.
pub async fn run(options: ConnectOptions, tokens: TokenSource) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
    let local = listener.local_addr()?;
    println!(
        "juris connect: {} via {} on {local}\n  psql \"host=127.0.0.1 port={} dbname={} sslmode=disable\"",
        options.connection,
        options.gateway,
        local.port(),
        options.connection
    );
    serve(listener, options, tokens).await
}

/// Serve an already bound listener (used by tests and `run`).
pub async fn serve(
    listener: TcpListener,
    options: ConnectOptions,
    tokens: TokenSource,
) -> anyhow::Result<()> {
    let tls = juris_tls::client_config(options.ca_file.as_deref())?;
    let host = options
        .gateway
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .context("--gateway must be host:port")?;
    let server_name = ServerName::try_from(options.server_name.clone().unwrap_or(host))
        .context("the gateway's server name is not a valid DNS name or IP address")?;
    let options = Arc::new(options);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (local, peer) = accepted?;
                let (tls, server_name, options, tokens) = (tls.clone(), server_name.clone(), options.clone(), tokens.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(local, peer, tls, server_name, &options, &tokens).await {
                        warn!("session from {peer}: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn handle(
    mut local: TcpStream,
    peer: SocketAddr,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    server_name: ServerName<'static>,
    options: &ConnectOptions,
    tokens: &TokenSource,
) -> anyhow::Result<()> {
    let _ = local.set_nodelay(true);
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let packet = loop {
        match read_packet(&mut local, &mut buf, &limits).await? {
            // Local leg is plaintext by design: say no to TLS and GSS.
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                local.write_all(b"N").await?
            }
            other => break other,
        }
    };
    let mut gateway = open_gateway(&options.gateway, tls, server_name).await?;
    match packet {
        StartupPacket::CancelRequest { .. } => {
            let mut out = BytesMut::new();
            packet.encode(&mut out);
            gateway.write_all(&out).await?;
            gateway.flush().await?;
            return Ok(());
        }
        StartupPacket::Startup {
            protocol_version,
            mut parameters,
        } => {
            parameters.retain(|(k, _)| k != "database");
            parameters.push(("database".into(), options.connection.clone()));
            let mut out = BytesMut::new();
            StartupPacket::Startup {
                protocol_version,
                parameters,
            }
            .encode(&mut out);
            gateway.write_all(&out).await?;
        }
        _ => bail!("unexpected startup packet"),
    }
    // Answer the gateway's password request with the token, then get out of the way.
    let mut gateway_buf = BytesMut::new();
    let frame = loop {
        if let Some(frame) = juris_pgwire::split_frame(&mut gateway_buf, &limits)? {
            break frame;
        }
        if gateway.read_buf(&mut gateway_buf).await? == 0 {
            bail!("the gateway closed the connection");
        }
    };
    match BackendMessage::decode(&frame)? {
        BackendMessage::Authentication(Authentication::CleartextPassword) => {
            let token = tokens()?;
            let mut out = BytesMut::new();
            juris_pgwire::password_message(&token, &mut out);
            gateway.write_all(&out).await?;
        }
        _ => {
            // An error or anything else: hand it to the local client as is.
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            local.write_all(&out).await?;
        }
    }
    local.write_all(&gateway_buf).await?;
    info!("session from {peer} relayed to {}", options.gateway);
    tokio::io::copy_bidirectional(&mut local, &mut gateway).await?;
    Ok(())
}

async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: &Limits,
) -> anyhow::Result<StartupPacket> {
    loop {
        if let Some(packet) = juris_pgwire::decode_startup(buf, limits)? {
            return Ok(packet);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the client closed the connection before its startup packet");
        }
    }
}

/// TCP, SSLRequest, then TLS with SNI and full verification.
async fn open_gateway(
    address: &str,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> anyhow::Result<impl AsyncRead + AsyncWrite + Unpin> {
    let mut tcp = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot reach the gateway at {address}"))?;
    let _ = tcp.set_nodelay(true);
    let mut out = BytesMut::new();
    StartupPacket::SslRequest.encode(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        bail!("the gateway at {address} refused TLS");
    }
    TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .with_context(|| format!("TLS with the gateway at {address} failed"))
}
