//! What applying a command produced: the result the caller waits for, and
//! the events the node turns into audit records and session terminations.
//!
//! A rejected command is an ordinary, replicated result (every node
//! rejects it the same way), so it is data with a message for the user,
//! not an error of this crate. Rejections change nothing and carry no
//! events; events describe state changes only.

use serde::{Deserialize, Serialize};

use juris_types::{AccessLevel, SessionId, StatementClass};

use crate::StateError;
use crate::actor::{Actor, Identity};
use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::record::{AccessRequestStatus, ApprovalStatus, Grant, Revocation};
use crate::time::UnixMillis;

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub result: Result<Outcome, Rejection>,
    /// State changes in the order they happened; empty on rejection.
    pub events: Vec<StateEvent>,
}

impl Applied {
    /// Wire form for returning the result to a remote caller.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data with string keys only: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses [`Applied::encode`] output.
    pub fn decode(bytes: &[u8]) -> Result<Applied, StateError> {
        serde_json::from_slice(bytes).map_err(|err| StateError::Decode {
            what: "apply result",
            reason: err.to_string(),
        })
    }

    pub(crate) fn rejected(rejection: Rejection) -> Applied {
        Applied {
            result: Err(rejection),
            events: Vec::new(),
        }
    }
}

/// What a successful command created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    AccessRequested {
        id: AccessRequestId,
        /// When the request expires unless reviewers decide before.
        expires_at: UnixMillis,
    },
    AccessReviewed {
        id: AccessRequestId,
        status: AccessRequestStatus,
        approvals: u32,
        threshold: u32,
        /// Present when this review met the threshold.
        grant: Option<Grant>,
    },
    AccessCancelled {
        id: AccessRequestId,
    },
    GrantRevoked {
        grant: Grant,
    },
    ApprovalRequested {
        id: ApprovalId,
    },
    ApprovalReviewed {
        id: ApprovalId,
        status: ApprovalStatus,
        approvals: u32,
        threshold: u32,
        /// Present when this review met the threshold.
        usable_until: Option<UnixMillis>,
    },
    ApprovalConsumed {
        id: ApprovalId,
    },
    ApprovalCancelled {
        id: ApprovalId,
    },
}

/// Why a command was refused. `message` is written for the person who
/// issued it; `kind` lets an API map it to a status code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

/// Broad class of a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The command itself is malformed or out of bounds.
    Invalid,
    /// It names a request, grant or approval that does not exist.
    NotFound,
    /// The actor may not do this.
    NotAllowed,
    /// The record is not in a state that allows this (already decided,
    /// expired, revoked, no usable approval…).
    Conflict,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }
}

/// A state change, for audit and for the data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateEvent {
    AccessRequested {
        request: AccessRequestId,
        requester: Actor,
        connection: String,
        role: String,
        level: AccessLevel,
        duration_ms: u64,
        not_before: Option<UnixMillis>,
        reason: String,
        at: UnixMillis,
    },
    AccessReviewed {
        request: AccessRequestId,
        requester: Identity,
        reviewer: Actor,
        approve: bool,
        reason: Option<String>,
        connection: String,
        role: String,
        approvals: u32,
        threshold: u32,
        at: UnixMillis,
    },
    AccessDenied {
        request: AccessRequestId,
        requester: Identity,
        denied_by: Actor,
        connection: String,
        role: String,
        at: UnixMillis,
    },
    GrantCreated {
        grant: Grant,
        /// Everyone whose approval counted.
        approvers: Vec<Actor>,
    },
    GrantRevoked {
        grant: GrantId,
        request: AccessRequestId,
        holder: Actor,
        connection: String,
        role: String,
        revocation: Revocation,
    },
    AccessCancelled {
        request: AccessRequestId,
        requester: Actor,
        connection: String,
        role: String,
        at: UnixMillis,
    },
    ApprovalRequested {
        approval: ApprovalId,
        requester: Actor,
        connection: String,
        session: SessionId,
        statement: String,
        fingerprint: String,
        class: StatementClass,
        at: UnixMillis,
    },
    ApprovalReviewed {
        approval: ApprovalId,
        requester: Identity,
        reviewer: Actor,
        approve: bool,
        reason: Option<String>,
        connection: String,
        approvals: u32,
        threshold: u32,
        at: UnixMillis,
    },
    /// The threshold was met or a reviewer denied: the node holding the
    /// statement releases or refuses it.
    ApprovalDecided {
        approval: ApprovalId,
        requester: Identity,
        connection: String,
        session: SessionId,
        fingerprint: String,
        approved: bool,
        at: UnixMillis,
        usable_until: Option<UnixMillis>,
    },
    ApprovalCancelled {
        approval: ApprovalId,
        requester: Actor,
        connection: String,
        session: SessionId,
        at: UnixMillis,
    },
    ApprovalConsumed {
        approval: ApprovalId,
        requester: Identity,
        connection: String,
        /// The session that originally asked; the statement may run in another.
        session: SessionId,
        fingerprint: String,
        at: UnixMillis,
    },
}
