//! The crate's one error type. Messages are plain sentences for an operator:
//! "no quorum" and "no leader" say how many voters this node can reach, so
//! the cause (network partition, peers down) is visible without a debugger.

/// Everything [`crate::RaftNode`] can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    /// The configuration cannot work (bad address, unreadable file, ...).
    #[error("raft config: {0}")]
    Config(String),
    /// TLS material could not be loaded or used.
    #[error("raft peer TLS: {0}")]
    Tls(String),
    /// The RocksDB store could not be opened, read or written.
    #[error("raft storage: {0}")]
    Storage(String),
    /// The gRPC server could not start.
    #[error("raft server: {0}")]
    Server(String),
    /// No leader is known, so the write could not be placed.
    #[error(
        "no leader: this node knows of no elected leader ({reachable} of {voters} voters reachable)"
    )]
    NoLeader {
        /// Voters (this node included) heard from recently.
        reachable: usize,
        /// Voters in the current membership.
        voters: usize,
    },
    /// This node leads but cannot reach a majority, so nothing can commit.
    #[error("no quorum: only {reachable} of {voters} voters reachable, {needed} needed to commit")]
    NoQuorum {
        /// Voters (this node included) heard from recently.
        reachable: usize,
        /// Voters in the current membership.
        voters: usize,
        /// The majority size.
        needed: usize,
    },
    /// The write was proposed but not committed within the deadline; it may
    /// still commit later (outcome unknown).
    #[error("write not committed within {0} ms (outcome unknown: it may still commit)")]
    Timeout(u64),
    /// Forwarding a write to the leader failed.
    #[error("forward to leader {leader} at {addr}: {reason}")]
    Forward {
        /// The leader's node id.
        leader: u64,
        /// The address dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// A membership change was refused.
    #[error("membership change: {0}")]
    Membership(String),
    /// The Raft core stopped (storage failure or shutdown).
    #[error("raft stopped: {0}")]
    Stopped(String),
}
