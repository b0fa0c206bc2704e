//! The replicated state machine of a region's control plane: just-in-time
//! access requests and the grants they lead to, and approvals of held
//! commands.
//!
//! Every node of a region applies the same Raft log to a [`StateMachine`]
//! and must end up in the same state, so this crate is pure: no I/O, no
//! async runtime, no clock and no randomness. Time comes in with each
//! entry (the leader's stamp), ids are allocated from counters in the
//! state, and everything a rule depends on (the actor's groups, the review
//! rule) travels inside the [`Command`].
//!
//! * [`command`]: what goes into the log, and its bounded wire form.
//! * [`machine`]: applying commands; every rule lives there.
//! * [`record`]: what is stored, and the status of each record at a time.
//! * [`outcome`]: what an entry produced: result, rejection, events.
//! * [`query`]: reads for the data plane (grant checks) and the API.
//! * [`snapshot`]: the state as bytes and back.

pub mod actor;
pub mod command;
pub mod ids;
mod index;
pub mod machine;
pub mod outcome;
pub mod query;
pub mod record;
pub mod snapshot;
pub mod time;

#[cfg(test)]
mod tests;

pub use actor::{Actor, Identity};
pub use command::{AccessRule, ApprovalRule, Command};
pub use ids::{AccessRequestId, ApprovalId, GrantId};
pub use machine::StateMachine;
pub use outcome::{Applied, Outcome, Rejection, RejectionKind, StateEvent};
pub use query::{AccessRequestFilter, ApprovalFilter, GrantFilter};
pub use record::{
    AccessRequest, AccessRequestStatus, Approval, ApprovalStatus, Decision, Grant, GrantStatus,
    Review, Revocation,
};
pub use snapshot::SNAPSHOT_FORMAT;
pub use time::UnixMillis;

/// Everything that can go wrong in this crate. A command that the rules
/// refuse is not an error: it is a [`Rejection`] in the [`Applied`] result.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} is {size} bytes, at most {max} allowed")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("`{input}` is not {expected}")]
    InvalidId {
        input: String,
        expected: &'static str,
    },
    #[error("snapshot format {found} is not supported (this build reads format {supported})")]
    UnsupportedSnapshot { found: u32, supported: u32 },
    #[error("inconsistent snapshot: {0}")]
    CorruptSnapshot(String),
}
