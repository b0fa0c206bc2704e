//! What a node needs to hand a client's still-encrypted session to a node
//! of the connection's own region, sans I/O:
//!
//! - [`TlsRecordScanner`] follows TLS record framing across arbitrary read
//!   boundaries. The relaying node runs every forwarded byte through it, so
//!   it can prove (and count) that it forwarded only TLS records — never a
//!   plaintext byte — and cut a stream that stops being TLS.
//! - [`ClientHelloProgress`] tells how many bytes of the client's first TLS
//!   records to buffer before the server name can be read (parsing the
//!   ClientHello itself is rustls's job).
//! - [`HandoverHeader`] is the few facts the relaying node tells the owning
//!   node before the client's bytes: who the client is and how it started
//!   TLS. Binary, bounded, versioned.
//! - [`LinkCancelKey`] is the owning node's one answer on a link (the
//!   cancel key it will give the client), and the whole of a cancel link:
//!   a client's plaintext CancelRequest reaches the node it connected to,
//!   which only relayed the session, and must go on to the node that
//!   serves it. [`LinkOpening`] tells the two kinds of link apart.
//!
//! Everything here treats its input as hostile and never panics.

/// TLS record header length: type, version (2), length (2).
pub const TLS_RECORD_HEADER_LEN: usize = 5;
/// Largest TLS record body a peer may send (RFC 8446 §5.2: 2^14 + 256 for
/// TLS 1.3 ciphertext; RFC 5246 allows 2^14 + 2048 for TLS 1.2).
pub const TLS_MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// Why a byte stream is not TLS records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    #[error("not a TLS record: content type {0}")]
    ContentType(u8),
    #[error("not a TLS record: protocol version {0:#06x}")]
    Version(u16),
    #[error("TLS record of {0} bytes exceeds the limit")]
    RecordTooLong(usize),
    #[error("the client's TLS hello exceeds {0} bytes")]
    HelloTooLong(usize),
    #[error("handover header: {0}")]
    Header(&'static str),
}

/// Follows TLS record boundaries in a byte stream fed in pieces.
#[derive(Debug, Default, Clone)]
pub struct TlsRecordScanner {
    header: [u8; TLS_RECORD_HEADER_LEN],
    header_len: usize,
    /// Body bytes of the current record not seen yet.
    body_left: usize,
    records: u64,
}

impl TlsRecordScanner {
    /// Take the next bytes of the stream. Returns how many record headers
    /// were completed in them, or the first framing error (the stream must
    /// then be cut: nothing after it can be trusted to be TLS).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<u64, HandoverError> {
        let before = self.records;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                bytes = &bytes[take..];
                continue;
            }
            let take = (TLS_RECORD_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == TLS_RECORD_HEADER_LEN {
                self.header_len = 0;
                self.body_left = check_record_header(&self.header)?;
                self.records += 1;
            }
        }
        Ok(self.records - before)
    }

    /// Record headers seen so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// True between records (no partial header or body pending).
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }
}

/// Validate one record header; returns its body length.
fn check_record_header(header: &[u8; TLS_RECORD_HEADER_LEN]) -> Result<usize, HandoverError> {
    // change_cipher_spec, alert, handshake, application_data. Heartbeat (24)
    // is refused: no Juris peer uses it.
    if !(20..=23).contains(&header[0]) {
        return Err(HandoverError::ContentType(header[0]));
    }
    let version = u16::from_be_bytes([header[1], header[2]]);
    // Record-layer versions in use: 0x0301 (first ClientHello) to 0x0303.
    if !(0x0300..=0x0304).contains(&version) {
        return Err(HandoverError::Version(version));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > TLS_MAX_RECORD_BODY {
        return Err(HandoverError::RecordTooLong(len));
    }
    Ok(len)
}

/// How far the client's first handshake records have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHelloProgress {
    /// This many more bytes complete the next record.
    NeedMore(usize),
    /// The buffer holds whole handshake records only: hand them to the TLS
    /// parser (which may still ask for another record).
    Records,
}

/// Check the buffered start of a client's TLS stream: whole handshake
/// records, each well-formed, the total within `limit` bytes.
pub fn client_hello_progress(
    buffered: &[u8],
    limit: usize,
) -> Result<ClientHelloProgress, HandoverError> {
    if buffered.len() > limit {
        return Err(HandoverError::HelloTooLong(limit));
    }
    let mut rest = buffered;
    loop {
        if rest.is_empty() && buffered.len() >= TLS_RECORD_HEADER_LEN {
            return Ok(ClientHelloProgress::Records);
        }
        if rest.len() < TLS_RECORD_HEADER_LEN {
            return Ok(ClientHelloProgress::NeedMore(
                TLS_RECORD_HEADER_LEN - rest.len(),
            ));
        }
        let mut header = [0u8; TLS_RECORD_HEADER_LEN];
        header.copy_from_slice(&rest[..TLS_RECORD_HEADER_LEN]);
        let len = check_record_header(&header)?;
        if header[0] != 22 {
            return Err(HandoverError::ContentType(header[0]));
        }
        let whole = TLS_RECORD_HEADER_LEN + len;
        if buffered.len() - rest.len() + whole > limit {
            return Err(HandoverError::HelloTooLong(limit));
        }
        if rest.len() < whole {
            return Ok(ClientHelloProgress::NeedMore(whole - rest.len()));
        }
        rest = &rest[whole..];
    }
}

/// What the relaying node tells the owning node before the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverHeader {
    /// The client's address as the relaying node saw it.
    pub client_addr: String,
    /// The relaying node's id and region.
    pub from_node: String,
    pub from_region: String,
    /// The connection the client named in its TLS server name.
    pub connection: String,
    /// The client opened with TLS directly (PostgreSQL 17 `sslnegotiation=
    /// direct`) rather than with an SSLRequest the relaying node answered.
    pub direct_tls: bool,
}

/// Magic and version of [`HandoverHeader`] (version 2: the owning node
/// answers with a [`LinkCancelKey`]).
pub const HANDOVER_MAGIC: &[u8; 4] = b"JRH2";
/// Magic of the owning node's answer to a [`HandoverHeader`].
pub const CANCEL_KEY_MAGIC: &[u8; 4] = b"JRK1";
/// Magic of a link that carries one cancel request.
pub const CANCEL_LINK_MAGIC: &[u8; 4] = b"JRC1";
/// Encoded length of a [`LinkCancelKey`] message.
pub const CANCEL_KEY_LEN: usize = 4 + 4 + 4;
/// Longest encoded header: magic, a flags byte and four strings of at most
/// 255 bytes, each with a length byte.
pub const HANDOVER_MAX_LEN: usize = 4 + 1 + 4 * 256;

impl HandoverHeader {
    /// Encode; `None` if a field is longer than 255 bytes.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(HANDOVER_MAGIC);
        out.push(u8::from(self.direct_tls));
        for field in [
            &self.client_addr,
            &self.from_node,
            &self.from_region,
            &self.connection,
        ] {
            out.push(u8::try_from(field.len()).ok()?);
            out.extend_from_slice(field.as_bytes());
        }
        Some(out)
    }

    /// Decode from the start of `bytes`. `Ok(None)`: more bytes needed;
    /// `Ok(Some((header, used)))` otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Option<(HandoverHeader, usize)>, HandoverError> {
        let magic_len = HANDOVER_MAGIC.len().min(bytes.len());
        if bytes[..magic_len] != HANDOVER_MAGIC[..magic_len] {
            return Err(HandoverError::Header("bad magic"));
        }
        if bytes.len() < HANDOVER_MAGIC.len() + 1 {
            return Ok(None);
        }
        let direct_tls = match bytes[4] {
            0 => false,
            1 => true,
            _ => return Err(HandoverError::Header("bad flags")),
        };
        let mut at = 5;
        let mut fields: [String; 4] = Default::default();
        for field in &mut fields {
            let Some(&len) = bytes.get(at) else {
                return Ok(None);
            };
            let end = at + 1 + usize::from(len);
            let Some(raw) = bytes.get(at + 1..end) else {
                return Ok(None);
            };
            *field = std::str::from_utf8(raw)
                .map_err(|_| HandoverError::Header("field is not UTF-8"))?
                .to_owned();
            at = end;
        }
        let [client_addr, from_node, from_region, connection] = fields;
        if connection.is_empty() || from_region.is_empty() {
            return Err(HandoverError::Header("empty connection or region"));
        }
        Ok(Some((
            HandoverHeader {
                client_addr,
                from_node,
                from_region,
                connection,
                direct_tls,
            },
            at,
        )))
    }
}

/// A client's cancel key (BackendKeyData) as it travels between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkCancelKey {
    pub process_id: i32,
    pub secret: [u8; 4],
}

impl LinkCancelKey {
    /// `magic`, then the key: [`CANCEL_KEY_LEN`] bytes.
    pub fn encode(&self, magic: &[u8; 4]) -> [u8; CANCEL_KEY_LEN] {
        let mut out = [0u8; CANCEL_KEY_LEN];
        out[..4].copy_from_slice(magic);
        out[4..8].copy_from_slice(&self.process_id.to_be_bytes());
        out[8..].copy_from_slice(&self.secret);
        out
    }

    /// Decode a message that must start with `magic`. `Ok(None)`: more
    /// bytes needed.
    pub fn decode(magic: &[u8; 4], bytes: &[u8]) -> Result<Option<LinkCancelKey>, HandoverError> {
        let magic_len = magic.len().min(bytes.len());
        if bytes[..magic_len] != magic[..magic_len] {
            return Err(HandoverError::Header("bad magic"));
        }
        let Some(body) = bytes.get(4..CANCEL_KEY_LEN) else {
            return Ok(None);
        };
        let (process_id, secret) = body.split_at(4);
        Ok(Some(LinkCancelKey {
            process_id: i32::from_be_bytes(process_id.try_into().unwrap_or_default()),
            secret: secret.try_into().unwrap_or_default(),
        }))
    }
}

/// What a node of another region opened a link for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOpening {
    /// A client's session, whose TLS records follow.
    Session(HandoverHeader),
    /// One cancel request for a session this node serves.
    Cancel(LinkCancelKey),
}

impl LinkOpening {
    /// Decode the start of a link. `Ok(None)`: more bytes needed;
    /// `Ok(Some((opening, used)))` otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Option<(LinkOpening, usize)>, HandoverError> {
        let magic_len = CANCEL_LINK_MAGIC.len().min(bytes.len());
        if bytes[..magic_len] == CANCEL_LINK_MAGIC[..magic_len] {
            return Ok(LinkCancelKey::decode(CANCEL_LINK_MAGIC, bytes)?
                .map(|key| (LinkOpening::Cancel(key), CANCEL_KEY_LEN)));
        }
        Ok(HandoverHeader::decode(bytes)?
            .map(|(header, used)| (LinkOpening::Session(header), used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![content_type, 3, 3];
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn records_are_followed_across_any_split() {
        let mut stream = record(22, &[1; 300]);
        stream.extend(record(23, &[2; 5000]));
        stream.extend(record(21, &[3; 2]));
        for split in 1..stream.len() {
            let mut scanner = TlsRecordScanner::default();
            let mut seen = 0;
            for piece in stream.chunks(split) {
                seen += scanner.feed(piece).unwrap();
            }
            assert_eq!(seen, 3, "split {split}");
            assert!(scanner.at_boundary());
        }
    }

    #[test]
    fn plaintext_is_not_tls() {
        // A PostgreSQL startup packet, or a simple Query, is cut at once.
        let mut scanner = TlsRecordScanner::default();
        assert_eq!(
            scanner.feed(b"Q\0\0\0\x0eselect 1\0"),
            Err(HandoverError::ContentType(b'Q'))
        );
        let mut scanner = TlsRecordScanner::default();
        assert!(scanner.feed(&[0, 0, 0, 8, 4, 210, 22, 47]).is_err());
        let mut scanner = TlsRecordScanner::default();
        assert_eq!(
            scanner.feed(&[23, 3, 3, 0xff, 0xff]),
            Err(HandoverError::RecordTooLong(0xffff))
        );
    }

    #[test]
    fn a_hello_is_buffered_record_by_record_within_the_limit() {
        let hello = record(22, &[0; 100]);
        assert_eq!(
            client_hello_progress(&hello[..3], 1024),
            Ok(ClientHelloProgress::NeedMore(2))
        );
        assert_eq!(
            client_hello_progress(&hello[..5], 1024),
            Ok(ClientHelloProgress::NeedMore(100))
        );
        assert_eq!(
            client_hello_progress(&hello, 1024),
            Ok(ClientHelloProgress::Records)
        );
        assert_eq!(
            client_hello_progress(&hello, 50),
            Err(HandoverError::HelloTooLong(50))
        );
        assert_eq!(
            client_hello_progress(&hello[..5], 50),
            Err(HandoverError::HelloTooLong(50))
        );
        assert_eq!(
            client_hello_progress(&record(23, &[0; 10]), 1024),
            Err(HandoverError::ContentType(23))
        );
    }

    #[test]
    fn headers_round_trip_and_need_their_whole_length() {
        let header = HandoverHeader {
            client_addr: "203.0.113.7:51234".into(),
            from_node: "us-1".into(),
            from_region: "us-east".into(),
            connection: "billing-eu".into(),
            direct_tls: true,
        };
        let mut bytes = header.encode().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(HandoverHeader::decode(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        let len = bytes.len();
        bytes.extend_from_slice(&[22, 3, 1]);
        assert_eq!(HandoverHeader::decode(&bytes), Ok(Some((header, len))));
        assert!(HandoverHeader::decode(b"GET / HTTP/1.1").is_err());
        assert!(HandoverHeader::decode(b"JRH2\x07").is_err());
        // A version 1 peer (which expects no answer) is refused.
        assert!(HandoverHeader::decode(b"JRH1\x00").is_err());
    }

    #[test]
    fn links_open_with_a_session_or_a_cancel_key() {
        let key = LinkCancelKey {
            process_id: 0x1234_5678,
            secret: [9, 8, 7, 6],
        };
        let cancel = key.encode(CANCEL_LINK_MAGIC);
        for cut in 0..cancel.len() {
            assert_eq!(LinkOpening::decode(&cancel[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            LinkOpening::decode(&cancel),
            Ok(Some((LinkOpening::Cancel(key), CANCEL_KEY_LEN)))
        );
        let header = HandoverHeader {
            client_addr: "[::1]:5".into(),
            from_node: "eu-2".into(),
            from_region: "eu-west".into(),
            connection: "crm-us".into(),
            direct_tls: false,
        };
        let bytes = header.encode().unwrap();
        assert_eq!(
            LinkOpening::decode(&bytes),
            Ok(Some((LinkOpening::Session(header), bytes.len())))
        );
        // The owning node's answer is not an opening, and vice versa.
        let answer = key.encode(CANCEL_KEY_MAGIC);
        assert!(LinkOpening::decode(&answer).is_err());
        assert_eq!(
            LinkCancelKey::decode(CANCEL_KEY_MAGIC, &answer),
            Ok(Some(key))
        );
        assert!(LinkCancelKey::decode(CANCEL_KEY_MAGIC, &cancel).is_err());
    }
}
