//! The node's Ed25519 key that signs segment seals.
//!
//! Stored as 64 hex digits (the 32-byte secret seed) and a newline, in a
//! file of mode 0600 inside a directory of mode 0700. Generated on first
//! start; a file that others can read is refused rather than used, because
//! a leaked key lets anyone forge seals. The key never appears in `Debug`
//! output or errors: only its public half does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;

use crate::{AuditError, Result, io_err};

/// A node's signing key.
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A key from a known seed (tests, tooling).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| AuditError::Key {
                path: "(generate)".into(),
                reason: format!("no randomness: {e}"),
            })?;
        Ok(Self::from_seed(seed))
    }

    /// Load the key at `path`, creating it (and its 0700 parent) if absent.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        match Self::load(path) {
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            other => return other,
        }
        let dir = path.parent().ok_or_else(|| AuditError::Key {
            path: path.into(),
            reason: "no parent directory".into(),
        })?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        let key = Self::generate()?;
        // Write a temporary file completely, then hard-link it into place:
        // the link fails if another process created the key meanwhile, so
        // two starting processes never end up with different keys, and a
        // crash never leaves a half-written key under the real name.
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_err(&temporary))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err(&temporary))?;
        let text = format!("{}\n", hex::encode(key.signing.to_bytes()));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&temporary))?;
        let linked = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(dir))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Load an existing key.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(AuditError::Key {
                path: path.into(),
                reason: format!(
                    "mode {:o} lets others read it; run chmod 600",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let bad = || AuditError::Key {
            path: path.into(),
            reason: "expected 64 hex digits".into(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self::from_seed(seed))
    }

    /// The public key as 64 lower-case hex digits (how seals and manifests
    /// name it).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// Ed25519 signature of `message`, 128 lower-case hex digits.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }
}

/// Check an Ed25519 signature given as hex against a public key given as
/// hex. Strict verification: rejects non-canonical and small-order encodings
/// that would let one signature verify under several keys.
pub fn verify_signature(
    public_key_hex: &str,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), String> {
    let key: [u8; 32] = hex::decode(public_key_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("public key is not 64 hex digits")?;
    let key =
        VerifyingKey::from_bytes(&key).map_err(|_| "public key is not a valid Ed25519 key")?;
    let signature: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("signature is not 128 hex digits")?;
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| "signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_once_private_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys").join("node.key");
        let first = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let again = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(first.public_key_hex(), again.public_key_hex());
        let sig = first.sign(b"m");
        verify_signature(&again.public_key_hex(), b"m", &sig).unwrap();
        assert!(verify_signature(&again.public_key_hex(), b"n", &sig).is_err());
        // Only the temporary's removal and the real file remain.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.key");
        NodeKey::load_or_generate(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKey::load_or_generate(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = NodeKey::from_seed([7; 32]);
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.public_key_hex()));
        assert!(!debug.contains(&hex::encode([7u8; 32])));
    }
}
