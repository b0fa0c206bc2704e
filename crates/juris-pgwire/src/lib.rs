//! Sans-IO codec for the PostgreSQL frontend/backend protocol 3.0.
//!
//! Three layers, each usable alone:
//! - [`decode_startup`]: the untagged packets a client opens with
//!   (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest);
//! - [`split_frame`]: zero-copy framing of tagged messages (`tag`, `i32`
//!   length, body) — what a relay needs on its hot path;
//! - [`FrontendMessage`] / [`BackendMessage`]: typed decode and encode of
//!   every message, used only where a message must be understood.
//!
//! Nothing here does I/O: callers own the sockets and the buffers, which keeps
//! the codec testable byte-for-byte and usable from any runtime.
//!
//! Decoding treats every byte as hostile. Every length is checked against
//! [`Limits`] as soon as its header is complete, before the body is buffered;
//! every count is checked against the bytes actually present before anything
//! is allocated; strings must be NUL-terminated UTF-8; trailing bytes after a
//! message's fields are an error. Framing returns `Result<Option<_>>`
//! (`None` = need more bytes, nothing consumed). No input panics — the
//! proptests and the `fuzz/` targets hold the crate to that.
//!
//! Encoding trusts its input (this process built it) and is infallible; a
//! decoded message re-encodes to exactly the bytes it came from.
//!
//! Tag bytes are reused across directions (`'C'` is Close from a client and
//! CommandComplete from a server), so the caller picks [`FrontendMessage`] or
//! [`BackendMessage`] by which side it reads; see [`tag`].

pub mod handover;
mod message;
mod reader;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use message::{
    Authentication, BackendMessage, CopyResponse, ErrorFields, FieldDescription, FrontendMessage,
    SaslInitialResponse, Target, TransactionStatus, decode_password, password_message,
    sasl_response,
};

/// Message type bytes. The same byte means different things per direction
/// (`'C'` is Close from a client, CommandComplete from a server), so the
/// constants are split by who sends them.
pub mod tag {
    /// Sent by the client.
    pub mod frontend {
        pub const QUERY: u8 = b'Q';
        pub const PARSE: u8 = b'P';
        pub const BIND: u8 = b'B';
        pub const DESCRIBE: u8 = b'D';
        pub const EXECUTE: u8 = b'E';
        pub const CLOSE: u8 = b'C';
        pub const SYNC: u8 = b'S';
        pub const FLUSH: u8 = b'H';
        pub const TERMINATE: u8 = b'X';
        pub const COPY_DATA: u8 = b'd';
        pub const COPY_DONE: u8 = b'c';
        pub const COPY_FAIL: u8 = b'f';
        pub const FUNCTION_CALL: u8 = b'F';
        /// PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse.
        pub const AUTH_RESPONSE: u8 = b'p';
    }

    /// Sent by the server.
    pub mod backend {
        pub const AUTHENTICATION: u8 = b'R';
        pub const BACKEND_KEY_DATA: u8 = b'K';
        pub const PARAMETER_STATUS: u8 = b'S';
        pub const READY_FOR_QUERY: u8 = b'Z';
        pub const ROW_DESCRIPTION: u8 = b'T';
        pub const DATA_ROW: u8 = b'D';
        pub const COMMAND_COMPLETE: u8 = b'C';
        pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
        pub const ERROR_RESPONSE: u8 = b'E';
        pub const NOTICE_RESPONSE: u8 = b'N';
        pub const PARSE_COMPLETE: u8 = b'1';
        pub const BIND_COMPLETE: u8 = b'2';
        pub const CLOSE_COMPLETE: u8 = b'3';
        pub const NO_DATA: u8 = b'n';
        pub const PORTAL_SUSPENDED: u8 = b's';
        pub const PARAMETER_DESCRIPTION: u8 = b't';
        pub const COPY_IN_RESPONSE: u8 = b'G';
        pub const COPY_OUT_RESPONSE: u8 = b'H';
        pub const COPY_BOTH_RESPONSE: u8 = b'W';
        pub const COPY_DATA: u8 = b'd';
        pub const COPY_DONE: u8 = b'c';
        pub const NOTIFICATION_RESPONSE: u8 = b'A';
        pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
        pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    }
}

/// Request codes of untagged startup-phase packets.
pub mod code {
    pub const PROTOCOL_3_0: u32 = 196_608;
    pub const SSL_REQUEST: u32 = 80_877_103;
    pub const GSSENC_REQUEST: u32 = 80_877_104;
    pub const CANCEL_REQUEST: u32 = 80_877_102;
}

/// A direct-TLS (PostgreSQL 17 `sslnegotiation=direct`) client opens with a
/// TLS handshake record instead of a startup packet.
pub const TLS_HANDSHAKE_FIRST_BYTE: u8 = 0x16;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLong { len: usize, max: usize },
    #[error("invalid message length {0}")]
    InvalidLength(i64),
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("unknown message type '{}'", .0.escape_ascii())]
    UnknownTag(u8),
    #[error("unsupported protocol version {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(u32),
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
}

/// Size bounds for untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest tagged message (length field included).
    pub max_message_len: usize,
    /// Largest startup packet (PostgreSQL itself allows 10 000 bytes).
    pub max_startup_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: 256 * 1024 * 1024,
            max_startup_len: 10_000,
        }
    }
}

/// The first packet(s) a client sends, before any tagged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    /// Secret is 4 bytes in protocol 3.0; 3.2 allows up to 256.
    CancelRequest {
        process_id: i32,
        secret_key: Bytes,
    },
    Startup {
        protocol_version: u32,
        parameters: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// Value of a startup parameter.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { parameters, .. } => parameters
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// Append the packet's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_i32(0);
        match self {
            StartupPacket::SslRequest => out.put_u32(code::SSL_REQUEST),
            StartupPacket::GssEncRequest => out.put_u32(code::GSSENC_REQUEST),
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            } => {
                out.put_u32(code::CANCEL_REQUEST);
                out.put_i32(*process_id);
                out.put_slice(secret_key);
            }
            StartupPacket::Startup {
                protocol_version,
                parameters,
            } => {
                out.put_u32(*protocol_version);
                for (k, v) in parameters {
                    message::put_cstr(out, k);
                    message::put_cstr(out, v);
                }
                out.put_u8(0);
            }
        }
        message::patch_len(out, start);
    }
}

/// Decode one startup-phase packet from the front of `buf`, consuming it.
pub fn decode_startup(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<StartupPacket>, DecodeError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    // Checked before waiting for the body, so a peer announcing a huge packet
    // is refused at once instead of being buffered.
    let raw_len = i32::from_be_bytes(*len_bytes);
    // Length (4) + request code (4) is the smallest packet there is.
    let len = usize::try_from(raw_len)
        .ok()
        .filter(|&len| len >= 8)
        .ok_or(DecodeError::InvalidLength(raw_len.into()))?;
    if len > limits.max_startup_len {
        return Err(DecodeError::MessageTooLong {
            len,
            max: limits.max_startup_len,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len).freeze();
    packet.advance(4);
    let request = packet.get_u32();
    let decoded = match request {
        code::SSL_REQUEST if packet.is_empty() => StartupPacket::SslRequest,
        code::GSSENC_REQUEST if packet.is_empty() => StartupPacket::GssEncRequest,
        code::SSL_REQUEST | code::GSSENC_REQUEST => {
            return Err(DecodeError::Malformed {
                what: "negotiation request",
            });
        }
        code::CANCEL_REQUEST => {
            if packet.len() < 8 || packet.len() > 4 + 256 {
                return Err(DecodeError::Malformed {
                    what: "cancel request",
                });
            }
            let process_id = packet.get_i32();
            StartupPacket::CancelRequest {
                process_id,
                secret_key: packet,
            }
        }
        version if version >> 16 == 3 => {
            let mut reader = reader::Reader::new(packet);
            let mut parameters = Vec::new();
            loop {
                let name = reader.cstr("startup parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = reader.cstr("startup parameter value")?;
                parameters.push((name, value));
            }
            reader.finish("startup packet")?;
            StartupPacket::Startup {
                protocol_version: version,
                parameters,
            }
        }
        version if version >> 16 == 1234 => return Err(DecodeError::UnknownRequest(version)),
        version => return Err(DecodeError::UnsupportedProtocol(version)),
    };
    Ok(Some(decoded))
}

/// A tagged message: its type byte and its body (length field stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    /// Append the frame's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        out.put_u8(self.tag);
        out.put_u32((self.body.len() + 4) as u32);
        out.put_slice(&self.body);
    }

    /// Bytes the frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        self.body.len() + 5
    }
}

/// Read a frame header at the start of `buf`: `Some((tag, wire_len))` once
/// the five header bytes are present. The length is checked, nothing is
/// consumed: a relay can forward whole frames straight from its buffer.
pub fn peek_frame(buf: &[u8], limits: &Limits) -> Result<Option<(u8, usize)>, DecodeError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<5>() else {
        return Ok(None);
    };
    // The length counts itself but not the tag; negative or < 4 is a lie.
    let raw_len = i32::from_be_bytes([a, b, c, d]);
    let len = usize::try_from(raw_len)
        .ok()
        .filter(|&len| len >= 4)
        .ok_or(DecodeError::InvalidLength(raw_len.into()))?;
    if len > limits.max_message_len {
        return Err(DecodeError::MessageTooLong {
            len,
            max: limits.max_message_len,
        });
    }
    Ok(Some((tag, len + 1)))
}

/// Most that [`split_frame`] reserves ahead of bytes it has not seen.
const RESERVE_CAP: usize = 64 * 1024;

/// Split one complete frame off the front of `buf` without copying its body.
///
/// `None` means more bytes are needed; nothing is consumed then. The header
/// is validated as soon as it is complete, so an oversized or negative length
/// is an error before any of the body is buffered.
pub fn split_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    let Some((tag, wire_len)) = peek_frame(buf, limits)? else {
        return Ok(None);
    };
    if buf.len() < wire_len {
        // Make room for the rest so the caller's next read can fill it, but
        // only up to `RESERVE_CAP`: the length is just a claim, and reserving
        // `max_message_len` on the strength of five bytes would hand a peer
        // an easy memory amplification. Larger messages grow as bytes arrive.
        buf.reserve((wire_len - buf.len()).min(RESERVE_CAP));
        return Ok(None);
    }
    let mut frame = buf.split_to(wire_len);
    frame.advance(5);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

#[cfg(test)]
mod tests;
