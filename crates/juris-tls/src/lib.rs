//! TLS configuration for Juris: the gateway's server side (client TLS is
//! terminated here), and client sides towards upstream databases and towards
//! the gateway (`juris connect`).
//!
//! All configs use the `ring` provider explicitly so that no process-wide
//! default has to be installed, and advertise ALPN `postgresql`, which
//! PostgreSQL 17 clients require for direct TLS (`sslnegotiation=direct`).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol id PostgreSQL registered for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Re-exported so that callers name one rustls.
pub use rustls;

/// Everything that can go wrong building TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificates: {reason}")]
    Certificates { path: String, reason: String },
    #[error("{path}: cannot read private key: {reason}")]
    PrivateKey { path: String, reason: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: String },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown });
    }
    Ok(certs)
}

/// Read the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::PrivateKey {
        path: path.display().to_string(),
        // The key itself never appears in the reason: rustls-pki-types reports only structure.
        reason: e.to_string(),
    })
}

/// The largest TLS record (header included) sent to PostgreSQL clients.
///
/// libpq's asynchronous API (pgbench, psycopg's async mode, anything that
/// polls `PQsocket`) reads at most one record per `SSL_read` into at least
/// 8 KiB of free buffer, then waits for the socket to become readable. A
/// record larger than that free space leaves decrypted bytes inside
/// OpenSSL, invisible to `poll`: if they end the server's answer (the final
/// ReadyForQuery), the client waits forever for bytes that already arrived.
/// PostgreSQL servers write answers from an 8 KiB buffer, so clients rarely
/// meet this (a known libpq limitation); rustls writes 16 KiB records unless
/// told otherwise, and 10,000-row answers through the gateway stalled.
pub const CLIENT_TLS_MAX_RECORD: usize = 8192;

/// Server config for terminating client TLS.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certificates(cert_file)?;
    let key = load_private_key(key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    config.max_fragment_size = Some(CLIENT_TLS_MAX_RECORD);
    Ok(Arc::new(config))
}

/// The CAs in a PEM file as a root store.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Certificates {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Client config that trusts the CAs in `ca_file`, or the public web roots
/// when `None`. Always verifies the server name (verify-full).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

/// ALPN of the node-to-node session handover (not a client protocol).
pub const ALPN_HANDOVER: &[u8] = b"juris-handover/1";

/// Both ends of a mutual-TLS link between nodes: this node's certificate
/// and key, and the CA every node's certificate must chain to.
#[derive(Clone)]
pub struct MutualTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// Mutual TLS from PEM files: the server side requires a client
/// certificate issued by `ca_file`; the client side presents `cert_file`
/// and verifies the server against `ca_file` only (no public roots).
pub fn mutual_tls(
    cert_file: &Path,
    key_file: &Path,
    ca_file: &Path,
) -> Result<MutualTls, TlsError> {
    let certs = load_certificates(cert_file)?;
    let key = load_private_key(key_file)?;
    let roots = Arc::new(load_roots(ca_file)?);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Certificates {
                path: ca_file.display().to_string(),
                reason: e.to_string(),
            })?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())?;
    server.alpn_protocols = vec![ALPN_HANDOVER.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    client.alpn_protocols = vec![ALPN_HANDOVER.to_vec()];
    Ok(MutualTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path() {
        let err = server_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let err = client_config(Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    /// The record sizes of a large answer, as the client's socket sees them.
    #[test]
    fn records_to_clients_fit_libpqs_read_buffer() {
        use std::io::{Read, Write};

        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["db.example".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();

        let mut server =
            rustls::ServerConnection::new(server_config(&cert, &key).unwrap()).unwrap();
        let name = rustls_pki_types::ServerName::try_from("db.example").unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config(Some(&ca)).unwrap(), name).unwrap();
        // Handshake in memory, then one 200 KiB answer from the server.
        let mut wire = Vec::new();
        while client.is_handshaking() || server.is_handshaking() {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        let answer: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        server.set_buffer_limit(None);
        server.writer().write_all(&answer).unwrap();
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }

        // Hand the client one record at a time, as OpenSSL reads them, and
        // see how much plaintext each one gives.
        client.set_buffer_limit(None);
        let mut received = Vec::new();
        let mut records = 0;
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            let length = 5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            let (record, after) = rest.split_at(length);
            let mut record = record;
            while !record.is_empty() {
                client.read_tls(&mut record).unwrap();
            }
            client.process_new_packets().unwrap();
            let mut plaintext = Vec::new();
            match client.reader().read_to_end(&mut plaintext) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(
                plaintext.len() <= 8192,
                "a record of {} bytes of plaintext would strand bytes in libpq's 8 KiB read",
                plaintext.len()
            );
            received.extend_from_slice(&plaintext);
            records += 1;
            rest = after;
        }
        assert!(records > answer.len() / 8192, "{records} records");
        assert_eq!(received, answer);
    }

    #[test]
    fn public_roots_are_used_without_a_ca_file() {
        let config = client_config(None).unwrap();
        assert_eq!(config.alpn_protocols, vec![ALPN_POSTGRESQL.to_vec()]);
    }
}
