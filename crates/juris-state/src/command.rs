//! The commands that go through the Raft log, and their wire form.
//!
//! A command carries everything its outcome depends on: the acting
//! identity with its groups, and the review rule the control API resolved
//! from its configuration when it accepted the call. Nodes whose
//! configuration has drifted therefore still compute the same state.
//!
//! Command bytes come from the network and from disk, so decoding is
//! bounded: oversized input and oversized fields are refused with an
//! error, never a panic or an unbounded allocation.

use serde::{Deserialize, Serialize};

use juris_types::{AccessLevel, SessionId, StatementClass};

use crate::StateError;
use crate::actor::{Actor, Identity};
use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::time::UnixMillis;

/// Largest encoded command accepted (1 MiB).
pub const MAX_COMMAND_BYTES: usize = 1 << 20;
/// Longest issuer, subject, name, group, connection, role or fingerprint.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most groups on one actor or one rule.
pub const MAX_GROUPS: usize = 512;
/// Longest reason text.
pub const MAX_REASON_BYTES: usize = 4096;
/// Longest statement held for approval.
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// Who may approve an access request, how many of them must, and the
/// limits the role's configuration puts on a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// Members of any of these groups may review.
    pub reviewer_groups: Vec<String>,
    /// Approvals needed for a grant (at least 1).
    pub threshold: u32,
    /// Longest grant that may be requested.
    pub max_duration_ms: u64,
    /// How long a request waits for reviews before it expires.
    pub request_ttl_ms: u64,
}

/// Who may approve a held command, how many of them must, and how long an
/// approved command stays usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// Members of any of these groups may review.
    pub reviewer_groups: Vec<String>,
    /// Approvals needed (at least 1).
    pub threshold: u32,
    /// How long the data plane holds the statement waiting for a decision,
    /// if the connection's policy says; recorded for the node, not used here.
    pub hold_ttl_ms: Option<u64>,
    /// After approval, how long the same statement may still be run once
    /// (for when the hold timed out before the decision).
    pub window_ms: u64,
}

/// One change to the region's control-plane state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Ask for `role` on `connection` for `duration_ms`.
    RequestAccess {
        requester: Actor,
        connection: String,
        role: String,
        level: AccessLevel,
        duration_ms: u64,
        /// Earliest start; the grant starts at approval time if this is
        /// absent or already past.
        not_before: Option<UnixMillis>,
        reason: String,
        rule: AccessRule,
    },
    /// Approve or deny a pending access request.
    ReviewAccess {
        id: AccessRequestId,
        reviewer: Actor,
        approve: bool,
        reason: Option<String>,
    },
    /// Withdraw one's own pending access request.
    CancelAccess { id: AccessRequestId, actor: Actor },
    /// End a grant now.
    RevokeGrant {
        id: GrantId,
        actor: Actor,
        reason: String,
    },
    /// Hold a risky statement for review.
    RequestApproval {
        requester: Actor,
        connection: String,
        session: SessionId,
        statement: String,
        /// Normalised form of the statement; a later run with the same
        /// fingerprint may use the approval.
        fingerprint: String,
        class: StatementClass,
        rule: ApprovalRule,
    },
    /// Approve or deny a pending approval request.
    ReviewApproval {
        id: ApprovalId,
        reviewer: Actor,
        approve: bool,
        reason: Option<String>,
    },
    /// Use an approved statement once: the data plane asks before it
    /// forwards a statement that needs approval.
    ConsumeApproval {
        requester: Identity,
        connection: String,
        fingerprint: String,
    },
    /// Withdraw one's own pending approval request.
    CancelApproval { id: ApprovalId, actor: Actor },
}

impl Command {
    /// The bytes that go into the log.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers into a Vec
        // cannot fail; fall back to an empty (undecodable) entry rather
        // than panic if serde_json ever disagrees.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses log bytes, refusing anything over the limits.
    pub fn decode(bytes: &[u8]) -> Result<Command, StateError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(StateError::TooLarge {
                what: "command",
                size: bytes.len(),
                max: MAX_COMMAND_BYTES,
            });
        }
        let command: Command = serde_json::from_slice(bytes).map_err(|err| StateError::Decode {
            what: "command",
            reason: err.to_string(),
        })?;
        command.check_limits()?;
        Ok(command)
    }

    /// Checks every field against the size limits. [`Command::decode`]
    /// does this; [`crate::StateMachine::apply`] does it again for
    /// commands built in memory.
    pub fn check_limits(&self) -> Result<(), StateError> {
        match self {
            Command::RequestAccess {
                requester,
                connection,
                role,
                reason,
                rule,
                ..
            } => {
                check_actor("requester", requester)?;
                check_name("connection", connection)?;
                check_name("role", role)?;
                check_text("reason", reason, MAX_REASON_BYTES)?;
                check_groups("rule.reviewer_groups", &rule.reviewer_groups)
            }
            Command::ReviewAccess {
                reviewer, reason, ..
            }
            | Command::ReviewApproval {
                reviewer, reason, ..
            } => {
                check_actor("reviewer", reviewer)?;
                match reason {
                    Some(reason) => check_text("reason", reason, MAX_REASON_BYTES),
                    None => Ok(()),
                }
            }
            Command::CancelAccess { actor, .. } | Command::CancelApproval { actor, .. } => {
                check_actor("actor", actor)
            }
            Command::RevokeGrant { actor, reason, .. } => {
                check_actor("actor", actor)?;
                check_text("reason", reason, MAX_REASON_BYTES)
            }
            Command::RequestApproval {
                requester,
                connection,
                statement,
                fingerprint,
                rule,
                ..
            } => {
                check_actor("requester", requester)?;
                check_name("connection", connection)?;
                check_text("statement", statement, MAX_STATEMENT_BYTES)?;
                check_name("fingerprint", fingerprint)?;
                check_groups("rule.reviewer_groups", &rule.reviewer_groups)
            }
            Command::ConsumeApproval {
                requester,
                connection,
                fingerprint,
            } => {
                check_name("requester.issuer", &requester.issuer)?;
                check_name("requester.subject", &requester.subject)?;
                check_name("connection", connection)?;
                check_name("fingerprint", fingerprint)
            }
        }
    }

    /// Short name of the command for messages and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RequestAccess { .. } => "request_access",
            Command::ReviewAccess { .. } => "review_access",
            Command::CancelAccess { .. } => "cancel_access",
            Command::RevokeGrant { .. } => "revoke_grant",
            Command::RequestApproval { .. } => "request_approval",
            Command::ReviewApproval { .. } => "review_approval",
            Command::ConsumeApproval { .. } => "consume_approval",
            Command::CancelApproval { .. } => "cancel_approval",
        }
    }
}

fn check_actor(role: &'static str, actor: &Actor) -> Result<(), StateError> {
    let field = |part: &str| format!("{role}.{part}");
    for (part, value) in [
        ("issuer", &actor.issuer),
        ("subject", &actor.subject),
        ("name", &actor.name),
    ] {
        if value.len() > MAX_NAME_BYTES {
            return Err(too_long(field(part), value.len(), MAX_NAME_BYTES));
        }
    }
    if actor.issuer.is_empty() || actor.subject.is_empty() {
        return Err(StateError::Invalid {
            field: field("subject"),
            reason: "an actor needs a non-empty issuer and subject".to_owned(),
        });
    }
    check_groups_named(field("groups"), &actor.groups)
}

fn check_name(field: &'static str, value: &str) -> Result<(), StateError> {
    check_text(field, value, MAX_NAME_BYTES)
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), StateError> {
    if value.len() > max {
        return Err(too_long(field.to_owned(), value.len(), max));
    }
    Ok(())
}

fn check_groups(field: &'static str, groups: &[String]) -> Result<(), StateError> {
    check_groups_named(field.to_owned(), groups)
}

fn check_groups_named(field: String, groups: &[String]) -> Result<(), StateError> {
    if groups.len() > MAX_GROUPS {
        return Err(StateError::Invalid {
            field,
            reason: format!("{} groups, at most {MAX_GROUPS} allowed", groups.len()),
        });
    }
    match groups.iter().find(|group| group.len() > MAX_NAME_BYTES) {
        Some(group) => Err(too_long(field, group.len(), MAX_NAME_BYTES)),
        None => Ok(()),
    }
}

fn too_long(field: String, size: usize, max: usize) -> StateError {
    StateError::Invalid {
        field,
        reason: format!("{size} bytes, at most {max} allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(subject: &str) -> Actor {
        Actor {
            issuer: "https://idp".into(),
            subject: subject.into(),
            name: subject.into(),
            groups: vec!["dev".into()],
        }
    }

    fn request_access() -> Command {
        Command::RequestAccess {
            requester: actor("alice"),
            connection: "billing-eu".into(),
            role: "read".into(),
            level: AccessLevel::Read,
            duration_ms: 3_600_000,
            not_before: None,
            reason: "INC-42".into(),
            rule: AccessRule {
                reviewer_groups: vec!["dba".into()],
                threshold: 1,
                max_duration_ms: 3_600_000,
                request_ttl_ms: 86_400_000,
            },
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let commands = [
            request_access(),
            Command::RequestApproval {
                requester: actor("alice"),
                connection: "billing-eu".into(),
                session: SessionId(u128::MAX),
                statement: "DROP TABLE t".into(),
                fingerprint: "drop table t".into(),
                class: StatementClass::Ddl,
                rule: ApprovalRule {
                    reviewer_groups: vec!["dba".into()],
                    threshold: 2,
                    hold_ttl_ms: Some(30_000),
                    window_ms: 600_000,
                },
            },
            Command::ConsumeApproval {
                requester: actor("alice").identity(),
                connection: "billing-eu".into(),
                fingerprint: "drop table t".into(),
            },
        ];
        for command in commands {
            assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        }
    }

    #[test]
    fn refuses_oversized_input_and_fields() {
        let huge = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert!(matches!(
            Command::decode(&huge),
            Err(StateError::TooLarge { .. })
        ));

        let Command::RequestAccess {
            requester,
            connection,
            role,
            level,
            duration_ms,
            not_before,
            rule,
            ..
        } = request_access()
        else {
            unreachable!()
        };
        let long_reason = Command::RequestAccess {
            requester,
            connection,
            role,
            level,
            duration_ms,
            not_before,
            reason: "x".repeat(MAX_REASON_BYTES + 1),
            rule,
        };
        let err = Command::decode(&long_reason.encode())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid reason: 4097 bytes, at most 4096 allowed");

        let mut many_groups = actor("bob");
        many_groups.groups = vec!["g".into(); MAX_GROUPS + 1];
        let review = Command::ReviewAccess {
            id: AccessRequestId(1),
            reviewer: many_groups,
            approve: true,
            reason: None,
        };
        let err = Command::decode(&review.encode()).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid reviewer.groups: 513 groups, at most 512 allowed"
        );

        let anonymous = Command::CancelAccess {
            id: AccessRequestId(1),
            actor: Actor {
                subject: String::new(),
                ..actor("x")
            },
        };
        let err = Command::decode(&anonymous.encode())
            .unwrap_err()
            .to_string();
        assert!(err.contains("non-empty issuer and subject"), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for bytes in [&b""[..], b"{", b"null", b"{\"nope\":{}}", &[0xff, 0xfe]] {
            let err = Command::decode(bytes).unwrap_err();
            assert!(matches!(err, StateError::Decode { .. }), "{err}");
        }
    }
}
