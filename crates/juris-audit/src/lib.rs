//! The audit trail: what happened on a node, as facts that cannot be
//! edited, reordered or dropped without the change being detectable.
//!
//! * [`event`]: the record schema ([`AuditRecord`], [`AuditEvent`]) and the
//!   record hash.
//! * [`canonical`]: the one JSON serialisation that is hashed and signed.
//! * [`writer`]: a node's hash chain as JSON Lines segments in a directory,
//!   fsync'd before `append` returns, sealed (signed) on rotation.
//! * [`key`]: the node's Ed25519 signing key on disk.
//! * [`seal`]: the signed summary of one segment.
//! * [`bundle`]: per-region export of sealed segments into `bundle.tar.zst`
//!   and its offline verification.
//!
//! The byte-level formats are specified in `docs/formats/audit.md`; this
//! crate and that document change together.
//!
//! Time is always an argument: nothing in this crate reads the clock, so a
//! caller decides (and tests fix) what time a record carries.

pub mod bundle;
pub mod canonical;
pub mod event;
pub mod key;
pub mod seal;
mod segment;
pub mod writer;

#[cfg(test)]
mod testing;

use std::path::PathBuf;

pub use bundle::{
    ExportOptions, ExportSummary, Problem, RECORDINGS, Report, Residency, ResidencyObject,
    ResidencySource, audit_object_key, export, recording_entries, verify, verify_reader,
    verify_with_keys,
};
pub use event::{AuditEvent, AuditRecord, GENESIS_HASH, Timestamp};
pub use key::NodeKey;
pub use seal::Seal;
pub use segment::{SealedSegment, sealed_segments};
pub use writer::{ChainWriter, Recovery, WriterConfig};

/// Everything that can go wrong in this crate. Verification findings are
/// not errors: they are [`Problem`]s in a [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid timestamp `{0}`: expected RFC 3339 between years 1 and 9999")]
    Timestamp(String),
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("node key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: another writer holds this node's audit chain", path.display())]
    Locked { path: PathBuf },
    #[error("the audit writer failed earlier and accepts no more records until it is reopened")]
    Poisoned,
    #[error("cannot encode audit data: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("export: {0}")]
    Export(String),
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.into();
    move |source| AuditError::Io { path, source }
}

/// What [`is_portable_name`] allows, in words for error messages.
pub const PORTABLE_NAME_RULE: &str = "use 1 to 64 of A-Z a-z 0-9 . _ - and do not start with a dot";

/// Node, region and connection names end up in file names, tar paths and
/// object keys, so they are restricted to a portable, unambiguous alphabet.
pub fn is_portable_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !value.starts_with('.')
}

pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    if is_portable_name(value) {
        Ok(())
    } else {
        Err(AuditError::Invalid {
            what,
            value: value.to_string(),
            reason: PORTABLE_NAME_RULE,
        })
    }
}
