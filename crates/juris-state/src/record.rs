//! The records the state machine keeps, and their status at a given time.
//!
//! Stored state changes only when a command is applied; anything that
//! depends on time passing (a request expiring, a grant starting or
//! ending, an approval window closing) is computed from the stored times
//! and the time asked about, so it needs no log entry and cannot drift
//! between nodes.

use std::fmt;

use serde::{Deserialize, Serialize};

use juris_types::{AccessLevel, SessionId, StatementClass};

use crate::actor::Actor;
use crate::command::{AccessRule, ApprovalRule};
use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::time::UnixMillis;

/// One reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: Actor,
    pub approve: bool,
    pub reason: Option<String>,
    pub at: UnixMillis,
}

/// Where a request or approval stands as far as commands are concerned;
/// expiry is layered on top by the `status` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Pending,
    Approved,
    Denied,
    Cancelled,
}

/// A just-in-time access request and its reviews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: AccessRequestId,
    pub requester: Actor,
    pub connection: String,
    pub role: String,
    pub level: AccessLevel,
    pub duration_ms: u64,
    pub not_before: Option<UnixMillis>,
    pub reason: String,
    pub rule: AccessRule,
    pub created_at: UnixMillis,
    pub reviews: Vec<Review>,
    pub decision: Decision,
    /// When it was granted, denied or cancelled.
    pub decided_at: Option<UnixMillis>,
    /// The grant, once the threshold was met.
    pub grant: Option<GrantId>,
}

/// Where an access request stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRequestStatus {
    /// Waiting for reviews.
    Pending,
    /// Nobody decided within the rule's request TTL.
    Expired,
    /// The threshold was met and a grant exists.
    Granted,
    Denied,
    Cancelled,
}

impl AccessRequest {
    /// When an undecided request stops accepting reviews.
    pub fn review_deadline(&self) -> UnixMillis {
        self.created_at.saturating_add(self.rule.request_ttl_ms)
    }

    /// Status at `now`.
    pub fn status(&self, now: UnixMillis) -> AccessRequestStatus {
        match self.decision {
            Decision::Pending if now >= self.review_deadline() => AccessRequestStatus::Expired,
            Decision::Pending => AccessRequestStatus::Pending,
            Decision::Approved => AccessRequestStatus::Granted,
            Decision::Denied => AccessRequestStatus::Denied,
            Decision::Cancelled => AccessRequestStatus::Cancelled,
        }
    }

    /// Number of approving reviews so far.
    pub fn approvals(&self) -> u32 {
        count_approvals(&self.reviews)
    }
}

/// Time-bounded access to a role on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    /// The request this grant was created for.
    pub request: AccessRequestId,
    pub holder: Actor,
    pub connection: String,
    pub role: String,
    pub level: AccessLevel,
    /// When the threshold was met.
    pub granted_at: UnixMillis,
    /// First instant the grant is active.
    pub not_before: UnixMillis,
    /// First instant the grant is no longer active.
    pub expires_at: UnixMillis,
    pub revocation: Option<Revocation>,
}

/// Who ended a grant early, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: UnixMillis,
    pub by: Actor,
    pub reason: String,
}

/// Where a grant stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Approved, `not_before` still ahead.
    Scheduled,
    Active,
    Expired,
    Revoked,
}

impl Grant {
    /// Status at `now`. Revocation wins over everything: a revoked grant
    /// is never active again.
    pub fn status(&self, now: UnixMillis) -> GrantStatus {
        if self.revocation.is_some() {
            GrantStatus::Revoked
        } else if now < self.not_before {
            GrantStatus::Scheduled
        } else if now < self.expires_at {
            GrantStatus::Active
        } else {
            GrantStatus::Expired
        }
    }

    /// Whether the grant allows access at `now`.
    pub fn is_active(&self, now: UnixMillis) -> bool {
        self.revocation.is_none() && self.not_before <= now && now < self.expires_at
    }
}

/// A risky statement held for review, and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub requester: Actor,
    pub connection: String,
    /// The session whose statement is held.
    pub session: SessionId,
    pub statement: String,
    pub fingerprint: String,
    pub class: StatementClass,
    pub rule: ApprovalRule,
    pub created_at: UnixMillis,
    pub reviews: Vec<Review>,
    pub decision: Decision,
    /// When it was approved, denied or cancelled.
    pub decided_at: Option<UnixMillis>,
    /// When approved: the end of the window in which the statement may
    /// still be run once.
    pub usable_until: Option<UnixMillis>,
    /// When the approved statement was run.
    pub consumed_at: Option<UnixMillis>,
}

/// Where an approval stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for reviews.
    Pending,
    /// Approved, not yet used, window open.
    Approved,
    /// Approved and used.
    Consumed,
    /// Approved but the window closed before it was used.
    Lapsed,
    Denied,
    Cancelled,
}

impl Approval {
    /// When the threshold was met, if it was.
    pub fn approved_at(&self) -> Option<UnixMillis> {
        match self.decision {
            Decision::Approved => self.decided_at,
            _ => None,
        }
    }

    /// Status at `now`.
    pub fn status(&self, now: UnixMillis) -> ApprovalStatus {
        match self.decision {
            Decision::Pending => ApprovalStatus::Pending,
            Decision::Denied => ApprovalStatus::Denied,
            Decision::Cancelled => ApprovalStatus::Cancelled,
            Decision::Approved if self.consumed_at.is_some() => ApprovalStatus::Consumed,
            Decision::Approved if self.window_open(now) => ApprovalStatus::Approved,
            Decision::Approved => ApprovalStatus::Lapsed,
        }
    }

    /// Whether an approved, unused statement may run at `now`.
    pub fn window_open(&self, now: UnixMillis) -> bool {
        match (self.approved_at(), self.usable_until, self.consumed_at) {
            (Some(approved_at), Some(until), None) => approved_at <= now && now < until,
            _ => false,
        }
    }

    /// Number of approving reviews so far.
    pub fn approvals(&self) -> u32 {
        count_approvals(&self.reviews)
    }
}

fn count_approvals(reviews: &[Review]) -> u32 {
    let approving = reviews.iter().filter(|review| review.approve).count();
    u32::try_from(approving).unwrap_or(u32::MAX)
}

macro_rules! status_names {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $name {
            /// Lower-case name as shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_names!(AccessRequestStatus {
    Pending => "pending",
    Expired => "expired",
    Granted => "granted",
    Denied => "denied",
    Cancelled => "cancelled",
});
status_names!(GrantStatus {
    Scheduled => "scheduled",
    Active => "active",
    Expired => "expired",
    Revoked => "revoked",
});
status_names!(ApprovalStatus {
    Pending => "pending",
    Approved => "approved",
    Consumed => "consumed",
    Lapsed => "lapsed",
    Denied => "denied",
    Cancelled => "cancelled",
});
