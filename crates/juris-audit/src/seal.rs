//! The seal of a segment: a signed statement by the node of what the
//! segment holds (its chain ends, its seq range, its time range, the
//! SHA-256 of its bytes). Stored next to the segment as
//! `<segment>.seal.json`, canonical JSON plus `\n`.
//!
//! The signature is Ed25519 over the canonical JSON of the seal without
//! its `signature` member. The `format` member is inside the signed bytes,
//! so a seal signature cannot be replayed as a signature over anything
//! else the node signs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::event::Timestamp;
use crate::key::{NodeKey, verify_signature};
use crate::{AuditError, Result};

/// `format` of a seal.
pub const SEAL_FORMAT: &str = "juris.audit.seal/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub format: String,
    /// File name of the segment (`<node>-<first_seq, 20 digits>.jsonl`).
    pub segment: String,
    pub node: String,
    pub region: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// `prev_hash` of the first record.
    pub first_prev_hash: String,
    /// `hash` of the last record.
    pub last_hash: String,
    pub first_time: Timestamp,
    pub last_time: Timestamp,
    /// Size of the segment file in bytes.
    pub size: u64,
    /// SHA-256 of the segment file's bytes.
    pub sha256: String,
    /// The signer's Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Ed25519 signature, 128 hex digits.
    pub signature: String,
}

impl Seal {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut value = serde_json::to_value(self)?;
        if let Value::Object(map) = &mut value {
            map.remove("signature");
        }
        Ok(canonical::to_string(&value).into_bytes())
    }

    /// Fill in `format`, `public_key` and `signature`.
    pub(crate) fn sign(mut self, key: &NodeKey) -> Result<Self> {
        self.format = SEAL_FORMAT.to_string();
        self.public_key = key.public_key_hex();
        self.signature = key.sign(&self.signed_bytes()?);
        Ok(self)
    }

    /// Check the signature against `public_key` (the key the verifier
    /// trusts for this node, not necessarily the one the seal names).
    pub fn verify(&self, public_key: &str) -> Result<(), String> {
        if self.format != SEAL_FORMAT {
            return Err(format!("unknown seal format `{}`", self.format));
        }
        let bytes = self.signed_bytes().map_err(|e| e.to_string())?;
        verify_signature(public_key, &bytes, &self.signature)
    }

    /// The seal's file content.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>> {
        let mut text = canonical::to_string(&serde_json::to_value(self)?);
        text.push('\n');
        Ok(text.into_bytes())
    }

    /// Parse a seal file. Only the exact bytes the writer produces are
    /// accepted: canonical JSON with lower-case hex. Otherwise an edit that
    /// decodes to the same values (`ab` → `AB` in a hex signature, a space
    /// added) would go unnoticed, and every byte of evidence must matter.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self> {
        let seal: Seal = serde_json::from_slice(bytes).map_err(AuditError::from)?;
        let hex_fields = [
            ("first_prev_hash", &seal.first_prev_hash),
            ("last_hash", &seal.last_hash),
            ("sha256", &seal.sha256),
            ("public_key", &seal.public_key),
            ("signature", &seal.signature),
        ];
        for (what, value) in hex_fields {
            if !value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(AuditError::Invalid {
                    what,
                    value: value.clone(),
                    reason: "not lower-case hex",
                });
            }
        }
        if seal.to_file_bytes()? != bytes {
            return Err(AuditError::Invalid {
                what: "seal",
                value: seal.segment.clone(),
                reason: "not in canonical form",
            });
        }
        Ok(seal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GENESIS_HASH;

    pub(crate) fn sample(key: &NodeKey) -> Seal {
        Seal {
            format: String::new(),
            segment: "n1-00000000000000000001.jsonl".into(),
            node: "n1".into(),
            region: "eu-west".into(),
            first_seq: 1,
            last_seq: 3,
            first_prev_hash: GENESIS_HASH.into(),
            last_hash: "ab".repeat(32),
            first_time: Timestamp::from_unix_micros(1).unwrap(),
            last_time: Timestamp::from_unix_micros(2).unwrap(),
            size: 10,
            sha256: "cd".repeat(32),
            public_key: String::new(),
            signature: String::new(),
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn seals_must_be_byte_exact() {
        let key = NodeKey::from_seed([7; 32]);
        let seal = sample(&key).sign(&key).unwrap();
        let bytes = seal.to_file_bytes().unwrap();
        assert_eq!(Seal::from_file_bytes(&bytes).unwrap(), seal);
        let upper = String::from_utf8(bytes.clone())
            .unwrap()
            .replace(&seal.signature, &seal.signature.to_uppercase());
        assert!(Seal::from_file_bytes(upper.as_bytes()).is_err());
        let mut spaced = bytes.clone();
        spaced.insert(1, b' ');
        assert!(Seal::from_file_bytes(&spaced).is_err());
    }

    #[test]
    fn signed_seals_verify_and_edits_do_not() {
        let key = NodeKey::from_seed([1; 32]);
        let seal = sample(&key);
        seal.verify(&key.public_key_hex()).unwrap();
        let other = NodeKey::from_seed([2; 32]);
        assert!(seal.verify(&other.public_key_hex()).is_err());
        let mut edited = seal.clone();
        edited.last_seq = 4;
        assert!(edited.verify(&key.public_key_hex()).is_err());
        let reread = Seal::from_file_bytes(&seal.to_file_bytes().unwrap()).unwrap();
        assert_eq!(reread, seal);
    }
}
