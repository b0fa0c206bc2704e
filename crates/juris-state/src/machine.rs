//! Applying commands. Every rule about who may do what, and when, lives
//! here, and every one of them is decided from the command and the stored
//! state alone, so that all nodes of a region reach the same result.
//!
//! Each handler checks everything first and only then changes state: a
//! rejected command leaves the machine exactly as it was (apart from the
//! clock, which every entry advances).

use std::collections::BTreeMap;

use juris_types::{AccessLevel, SessionId, StatementClass};

use crate::actor::{Actor, Identity};
use crate::command::{AccessRule, ApprovalRule, Command};
use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::index::{GrantIndex, OpenApprovals};
use crate::outcome::{Applied, Outcome, Rejection, RejectionKind, StateEvent};
use crate::record::{
    AccessRequest, AccessRequestStatus, Approval, ApprovalStatus, Decision, Grant, Review,
    Revocation,
};
use crate::time::{UnixMillis, format_duration};

type Handled = Result<(Outcome, Vec<StateEvent>), Rejection>;

/// A region's control-plane state: access requests, grants and command
/// approvals, as of the last applied log entry.
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub(crate) now: UnixMillis,
    pub(crate) next_access_request: u64,
    pub(crate) next_grant: u64,
    pub(crate) next_approval: u64,
    pub(crate) access_requests: BTreeMap<AccessRequestId, AccessRequest>,
    pub(crate) grants: BTreeMap<GrantId, Grant>,
    pub(crate) approvals: BTreeMap<ApprovalId, Approval>,
    pub(crate) grant_index: GrantIndex,
    pub(crate) open_approvals: OpenApprovals,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine::new()
    }
}

impl StateMachine {
    /// An empty state: the beginning of the log.
    pub fn new() -> StateMachine {
        StateMachine {
            now: UnixMillis(0),
            next_access_request: 1,
            next_grant: 1,
            next_approval: 1,
            access_requests: BTreeMap::new(),
            grants: BTreeMap::new(),
            approvals: BTreeMap::new(),
            grant_index: GrantIndex::default(),
            open_approvals: OpenApprovals::default(),
        }
    }

    /// Applies one log entry stamped with `leader_time`.
    pub fn apply(&mut self, command: &Command, leader_time: UnixMillis) -> Applied {
        self.observe_time(leader_time);
        if let Err(err) = command.check_limits() {
            return Applied::rejected(Rejection::new(RejectionKind::Invalid, err.to_string()));
        }
        let handled = match command {
            Command::RequestAccess {
                requester,
                connection,
                role,
                level,
                duration_ms,
                not_before,
                reason,
                rule,
            } => self.request_access(NewAccessRequest {
                requester,
                connection,
                role,
                level: *level,
                duration_ms: *duration_ms,
                not_before: *not_before,
                reason,
                rule,
            }),
            Command::ReviewAccess {
                id,
                reviewer,
                approve,
                reason,
            } => self.review_access(*id, reviewer, *approve, reason.as_ref()),
            Command::CancelAccess { id, actor } => self.cancel_access(*id, actor),
            Command::RevokeGrant { id, actor, reason } => self.revoke_grant(*id, actor, reason),
            Command::RequestApproval {
                requester,
                connection,
                session,
                statement,
                fingerprint,
                class,
                rule,
            } => self.request_approval(NewApproval {
                requester,
                connection,
                session: *session,
                statement,
                fingerprint,
                class: *class,
                rule,
            }),
            Command::ReviewApproval {
                id,
                reviewer,
                approve,
                reason,
            } => self.review_approval(*id, reviewer, *approve, reason.as_ref()),
            Command::ConsumeApproval {
                requester,
                connection,
                fingerprint,
            } => self.consume_approval(requester, connection, fingerprint),
            Command::CancelApproval { id, actor } => self.cancel_approval(*id, actor),
        };
        match handled {
            Ok((outcome, events)) => Applied {
                result: Ok(outcome),
                events,
            },
            Err(rejection) => Applied::rejected(rejection),
        }
    }

    /// Decodes and applies one log entry. Bytes that do not decode become
    /// a rejection (the entry is in the log on every node, so every node
    /// rejects it the same way); this never panics.
    pub fn apply_bytes(&mut self, bytes: &[u8], leader_time: UnixMillis) -> Applied {
        match Command::decode(bytes) {
            Ok(command) => self.apply(&command, leader_time),
            Err(err) => {
                self.observe_time(leader_time);
                Applied::rejected(Rejection::new(RejectionKind::Invalid, err.to_string()))
            }
        }
    }

    /// Advances the clock for a log entry that carries no command (a Raft
    /// blank or membership entry). The clock never goes backwards, so a
    /// new leader whose clock is behind cannot un-expire anything.
    pub fn observe_time(&mut self, leader_time: UnixMillis) {
        if leader_time <= self.now {
            return;
        }
        self.now = leader_time;
        self.grant_index.advance(self.now, &self.grants);
        self.open_approvals.advance(self.now);
    }

    fn request_access(&mut self, new: NewAccessRequest<'_>) -> Handled {
        check_rule(new.rule.threshold, &new.rule.reviewer_groups, "access")?;
        if new.rule.request_ttl_ms == 0 {
            return Err(invalid(
                "the access rule's request TTL must be longer than zero",
            ));
        }
        if new.connection.is_empty() || new.role.is_empty() {
            return Err(invalid("an access request names a connection and a role"));
        }
        if new.duration_ms == 0 {
            return Err(invalid("the requested duration must be longer than zero"));
        }
        if new.duration_ms > new.rule.max_duration_ms {
            return Err(invalid(format!(
                "the requested duration {} exceeds the maximum of {} for role `{}` on `{}`",
                format_duration(new.duration_ms),
                format_duration(new.rule.max_duration_ms),
                new.role,
                new.connection
            )));
        }
        if new.reason.trim().is_empty() {
            return Err(invalid(
                "a reason is required, for example the ticket or incident it is for",
            ));
        }

        let id = AccessRequestId(self.next_access_request);
        self.next_access_request += 1;
        let request = AccessRequest {
            id,
            requester: new.requester.clone(),
            connection: new.connection.to_owned(),
            role: new.role.to_owned(),
            level: new.level,
            duration_ms: new.duration_ms,
            not_before: new.not_before,
            reason: new.reason.to_owned(),
            rule: new.rule.clone(),
            created_at: self.now,
            reviews: Vec::new(),
            decision: Decision::Pending,
            decided_at: None,
            grant: None,
        };
        let event = StateEvent::AccessRequested {
            request: id,
            requester: request.requester.clone(),
            connection: request.connection.clone(),
            role: request.role.clone(),
            level: request.level,
            duration_ms: request.duration_ms,
            not_before: request.not_before,
            reason: request.reason.clone(),
            at: self.now,
        };
        let outcome = Outcome::AccessRequested {
            id,
            expires_at: request.review_deadline(),
        };
        self.access_requests.insert(id, request);
        Ok((outcome, vec![event]))
    }

    fn review_access(
        &mut self,
        id: AccessRequestId,
        reviewer: &Actor,
        approve: bool,
        reason: Option<&String>,
    ) -> Handled {
        let now = self.now;
        let request = self
            .access_requests
            .get(&id)
            .ok_or_else(|| not_found(format!("access request {id} does not exist")))?;
        self.require_pending_request(request)?;
        check_reviewer(
            reviewer,
            &request.requester,
            &request.rule.reviewer_groups,
            &request.reviews,
            approve,
            &format!("access request {id}"),
        )?;

        let grant_id = GrantId(self.next_grant);
        let request = self
            .access_requests
            .get_mut(&id)
            .ok_or_else(|| not_found(format!("access request {id} does not exist")))?;
        request.reviews.push(Review {
            reviewer: reviewer.clone(),
            approve,
            reason: reason.cloned(),
            at: now,
        });
        let approvals = request.approvals();
        let threshold = request.rule.threshold;
        let requester = request.requester.identity();
        let mut events = vec![StateEvent::AccessReviewed {
            request: id,
            requester: requester.clone(),
            reviewer: reviewer.clone(),
            approve,
            reason: reason.cloned(),
            connection: request.connection.clone(),
            role: request.role.clone(),
            approvals,
            threshold,
            at: now,
        }];

        let mut grant = None;
        if !approve {
            request.decision = Decision::Denied;
            request.decided_at = Some(now);
            events.push(StateEvent::AccessDenied {
                request: id,
                requester,
                denied_by: reviewer.clone(),
                connection: request.connection.clone(),
                role: request.role.clone(),
                at: now,
            });
        } else if approvals >= threshold {
            // Reached exactly once: the request leaves Pending here, and
            // only pending requests accept reviews.
            request.decision = Decision::Approved;
            request.decided_at = Some(now);
            request.grant = Some(grant_id);
            let not_before = request.not_before.map_or(now, |wanted| wanted.max(now));
            let created = Grant {
                id: grant_id,
                request: id,
                holder: request.requester.clone(),
                connection: request.connection.clone(),
                role: request.role.clone(),
                level: request.level,
                granted_at: now,
                not_before,
                expires_at: not_before.saturating_add(request.duration_ms),
                revocation: None,
            };
            let approvers = request
                .reviews
                .iter()
                .filter(|review| review.approve)
                .map(|review| review.reviewer.clone())
                .collect();
            events.push(StateEvent::GrantCreated {
                grant: created.clone(),
                approvers,
            });
            self.next_grant += 1;
            self.grant_index.insert(&created, now);
            self.grants.insert(grant_id, created.clone());
            grant = Some(created);
        }
        let status = self.access_requests[&id].status(now);
        Ok((
            Outcome::AccessReviewed {
                id,
                status,
                approvals,
                threshold,
                grant,
            },
            events,
        ))
    }

    fn cancel_access(&mut self, id: AccessRequestId, actor: &Actor) -> Handled {
        let now = self.now;
        let request = self
            .access_requests
            .get_mut(&id)
            .ok_or_else(|| not_found(format!("access request {id} does not exist")))?;
        if !actor.same_identity(&request.requester) {
            return Err(not_allowed(format!(
                "only the requester ({}) may cancel access request {id}",
                request.requester.name
            )));
        }
        if let Some(message) = request_not_pending(request, now) {
            return Err(conflict(message));
        }
        request.decision = Decision::Cancelled;
        request.decided_at = Some(now);
        let event = StateEvent::AccessCancelled {
            request: id,
            requester: request.requester.clone(),
            connection: request.connection.clone(),
            role: request.role.clone(),
            at: now,
        };
        Ok((Outcome::AccessCancelled { id }, vec![event]))
    }

    fn revoke_grant(&mut self, id: GrantId, actor: &Actor, reason: &str) -> Handled {
        let now = self.now;
        let grant = self
            .grants
            .get_mut(&id)
            .ok_or_else(|| not_found(format!("grant {id} does not exist")))?;
        if let Some(earlier) = &grant.revocation {
            return Err(conflict(format!(
                "grant {id} was already revoked by {} at {}: {}",
                earlier.by.name, earlier.at, earlier.reason
            )));
        }
        if grant.expires_at <= now {
            return Err(conflict(format!(
                "grant {id} already expired at {}; there is nothing to revoke",
                grant.expires_at
            )));
        }
        if reason.trim().is_empty() {
            return Err(invalid("a reason is required to revoke a grant"));
        }
        self.grant_index.remove(grant);
        let revocation = Revocation {
            at: now,
            by: actor.clone(),
            reason: reason.to_owned(),
        };
        grant.revocation = Some(revocation.clone());
        let event = StateEvent::GrantRevoked {
            grant: id,
            request: grant.request,
            holder: grant.holder.clone(),
            connection: grant.connection.clone(),
            role: grant.role.clone(),
            revocation,
        };
        Ok((
            Outcome::GrantRevoked {
                grant: grant.clone(),
            },
            vec![event],
        ))
    }

    fn request_approval(&mut self, new: NewApproval<'_>) -> Handled {
        check_rule(new.rule.threshold, &new.rule.reviewer_groups, "approval")?;
        if new.rule.window_ms == 0 {
            return Err(invalid(
                "the approval rule's window must be longer than zero",
            ));
        }
        if new.connection.is_empty() {
            return Err(invalid("an approval request names a connection"));
        }
        if new.statement.trim().is_empty() || new.fingerprint.is_empty() {
            return Err(invalid(
                "an approval request needs the statement and its fingerprint",
            ));
        }

        let id = ApprovalId(self.next_approval);
        self.next_approval += 1;
        let approval = Approval {
            id,
            requester: new.requester.clone(),
            connection: new.connection.to_owned(),
            session: new.session,
            statement: new.statement.to_owned(),
            fingerprint: new.fingerprint.to_owned(),
            class: new.class,
            rule: new.rule.clone(),
            created_at: self.now,
            reviews: Vec::new(),
            decision: Decision::Pending,
            decided_at: None,
            usable_until: None,
            consumed_at: None,
        };
        let event = StateEvent::ApprovalRequested {
            approval: id,
            requester: approval.requester.clone(),
            connection: approval.connection.clone(),
            session: approval.session,
            statement: approval.statement.clone(),
            fingerprint: approval.fingerprint.clone(),
            class: approval.class,
            at: self.now,
        };
        self.approvals.insert(id, approval);
        Ok((Outcome::ApprovalRequested { id }, vec![event]))
    }

    fn review_approval(
        &mut self,
        id: ApprovalId,
        reviewer: &Actor,
        approve: bool,
        reason: Option<&String>,
    ) -> Handled {
        let now = self.now;
        let approval = self
            .approvals
            .get_mut(&id)
            .ok_or_else(|| not_found(format!("approval {id} does not exist")))?;
        if let Some(message) = approval_not_pending(approval, now) {
            return Err(conflict(message));
        }
        check_reviewer(
            reviewer,
            &approval.requester,
            &approval.rule.reviewer_groups,
            &approval.reviews,
            approve,
            &format!("approval {id}"),
        )?;

        approval.reviews.push(Review {
            reviewer: reviewer.clone(),
            approve,
            reason: reason.cloned(),
            at: now,
        });
        let approvals = approval.approvals();
        let threshold = approval.rule.threshold;
        let requester = approval.requester.identity();
        let mut events = vec![StateEvent::ApprovalReviewed {
            approval: id,
            requester: requester.clone(),
            reviewer: reviewer.clone(),
            approve,
            reason: reason.cloned(),
            connection: approval.connection.clone(),
            approvals,
            threshold,
            at: now,
        }];
        let decided = if !approve {
            approval.decision = Decision::Denied;
            true
        } else if approvals >= threshold {
            // Reached exactly once, as for access requests.
            approval.decision = Decision::Approved;
            approval.usable_until = Some(now.saturating_add(approval.rule.window_ms));
            true
        } else {
            false
        };
        if decided {
            approval.decided_at = Some(now);
            events.push(StateEvent::ApprovalDecided {
                approval: id,
                requester,
                connection: approval.connection.clone(),
                session: approval.session,
                fingerprint: approval.fingerprint.clone(),
                approved: approve,
                at: now,
                usable_until: approval.usable_until,
            });
            self.open_approvals.insert(approval, now);
        }
        Ok((
            Outcome::ApprovalReviewed {
                id,
                status: approval.status(now),
                approvals,
                threshold,
                usable_until: approval.usable_until,
            },
            events,
        ))
    }

    fn consume_approval(
        &mut self,
        requester: &Identity,
        connection: &str,
        fingerprint: &str,
    ) -> Handled {
        let now = self.now;
        let found = self.open_approvals.iter().find(|id| {
            self.approvals.get(id).is_some_and(|approval| {
                approval.requester.is(&requester.issuer, &requester.subject)
                    && approval.connection == connection
                    && approval.fingerprint == fingerprint
                    && approval.window_open(now)
            })
        });
        let Some(approval) = found.and_then(|id| self.approvals.get_mut(&id)) else {
            return Err(conflict(format!(
                "no approval: {} has no approved, unused approval of this statement on `{connection}` at {now}",
                requester.subject
            )));
        };
        self.open_approvals.remove(approval);
        approval.consumed_at = Some(now);
        let event = StateEvent::ApprovalConsumed {
            approval: approval.id,
            requester: requester.clone(),
            connection: approval.connection.clone(),
            session: approval.session,
            fingerprint: approval.fingerprint.clone(),
            at: now,
        };
        Ok((Outcome::ApprovalConsumed { id: approval.id }, vec![event]))
    }

    fn cancel_approval(&mut self, id: ApprovalId, actor: &Actor) -> Handled {
        let now = self.now;
        let approval = self
            .approvals
            .get_mut(&id)
            .ok_or_else(|| not_found(format!("approval {id} does not exist")))?;
        if !actor.same_identity(&approval.requester) {
            return Err(not_allowed(format!(
                "only the requester ({}) may cancel approval {id}",
                approval.requester.name
            )));
        }
        if let Some(message) = approval_not_pending(approval, now) {
            return Err(conflict(message));
        }
        approval.decision = Decision::Cancelled;
        approval.decided_at = Some(now);
        let event = StateEvent::ApprovalCancelled {
            approval: id,
            requester: approval.requester.clone(),
            connection: approval.connection.clone(),
            session: approval.session,
            at: now,
        };
        Ok((Outcome::ApprovalCancelled { id }, vec![event]))
    }

    fn require_pending_request(&self, request: &AccessRequest) -> Result<(), Rejection> {
        match request_not_pending(request, self.now) {
            Some(message) => Err(conflict(message)),
            None => Ok(()),
        }
    }
}

/// The fields of [`Command::RequestAccess`], borrowed.
struct NewAccessRequest<'a> {
    requester: &'a Actor,
    connection: &'a str,
    role: &'a str,
    level: AccessLevel,
    duration_ms: u64,
    not_before: Option<UnixMillis>,
    reason: &'a str,
    rule: &'a AccessRule,
}

/// The fields of [`Command::RequestApproval`], borrowed.
struct NewApproval<'a> {
    requester: &'a Actor,
    connection: &'a str,
    session: SessionId,
    statement: &'a str,
    fingerprint: &'a str,
    class: StatementClass,
    rule: &'a ApprovalRule,
}

fn check_rule(threshold: u32, reviewer_groups: &[String], what: &str) -> Result<(), Rejection> {
    if threshold == 0 {
        return Err(invalid(format!(
            "the {what} rule's threshold must be at least 1"
        )));
    }
    if reviewer_groups.is_empty() {
        return Err(invalid(format!(
            "the {what} rule names no reviewer groups, so nobody could approve this"
        )));
    }
    Ok(())
}

/// The reviewer rules shared by access requests and approvals.
fn check_reviewer(
    reviewer: &Actor,
    requester: &Actor,
    reviewer_groups: &[String],
    reviews: &[Review],
    approve: bool,
    what: &str,
) -> Result<(), Rejection> {
    if reviewer.same_identity(requester) {
        return Err(not_allowed(if approve {
            "a requester never approves their own request".to_owned()
        } else {
            "a requester never reviews their own request; cancel it instead".to_owned()
        }));
    }
    if !reviewer.in_any_group(reviewer_groups) {
        return Err(not_allowed(format!(
            "{} is in none of the reviewer groups of {what} ({})",
            reviewer.name,
            reviewer_groups.join(", ")
        )));
    }
    if let Some(earlier) = reviews
        .iter()
        .find(|review| review.reviewer.same_identity(reviewer))
    {
        return Err(conflict(format!(
            "{} already reviewed {what} at {} ({})",
            reviewer.name,
            earlier.at,
            if earlier.approve {
                "approved"
            } else {
                "denied"
            }
        )));
    }
    Ok(())
}

/// Why an access request no longer accepts reviews or cancellation.
fn request_not_pending(request: &AccessRequest, now: UnixMillis) -> Option<String> {
    let id = request.id;
    Some(match request.status(now) {
        AccessRequestStatus::Pending => return None,
        AccessRequestStatus::Expired => format!(
            "access request {id} expired at {} before enough reviewers approved it; request access again",
            request.review_deadline()
        ),
        AccessRequestStatus::Granted => match request.grant {
            Some(grant) => format!("access request {id} was already granted ({grant})"),
            None => format!("access request {id} was already granted"),
        },
        AccessRequestStatus::Denied => format!(
            "access request {id} was already denied{}",
            denier(&request.reviews)
        ),
        AccessRequestStatus::Cancelled => {
            format!("access request {id} was cancelled by its requester")
        }
    })
}

/// Why an approval no longer accepts reviews or cancellation.
fn approval_not_pending(approval: &Approval, now: UnixMillis) -> Option<String> {
    let id = approval.id;
    Some(match approval.status(now) {
        ApprovalStatus::Pending => return None,
        ApprovalStatus::Approved => format!("approval {id} was already approved"),
        ApprovalStatus::Consumed => format!("approval {id} was already approved and used"),
        ApprovalStatus::Lapsed => format!(
            "approval {id} was already approved; its window closed at {}",
            approval.usable_until.unwrap_or(now)
        ),
        ApprovalStatus::Denied => format!(
            "approval {id} was already denied{}",
            denier(&approval.reviews)
        ),
        ApprovalStatus::Cancelled => format!("approval {id} was cancelled by its requester"),
    })
}

fn denier(reviews: &[Review]) -> String {
    reviews
        .iter()
        .find(|review| !review.approve)
        .map(|review| format!(" by {}", review.reviewer.name))
        .unwrap_or_default()
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::Invalid, message)
}

fn not_found(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::NotFound, message)
}

fn not_allowed(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::NotAllowed, message)
}

fn conflict(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::Conflict, message)
}
