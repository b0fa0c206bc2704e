//! Unit tests of every rule and rejection, driven through `apply` the way
//! the Raft layer drives the machine.

use juris_types::{AccessLevel, SessionId, StatementClass};

use crate::*;

const HOUR: u64 = 3_600_000;
const T0: UnixMillis = UnixMillis(1_777_636_800_000);

fn at(offset_ms: u64) -> UnixMillis {
    T0.saturating_add(offset_ms)
}

fn actor(subject: &str, groups: &[&str]) -> Actor {
    Actor {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        name: format!("{subject}@example.com"),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn alice() -> Actor {
    actor("alice", &["dev", "dba"])
}
fn bob() -> Actor {
    actor("bob", &["dba"])
}
fn carol() -> Actor {
    actor("carol", &["dba", "sre"])
}
fn mallory() -> Actor {
    actor("mallory", &["dev"])
}

fn access_rule(threshold: u32) -> AccessRule {
    AccessRule {
        reviewer_groups: vec!["dba".into(), "security".into()],
        threshold,
        max_duration_ms: 4 * HOUR,
        request_ttl_ms: 24 * HOUR,
    }
}

fn request_access(duration_ms: u64, threshold: u32) -> Command {
    Command::RequestAccess {
        requester: alice(),
        connection: "billing-eu".into(),
        role: "read".into(),
        level: AccessLevel::Read,
        duration_ms,
        not_before: None,
        reason: "INC-42".into(),
        rule: access_rule(threshold),
    }
}

fn review(id: u64, reviewer: Actor, approve: bool) -> Command {
    Command::ReviewAccess {
        id: AccessRequestId(id),
        reviewer,
        approve,
        reason: Some("ok".into()),
    }
}

fn approval_rule(threshold: u32) -> ApprovalRule {
    ApprovalRule {
        reviewer_groups: vec!["dba".into()],
        threshold,
        hold_ttl_ms: Some(30_000),
        window_ms: 600_000,
    }
}

fn request_approval(threshold: u32) -> Command {
    Command::RequestApproval {
        requester: alice(),
        connection: "billing-eu".into(),
        session: SessionId(7),
        statement: "DROP TABLE invoices".into(),
        fingerprint: "drop table invoices".into(),
        class: StatementClass::Ddl,
        rule: approval_rule(threshold),
    }
}

fn review_approval(id: u64, reviewer: Actor, approve: bool) -> Command {
    Command::ReviewApproval {
        id: ApprovalId(id),
        reviewer,
        approve,
        reason: None,
    }
}

fn consume(subject: &str, connection: &str, fingerprint: &str) -> Command {
    Command::ConsumeApproval {
        requester: Identity {
            issuer: "https://idp.example.com".into(),
            subject: subject.into(),
        },
        connection: connection.into(),
        fingerprint: fingerprint.into(),
    }
}

fn ok(applied: Applied) -> (Outcome, Vec<StateEvent>) {
    match applied.result {
        Ok(outcome) => (outcome, applied.events),
        Err(rejection) => panic!("unexpected rejection: {}", rejection.message),
    }
}

#[track_caller]
fn rejected(applied: Applied, kind: RejectionKind) -> String {
    assert!(applied.events.is_empty(), "a rejection changes nothing");
    match applied.result {
        Ok(outcome) => panic!("expected a rejection, got {outcome:?}"),
        Err(rejection) => {
            assert_eq!(rejection.kind, kind, "{}", rejection.message);
            rejection.message
        }
    }
}

/// A machine with one granted request (ar-1 → g-1, 1h from T0).
fn granted() -> StateMachine {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), T0));
    ok(machine.apply(&review(1, bob(), true), T0));
    machine
}

// ---- access requests ----

#[test]
fn request_access_creates_a_pending_request() {
    let mut machine = StateMachine::new();
    let (outcome, events) = ok(machine.apply(&request_access(HOUR, 1), T0));
    assert_eq!(
        outcome,
        Outcome::AccessRequested {
            id: AccessRequestId(1),
            expires_at: at(24 * HOUR)
        }
    );
    assert!(matches!(
        &events[..],
        [StateEvent::AccessRequested { request: AccessRequestId(1), connection, role, at, .. }]
            if connection == "billing-eu" && role == "read" && *at == T0
    ));
    let request = machine.access_request(AccessRequestId(1)).unwrap();
    assert_eq!(request.status(T0), AccessRequestStatus::Pending);
    assert_eq!(request.created_at, T0);
    // Ids are sequential.
    let (outcome, _) = ok(machine.apply(&request_access(HOUR, 1), T0));
    assert!(matches!(
        outcome,
        Outcome::AccessRequested {
            id: AccessRequestId(2),
            ..
        }
    ));
}

#[test]
fn request_access_rejections() {
    let mut machine = StateMachine::new();
    let message = rejected(
        machine.apply(&request_access(0, 1), T0),
        RejectionKind::Invalid,
    );
    assert_eq!(message, "the requested duration must be longer than zero");

    let message = rejected(
        machine.apply(&request_access(5 * HOUR, 1), T0),
        RejectionKind::Invalid,
    );
    assert_eq!(
        message,
        "the requested duration 5h exceeds the maximum of 4h for role `read` on `billing-eu`"
    );

    let message = rejected(
        machine.apply(&request_access(HOUR, 0), T0),
        RejectionKind::Invalid,
    );
    assert_eq!(message, "the access rule's threshold must be at least 1");

    let mut no_reason = request_access(HOUR, 1);
    if let Command::RequestAccess { reason, .. } = &mut no_reason {
        *reason = "  ".into();
    }
    let message = rejected(machine.apply(&no_reason, T0), RejectionKind::Invalid);
    assert!(message.starts_with("a reason is required"), "{message}");

    let mut no_reviewers = request_access(HOUR, 1);
    if let Command::RequestAccess { rule, .. } = &mut no_reviewers {
        rule.reviewer_groups.clear();
    }
    let message = rejected(machine.apply(&no_reviewers, T0), RejectionKind::Invalid);
    assert!(message.contains("names no reviewer groups"), "{message}");

    let mut no_ttl = request_access(HOUR, 1);
    if let Command::RequestAccess { rule, .. } = &mut no_ttl {
        rule.request_ttl_ms = 0;
    }
    let message = rejected(machine.apply(&no_ttl, T0), RejectionKind::Invalid);
    assert!(message.contains("request TTL"), "{message}");

    let mut no_role = request_access(HOUR, 1);
    if let Command::RequestAccess { role, .. } = &mut no_role {
        role.clear();
    }
    rejected(machine.apply(&no_role, T0), RejectionKind::Invalid);

    // A command built in memory is held to the same size limits as a decoded one.
    let mut huge = request_access(HOUR, 1);
    if let Command::RequestAccess { connection, .. } = &mut huge {
        *connection = "c".repeat(command::MAX_NAME_BYTES + 1);
    }
    let message = rejected(machine.apply(&huge, T0), RejectionKind::Invalid);
    assert_eq!(
        message,
        "invalid connection: 1025 bytes, at most 1024 allowed"
    );

    // Nothing was created and no id was used up.
    assert_eq!(
        machine
            .access_requests(AccessRequestFilter::default(), T0)
            .count(),
        0
    );
    let (outcome, _) = ok(machine.apply(&request_access(HOUR, 1), T0));
    assert!(matches!(
        outcome,
        Outcome::AccessRequested {
            id: AccessRequestId(1),
            ..
        }
    ));
}

#[test]
fn a_requester_never_reviews_their_own_request() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), T0));
    let message = rejected(
        machine.apply(&review(1, alice(), true), T0),
        RejectionKind::NotAllowed,
    );
    assert_eq!(message, "a requester never approves their own request");
    // Same identity under another display name and groups is still the requester.
    let renamed = Actor {
        name: "Alice A.".into(),
        groups: vec!["security".into()],
        ..alice()
    };
    rejected(
        machine.apply(&review(1, renamed, true), T0),
        RejectionKind::NotAllowed,
    );
    let message = rejected(
        machine.apply(&review(1, alice(), false), T0),
        RejectionKind::NotAllowed,
    );
    assert_eq!(
        message,
        "a requester never reviews their own request; cancel it instead"
    );
    // Same subject from another issuer is someone else.
    let other_issuer = Actor {
        issuer: "https://other-idp".into(),
        ..alice()
    };
    ok(machine.apply(&review(1, other_issuer, true), T0));
}

#[test]
fn reviewers_must_be_in_a_reviewer_group() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), T0));
    let message = rejected(
        machine.apply(&review(1, mallory(), true), T0),
        RejectionKind::NotAllowed,
    );
    assert_eq!(
        message,
        "mallory@example.com is in none of the reviewer groups of access request ar-1 (dba, security)"
    );
}

#[test]
fn a_reviewer_reviews_once() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 2), T0));
    ok(machine.apply(&review(1, bob(), true), T0));
    let message = rejected(
        machine.apply(&review(1, bob(), true), at(1)),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "bob@example.com already reviewed access request ar-1 at 2026-05-01T12:00:00.000Z (approved)"
    );
}

#[test]
fn the_threshold_creates_exactly_one_grant() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 2), T0));
    let (outcome, events) = ok(machine.apply(&review(1, bob(), true), at(10)));
    assert_eq!(
        outcome,
        Outcome::AccessReviewed {
            id: AccessRequestId(1),
            status: AccessRequestStatus::Pending,
            approvals: 1,
            threshold: 2,
            grant: None
        }
    );
    assert_eq!(events.len(), 1);
    assert!(
        machine
            .grants(GrantFilter::default(), at(10))
            .next()
            .is_none()
    );

    let (outcome, events) = ok(machine.apply(&review(1, carol(), true), at(20)));
    let Outcome::AccessReviewed {
        status: AccessRequestStatus::Granted,
        approvals: 2,
        grant: Some(grant),
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(grant.id, GrantId(1));
    assert_eq!(
        (grant.not_before, grant.expires_at),
        (at(20), at(20 + HOUR))
    );
    assert_eq!(grant.holder, alice());
    assert!(matches!(
        &events[..],
        [StateEvent::AccessReviewed { .. }, StateEvent::GrantCreated { grant: g, approvers }]
            if g.id == GrantId(1) && approvers.len() == 2
    ));
    assert_eq!(
        machine.access_request(AccessRequestId(1)).unwrap().grant,
        Some(GrantId(1))
    );

    // A third reviewer is too late.
    let message = rejected(
        machine.apply(&review(1, actor("dave", &["security"]), true), at(30)),
        RejectionKind::Conflict,
    );
    assert_eq!(message, "access request ar-1 was already granted (g-1)");
    assert_eq!(machine.grants(GrantFilter::default(), at(30)).count(), 1);
}

#[test]
fn a_deny_is_final() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 2), T0));
    ok(machine.apply(&review(1, bob(), true), T0));
    let (outcome, events) = ok(machine.apply(&review(1, carol(), false), T0));
    assert!(matches!(
        outcome,
        Outcome::AccessReviewed {
            status: AccessRequestStatus::Denied,
            grant: None,
            ..
        }
    ));
    assert!(matches!(
        &events[..],
        [StateEvent::AccessReviewed { approve: false, .. }, StateEvent::AccessDenied { denied_by, .. }]
            if denied_by.subject == "carol"
    ));
    let message = rejected(
        machine.apply(&review(1, actor("dave", &["dba"]), true), T0),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "access request ar-1 was already denied by carol@example.com"
    );
    assert!(machine.grants(GrantFilter::default(), T0).next().is_none());
}

#[test]
fn pending_requests_expire_after_their_ttl() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), T0));
    let request = machine.access_request(AccessRequestId(1)).unwrap();
    assert_eq!(
        request.status(at(24 * HOUR - 1)),
        AccessRequestStatus::Pending
    );
    assert_eq!(request.status(at(24 * HOUR)), AccessRequestStatus::Expired);
    let message = rejected(
        machine.apply(&review(1, bob(), true), at(24 * HOUR)),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "access request ar-1 expired at 2026-05-02T12:00:00.000Z before enough reviewers approved it; request access again"
    );
    let message = rejected(
        machine.apply(
            &Command::CancelAccess {
                id: AccessRequestId(1),
                actor: alice(),
            },
            at(24 * HOUR),
        ),
        RejectionKind::Conflict,
    );
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn grants_start_at_the_later_of_approval_and_not_before() {
    let mut machine = StateMachine::new();
    let mut later = request_access(HOUR, 1);
    if let Command::RequestAccess { not_before, .. } = &mut later {
        *not_before = Some(at(2 * HOUR));
    }
    let mut earlier = later.clone();
    if let Command::RequestAccess { not_before, .. } = &mut earlier {
        *not_before = Some(UnixMillis(1));
    }
    ok(machine.apply(&later, T0));
    ok(machine.apply(&earlier, T0));
    ok(machine.apply(&review(1, bob(), true), at(5)));
    ok(machine.apply(&review(2, bob(), true), at(5)));
    let scheduled = machine.grant(GrantId(1)).unwrap();
    assert_eq!(
        (scheduled.not_before, scheduled.expires_at),
        (at(2 * HOUR), at(3 * HOUR))
    );
    assert_eq!(scheduled.status(at(5)), GrantStatus::Scheduled);
    let immediate = machine.grant(GrantId(2)).unwrap();
    assert_eq!(
        (immediate.not_before, immediate.expires_at),
        (at(5), at(5 + HOUR))
    );
}

#[test]
fn unknown_ids_are_not_found() {
    let mut machine = StateMachine::new();
    let message = rejected(
        machine.apply(&review(99, bob(), true), T0),
        RejectionKind::NotFound,
    );
    assert_eq!(message, "access request ar-99 does not exist");
    let message = rejected(
        machine.apply(
            &Command::RevokeGrant {
                id: GrantId(5),
                actor: bob(),
                reason: "x".into(),
            },
            T0,
        ),
        RejectionKind::NotFound,
    );
    assert_eq!(message, "grant g-5 does not exist");
    let message = rejected(
        machine.apply(&review_approval(3, bob(), true), T0),
        RejectionKind::NotFound,
    );
    assert_eq!(message, "approval ap-3 does not exist");
}

#[test]
fn only_the_requester_cancels_and_only_while_pending() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), T0));
    let cancel = |who: Actor| Command::CancelAccess {
        id: AccessRequestId(1),
        actor: who,
    };
    let message = rejected(machine.apply(&cancel(bob()), T0), RejectionKind::NotAllowed);
    assert_eq!(
        message,
        "only the requester (alice@example.com) may cancel access request ar-1"
    );
    let (outcome, events) = ok(machine.apply(&cancel(alice()), T0));
    assert_eq!(
        outcome,
        Outcome::AccessCancelled {
            id: AccessRequestId(1)
        }
    );
    assert!(matches!(&events[..], [StateEvent::AccessCancelled { .. }]));
    let message = rejected(machine.apply(&cancel(alice()), T0), RejectionKind::Conflict);
    assert_eq!(
        message,
        "access request ar-1 was cancelled by its requester"
    );
    let message = rejected(
        machine.apply(&review(1, bob(), true), T0),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "access request ar-1 was cancelled by its requester"
    );

    let mut machine = granted();
    let message = rejected(machine.apply(&cancel(alice()), T0), RejectionKind::Conflict);
    assert_eq!(message, "access request ar-1 was already granted (g-1)");
}

// ---- grants ----

#[test]
fn active_grant_checks_holder_connection_role_and_time() {
    let machine = granted();
    let issuer = "https://idp.example.com";
    let check = |subject: &str, connection: &str, role: &str, now: UnixMillis| {
        machine
            .active_grant(issuer, subject, connection, role, now)
            .map(|grant| grant.id)
    };
    assert_eq!(check("alice", "billing-eu", "read", T0), Some(GrantId(1)));
    assert_eq!(
        check("alice", "billing-eu", "read", at(HOUR - 1)),
        Some(GrantId(1))
    );
    assert_eq!(check("alice", "billing-eu", "read", at(HOUR)), None);
    assert_eq!(check("alice", "billing-eu", "admin", T0), None);
    assert_eq!(check("alice", "billing-us", "read", T0), None);
    assert_eq!(check("bob", "billing-eu", "read", T0), None);
    assert_eq!(
        machine.active_grant("https://other", "alice", "billing-eu", "read", T0),
        None
    );
    assert!(machine.is_grant_active(GrantId(1), T0));
    assert!(!machine.is_grant_active(GrantId(1), at(HOUR)));
    assert!(!machine.is_grant_active(GrantId(2), T0));
}

#[test]
fn active_grant_prefers_the_longest_lasting() {
    let mut machine = granted();
    let mut longer = request_access(3 * HOUR, 1);
    if let Command::RequestAccess { reason, .. } = &mut longer {
        *reason = "INC-43".into();
    }
    ok(machine.apply(&longer, at(10)));
    ok(machine.apply(&review(2, bob(), true), at(10)));
    let grant = machine
        .active_grant(
            "https://idp.example.com",
            "alice",
            "billing-eu",
            "read",
            at(20),
        )
        .unwrap();
    assert_eq!(grant.id, GrantId(2));
}

#[test]
fn queries_never_evaluate_before_the_last_applied_time() {
    let mut machine = granted();
    // The log has moved past the grant's expiry; a node whose clock lags
    // behind still sees it as expired.
    machine.observe_time(at(2 * HOUR));
    assert_eq!(machine.now(), at(2 * HOUR));
    assert!(!machine.is_grant_active(GrantId(1), T0));
    assert!(
        machine
            .active_grant("https://idp.example.com", "alice", "billing-eu", "read", T0)
            .is_none()
    );
    assert_eq!(machine.effective_time(T0), at(2 * HOUR));
}

#[test]
fn the_clock_never_goes_backwards() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_access(HOUR, 1), at(HOUR)));
    // A new leader whose clock is behind.
    ok(machine.apply(&review(1, bob(), true), T0));
    assert_eq!(machine.now(), at(HOUR));
    let grant = machine.grant(GrantId(1)).unwrap();
    assert_eq!(grant.not_before, at(HOUR));
    assert_eq!(grant.granted_at, at(HOUR));
}

#[test]
fn next_grant_change_is_the_next_start_or_end() {
    let mut machine = StateMachine::new();
    let mut scheduled = request_access(HOUR, 1);
    if let Command::RequestAccess { not_before, .. } = &mut scheduled {
        *not_before = Some(at(2 * HOUR));
    }
    ok(machine.apply(&scheduled, T0));
    ok(machine.apply(&review(1, bob(), true), T0));
    ok(machine.apply(&request_access(HOUR / 2, 1), T0));
    ok(machine.apply(&review(2, bob(), true), T0));
    assert_eq!(machine.next_grant_change_after(T0), Some(at(HOUR / 2)));
    assert_eq!(
        machine.next_grant_change_after(at(HOUR / 2)),
        Some(at(2 * HOUR))
    );
    assert_eq!(
        machine.next_grant_change_after(at(2 * HOUR)),
        Some(at(3 * HOUR))
    );
    assert_eq!(machine.next_grant_change_after(at(3 * HOUR)), None);
    ok(machine.apply(
        &Command::RevokeGrant {
            id: GrantId(1),
            actor: bob(),
            reason: "not needed".into(),
        },
        at(1),
    ));
    assert_eq!(machine.next_grant_change_after(at(HOUR / 2)), None);
}

#[test]
fn revoking_ends_a_grant_for_good() {
    let mut machine = granted();
    let revoke = |who: Actor, reason: &str| Command::RevokeGrant {
        id: GrantId(1),
        actor: who,
        reason: reason.into(),
    };
    let message = rejected(
        machine.apply(&revoke(carol(), " "), at(60_000)),
        RejectionKind::Invalid,
    );
    assert_eq!(message, "a reason is required to revoke a grant");
    let (outcome, events) = ok(machine.apply(&revoke(carol(), "incident closed"), at(60_000)));
    let Outcome::GrantRevoked { grant } = outcome else {
        panic!()
    };
    let revocation = grant.revocation.clone().unwrap();
    assert_eq!(
        (revocation.at, revocation.by.subject.as_str()),
        (at(60_000), "carol")
    );
    assert!(matches!(
        &events[..],
        [StateEvent::GrantRevoked { grant: GrantId(1), holder, connection, .. }]
            if holder.subject == "alice" && connection == "billing-eu"
    ));
    for later in [at(60_000), at(60_001), at(HOUR - 1), at(10 * HOUR)] {
        assert!(!machine.is_grant_active(GrantId(1), later));
        assert_eq!(
            machine.grant(GrantId(1)).unwrap().status(later),
            GrantStatus::Revoked
        );
    }
    let message = rejected(
        machine.apply(&revoke(bob(), "again"), at(70_000)),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "grant g-1 was already revoked by carol@example.com at 2026-05-01T12:01:00.000Z: incident closed"
    );
}

#[test]
fn an_expired_grant_cannot_be_revoked() {
    let mut machine = granted();
    let message = rejected(
        machine.apply(
            &Command::RevokeGrant {
                id: GrantId(1),
                actor: bob(),
                reason: "late".into(),
            },
            at(HOUR),
        ),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "grant g-1 already expired at 2026-05-01T13:00:00.000Z; there is nothing to revoke"
    );
}

#[test]
fn listings_filter_and_report_status() {
    let mut machine = granted();
    ok(machine.apply(&request_access(HOUR, 1), T0)); // ar-2 stays pending
    let mut other = request_access(HOUR, 1);
    if let Command::RequestAccess {
        connection,
        requester,
        ..
    } = &mut other
    {
        *connection = "crm-eu".into();
        *requester = mallory();
    }
    ok(machine.apply(&other, T0)); // ar-3
    ok(machine.apply(&review(3, bob(), true), T0)); // g-2, mallory on crm-eu

    let ids = |filter| {
        machine
            .access_requests(filter, at(1))
            .map(|(request, _)| request.id.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(AccessRequestFilter::default()), [1, 2, 3]);
    assert_eq!(
        ids(AccessRequestFilter {
            status: Some(AccessRequestStatus::Pending),
            ..Default::default()
        }),
        [2]
    );
    assert_eq!(
        ids(AccessRequestFilter {
            connection: Some("crm-eu"),
            ..Default::default()
        }),
        [3]
    );
    assert_eq!(
        ids(AccessRequestFilter {
            requester: Some(("https://idp.example.com", "alice")),
            status: Some(AccessRequestStatus::Granted),
            ..Default::default()
        }),
        [1]
    );
    let expired: Vec<_> = machine
        .access_requests(
            AccessRequestFilter {
                status: Some(AccessRequestStatus::Expired),
                ..Default::default()
            },
            at(25 * HOUR),
        )
        .map(|(request, _)| request.id.0)
        .collect();
    assert_eq!(expired, [2]);

    let grants = |filter, now| {
        machine
            .grants(filter, now)
            .map(|(grant, status)| (grant.id.0, status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        grants(
            GrantFilter {
                subject: Some("mallory"),
                ..Default::default()
            },
            at(1)
        ),
        [(2, GrantStatus::Active)]
    );
    assert_eq!(
        grants(
            GrantFilter {
                status: Some(GrantStatus::Active),
                connection: Some("billing-eu"),
                ..Default::default()
            },
            at(1)
        ),
        [(1, GrantStatus::Active)]
    );
    assert_eq!(
        grants(
            GrantFilter {
                status: Some(GrantStatus::Active),
                ..Default::default()
            },
            at(HOUR)
        ),
        []
    );
    assert_eq!(
        grants(GrantFilter::default(), at(HOUR)),
        [(1, GrantStatus::Expired), (2, GrantStatus::Expired)]
    );
}

// ---- approvals ----

#[test]
fn approvals_follow_the_reviewer_rules() {
    let mut machine = StateMachine::new();
    let (outcome, events) = ok(machine.apply(&request_approval(2), T0));
    assert_eq!(outcome, Outcome::ApprovalRequested { id: ApprovalId(1) });
    assert!(matches!(
        &events[..],
        [StateEvent::ApprovalRequested { statement, session: SessionId(7), .. }]
            if statement == "DROP TABLE invoices"
    ));
    let message = rejected(
        machine.apply(&review_approval(1, alice(), true), T0),
        RejectionKind::NotAllowed,
    );
    assert_eq!(message, "a requester never approves their own request");
    let message = rejected(
        machine.apply(&review_approval(1, mallory(), true), T0),
        RejectionKind::NotAllowed,
    );
    assert_eq!(
        message,
        "mallory@example.com is in none of the reviewer groups of approval ap-1 (dba)"
    );
    let (outcome, events) = ok(machine.apply(&review_approval(1, bob(), true), T0));
    assert!(matches!(
        outcome,
        Outcome::ApprovalReviewed {
            status: ApprovalStatus::Pending,
            approvals: 1,
            threshold: 2,
            usable_until: None,
            ..
        }
    ));
    assert_eq!(events.len(), 1);
    let message = rejected(
        machine.apply(&review_approval(1, bob(), true), T0),
        RejectionKind::Conflict,
    );
    assert!(
        message.starts_with("bob@example.com already reviewed approval ap-1"),
        "{message}"
    );

    let (outcome, events) = ok(machine.apply(&review_approval(1, carol(), true), at(100)));
    assert!(matches!(
        outcome,
        Outcome::ApprovalReviewed { status: ApprovalStatus::Approved, approvals: 2, usable_until: Some(until), .. }
            if until == at(600_100)
    ));
    assert!(matches!(
        &events[..],
        [
            StateEvent::ApprovalReviewed { .. },
            StateEvent::ApprovalDecided {
                approved: true,
                session: SessionId(7),
                ..
            }
        ]
    ));
    let approval = machine.approval(ApprovalId(1)).unwrap();
    assert_eq!(approval.approved_at(), Some(at(100)));
    let message = rejected(
        machine.apply(&review_approval(1, actor("dave", &["dba"]), true), at(100)),
        RejectionKind::Conflict,
    );
    assert_eq!(message, "approval ap-1 was already approved");
}

#[test]
fn approval_rule_rejections() {
    let mut machine = StateMachine::new();
    let message = rejected(
        machine.apply(&request_approval(0), T0),
        RejectionKind::Invalid,
    );
    assert_eq!(message, "the approval rule's threshold must be at least 1");
    let mut no_window = request_approval(1);
    if let Command::RequestApproval { rule, .. } = &mut no_window {
        rule.window_ms = 0;
    }
    let message = rejected(machine.apply(&no_window, T0), RejectionKind::Invalid);
    assert_eq!(
        message,
        "the approval rule's window must be longer than zero"
    );
    let mut no_statement = request_approval(1);
    if let Command::RequestApproval { statement, .. } = &mut no_statement {
        statement.clear();
    }
    rejected(machine.apply(&no_statement, T0), RejectionKind::Invalid);
}

#[test]
fn an_approved_statement_runs_once_inside_its_window() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_approval(1), T0));
    // Not yet approved: nothing to consume, and the hold timing out keeps it pending.
    let message = rejected(
        machine.apply(
            &consume("alice", "billing-eu", "drop table invoices"),
            at(30_000),
        ),
        RejectionKind::Conflict,
    );
    assert!(message.starts_with("no approval"), "{message}");
    assert_eq!(
        machine.approval(ApprovalId(1)).unwrap().status(at(30_000)),
        ApprovalStatus::Pending
    );

    ok(machine.apply(&review_approval(1, bob(), true), at(60_000)));
    for (subject, connection, fingerprint) in [
        ("bob", "billing-eu", "drop table invoices"),
        ("alice", "billing-us", "drop table invoices"),
        ("alice", "billing-eu", "drop table payments"),
    ] {
        let message = rejected(
            machine.apply(&consume(subject, connection, fingerprint), at(61_000)),
            RejectionKind::Conflict,
        );
        assert!(message.starts_with("no approval"), "{message}");
    }
    let (outcome, events) = ok(machine.apply(
        &consume("alice", "billing-eu", "drop table invoices"),
        at(61_000),
    ));
    assert_eq!(outcome, Outcome::ApprovalConsumed { id: ApprovalId(1) });
    assert!(matches!(
        &events[..],
        [StateEvent::ApprovalConsumed { approval: ApprovalId(1), session: SessionId(7), at: t, .. }] if *t == at(61_000)
    ));
    assert_eq!(
        machine.approval(ApprovalId(1)).unwrap().status(at(61_000)),
        ApprovalStatus::Consumed
    );
    let message = rejected(
        machine.apply(
            &consume("alice", "billing-eu", "drop table invoices"),
            at(62_000),
        ),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "no approval: alice has no approved, unused approval of this statement on `billing-eu` at 2026-05-01T12:01:02.000Z"
    );
    let message = rejected(
        machine.apply(&review_approval(1, carol(), true), at(62_000)),
        RejectionKind::Conflict,
    );
    assert_eq!(message, "approval ap-1 was already approved and used");
}

#[test]
fn an_approval_lapses_when_its_window_closes() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_approval(1), T0));
    ok(machine.apply(&review_approval(1, bob(), true), T0));
    let approval = machine.approval(ApprovalId(1)).unwrap();
    assert_eq!(approval.status(at(599_999)), ApprovalStatus::Approved);
    assert_eq!(approval.status(at(600_000)), ApprovalStatus::Lapsed);
    let message = rejected(
        machine.apply(
            &consume("alice", "billing-eu", "drop table invoices"),
            at(600_000),
        ),
        RejectionKind::Conflict,
    );
    assert!(message.starts_with("no approval"), "{message}");
    let message = rejected(
        machine.apply(&review_approval(1, carol(), true), at(600_000)),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "approval ap-1 was already approved; its window closed at 2026-05-01T12:10:00.000Z"
    );
}

#[test]
fn consuming_picks_the_approval_that_would_lapse_first() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_approval(1), T0));
    ok(machine.apply(&request_approval(1), T0));
    ok(machine.apply(&review_approval(2, bob(), true), at(1)));
    ok(machine.apply(&review_approval(1, bob(), true), at(2)));
    let (outcome, _) = ok(machine.apply(
        &consume("alice", "billing-eu", "drop table invoices"),
        at(3),
    ));
    assert_eq!(outcome, Outcome::ApprovalConsumed { id: ApprovalId(2) });
    let (outcome, _) = ok(machine.apply(
        &consume("alice", "billing-eu", "drop table invoices"),
        at(4),
    ));
    assert_eq!(outcome, Outcome::ApprovalConsumed { id: ApprovalId(1) });
}

#[test]
fn a_denied_approval_is_decided_and_final() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_approval(2), T0));
    let (outcome, events) = ok(machine.apply(&review_approval(1, bob(), false), T0));
    assert!(matches!(
        outcome,
        Outcome::ApprovalReviewed {
            status: ApprovalStatus::Denied,
            ..
        }
    ));
    assert!(matches!(
        &events[..],
        [
            StateEvent::ApprovalReviewed { .. },
            StateEvent::ApprovalDecided {
                approved: false,
                usable_until: None,
                ..
            }
        ]
    ));
    let message = rejected(
        machine.apply(&review_approval(1, carol(), true), T0),
        RejectionKind::Conflict,
    );
    assert_eq!(
        message,
        "approval ap-1 was already denied by bob@example.com"
    );
    rejected(
        machine.apply(&consume("alice", "billing-eu", "drop table invoices"), T0),
        RejectionKind::Conflict,
    );
}

#[test]
fn only_the_requester_cancels_an_approval() {
    let mut machine = StateMachine::new();
    ok(machine.apply(&request_approval(1), T0));
    let cancel = |who: Actor| Command::CancelApproval {
        id: ApprovalId(1),
        actor: who,
    };
    let message = rejected(machine.apply(&cancel(bob()), T0), RejectionKind::NotAllowed);
    assert_eq!(
        message,
        "only the requester (alice@example.com) may cancel approval ap-1"
    );
    let (outcome, events) = ok(machine.apply(&cancel(alice()), T0));
    assert_eq!(outcome, Outcome::ApprovalCancelled { id: ApprovalId(1) });
    assert!(matches!(
        &events[..],
        [StateEvent::ApprovalCancelled { .. }]
    ));
    let message = rejected(
        machine.apply(&review_approval(1, bob(), true), T0),
        RejectionKind::Conflict,
    );
    assert_eq!(message, "approval ap-1 was cancelled by its requester");
    let listed: Vec<_> = machine
        .approvals(
            ApprovalFilter {
                status: Some(ApprovalStatus::Cancelled),
                connection: Some("billing-eu"),
            },
            T0,
        )
        .map(|(approval, _)| approval.id)
        .collect();
    assert_eq!(listed, [ApprovalId(1)]);
}

// ---- bytes, snapshots ----

#[test]
fn apply_bytes_turns_garbage_into_a_rejection() {
    let mut machine = StateMachine::new();
    let applied = machine.apply_bytes(b"\x00not json", at(5));
    let message = rejected(applied.clone(), RejectionKind::Invalid);
    assert!(message.starts_with("cannot decode command"), "{message}");
    assert_eq!(machine.now(), at(5), "the entry's time still counts");
    assert_eq!(Applied::decode(&applied.encode()).unwrap(), applied);

    let applied = machine.apply_bytes(&request_access(HOUR, 1).encode(), at(6));
    assert!(applied.result.is_ok());
    assert_eq!(Applied::decode(&applied.encode()).unwrap(), applied);
    assert!(Applied::decode(b"[]").is_err());
}

#[test]
fn snapshots_restore_records_and_indexes() {
    let mut machine = granted();
    ok(machine.apply(&request_approval(1), T0));
    ok(machine.apply(&review_approval(1, bob(), true), T0));
    let bytes = machine.snapshot();
    let restored = StateMachine::restore(&bytes).unwrap();
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(restored.now(), machine.now());
    assert_eq!(
        restored
            .active_grant(
                "https://idp.example.com",
                "alice",
                "billing-eu",
                "read",
                at(1)
            )
            .map(|grant| grant.id),
        Some(GrantId(1))
    );
    assert_eq!(restored.next_grant_change_after(T0), Some(at(HOUR)));
    let mut restored = restored;
    let (outcome, _) = ok(restored.apply(
        &consume("alice", "billing-eu", "drop table invoices"),
        at(1),
    ));
    assert_eq!(outcome, Outcome::ApprovalConsumed { id: ApprovalId(1) });
    let (outcome, _) = ok(restored.apply(&request_access(HOUR, 1), at(2)));
    assert!(matches!(
        outcome,
        Outcome::AccessRequested {
            id: AccessRequestId(2),
            ..
        }
    ));
}

#[test]
fn restore_refuses_other_versions_and_inconsistent_snapshots() {
    let err = StateMachine::restore(b"{\"format\":2}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "snapshot format 2 is not supported (this build reads format 1)"
    );
    assert!(matches!(
        StateMachine::restore(b"{}"),
        Err(StateError::Decode { .. })
    ));

    let snapshot = String::from_utf8(granted().snapshot()).unwrap();
    let reused = snapshot.replace("\"next_grant\":2", "\"next_grant\":1");
    let err = StateMachine::restore(reused.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inconsistent snapshot: grant id 1 is outside 1..1"
    );
    let huge = snapshot.replace("\"next_grant\":2", "\"next_grant\":18446744073709551615");
    let err = StateMachine::restore(huge.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("is beyond 9007199254740992"),
        "{err}"
    );

    let mut value: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    let requests = value["access_requests"].as_array_mut().unwrap();
    let copy = requests[0].clone();
    requests.push(copy);
    let err = StateMachine::restore(value.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inconsistent snapshot: access request id 1 appears twice"
    );

    let mut value: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    value["access_requests"][0]["grant"] = serde_json::Value::Null;
    let err = StateMachine::restore(value.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inconsistent snapshot: grant g-1 does not belong to access request ar-1"
    );
}

#[test]
fn expired_and_revoked_grants_leave_the_index() {
    let mut machine = granted();
    ok(machine.apply(&request_access(2 * HOUR, 1), T0));
    ok(machine.apply(&review(2, bob(), true), T0));
    assert_eq!(machine.grant_index.len(), 2);
    machine.observe_time(at(HOUR));
    assert_eq!(machine.grant_index.len(), 1);
    ok(machine.apply(
        &Command::RevokeGrant {
            id: GrantId(2),
            actor: alice(),
            reason: "done".into(),
        },
        at(HOUR),
    ));
    assert_eq!(machine.grant_index.len(), 0);
    assert_eq!(
        machine
            .grant_index
            .candidates("https://idp.example.com", "alice", "billing-eu"),
        &[] as &[GrantId]
    );
}
