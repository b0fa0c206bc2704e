//! Small I/O helpers shared by the handshake and the relay: a boxed duplex
//! stream type, reading one frame or startup packet with a bounded buffer,
//! and writing backend messages.

use bytes::BytesMut;
use juris_pgwire::{BackendMessage, DecodeError, ErrorFields, Frame, Limits, StartupPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Anything a session can talk over: TCP, or TLS over TCP.
pub trait DuplexStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DuplexStream for T {}

/// A type-erased stream, so plain and TLS upstreams share one code path.
pub type BoxedStream = Box<dyn DuplexStream>;

/// Why reading from a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// Read one tagged message. `Ok(None)` when the peer closed cleanly between messages.
pub async fn read_frame<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = juris_pgwire::split_frame(buf, limits)? {
            return Ok(Some(frame));
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
            };
        }
    }
}

/// Read one untagged startup-phase packet. `Ok(None)` when the peer closed first.
pub async fn read_startup<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<StartupPacket>, ReadError> {
    loop {
        if let Some(packet) = juris_pgwire::decode_startup(buf, limits)? {
            return Ok(Some(packet));
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
            };
        }
    }
}

/// Encode and send backend messages in one write.
pub async fn send<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    messages: &[BackendMessage],
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    for message in messages {
        message.encode(&mut out);
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Send a FATAL ErrorResponse and close the write side.
pub async fn send_fatal<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    send(
        stream,
        &[BackendMessage::ErrorResponse(ErrorFields::new(
            "FATAL", code, message,
        ))],
    )
    .await?;
    stream.shutdown().await
}
