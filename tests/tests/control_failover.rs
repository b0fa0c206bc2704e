//! The region control plane when nodes fail: real `juris node` processes
//! (three voters over mutual TLS on 127.0.0.1) are killed, restarted from
//! their own data dirs, and joined by a new node, while people use the real
//! `juris` CLI and connect through the gateways with tokio-postgres.
//!
//! Covered: the leader dies between two approvals of one access request
//! (the request, its first review and the resulting grant survive, exactly
//! once); the whole region restarts, orderly and by crash (state comes back
//! from RocksDB); a fourth node joins as a learner and answers grant checks;
//! and a node that lost its peers says "no quorum" / "no leader" with how
//! many voters it reaches, in the CLI and at the gateway.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::control::{cli, cli_ok, id_with_prefix, leader_in, wait_for_leader};
use common::{CONNECTION, connect, connection_spec, db_error, start_pg};
use juris_testkit::gateway::{GatewaySpec, RegionNode, RoleSpec, TestRegion};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::{TempPostgres, UpstreamAuth};

const SIGTERM: i32 = 15;

/// The jit role bob (analysts) requests; dba members review.
const ROLE: &str = "oncall-write";

/// Three voters of region `test` in front of one PostgreSQL, and the IdP.
/// Fields drop in order: node processes first, then their files.
struct Cluster {
    nodes: Vec<RegionNode>,
    region: TestRegion,
    spec: GatewaySpec,
    oidc: OidcProvider,
    _pg: TempPostgres,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `approvals`: how many dba reviewers must approve a request for `ROLE`.
    async fn start(approvals: u32) -> anyhow::Result<Cluster> {
        let (pg, oidc) =
            tokio::try_join!(start_pg(UpstreamAuth::ScramSha256), OidcProvider::start())?;
        let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
        spec.connections
            .push(connection_spec(&pg, &UpstreamAuth::ScramSha256));
        let mut role = RoleSpec::new(ROLE, "analysts", CONNECTION, "write");
        role.settings.push("access = \"jit\"".into());
        role.settings.push(format!(
            "review = {{ reviewers = [\"dba\"], approvals = {approvals}, max_duration = \"8h\" }}"
        ));
        spec.roles.push(role);
        // Orderly stops should not wait the default 30 s for sessions.
        spec.node_settings.push("shutdown_grace_secs = 2".into());
        let dir = tempfile::tempdir()?;
        let mut region = TestRegion::new(3, dir.path(), "dba")?;
        // Frequent snapshots: restarts recover from a snapshot plus the log
        // after it, and a node that joins late is sent a snapshot.
        region.snapshot_every = Some(5);
        let nodes = region.start(&spec).await?;
        Ok(Cluster {
            nodes,
            region,
            spec,
            oidc,
            _pg: pg,
            _dir: dir,
        })
    }

    fn node(&self, raft_id: u64) -> anyhow::Result<&RegionNode> {
        self.nodes
            .iter()
            .find(|n| n.raft_id == raft_id)
            .with_context(|| format!("no node {raft_id}"))
    }

    fn node_mut(&mut self, raft_id: u64) -> anyhow::Result<&mut RegionNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.raft_id == raft_id)
            .with_context(|| format!("no node {raft_id}"))
    }

    /// Every node except those in `ids`.
    fn others(&self, ids: &[u64]) -> Vec<&RegionNode> {
        self.nodes
            .iter()
            .filter(|n| !ids.contains(&n.raft_id))
            .collect()
    }

    fn all(&self) -> Vec<&RegionNode> {
        self.nodes.iter().collect()
    }
}

/// bob asks for `ROLE` through `node`; returns the request id.
async fn request_access(node: &RegionNode, bob: &str, reason: &str) -> anyhow::Result<String> {
    let requested = cli_ok(
        node,
        bob,
        &[
            "access", "request", CONNECTION, "--role", ROLE, "--for", "1h", "--reason", reason,
        ],
    )
    .await?;
    assert!(requested.contains("pending"), "{requested}");
    id_with_prefix(&requested, "ar-")
}

/// The `access list` line of request `id` as `node` shows it to `token`.
async fn request_line(node: &RegionNode, token: &str, id: &str) -> anyhow::Result<String> {
    let listed = cli_ok(node, token, &["access", "list"]).await?;
    listed
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .map(str::to_string)
        .with_context(|| format!("node {} does not list {id}:\n{listed}", node.raft_id))
}

/// The grant ids `juris grants list` prints on `node`.
async fn grant_ids(node: &RegionNode, token: &str) -> anyhow::Result<Vec<String>> {
    let listed = cli_ok(node, token, &["grants", "list"]).await?;
    Ok(listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("g-"))
        .map(str::to_string)
        .collect())
}

/// Wait until `node` lists exactly the grant `grant` (it may still be
/// applying the entry), then check it is active.
async fn wait_for_only_grant(node: &RegionNode, token: &str, grant: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = grant_ids(node, token).await?;
        if !ids.is_empty() {
            assert_eq!(ids, [grant], "node {} lists other grants", node.raft_id);
            let active = cli_ok(node, token, &["grants", "list", "--status", "active"]).await?;
            assert!(active.contains(grant), "{active}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {} never listed {grant}", node.raft_id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// bob opens a session through `node`'s gateway and runs a query. He holds
/// no standing role, so only an active grant admits him. Retried for a
/// while: a node that just (re)joined may not have applied the grant or
/// heard from a leader yet.
async fn wait_admitted(node: &RegionNode, bob: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let client = connect(&node.gateway, CONNECTION, "bob", bob).await?;
            client.simple_query("SELECT 1").await?;
            anyhow::Ok(())
        }
        .await;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                let detail = e
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(db_error)
                    .map(|(code, message)| format!("{code}: {message}"))
                    .unwrap_or_else(|| format!("{e:#}"));
                bail!(
                    "node {}'s gateway never admitted bob: {detail}\n{}",
                    node.raft_id,
                    node.gateway.log()
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// bob requests `ROLE` through node 1 and alice approves it through node 2
/// (one approval needed); returns (request, grant).
/// The snapshot index a `juris cluster status` output shows (0: none).
fn snapshot_in(status: &str) -> u64 {
    let words: Vec<&str> = status.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "snapshot")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(0)
}

async fn granted(cluster: &Cluster, bob: &str, alice: &str) -> anyhow::Result<(String, String)> {
    let request = request_access(cluster.node(1)?, bob, "INC-1").await?;
    let approved = cli_ok(cluster.node(2)?, alice, &["access", "approve", &request]).await?;
    assert!(approved.contains("granted"), "{approved}");
    Ok((request, id_with_prefix(&approved, "g-")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_between_two_approvals_grants_exactly_once() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2).await?;
    let bob = cluster.oidc.user_token("bob").await?;
    let alice = cluster.oidc.user_token("alice").await?;
    let frank = cluster.oidc.user_token("frank").await?;
    let leader = wait_for_leader(&cluster.all(), &alice).await?;

    // bob asks through a follower; alice's approval is the first of two.
    let follower = cluster.others(&[leader])[0].raft_id;
    let request = request_access(cluster.node(follower)?, &bob, "INC-2").await?;
    let first = cli_ok(
        cluster.node(follower)?,
        &alice,
        &["access", "approve", &request, "--reason", "looks right"],
    )
    .await?;
    assert!(
        first.contains("pending") && first.contains("approvals 1/2") && !first.contains("grant g-"),
        "{first}"
    );

    // The leader crashes. Its log entries were committed on a majority, so
    // whichever survivor wins the election has them.
    cluster.node_mut(leader)?.gateway.kill().await?;
    let survivors = cluster.others(&[leader]);
    let new_leader = wait_for_leader(&survivors, &alice).await?;
    assert_ne!(new_leader, leader);
    for node in &survivors {
        let line = request_line(node, &alice, &request).await?;
        assert!(
            line.contains("pending") && line.contains("approvals 1/2"),
            "node {}: {line}",
            node.raft_id
        );
    }

    // frank's approval arrives at a follower of the new leader (forwarded):
    // it completes the review and creates the grant.
    let via = survivors
        .iter()
        .find(|n| n.raft_id != new_leader)
        .context("no surviving follower")?;
    let second = cli_ok(
        via,
        &frank,
        &[
            "access",
            "approve",
            &request,
            "--reason",
            "second pair of eyes",
        ],
    )
    .await?;
    assert!(
        second.contains("granted") && second.contains("approvals 2/2"),
        "{second}"
    );
    let grant = id_with_prefix(&second, "g-")?;

    // Exactly one grant, on both survivors, tied to the request.
    for node in &survivors {
        wait_for_only_grant(node, &alice, &grant).await?;
        let line = request_line(node, &alice, &request).await?;
        assert!(
            line.contains("granted") && line.contains(&format!("grant {grant}")),
            "node {}: {line}",
            node.raft_id
        );
    }
    // A third approval cannot mint another grant.
    let (ok, again) = cli(via, &alice, &["access", "approve", &request]).await?;
    assert!(!ok, "a decided request accepted another review:\n{again}");
    assert_eq!(grant_ids(via, &alice).await?, [grant.as_str()]);

    // bob is admitted by both surviving gateways.
    for node in &survivors {
        wait_admitted(node, &bob).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_region_restart_recovers_requests_and_grants() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let bob = cluster.oidc.user_token("bob").await?;
    let alice = cluster.oidc.user_token("alice").await?;
    wait_for_leader(&cluster.all(), &alice).await?;
    let (request, grant) = granted(&cluster, &bob, &alice).await?;
    wait_admitted(cluster.node(3)?, &bob).await?;

    // First an orderly stop of every node (an upgrade), then a crash of
    // every node (power loss): both times all that comes back is what each
    // node finds in its own data dir.
    for crash in [false, true] {
        let how = if crash { "SIGKILL" } else { "SIGTERM" };
        if crash {
            for node in &mut cluster.nodes {
                node.gateway.kill().await?;
            }
        } else {
            for node in &cluster.nodes {
                node.gateway.signal(SIGTERM)?;
            }
            for node in &mut cluster.nodes {
                let code = node.gateway.wait(Duration::from_secs(30)).await?;
                assert_eq!(
                    code,
                    Some(0),
                    "node {} after SIGTERM:\n{}",
                    node.raft_id,
                    node.gateway.log()
                );
            }
        }
        for node in &mut cluster.nodes {
            node.gateway
                .restart()
                .await
                .with_context(|| format!("restart node {} after {how}", node.raft_id))?;
        }
        wait_for_leader(&cluster.all(), &alice)
            .await
            .with_context(|| format!("after {how}"))?;
        for node in &cluster.nodes {
            wait_for_only_grant(node, &alice, &grant)
                .await
                .with_context(|| format!("after {how}"))?;
            let line = request_line(node, &alice, &request).await?;
            assert!(
                line.contains("granted") && line.contains(&format!("grant {grant}")),
                "node {} after {how}: {line}",
                node.raft_id
            );
            wait_admitted(node, &bob)
                .await
                .with_context(|| format!("after {how}"))?;
        }
    }

    // The recovered group still commits: a new request gets the next id.
    let next = request_access(cluster.node(2)?, &bob, "INC-3").await?;
    assert_ne!(next, request);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_catches_up_and_answers_grant_checks() -> anyhow::Result<()> {
    let cluster = Cluster::start(1).await?;
    let bob = cluster.oidc.user_token("bob").await?;
    let alice = cluster.oidc.user_token("alice").await?;
    let leader = wait_for_leader(&cluster.all(), &alice).await?;
    let (_, grant) = granted(&cluster, &bob, &alice).await?;
    // Enough entries for the leader to snapshot and drop the log before
    // them, so node 4 can only catch up from the snapshot.
    for i in 0..6 {
        request_access(cluster.node(1)?, &bob, &format!("INC-s{i}")).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cli_ok(cluster.node(leader)?, &alice, &["cluster", "status"]).await?;
        if snapshot_in(&status) > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the leader never took a snapshot:\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node 4 knows the voters but is not one: it starts with an empty log,
    // forms no group of its own, and cannot vouch for grants yet.
    let learner = cluster.region.start_learner(&cluster.spec, 4).await?;
    let status = cli_ok(&learner, &alice, &["cluster", "status"]).await?;
    assert_eq!(leader_in(&status), None, "{status}");
    assert!(status.contains("leader none"), "{status}");
    let refused = connect(&learner.gateway, CONNECTION, "bob", &bob)
        .await
        .err()
        .context("node 4 admitted bob before it joined the region")?;
    let (code, message) = refused
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(db_error)
        .context("expected a server error")?;
    assert_eq!(code, "57P03", "{message}");
    assert!(message.contains("no quorum"), "{message}");

    // Only admins change membership; asked of a follower, the change is
    // forwarded to the leader.
    let follower = cluster.others(&[leader])[0];
    let (ok, refused) = cli(
        follower,
        &bob,
        &["cluster", "add-learner", "4", &learner.raft],
    )
    .await?;
    assert!(!ok && refused.contains("permission denied"), "{refused}");
    cli_ok(
        follower,
        &alice,
        &["cluster", "add-learner", "4", &learner.raft],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cli_ok(cluster.node(leader)?, &alice, &["cluster", "status"]).await?;
        if status
            .lines()
            .any(|l| l.contains("member 4") && l.contains("learner"))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("node 4 never became a learner:\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It catches up: it follows the leader, lists the grant, admits bob.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cli_ok(&learner, &alice, &["cluster", "status"]).await?;
        if status.contains("(learner)") && leader_in(&status) == Some(leader) {
            break;
        }
        if Instant::now() > deadline {
            bail!("node 4 never followed leader {leader}:\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_only_grant(&learner, &alice, &grant).await?;
    wait_admitted(&learner, &bob).await?;
    let status = cli_ok(&learner, &alice, &["cluster", "status"]).await?;
    assert!(
        snapshot_in(&status) > 0,
        "node 4 was not sent a snapshot:\n{status}"
    );

    // It keeps up with new writes too: a request made elsewhere shows up.
    let request = request_access(cluster.node(1)?, &bob, "INC-4").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while request_line(&learner, &alice, &request).await.is_err() {
        if Instant::now() > deadline {
            bail!("node 4 never listed {request}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_quorum_says_so_and_recovers() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let bob = cluster.oidc.user_token("bob").await?;
    let alice = cluster.oidc.user_token("alice").await?;
    let leader = wait_for_leader(&cluster.all(), &alice).await?;
    granted(&cluster, &bob, &alice).await?;
    wait_admitted(cluster.node(leader)?, &bob).await?;

    // Both followers die; the leader is alone.
    let followers: Vec<u64> = cluster
        .others(&[leader])
        .iter()
        .map(|n| n.raft_id)
        .collect();
    for id in &followers {
        cluster.node_mut(*id)?.gateway.kill().await?;
    }
    let started = Instant::now();
    let (ok, text) = cli(
        cluster.node(leader)?,
        &bob,
        &[
            "access", "request", CONNECTION, "--role", ROLE, "--for", "1h", "--reason", "INC-5",
        ],
    )
    .await?;
    let took = started.elapsed();
    assert!(!ok, "a write committed without quorum:\n{text}");
    assert!(
        text.contains("no quorum") && text.contains("1 of 3"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "failed after {took:?}");

    // The gateway stops vouching for grants once the lease bound (5 s)
    // passes without a quorum, and says why.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (code, message) = loop {
        match connect(&cluster.node(leader)?.gateway, CONNECTION, "bob", &bob).await {
            Ok(_) if Instant::now() > deadline => bail!("the lone leader still admits bob"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                break e
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(db_error)
                    .with_context(|| format!("expected a server error, got {e:#}"))?;
            }
        }
    };
    assert_eq!(code, "57P03", "{message}");
    assert!(message.contains("no quorum"), "{message}");

    // One follower returns: the region commits again and admits bob again.
    cluster.node_mut(followers[0])?.gateway.restart().await?;
    let pair = [cluster.node(leader)?, cluster.node(followers[0])?];
    wait_for_leader(&pair, &alice).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, text) = cli(
            cluster.node(leader)?,
            &bob,
            &[
                "access", "request", CONNECTION, "--role", ROLE, "--for", "1h", "--reason", "INC-6",
            ],
        )
        .await?;
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("no write committed after a follower returned:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_admitted(cluster.node(leader)?, &bob).await?;

    // Now the leader dies: the returned follower is alone and knows no leader.
    let lone = followers[0];
    cluster.node_mut(leader)?.gateway.kill().await?;
    let started = Instant::now();
    let (ok, text) = cli(
        cluster.node(lone)?,
        &bob,
        &[
            "access", "request", CONNECTION, "--role", ROLE, "--for", "1h", "--reason", "INC-7",
        ],
    )
    .await?;
    let took = started.elapsed();
    assert!(!ok, "a write committed without quorum:\n{text}");
    assert!(
        text.contains("no leader") && text.contains("1 of 3"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
    let status = cli_ok(cluster.node(lone)?, &alice, &["cluster", "status"]).await?;
    assert!(status.contains("leader none (no quorum)"), "{status}");
    Ok(())
}
