//! Raft replication for the Juris control plane.
//!
//! Each region's nodes form one Raft group (openraft) whose log carries the
//! control-plane commands (JIT grants, command approvals). This crate knows
//! nothing about those commands: it replicates opaque bytes, stamps each
//! with the leader's wall time, and drives a byte-level [`StateMachine`]
//! that the node implements on top of `juris-state`. Storage is RocksDB
//! (fsync before acknowledging), and peers talk gRPC over mutual TLS.

mod config;
mod error;
mod network;
mod node;
mod server;
mod status;
mod store;
mod types;

pub use config::{PeerTls, RaftConfig};
pub use error::RaftError;
pub use node::RaftNode;
pub use status::{ClusterStatus, ReplicaStatus, Role};
pub use types::{LogPayload, NodeId};

/// The replicated state, implemented by the node for `juris-state`.
///
/// `apply` must be deterministic: every node applies the same entries in the
/// same order and must reach the same state, so it may depend only on its
/// arguments and current state (use `leader_time_ms` instead of a clock).
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed command; the bytes returned are the result of
    /// the [`RaftNode::write`] that proposed it.
    fn apply(&mut self, command: &[u8], leader_time_ms: u64) -> Vec<u8>;
    /// Serializes the whole state (taken between applies).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}
