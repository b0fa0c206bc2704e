//! The node's Ed25519 key, which signs recording manifests.
//!
//! It is the same key, in the same file, that signs the node's audit
//! seals (`juris_audit::NodeKey`: 64 hex digits of the secret seed, mode
//! 0600), so an auditor trusts one public key per node for all evidence.
//! Creating the file is left to `juris-audit` (one implementation of the
//! careful create-once dance, the permission check, the parsing); this
//! type wraps it. The secret never appears in `Debug` or errors.

use std::path::Path;

use crate::{RecordError, Result};

/// A node's signing key for manifests: the audit trail's node key.
pub struct NodeSigningKey(juris_audit::NodeKey);

impl std::fmt::Debug for NodeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigningKey")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

fn key_error(path: &Path) -> impl FnOnce(juris_audit::AuditError) -> RecordError + '_ {
    move |e| RecordError::Key {
        path: path.into(),
        reason: e.to_string(),
    }
}

impl NodeSigningKey {
    /// A key from a known seed (tests, tooling).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeSigningKey(juris_audit::NodeKey::from_seed(seed))
    }

    /// Load the node key at `path`, creating it first (mode 0600 in a 0700
    /// directory) if absent.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        juris_audit::NodeKey::load_or_generate(path)
            .map(NodeSigningKey)
            .map_err(key_error(path))
    }

    /// Load an existing node key; refused when others can read it.
    pub fn load(path: &Path) -> Result<Self> {
        juris_audit::NodeKey::load(path)
            .map(NodeSigningKey)
            .map_err(key_error(path))
    }

    /// The public key as 64 lower-case hex digits.
    pub fn public_key_hex(&self) -> String {
        self.0.public_key_hex()
    }

    /// Ed25519 signature of `message`, 128 lower-case hex digits.
    pub(crate) fn sign(&self, message: &[u8]) -> String {
        self.0.sign(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn same_key_as_the_audit_trail() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys").join("node.key");
        let ours = NodeSigningKey::load_or_generate(&path).unwrap();
        let audit = juris_audit::NodeKey::load(&path).unwrap();
        assert_eq!(ours.public_key_hex(), audit.public_key_hex());
        let signature = ours.sign(b"m");
        juris_audit::key::verify_signature(&ours.public_key_hex(), b"m", &signature).unwrap();
    }

    #[test]
    fn a_readable_key_is_refused_and_debug_hides_the_seed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.key");
        NodeSigningKey::load_or_generate(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeSigningKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let key = NodeSigningKey::from_seed([9; 32]);
        assert!(!format!("{key:?}").contains(&hex::encode([9u8; 32])));
    }
}
