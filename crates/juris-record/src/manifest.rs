//! The manifest: the node's signed statement of what a recording consists
//! of (which chunks, with which hashes, ending in which chain head, how
//! many events, and whether the session ended normally).
//!
//! Stored as canonical JSON (the audit trail's rules,
//! `juris_audit::canonical`) plus `\n`. The signature is Ed25519 over the
//! canonical JSON of the manifest without its `signature` member; the
//! `format` member is inside the signed bytes, so a manifest signature
//! cannot be replayed as a signature over anything else the node signs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::RecordedPrincipal;
use crate::key::NodeSigningKey;
use crate::{RecordError, Result};

/// `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "juris.recording.manifest/1";

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// The session ended and every event was recorded.
    Complete,
    /// The node stopped without finishing the recording (crash, kill);
    /// it was sealed from the spool when the node came back.
    Interrupted,
    /// The session ended, but some events were lost (best-effort mode,
    /// see the `Gap` events and `lost_events`).
    Incomplete,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Complete => "complete",
            RecordingStatus::Interrupted => "interrupted",
            RecordingStatus::Incomplete => "incomplete",
        }
    }
}

/// One chunk of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    pub index: u32,
    /// Object key in the region's store.
    pub key: String,
    pub size: u64,
    /// SHA-256 of the chunk file, lower-case hex.
    pub sha256: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A signed recording manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub session_id: String,
    pub region: String,
    pub node: String,
    pub connection: String,
    pub principal: RecordedPrincipal,
    pub client_addr: Option<String>,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    pub status: RecordingStatus,
    pub end_reason: String,
    /// Events stored in the chunks (`last_seq` of the last chunk).
    pub event_count: u64,
    /// Events known to be missing (sum of the `Gap` events).
    pub lost_events: u64,
    pub chunks: Vec<ChunkEntry>,
    /// Hash of the last chunk ([`crate::GENESIS_HASH`] if none).
    pub chain_head: String,
    /// Sum of the chunk sizes.
    pub total_bytes: u64,
    /// The signer's Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Ed25519 signature, 128 hex digits.
    pub signature: String,
}

impl Manifest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut value = serde_json::to_value(self)?;
        if let Value::Object(map) = &mut value {
            map.remove("signature");
        }
        Ok(juris_audit::canonical::to_string(&value).into_bytes())
    }

    /// Fill in `format`, `public_key` and `signature`.
    pub(crate) fn sign(mut self, key: &NodeSigningKey) -> Result<Self> {
        self.format = MANIFEST_FORMAT.to_string();
        self.public_key = key.public_key_hex();
        self.signature = key.sign(&self.signed_bytes()?);
        Ok(self)
    }

    /// Check the signature against `public_key` (the key the verifier
    /// trusts for this node, not necessarily the one the manifest names).
    pub fn verify(&self, public_key: &str) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!("unknown manifest format `{}`", self.format));
        }
        let bytes = self.signed_bytes().map_err(|e| e.to_string())?;
        juris_audit::key::verify_signature(public_key, &bytes, &self.signature)
    }

    /// The manifest's file content.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>> {
        let mut text = juris_audit::canonical::to_string(&serde_json::to_value(self)?);
        text.push('\n');
        Ok(text.into_bytes())
    }

    /// Parse a manifest file of at most `max_bytes`. Only the exact bytes
    /// the writer produces are accepted (canonical JSON, lower-case hex),
    /// so an edit that decodes to the same values is still noticed.
    pub fn from_file_bytes(bytes: &[u8], max_bytes: usize) -> Result<Self> {
        let corrupt = |reason: String| RecordError::Corrupt {
            what: "manifest".into(),
            reason,
        };
        if bytes.len() > max_bytes {
            return Err(corrupt(format!(
                "{} bytes exceed the limit of {max_bytes}",
                bytes.len()
            )));
        }
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a valid manifest: {e}")))?;
        let mut hex_fields = vec![
            ("chain_head", &manifest.chain_head),
            ("public_key", &manifest.public_key),
            ("signature", &manifest.signature),
        ];
        hex_fields.extend(manifest.chunks.iter().map(|c| ("chunk sha256", &c.sha256)));
        for (what, value) in hex_fields {
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(corrupt(format!("{what} is not lower-case hex")));
            }
        }
        crate::check_session_id(&manifest.session_id)?;
        if manifest.to_file_bytes()? != bytes {
            return Err(corrupt("not in canonical form".into()));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: String::new(),
            session_id: "0123456789abcdef0123456789abcdef".into(),
            region: "eu-west".into(),
            node: "n1".into(),
            connection: "billing-eu".into(),
            principal: RecordedPrincipal {
                issuer: "https://idp".into(),
                subject: "u1".into(),
                name: "alice@example.com".into(),
                groups: vec!["dba".into()],
            },
            client_addr: Some("127.0.0.1:5000".into()),
            started_at_ms: 1,
            ended_at_ms: 2,
            status: RecordingStatus::Complete,
            end_reason: "client closed".into(),
            event_count: 0,
            lost_events: 0,
            chunks: vec![],
            chain_head: crate::GENESIS_HASH.into(),
            total_bytes: 0,
            public_key: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn sign_verify_round_trip_and_canonical_only() {
        let key = NodeSigningKey::from_seed([1; 32]);
        let manifest = sample().sign(&key).unwrap();
        manifest.verify(&key.public_key_hex()).unwrap();
        let other = NodeSigningKey::from_seed([2; 32]);
        assert!(manifest.verify(&other.public_key_hex()).is_err());

        let bytes = manifest.to_file_bytes().unwrap();
        assert_eq!(
            Manifest::from_file_bytes(&bytes, 1 << 20).unwrap(),
            manifest
        );
        let spaced = String::from_utf8(bytes.clone())
            .unwrap()
            .replacen(":", ": ", 1);
        assert!(Manifest::from_file_bytes(spaced.as_bytes(), 1 << 20).is_err());
        assert!(Manifest::from_file_bytes(&bytes, 10).is_err());

        let mut edited = manifest.clone();
        edited.event_count = 99;
        assert!(edited.verify(&key.public_key_hex()).is_err());
    }
}
