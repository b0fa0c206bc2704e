//! A serializable snapshot of what this node knows about its Raft group, for
//! operators (`juris status`), probes, and the data path's freshness checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// This node's role in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts writes and replicates them.
    Leader,
    /// A voter following a leader (or waiting to hear from one).
    Follower,
    /// A voter campaigning for leadership.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// The Raft core has stopped.
    Shutdown,
}

/// Replication progress of one peer, as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Highest log index known to be stored on the peer.
    pub matched_index: Option<u64>,
    /// Entries the peer is behind the leader's last log index.
    pub lag: u64,
}

/// See [`crate::RaftNode::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub id: u64,
    /// This node's role.
    pub role: Role,
    /// The leader this node currently follows (or itself).
    pub leader_id: Option<u64>,
    /// The leader's peer address, from the membership.
    pub leader_addr: Option<String>,
    /// Current term.
    pub term: u64,
    /// Voters: id to peer address.
    pub voters: BTreeMap<u64, String>,
    /// Learners: id to peer address.
    pub learners: BTreeMap<u64, String>,
    /// Last index in this node's log.
    pub last_log_index: Option<u64>,
    /// Highest index this node knows is committed.
    pub committed_index: Option<u64>,
    /// Highest index applied to the local state machine.
    pub last_applied_index: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index were deleted from the log.
    pub purged_index: Option<u64>,
    /// Per-peer replication progress (leader only; empty elsewhere).
    pub replication: BTreeMap<u64, ReplicaStatus>,
    /// Leader only: ms since a quorum last acknowledged this leader.
    pub millis_since_quorum_ack: Option<u64>,
    /// Non-leaders: ms since this node last accepted a message from a leader.
    pub millis_since_leader_contact: Option<u64>,
    /// Voters (this one included) heard from recently.
    pub reachable_voters: usize,
}
