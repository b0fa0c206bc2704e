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

/// Where `juris connect` goes: `--gateway` and `--server-name` when given;
/// otherwise, from the deployment file, the endpoint of the region that
/// owns the connection and the connection's directory name (so the session
/// lands in its own region without a hand-over).
pub fn route(
    connection: &str,
    gateway: Option<String>,
    server_name: Option<String>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(String, Option<String>)> {
    let Some(config) = config else {
        let gateway = gateway.context(
            "no gateway: pass --gateway host:port, or --config with the deployment file",
        )?;
        return Ok((gateway, server_name));
    };
    let deployment = juris_config::Deployment::load(config)?;
    let (region, directory_name) = deployment.route_to(connection).with_context(|| {
        format!(
            "{}: connection \"{connection}\" is not declared",
            config.display()
        )
    })?;
    let gateway = match gateway {
        Some(gateway) => gateway,
        None => region.endpoint.clone().with_context(|| {
            format!(
                "{}: region {} (which owns \"{connection}\") declares no `endpoint`; pass --gateway",
                config.display(),
                region.name
            )
        })?,
    };
    Ok((gateway, server_name.or(directory_name)))
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

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_REGIONS: &str = r#"
[node]
id = "us-1"
region = "us-east"
listen = "127.0.0.1:0"
tls = { cert_file = "server.pem", key_file = "server.key" }
data_dir = "/var/lib/juris"
relay = { listen = "127.0.0.1:7601", tls = { cert_file = "r.pem", key_file = "r.key", ca_file = "ca.pem" } }

[identity]
issuer = "https://idp.example.test/"
audience = "urn:juris:gateway"

[directory]
domain = "db.example.test"

[[region]]
name = "us-east"
store = { kind = "local", path = "/var/lib/us" }
relay = ["127.0.0.1:7601"]

[[region]]
name = "eu-west"
store = { kind = "local", path = "/var/lib/eu" }
relay = ["127.0.0.2:7601"]
endpoint = "eu.db.example.test:5432"

[[connection]]
name = "billing-eu"
kind = "postgres"
region = "eu-west"
upstream = { host = "127.0.0.1", port = 5432, database = "billing", user = "gw" }

[[connection]]
name = "crm-us"
kind = "postgres"
region = "us-east"
upstream = { host = "127.0.0.1", port = 5433, database = "crm", user = "gw" }
"#;

    #[test]
    fn the_deployment_file_routes_to_the_owning_region() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("juris.toml");
        std::fs::write(&file, TWO_REGIONS).unwrap();
        // The owning region's endpoint, with the directory name as SNI.
        assert_eq!(
            route("billing-eu", None, None, Some(&file)).unwrap(),
            (
                "eu.db.example.test:5432".to_string(),
                Some("billing-eu.db.example.test".to_string())
            )
        );
        // Flags win over the file.
        assert_eq!(
            route(
                "billing-eu",
                Some("gw:5432".into()),
                Some("x".into()),
                Some(&file)
            )
            .unwrap(),
            ("gw:5432".to_string(), Some("x".to_string()))
        );
        // A region without an endpoint, an unknown connection: clear errors.
        let error = route("crm-us", None, None, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("region us-east (which owns \"crm-us\") declares no `endpoint`"),
            "{error}"
        );
        let error = route("payroll", None, None, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("connection \"payroll\" is not declared"),
            "{error}"
        );
        let error = route("billing-eu", None, None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("pass --gateway"), "{error}");
    }
}
