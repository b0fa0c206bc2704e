//! Session recordings: what a client sent through a node and, after
//! masking, what it received, kept as evidence that survives a node crash
//! and cannot be edited, reordered, truncated or spliced without the
//! change being detectable.
//!
//! The path of an event, and the module that owns each step:
//!
//! * [`event`]: the event schema ([`RecordEvent`], [`EventKind`]), in
//!   PostgreSQL terms.
//! * [`frame`]: the compact binary event frame (a PostgreSQL message as
//!   the client saw it, or an event's JSON) and its bounded decoder;
//!   [`wire`]: what a recorded message reads back as.
//! * [`spool`]: [`Spool`] and its per-session [`Recorder`]: frames go to a
//!   local spool file, fsync'd in batches, and are sealed into chunks.
//! * [`chunk`]: the chunk file (header + zstd payload of frames, or JSON
//!   Lines in version 1), its hash chain and the bounded, total decoder
//!   [`decode_chunk`].
//! * [`manifest`]: the signed summary of a session's chunks.
//! * [`uploader`]: moves sealed chunks and manifests from the spool to the
//!   region's object store, with retries and a quarantine.
//! * [`reader`]: fetches a recording back, verifies every hash, link and
//!   signature and says where a chain breaks; [`list_sessions`].
//! * [`render`]: text, JSON Lines and asciicast v2 renderings for replay.
//! * [`audit_upload`]: the node's sealed audit segments, copied to the
//!   same store.
//!
//! The byte-level formats are specified in `docs/formats/recording.md`;
//! this crate and that document change together.

pub mod audit_upload;
pub mod chunk;
pub mod event;
pub mod frame;
pub mod key;
pub mod manifest;
pub mod priority;
pub mod reader;
pub mod render;
pub mod spool;
pub mod store;
pub mod uploader;
pub mod wire;

mod fsutil;

use std::path::PathBuf;

pub use audit_upload::{AuditUploader, audit_prefix};
pub use chunk::{DecodeLimits, DecodedChunk, GENESIS_HASH, decode_chunk, decode_chunk_with};
pub use event::{Direction, EventKind, RecordEvent, RecordedPrincipal, SessionInfo};
pub use key::NodeSigningKey;
pub use manifest::{ChunkEntry, Manifest, RecordingStatus};
pub use reader::{
    ListFilter, Location, Problem, Recording, SessionSummary, SummarySource, Verification,
    list_sessions, list_spool_sessions, open_recording, open_recording_at, open_recording_in_dir,
};

/// The `object_store` version this crate is built against.
pub use object_store;
pub use render::{AsciicastOptions, render_asciicast, render_json, render_text};
pub use spool::{Recorder, Recovered, Spool, SpoolConfig, SpoolLimits, recover};
pub use store::{install_crypto_provider, open_store, s3_store};
pub use uploader::{Uploader, UploaderConfig, UploaderHandle, UploaderStats};

/// Everything that can go wrong in this crate. Verification findings are
/// not errors: they are [`Problem`]s in a [`Verification`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The spool has no room for the event (its byte budget is used up, or
    /// its writer is that far behind). The event was not recorded; the
    /// caller decides between ending the session (`strict`) and carrying
    /// on (`best_effort`: the recorder then writes a `Gap` saying how many
    /// events were lost before the next event it accepts).
    #[error("the recording spool is full ({used} of {max} bytes used)")]
    SpoolFull { used: u64, max: u64 },
    /// The spool writer is behind (its queue is full) though the byte
    /// budget has room. Nothing was recorded and nothing counted as lost:
    /// the caller retries shortly (backpressure), or skips the event.
    #[error("the recording spool writer is behind")]
    Busy,
    /// The spool writer failed for this session (disk error) or stopped;
    /// nothing more can be recorded for it.
    #[error("the recording of session {session} failed: {reason}")]
    RecorderFailed { session: String, reason: String },
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
    /// Bytes that claim to be part of a recording and are not.
    #[error("{what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("node key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: another process holds this recording spool", path.display())]
    Locked { path: PathBuf },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("recording {session} not found{}", region.as_deref().map(|r| format!(" in region {r}")).unwrap_or_default())]
    NotFound {
        session: String,
        region: Option<String>,
    },
    #[error("cannot encode recording data: {0}")]
    Encode(#[from] serde_json::Error),
    /// A region's `store` settings cannot be used.
    #[error("{key}: {reason}")]
    StoreConfig { key: String, reason: String },
}

pub type Result<T, E = RecordError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RecordError {
    let path = path.into();
    move |source| RecordError::Io { path, source }
}

/// Region, node and connection names end up in object keys and file
/// names: the audit trail's portable alphabet.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    if juris_audit::is_portable_name(value) {
        Ok(())
    } else {
        Err(RecordError::Invalid {
            what,
            value: value.to_string(),
            reason: juris_audit::PORTABLE_NAME_RULE,
        })
    }
}

/// A session id as it appears in keys and formats: 32 lower-case hex
/// digits.
pub(crate) fn check_session_id(value: &str) -> Result<()> {
    if value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(RecordError::Invalid {
            what: "session id",
            value: value.chars().take(80).collect(),
            reason: "expected 32 lower-case hex digits",
        })
    }
}
