//! Node configuration for the Raft layer, independent of the deployment file
//! format (the node maps its `[raft]` settings onto this).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Mutual TLS material for the peer transport. Every peer of a region holds
/// a certificate issued by the same CA: the server requires a client
/// certificate chained to `ca_file`, and the client verifies the server's
/// certificate (for the host in the peer address) against the same CA.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// PEM certificate chain this node presents (as server and as client).
    pub cert_file: PathBuf,
    /// PEM private key for `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) that peer certificates must chain to.
    pub ca_file: PathBuf,
}

/// How a node runs its part of the Raft group.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id in the group (unique, non-zero by convention).
    pub node_id: u64,
    /// Where the peer gRPC server listens (`127.0.0.1:0` picks a port; see
    /// [`crate::RaftNode::local_addr`]).
    pub listen: SocketAddr,
    /// `host:port` peers dial to reach this node; empty means the bound
    /// listen address. Must match a name in the node's certificate.
    pub advertise: String,
    /// Directory of the node's RocksDB store.
    pub data_dir: PathBuf,
    /// Peer mTLS material.
    pub tls: PeerTls,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every_logs: u64,
    /// Entries kept in the log behind the latest snapshot (lets slightly
    /// lagging followers catch up without a snapshot transfer).
    pub logs_to_keep_after_snapshot: u64,
    /// How long [`crate::RaftNode::write`] waits for a leader and a commit.
    pub write_timeout_ms: u64,
    /// Timeout of one peer RPC (append-entries, vote, snapshot chunk).
    pub rpc_timeout_ms: u64,
}

impl RaftConfig {
    /// A config with production-leaning defaults for the timing knobs.
    pub fn new(node_id: u64, listen: SocketAddr, data_dir: PathBuf, tls: PeerTls) -> Self {
        Self {
            node_id,
            listen,
            advertise: String::new(),
            data_dir,
            tls,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_logs: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            write_timeout_ms: 5_000,
            rpc_timeout_ms: 2_000,
        }
    }

    /// The window within which a peer counts as reachable: a few heartbeats,
    /// and never less than an election timeout.
    pub(crate) fn reach_window_ms(&self) -> u64 {
        self.election_timeout_max_ms
            .max(self.heartbeat_ms.saturating_mul(3))
    }
}
