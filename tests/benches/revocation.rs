//! Revocation enforcement latency on a real three-node region: how long a
//! session riding on a grant survives the grant's revocation (through
//! another node's control API) and its expiry.
//!
//! Real `juris node` processes, real PostgreSQL, the real OIDC provider; the
//! session is a tokio-postgres client whose connection task finishes when
//! the node sends its FATAL and closes.
//!
//! ```sh
//! cargo bench --profile dev --workspace --bench revocation -- 40
//! ```
//!
//! For revocation it prints two numbers per percentile: from the moment the
//! revoke call was *acknowledged* (an upper bound on the commit time, so
//! this is the enforcement delay users can observe; 0 when the session was
//! already gone), and from the moment the call was *sent* (which adds the
//! API round trip and the commit itself). For expiry: from `expires_at`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use common::{CONNECTION, client_config, connection_spec, start_pg, tls_config};
use juris_control::ControlClient;
use juris_control::client::pb;
use juris_testkit::gateway::{GatewaySpec, RegionNode, RoleSpec, start_region};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::UpstreamAuth;

const ROLE: &str = "oncall-write";

async fn control(node: &RegionNode, token: &str) -> anyhow::Result<ControlClient> {
    Ok(ControlClient::connect(&node.control, Some(&node.gateway.ca_file), None, token).await?)
}

/// A session on `node` for bob; resolves (in the returned task) at the
/// instant its connection ends.
async fn session(
    node: &RegionNode,
    token: &str,
) -> anyhow::Result<(tokio_postgres::Client, tokio::task::JoinHandle<Instant>)> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&node.gateway)?);
    let (client, connection) = client_config(&node.gateway, CONNECTION, "bob", token)
        .connect(tls)
        .await?;
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    client.simple_query("SELECT 1").await?;
    Ok((client, ended))
}

/// Request and approve a grant for bob lasting `duration`; returns its id
/// and expiry (Unix ms).
async fn grant(
    bob: &mut ControlClient,
    alice: &mut ControlClient,
    duration: Duration,
) -> anyhow::Result<(String, u64)> {
    let request = bob
        .request_access(pb::RequestAccessRequest {
            connection: CONNECTION.into(),
            role: ROLE.into(),
            duration_ms: u64::try_from(duration.as_millis())?,
            reason: "bench".into(),
            not_before_ms: 0,
        })
        .await?;
    let reviewed = alice
        .review_access(pb::ReviewRequest {
            id: request.id,
            approve: true,
            reason: "bench".into(),
        })
        .await?;
    let grants = alice
        .list_grants(pb::ListGrantsRequest {
            status: "active".into(),
            ..Default::default()
        })
        .await?;
    let grant = grants
        .into_iter()
        .find(|g| g.id == reviewed.grant_id)
        .context("the approved grant is not listed")?;
    Ok((grant.id, grant.expires_at_ms))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<46} n={:<3} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.90).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn unix_ms_to_instant(unix_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let now = Instant::now();
    if unix_ms >= now_ms {
        now + Duration::from_millis(unix_ms - now_ms)
    } else {
        now - Duration::from_millis(now_ms - unix_ms)
    }
}

async fn run(rounds: usize) -> anyhow::Result<()> {
    let (pg, oidc) = tokio::try_join!(start_pg(UpstreamAuth::ScramSha256), OidcProvider::start())?;
    let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    spec.connections
        .push(connection_spec(&pg, &UpstreamAuth::ScramSha256));
    spec.roles
        .push(RoleSpec::jit(ROLE, "analysts", CONNECTION, "write", "dba"));
    let dir = tempfile::tempdir()?;
    let nodes = start_region(&spec, 3, dir.path(), "dba").await?;
    let bob_token = oidc.user_token("bob").await?;
    let alice_token = oidc.user_token("alice").await?;
    // bob asks and holds his sessions on node 2; alice acts through node 3.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut bob, mut alice) = loop {
        let attempt = async {
            let bob = control(&nodes[1], &bob_token).await?;
            let mut alice = control(&nodes[2], &alice_token).await?;
            alice.cluster_status().await?;
            anyhow::Ok((bob, alice))
        };
        match attempt.await {
            Ok(clients) => break clients,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };

    let mut after_ack = Vec::new();
    let mut after_send = Vec::new();
    for _ in 0..rounds {
        let (id, _) = grant(&mut bob, &mut alice, Duration::from_secs(3600)).await?;
        let (_client, ended) = session(&nodes[1], &bob_token).await?;
        let sent = Instant::now();
        alice
            .revoke_grant(pb::RevokeGrantRequest {
                id,
                reason: "bench".into(),
            })
            .await?;
        let acknowledged = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .context("a session outlived its revoked grant by 10 s")??;
        after_ack.push(end.saturating_duration_since(acknowledged));
        after_send.push(end.saturating_duration_since(sent));
    }
    report("revocation, from the acknowledged revoke", after_ack);
    report("revocation, from the revoke sent", after_send);

    let mut after_expiry = Vec::new();
    for _ in 0..rounds.min(10) {
        let (_, expires_at_ms) = grant(&mut bob, &mut alice, Duration::from_secs(2)).await?;
        let (_client, ended) = session(&nodes[1], &bob_token).await?;
        let end = tokio::time::timeout(Duration::from_secs(15), ended)
            .await
            .context("a session outlived its grant's expiry by 15 s")??;
        after_expiry.push(end.saturating_duration_since(unix_ms_to_instant(expires_at_ms)));
    }
    report("expiry, from expires_at", after_expiry);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(40);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?
        .block_on(run(rounds))
}
