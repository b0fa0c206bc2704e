//! The gateway's side of the conversation with the real database: connect,
//! optionally TLS (verify-full only), authenticate with the stored credential,
//! and collect what the server says before its first ReadyForQuery.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use juris_pgwire::{
    Authentication, BackendMessage, ErrorFields, Frame, Limits, SaslInitialResponse, StartupPacket,
};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::io::{BoxedStream, read_frame};

/// A resolved upstream: address, database, and the credential the gateway uses.
pub struct UpstreamTarget {
    pub connection: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    password: Option<String>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is deliberately absent.
        f.debug_struct("UpstreamTarget")
            .field("connection", &self.connection)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the upstream could not be reached. Display text is safe for clients.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the upstream server: {0}")]
    Connect(std::io::Error),
    #[error("the upstream server refused TLS")]
    TlsRefused,
    #[error("TLS with the upstream server failed: {0}")]
    Tls(std::io::Error),
    #[error("the upstream server rejected the gateway's credential")]
    AuthRejected { server_message: String },
    #[error("the upstream server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(&'static str),
    #[error("the upstream server asked for a password but none is configured")]
    NoPassword,
    #[error("SCRAM authentication with the upstream server failed")]
    Scram(std::io::Error),
    #[error("the upstream server closed the connection during startup")]
    Closed,
    #[error("the upstream server sent an invalid message: {0}")]
    Protocol(String),
    #[error("the upstream server refused the session: {0}")]
    Refused(String),
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            UpstreamError::Closed
        } else {
            UpstreamError::Connect(e)
        }
    }
}

/// An authenticated upstream session, ready for queries.
pub struct UpstreamSession {
    pub stream: BoxedStream,
    /// ParameterStatus and NoticeResponse frames to pass on to the client, in order.
    pub startup_frames: Vec<Frame>,
    pub process_id: i32,
    pub secret_key: Bytes,
    /// Bytes already read past ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

impl UpstreamTarget {
    /// Build a target. `tls` carries the client config and the name to verify.
    pub fn new(
        connection: String,
        host: String,
        port: u16,
        database: String,
        user: String,
        password: Option<String>,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Self {
        UpstreamTarget {
            connection,
            host,
            port,
            database,
            user,
            password,
            tls,
        }
    }

    /// Open a transport: TCP, then TLS when configured.
    async fn open(&self) -> Result<BoxedStream, UpstreamError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let Some((config, server_name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let mut tcp = tcp;
        let mut request = BytesMut::new();
        StartupPacket::SslRequest.encode(&mut request);
        tcp.write_all(&request).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(UpstreamError::TlsRefused);
        }
        let tls = TlsConnector::from(config.clone())
            .connect(server_name.clone(), tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        Ok(Box::new(tls))
    }

    /// Connect and authenticate. `client_parameters` are the client's startup
    /// parameters that are safe to pass on (user and database are ours).
    pub async fn connect(
        &self,
        client_parameters: &[(String, String)],
        limits: &Limits,
    ) -> Result<UpstreamSession, UpstreamError> {
        let mut stream = self.open().await?;
        let mut parameters = vec![
            ("user".to_string(), self.user.clone()),
            ("database".to_string(), self.database.clone()),
        ];
        parameters.extend(client_parameters.iter().cloned());
        let mut out = BytesMut::new();
        StartupPacket::Startup {
            protocol_version: 196608,
            parameters,
        }
        .encode(&mut out);
        stream.write_all(&out).await?;

        let mut buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = read_frame(&mut stream, &mut buf, limits)
                .await
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                .ok_or(UpstreamError::Closed)?;
            let message = BackendMessage::decode(&frame)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            let mut reply = BytesMut::new();
            match message {
                BackendMessage::Authentication(Authentication::Ok) => break,
                BackendMessage::Authentication(Authentication::CleartextPassword) => {
                    juris_pgwire::password_message(self.password()?, &mut reply);
                }
                BackendMessage::Authentication(Authentication::Md5Password { salt }) => {
                    let hashed = postgres_protocol::authentication::md5_hash(
                        self.user.as_bytes(),
                        self.password()?.as_bytes(),
                        salt,
                    );
                    juris_pgwire::password_message(&hashed, &mut reply);
                }
                BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(UpstreamError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    let state = ScramSha256::new(
                        self.password()?.as_bytes(),
                        ChannelBinding::unsupported(),
                    );
                    SaslInitialResponse {
                        mechanism: "SCRAM-SHA-256".into(),
                        data: Some(Bytes::copy_from_slice(state.message())),
                    }
                    .encode(&mut reply);
                    scram = Some(state);
                }
                BackendMessage::Authentication(Authentication::SaslContinue(data)) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        UpstreamError::Protocol("unexpected SASL continue".into())
                    })?;
                    state.update(&data).map_err(UpstreamError::Scram)?;
                    juris_pgwire::sasl_response(state.message(), &mut reply);
                }
                BackendMessage::Authentication(Authentication::SaslFinal(data)) => {
                    let mut state = scram
                        .take()
                        .ok_or_else(|| UpstreamError::Protocol("unexpected SASL final".into()))?;
                    state.finish(&data).map_err(UpstreamError::Scram)?;
                }
                BackendMessage::Authentication(_) => {
                    return Err(UpstreamError::UnsupportedAuth("Kerberos, GSSAPI or SSPI"));
                }
                BackendMessage::ErrorResponse(fields) => {
                    return Err(startup_error(&fields));
                }
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected {} during authentication",
                        message_name(&other)
                    )));
                }
            }
            if !reply.is_empty() {
                stream.write_all(&reply).await?;
            }
        }

        let mut startup_frames = Vec::new();
        let mut key = None;
        loop {
            let frame = read_frame(&mut stream, &mut buf, limits)
                .await
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                .ok_or(UpstreamError::Closed)?;
            match frame.tag {
                b'Z' => break,
                b'K' => {
                    if let BackendMessage::BackendKeyData {
                        process_id,
                        secret_key,
                    } = BackendMessage::decode(&frame)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                    {
                        key = Some((process_id, secret_key));
                    }
                }
                b'E' => {
                    let fields = match BackendMessage::decode(&frame) {
                        Ok(BackendMessage::ErrorResponse(f)) => f,
                        _ => return Err(UpstreamError::Protocol("bad ErrorResponse".into())),
                    };
                    return Err(startup_error(&fields));
                }
                b'S' | b'N' => startup_frames.push(frame),
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message '{}' before ReadyForQuery",
                        other.escape_ascii()
                    )));
                }
            }
        }
        let (process_id, secret_key) =
            key.ok_or_else(|| UpstreamError::Protocol("no BackendKeyData".into()))?;
        Ok(UpstreamSession {
            stream,
            startup_frames,
            process_id,
            secret_key,
            leftover: buf,
        })
    }

    fn password(&self) -> Result<&str, UpstreamError> {
        self.password.as_deref().ok_or(UpstreamError::NoPassword)
    }

    /// Send a CancelRequest for an upstream backend. Errors are only logged:
    /// PostgreSQL gives the canceller no answer either.
    pub async fn send_cancel(
        &self,
        process_id: i32,
        secret_key: Bytes,
    ) -> Result<(), UpstreamError> {
        let mut stream = self.open().await?;
        let mut out = BytesMut::new();
        StartupPacket::CancelRequest {
            process_id,
            secret_key,
        }
        .encode(&mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        // Wait for the server to close so the request is processed before we drop.
        let mut sink = [0u8; 16];
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}

fn startup_error(fields: &ErrorFields) -> UpstreamError {
    let message = fields.message().unwrap_or("").to_string();
    match fields.code() {
        // invalid_password, invalid_authorization_specification
        Some("28P01") | Some("28000") => UpstreamError::AuthRejected {
            server_message: message,
        },
        _ => UpstreamError::Refused(message),
    }
}

fn message_name(message: &BackendMessage) -> &'static str {
    match message {
        BackendMessage::ReadyForQuery { .. } => "ReadyForQuery",
        BackendMessage::ParameterStatus { .. } => "ParameterStatus",
        BackendMessage::BackendKeyData { .. } => "BackendKeyData",
        BackendMessage::NoticeResponse(_) => "NoticeResponse",
        _ => "message",
    }
}
