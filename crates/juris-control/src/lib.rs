//! The control plane of a region, as the node and the CLI see it.
//!
//! * [`region`]: the Raft state machine of a region: `juris-state` behind
//!   the byte-level trait `juris-raft` replicates.
//! * [`service`]: the gRPC `Control` service every node serves to the CLI.
//!   It authenticates the caller's OIDC token, checks what the caller may
//!   do (eligibility for a role, admin for membership), turns requests into
//!   `juris-state` commands, writes them through Raft (a follower forwards
//!   to the leader), and answers reads from the node's applied state.
//! * [`client`]: the CLI's side of the same API.
//!
//! Only this crate, `juris-proto` and `juris-raft` know tonic.

pub mod client;
mod convert;
pub mod region;
pub mod service;

pub use client::ControlClient;
pub use region::{Region, RegionState};
pub use service::{CallerAuth, ControlService, SessionDirectory};

/// What can go wrong setting up the control API.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control API TLS: {0}")]
    Tls(String),
    #[error("cannot reach the control API at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("control API server: {0}")]
    Serve(String),
    #[error("{0}")]
    Raft(#[from] juris_raft::RaftError),
}
