//! The openraft type configuration and the log entry payload.
//!
//! The Raft layer never interprets a command: a log entry carries the
//! client's bytes plus the wall time the leader stamped when it accepted the
//! write, so a deterministic state machine can reason about time (grant
//! expiry) without reading a clock of its own.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node's identifier in its Raft group.
pub type NodeId = u64;

/// What a log entry carries for client writes: the commands the leader
/// received while the previous entry was being committed, in order (one
/// entry, one fsync and one replication round for all of them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPayload {
    /// Leader wall-clock time (ms since the Unix epoch) when it accepted the
    /// writes; never decreases within one leader process.
    pub leader_time_ms: u64,
    /// The opaque commands, each handed to [`crate::StateMachine::apply`].
    #[serde(with = "b64_list")]
    pub commands: Vec<Vec<u8>>,
}

impl fmt::Debug for LogPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LogPayload{{t={}, {} commands}}",
            self.leader_time_ms,
            self.commands.len()
        )
    }
}

impl fmt::Display for LogPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying an entry returned: [`crate::StateMachine::apply`]'s bytes
/// for each of its commands, in order; empty for blank and membership
/// entries.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse(#[serde(with = "b64_list")] pub Vec<Vec<u8>>);

impl fmt::Debug for ApplyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApplyResponse({} responses)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Juris's openraft configuration: opaque payloads, `BasicNode` whose
    /// `addr` is the peer's `host:port` for the gRPC transport.
    pub TypeConfig:
        D = LogPayload,
        R = ApplyResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// Bytes as base64 text in JSON: log entries and Raft messages are JSON
/// (openraft's serde types), and a `Vec<u8>` would otherwise become an array
/// of numbers four times its size.
pub(crate) mod b64_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(|bytes| STANDARD.encode(bytes)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        texts
            .iter()
            .map(|text| STANDARD.decode(text.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}
