//! Cost of the per-connection grant check with 10,000 grants in the
//! state: a hit, a holder with no grant, and a holder with grants on other
//! connections and roles only. The data plane runs this for every new
//! session, so it must stay in the sub-microsecond range and not allocate.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use juris_state::{AccessRule, Actor, Command, StateMachine, UnixMillis};
use juris_types::AccessLevel;

const ISSUER: &str = "https://idp.example.com";
const GRANTS: usize = 10_000;
const HOUR: u64 = 3_600_000;
const NOW: UnixMillis = UnixMillis(1_777_636_800_000);

fn actor(subject: String, groups: &[&str]) -> Actor {
    Actor {
        issuer: ISSUER.into(),
        name: subject.clone(),
        subject,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// 10,000 active grants: 2,500 users × 2 connections × 2 roles.
fn state() -> StateMachine {
    let mut machine = StateMachine::new();
    let reviewer = actor("reviewer".into(), &["dba"]);
    for n in 0..GRANTS {
        let request = Command::RequestAccess {
            requester: actor(format!("user-{}", n / 4), &["dev"]),
            connection: format!("conn-{}", n % 2),
            role: format!("role-{}", n / 2 % 2),
            level: AccessLevel::Read,
            duration_ms: 8 * HOUR,
            not_before: None,
            reason: "bench".into(),
            rule: AccessRule {
                reviewer_groups: vec!["dba".into()],
                threshold: 1,
                max_duration_ms: 8 * HOUR,
                request_ttl_ms: HOUR,
            },
        };
        let applied = machine.apply(&request, NOW);
        let Ok(juris_state::Outcome::AccessRequested { id, .. }) = applied.result else {
            panic!("request refused: {:?}", applied.result);
        };
        let review = Command::ReviewAccess {
            id,
            reviewer: reviewer.clone(),
            approve: true,
            reason: None,
        };
        assert!(machine.apply(&review, NOW).result.is_ok());
    }
    machine
}

fn grant_check(c: &mut Criterion) {
    let machine = state();
    let at = UnixMillis(NOW.0 + HOUR);
    assert!(
        machine
            .active_grant(ISSUER, "user-1234", "conn-1", "role-1", at)
            .is_some()
    );

    // The per-call distribution (criterion reports central estimates):
    // lookups for many holders, each timed on its own (the clock read is
    // included, so these are upper bounds).
    const CALLS: usize = 200_000;
    let users: Vec<String> = (0..2_500).map(|u| format!("user-{u}")).collect();
    let mut samples: Vec<u128> = Vec::with_capacity(CALLS);
    for n in 0..CALLS {
        let user = &users[n % users.len()];
        let start = std::time::Instant::now();
        black_box(machine.active_grant(ISSUER, black_box(user), "conn-1", "role-1", at));
        samples.push(start.elapsed().as_nanos());
    }
    samples.sort_unstable();
    let at_rank = |p: f64| samples[((CALLS as f64 - 1.0) * p) as usize];
    println!(
        "active_grant per call ({CALLS} lookups, 10k grants): p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns",
        at_rank(0.50),
        at_rank(0.99),
        at_rank(0.999),
        samples[CALLS - 1]
    );

    let mut group = c.benchmark_group("active_grant/10k");
    group.bench_function("hit", |b| {
        b.iter(|| {
            machine.active_grant(
                black_box(ISSUER),
                black_box("user-1234"),
                black_box("conn-1"),
                black_box("role-1"),
                black_box(at),
            )
        })
    });
    group.bench_function("unknown_subject", |b| {
        b.iter(|| {
            machine.active_grant(
                black_box(ISSUER),
                black_box("nobody"),
                black_box("conn-1"),
                black_box("role-1"),
                black_box(at),
            )
        })
    });
    group.bench_function("other_connection", |b| {
        b.iter(|| {
            machine.active_grant(
                black_box(ISSUER),
                black_box("user-1234"),
                black_box("conn-9"),
                black_box("role-1"),
                black_box(at),
            )
        })
    });
    group.finish();

    let id = machine
        .active_grant(ISSUER, "user-1234", "conn-1", "role-1", at)
        .map(|grant| grant.id)
        .unwrap_or(juris_state::GrantId(1));
    c.bench_function("is_grant_active/10k", |b| {
        b.iter(|| machine.is_grant_active(black_box(id), black_box(at)))
    });
}

criterion_group!(benches, grant_check);
criterion_main!(benches);
