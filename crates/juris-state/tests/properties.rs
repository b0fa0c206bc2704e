//! Properties over random command sequences: random actors from a small
//! pool (so self-review, duplicate reviews and wrong groups all happen),
//! random ids (so unknown ids happen), and leader times that sometimes go
//! backwards (as after a change of leader).

use std::collections::{BTreeMap, BTreeSet};

use juris_state::{
    AccessRequestFilter, AccessRequestId, AccessRule, Actor, Applied, ApprovalFilter, ApprovalId,
    ApprovalRule, Command, Decision, GrantFilter, GrantId, Identity, Outcome, StateEvent,
    StateMachine, UnixMillis,
};
use juris_types::{AccessLevel, SessionId, StatementClass};
use proptest::prelude::*;

const ISSUER: &str = "https://idp.example.com";
const CONNECTIONS: [&str; 2] = ["billing-eu", "crm-eu"];
const ROLES: [&str; 2] = ["read", "admin"];
const FINGERPRINTS: [&str; 2] = ["drop table t", "truncate u"];
const START: u64 = 1_000_000;

fn pool(index: usize) -> Actor {
    let (subject, groups): (&str, &[&str]) = match index % 4 {
        0 => ("alice", &["dev"]),
        1 => ("bob", &["dba"]),
        2 => ("carol", &["dba", "sre"]),
        _ => ("dave", &["sre", "dev"]),
    };
    Actor {
        issuer: ISSUER.into(),
        subject: subject.into(),
        name: subject.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Command(Box<Command>),
    Garbage(Vec<u8>),
    Tick,
}

fn command() -> impl Strategy<Value = Command> {
    let actor = (0usize..4).prop_map(pool);
    // Approvals are mostly Alice's, so that her consumes often match.
    let mostly_alice = || prop_oneof![3 => Just(0usize), 1 => 0usize..4].prop_map(pool);
    // Skewed towards the first choice so that consumes often match.
    let mostly_first = || prop_oneof![4 => Just(0usize), 1 => Just(1usize)];
    let connection = mostly_first().prop_map(|i| CONNECTIONS[i].to_owned());
    let role = mostly_first().prop_map(|i| ROLES[i].to_owned());
    let fingerprint = mostly_first().prop_map(|i| FINGERPRINTS[i].to_owned());
    prop_oneof![
        3 => (
            actor.clone(),
            connection.clone(),
            role,
            prop_oneof![1 => Just(0u64), 12 => 1u64..3_000, 1 => 3_001u64..4_000],
            proptest::option::of(START..START + 20_000),
            threshold(),
            prop_oneof![1 => 1u64..2_000, 6 => 5_000u64..60_000],
        )
            .prop_map(|(requester, connection, role, duration_ms, not_before, threshold, ttl)| {
                Command::RequestAccess {
                    requester,
                    connection,
                    role,
                    level: AccessLevel::Read,
                    duration_ms,
                    not_before: not_before.map(UnixMillis),
                    reason: "ticket".into(),
                    rule: AccessRule {
                        reviewer_groups: vec!["dba".into(), "sre".into()],
                        threshold,
                        max_duration_ms: 3_000,
                        request_ttl_ms: ttl,
                    },
                }
            }),
        8 => (1u64..5, actor.clone(), prop::bool::weighted(0.85)).prop_map(|(id, reviewer, approve)| {
            Command::ReviewAccess { id: AccessRequestId(id), reviewer, approve, reason: None }
        }),
        1 => (1u64..5, actor.clone()).prop_map(|(id, actor)| Command::CancelAccess {
            id: AccessRequestId(id),
            actor,
        }),
        2 => (1u64..4, actor.clone()).prop_map(|(id, actor)| Command::RevokeGrant {
            id: GrantId(id),
            actor,
            reason: "done".into(),
        }),
        2 => (mostly_alice(), connection.clone(), fingerprint.clone(), threshold(), 1u64..20_000).prop_map(
            |(requester, connection, fingerprint, threshold, window_ms)| Command::RequestApproval {
                requester,
                connection,
                session: SessionId(1),
                statement: fingerprint.to_uppercase(),
                fingerprint,
                class: StatementClass::Ddl,
                rule: ApprovalRule {
                    reviewer_groups: vec!["dba".into()],
                    threshold,
                    hold_ttl_ms: None,
                    window_ms,
                },
            }
        ),
        5 => (1u64..5, actor.clone(), prop::bool::weighted(0.85)).prop_map(|(id, reviewer, approve)| {
            Command::ReviewApproval { id: ApprovalId(id), reviewer, approve, reason: None }
        }),
        5 => (mostly_alice(), connection, fingerprint).prop_map(|(actor, connection, fingerprint)| {
            Command::ConsumeApproval { requester: actor.identity(), connection, fingerprint }
        }),
        1 => (1u64..5, actor).prop_map(|(id, actor)| Command::CancelApproval {
            id: ApprovalId(id),
            actor,
        }),
    ]
}

fn threshold() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 5 => Just(1u32), 3 => Just(2u32), 1 => Just(3u32)]
}

fn steps() -> impl Strategy<Value = Vec<(Step, i64)>> {
    let step = prop_oneof![
        20 => command().prop_map(|command| Step::Command(Box::new(command))),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Step::Garbage),
        2 => Just(Step::Tick),
    ];
    prop::collection::vec((step, -1_500i64..2_500), 1..120)
}

/// Leader times from deltas, starting at `START`; they may go backwards.
fn leader_times(steps: &[(Step, i64)]) -> Vec<UnixMillis> {
    let mut time = START as i64;
    steps
        .iter()
        .map(|(_, delta)| {
            time = (time + delta).max(0);
            UnixMillis(time as u64)
        })
        .collect()
}

/// Applies one step; a tick is a log entry without a command (`None`).
fn run_step(machine: &mut StateMachine, step: &Step, time: UnixMillis) -> Option<Applied> {
    match step {
        Step::Command(command) => Some(machine.apply_bytes(&command.encode(), time)),
        Step::Garbage(bytes) => Some(machine.apply_bytes(bytes, time)),
        Step::Tick => {
            machine.observe_time(time);
            None
        }
    }
}

/// Checks everything that must hold after any step.
fn check_invariants(machine: &StateMachine, probe: UnixMillis) -> Result<(), TestCaseError> {
    let now = machine.now();
    let grants: Vec<_> = machine
        .grants(GrantFilter::default(), now)
        .map(|(g, _)| g.clone())
        .collect();

    // (1) at most one grant per request; a grant iff approvals >= threshold and no deny.
    for (request, _) in machine.access_requests(AccessRequestFilter::default(), now) {
        let for_request: Vec<_> = grants.iter().filter(|g| g.request == request.id).collect();
        prop_assert!(
            for_request.len() <= 1,
            "{} has {} grants",
            request.id,
            for_request.len()
        );
        let denied = request.reviews.iter().any(|r| !r.approve);
        let should_grant = request.approvals() >= request.rule.threshold && !denied;
        prop_assert_eq!(request.grant.is_some(), should_grant, "{:?}", request);
        prop_assert_eq!(for_request.len() == 1, should_grant);
        prop_assert_eq!(request.decision == Decision::Approved, should_grant);
        prop_assert!(request.approvals() <= request.rule.threshold);
        // (4) the requester never reviews their own request.
        prop_assert!(
            request
                .reviews
                .iter()
                .all(|r| !r.reviewer.same_identity(&request.requester))
        );
        // Nobody reviews twice.
        let reviewers: BTreeSet<_> = request
            .reviews
            .iter()
            .map(|r| r.reviewer.subject.clone())
            .collect();
        prop_assert_eq!(reviewers.len(), request.reviews.len());
    }
    for (approval, _) in machine.approvals(ApprovalFilter::default(), now) {
        prop_assert!(
            approval
                .reviews
                .iter()
                .all(|r| !r.reviewer.same_identity(&approval.requester))
        );
        prop_assert!(approval.approvals() <= approval.rule.threshold);
        if approval.consumed_at.is_some() {
            prop_assert_eq!(approval.decision, Decision::Approved);
        }
    }

    // (2) (3) revoked and expired grants are never active, at any later time.
    for grant in &grants {
        if let Some(revocation) = &grant.revocation {
            for t in [
                revocation.at,
                now,
                probe,
                grant.expires_at,
                UnixMillis(u64::MAX),
            ] {
                prop_assert!(!machine.is_grant_active(grant.id, t));
            }
        }
        for t in [
            grant.expires_at,
            grant.expires_at.saturating_add(probe.0 % 5_000),
            UnixMillis(u64::MAX),
        ] {
            prop_assert!(!machine.is_grant_active(grant.id, t));
        }
        if grant.expires_at <= now {
            prop_assert!(!machine.is_grant_active(grant.id, UnixMillis(0)));
        }
    }

    // The index answers exactly what a scan of all grants answers.
    for t in [
        UnixMillis(0),
        now,
        probe,
        now.saturating_add(1_000),
        now.saturating_add(4_000),
    ] {
        let effective = t.max(now);
        for subject in ["alice", "bob", "carol", "dave"] {
            for connection in CONNECTIONS {
                for role in ROLES {
                    let expected = grants
                        .iter()
                        .filter(|g| {
                            g.holder.subject == subject
                                && g.connection == connection
                                && g.role == role
                        })
                        .filter(|g| g.is_active(effective))
                        .map(|g| g.expires_at)
                        .max();
                    let found = machine.active_grant(ISSUER, subject, connection, role, t);
                    prop_assert_eq!(found.map(|g| g.expires_at), expected);
                    if let Some(grant) = found {
                        prop_assert!(grant.is_active(effective));
                    }
                }
            }
        }
        let next = grants
            .iter()
            .filter(|g| g.revocation.is_none())
            .flat_map(|g| [g.not_before, g.expires_at])
            .filter(|at| *at > effective)
            .min();
        prop_assert_eq!(machine.next_grant_change_after(t), next);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Properties (1)–(4) and (7) after every step of a random history.
    #[test]
    fn invariants_hold_after_every_step(steps in steps(), probe in START..START + 40_000) {
        let times = leader_times(&steps);
        let mut machine = StateMachine::new();
        let mut previous_now = machine.now();
        let mut consumed: BTreeMap<ApprovalId, usize> = BTreeMap::new();
        let mut revoked: BTreeMap<GrantId, UnixMillis> = BTreeMap::new();
        for ((step, _), &time) in steps.iter().zip(&times) {
            let applied = run_step(&mut machine, step, time);
            // (3) the clock never decreases and follows the leader forward.
            prop_assert!(machine.now() >= previous_now);
            prop_assert_eq!(machine.now(), previous_now.max(time));
            previous_now = machine.now();
            check_invariants(&machine, UnixMillis(probe))?;
            let Some(applied) = applied else { continue };
            if applied.result.is_err() {
                prop_assert!(applied.events.is_empty());
            }
            for event in &applied.events {
                match event {
                    StateEvent::ApprovalConsumed { approval, .. } => *consumed.entry(*approval).or_default() += 1,
                    StateEvent::GrantRevoked { grant, revocation, .. } => {
                        prop_assert!(revoked.insert(*grant, revocation.at).is_none(), "revoked twice");
                    }
                    _ => {}
                }
            }
            if let Ok(Outcome::AccessReviewed { grant: Some(grant), .. }) = &applied.result {
                prop_assert!(grant.is_active(grant.not_before));
            }
            // (7) an approval is consumed at most once.
            prop_assert!(consumed.values().all(|count| *count == 1));
            for (grant, at) in &revoked {
                let stored = machine.grant(*grant).and_then(|g| g.revocation.as_ref()).map(|r| r.at);
                prop_assert_eq!(stored, Some(*at), "a revocation never changes");
            }
        }
    }

    /// (5) Determinism: same log, same state; and a snapshot taken and
    /// restored anywhere changes nothing that follows.
    #[test]
    fn replay_and_restore_are_deterministic(steps in steps(), split in any::<prop::sample::Index>()) {
        let times = leader_times(&steps);
        let split = split.index(steps.len() + 1);
        let mut first = StateMachine::new();
        let mut second = StateMachine::new();
        let mut restored = StateMachine::new();
        for (index, ((step, _), &time)) in steps.iter().zip(&times).enumerate() {
            if index == split {
                restored = StateMachine::restore(&restored.snapshot()).expect("own snapshot restores");
                prop_assert_eq!(restored.snapshot(), first.snapshot());
            }
            let a = run_step(&mut first, step, time);
            let b = run_step(&mut second, step, time);
            let c = run_step(&mut restored, step, time);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
            if let Some(a) = a {
                prop_assert_eq!(a.encode(), b.map(|b| b.encode()).unwrap_or_default());
                prop_assert_eq!(Applied::decode(&a.encode()).unwrap(), a);
            }
        }
        prop_assert_eq!(first.snapshot(), second.snapshot());
        prop_assert_eq!(first.snapshot(), restored.snapshot());
        let fresh = StateMachine::restore(&first.snapshot()).unwrap();
        check_invariants(&fresh, first.now())?;
    }

    /// (6) Decoding never panics on arbitrary bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Command::decode(&bytes);
        let _ = Applied::decode(&bytes);
        let _ = StateMachine::restore(&bytes);
        let mut machine = StateMachine::new();
        let applied = machine.apply_bytes(&bytes, UnixMillis(1));
        prop_assert!(applied.result.is_err() || applied.events.len() <= 2);
        let text = String::from_utf8_lossy(&bytes);
        let _ = text.parse::<GrantId>();
        let _ = text.parse::<AccessRequestId>();
    }

    /// (6) Mangled valid encodings never panic either (they get past the
    /// first byte far more often than random bytes do).
    #[test]
    fn decoding_mangled_commands_never_panics(
        command in command(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = command.encode();
        prop_assert_eq!(Command::decode(&bytes).unwrap(), command);
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = Command::decode(&bytes);
        let mut machine = StateMachine::new();
        let _ = machine.apply_bytes(&bytes, UnixMillis(1));
        let snapshot = machine.snapshot();
        let mut mangled = snapshot.clone();
        let at = cut.index(mangled.len());
        mangled[at] ^= 0x5a;
        let _ = StateMachine::restore(&mangled);
        let _ = StateMachine::restore(&snapshot[..cut.index(snapshot.len() + 1)]);
    }
}

#[test]
fn identity_of_the_pool_is_issuer_and_subject() {
    assert_eq!(
        pool(1).identity(),
        Identity {
            issuer: ISSUER.into(),
            subject: "bob".into()
        }
    );
}
