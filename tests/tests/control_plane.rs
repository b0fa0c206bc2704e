//! The region control plane end to end: three real `juris node` processes
//! form a Raft group over mutual TLS; people use the real `juris` CLI
//! against different nodes' control APIs; sessions go through psql and
//! tokio-postgres against real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::control::{cli, cli_ok, id_with_prefix, wait_for_leader};
use common::{CONNECTION, connect, connection_spec, db_error, start_pg};
use juris_testkit::gateway::{GatewaySpec, RegionNode, RoleSpec, start_region};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::UpstreamAuth;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jit_grant_is_requested_reviewed_on_other_nodes_and_ends_sessions() -> anyhow::Result<()> {
    let (pg, oidc) = tokio::try_join!(start_pg(UpstreamAuth::ScramSha256), OidcProvider::start())?;
    let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    spec.connections
        .push(connection_spec(&pg, &UpstreamAuth::ScramSha256));
    // bob (analysts) may only *request* write access; alice (dba) reviews.
    spec.roles.push(RoleSpec::jit(
        "oncall-write",
        "analysts",
        CONNECTION,
        "write",
        "dba",
    ));
    spec.roles
        .push(RoleSpec::new("dba", "dba", CONNECTION, "admin"));
    let dir = tempfile::tempdir()?;
    let nodes = start_region(&spec, 3, dir.path(), "dba").await?;
    let bob = oidc.user_token("bob").await?;
    let alice = oidc.user_token("alice").await?;
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), &alice).await?;
    let status = cli_ok(&nodes[1], &bob, &["cluster", "status"]).await?;
    assert!(status.contains("member 3"), "{status}");

    // Without a grant bob is refused, and told how to ask.
    let refused = connect(&nodes[0].gateway, CONNECTION, "bob", &bob)
        .await
        .unwrap_err();
    let (code, message) = refused
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(db_error)
        .context("expected a server error")?;
    assert_eq!(code, "42501", "{message}");
    assert!(
        message.contains("juris access request billing --role oncall-write"),
        "{message}"
    );

    // bob asks through node 2; he cannot approve his own request.
    let requested = cli_ok(
        &nodes[1],
        &bob,
        &[
            "access",
            "request",
            CONNECTION,
            "--role",
            "oncall-write",
            "--for",
            "1h",
            "--reason",
            "INC-1234",
        ],
    )
    .await?;
    let request = id_with_prefix(&requested, "ar-")?;
    assert!(requested.contains("pending"), "{requested}");
    let (ok, own) = cli(&nodes[1], &bob, &["access", "approve", &request]).await?;
    assert!(!ok && own.contains("permission denied"), "{own}");

    // alice approves through node 3; the grant exists on every node.
    let approved = cli_ok(
        &nodes[2],
        &alice,
        &["access", "approve", &request, "--reason", "ok"],
    )
    .await?;
    let grant = id_with_prefix(&approved, "g-")?;
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = cli_ok(node, &alice, &["grants", "list", "--status", "active"]).await?;
            if listed.contains(&grant) {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {} never listed {grant}:\n{listed}", node.raft_id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Now bob writes through node 1 (psql) and keeps a session open on node 2.
    let (ok, _, stderr) = common::psql(
        &nodes[0].gateway.conninfo(CONNECTION, "alice", &alice),
        &["-c", "CREATE TABLE IF NOT EXISTS jit_probe(x int)"],
    )
    .await?;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = common::psql(
        &nodes[0].gateway.conninfo(CONNECTION, "bob", &bob),
        &["-c", "INSERT INTO jit_probe VALUES (1)"],
    )
    .await?;
    assert!(ok, "bob's write with a grant failed: {stderr}");
    let open = connect(&nodes[1].gateway, CONNECTION, "bob", &bob).await?;
    open.simple_query("SELECT 1").await?;

    // The session is listed on the node it runs through, with its grant:
    // for an admin, and for bob himself; another node has none of his.
    let listed = cli_ok(&nodes[1], &alice, &["sessions", "active"]).await?;
    assert!(
        listed.lines().any(
            |l| l.contains("bob@example.test on billing as oncall-write")
                && l.contains(&format!("grant {grant}"))
        ),
        "{listed}"
    );
    let own = cli_ok(
        &nodes[1],
        &bob,
        &["sessions", "active", "--connection", CONNECTION],
    )
    .await?;
    assert!(own.contains("bob@example.test"), "{own}");
    let elsewhere = cli_ok(&nodes[0], &bob, &["sessions", "active"]).await?;
    assert!(elsewhere.contains("no sessions"), "{elsewhere}");

    // alice revokes through node 3; bob's open session on node 2 is ended, saying why.
    let revoked_at = Instant::now();
    let revoked = cli_ok(
        &nodes[2],
        &alice,
        &["grants", "revoke", &grant, "--reason", "incident over"],
    )
    .await?;
    assert!(revoked.contains("revoked"), "{revoked}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        match open.simple_query("SELECT 1").await {
            Err(e) => break e,
            Ok(_) if Instant::now() > deadline => bail!("the session outlived its revoked grant"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let waited = revoked_at.elapsed();
    let log = nodes[1].gateway.log();
    assert!(
        log.contains(&format!(
            "grant {grant} was revoked by alice@example.test (incident over)"
        )),
        "{ended}\n{log}"
    );
    assert!(waited < Duration::from_secs(5), "ended after {waited:?}");
    // The client hears the FATAL before the node has finished closing the
    // session (audit record, recording); it leaves the list right after.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listed = cli_ok(&nodes[1], &alice, &["sessions", "active"]).await?;
        if !listed.contains("bob@example.test") {
            break;
        }
        if Instant::now() > deadline {
            bail!("an ended session is still listed:\n{listed}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And new sessions are refused again, on every node.
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match connect(&node.gateway, CONNECTION, "bob", &bob).await {
                Err(_) => break,
                Ok(_) if Instant::now() > deadline => {
                    bail!("node {} still admits bob", node.raft_id)
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_ends_its_sessions_when_it_expires() -> anyhow::Result<()> {
    let (pg, oidc) = tokio::try_join!(start_pg(UpstreamAuth::ScramSha256), OidcProvider::start())?;
    let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    spec.connections
        .push(connection_spec(&pg, &UpstreamAuth::ScramSha256));
    spec.roles.push(RoleSpec::jit(
        "oncall-write",
        "analysts",
        CONNECTION,
        "write",
        "dba",
    ));
    let dir = tempfile::tempdir()?;
    let nodes = start_region(&spec, 3, dir.path(), "dba").await?;
    let bob = oidc.user_token("bob").await?;
    let alice = oidc.user_token("alice").await?;
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), &alice).await?;

    let requested = cli_ok(
        &nodes[0],
        &bob,
        &[
            "access",
            "request",
            CONNECTION,
            "--role",
            "oncall-write",
            "--for",
            "4s",
            "--reason",
            "INC-7",
        ],
    )
    .await?;
    let request = id_with_prefix(&requested, "ar-")?;
    let approved = cli_ok(&nodes[0], &alice, &["access", "approve", &request]).await?;
    let grant = id_with_prefix(&approved, "g-")?;
    let session = connect(&nodes[0].gateway, CONNECTION, "bob", &bob).await?;
    session.simple_query("SELECT 1").await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(15);
    loop {
        if session.simple_query("SELECT 1").await.is_err() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the session outlived its 4 s grant");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = nodes[0].gateway.log();
    assert!(log.contains(&format!("grant {grant} expired")), "{log}");
    Ok(())
}

/// Every record in an audit directory's segments.
fn audit_text(dir: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            text.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    Ok(text)
}

/// Poll `juris approvals list` on `node` until a pending request for a
/// statement containing `text` shows; returns its id.
async fn pending_approval(node: &RegionNode, token: &str, text: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = cli_ok(node, token, &["approvals", "list", "--status", "pending"]).await?;
        if let Some(line) = listed.lines().find(|l| l.contains(text)) {
            return id_with_prefix(line, "ap-");
        }
        if Instant::now() > deadline {
            bail!("no pending approval for {text:?}:\n{listed}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_drop_table_runs_once_approved_through_another_node() -> anyhow::Result<()> {
    let (pg, oidc) = tokio::try_join!(start_pg(UpstreamAuth::ScramSha256), OidcProvider::start())?;
    let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    spec.connections
        .push(connection_spec(&pg, &UpstreamAuth::ScramSha256));
    let mut quick = connection_spec(&pg, &UpstreamAuth::ScramSha256);
    quick.name = "billing_quick".into();
    spec.connections.push(quick);
    spec.connection_settings.push((
        CONNECTION.into(),
        "[connection.approvals]\nreviewers = [\"dba\"]\nhold = \"60s\"".into(),
    ));
    spec.connection_settings.push((
        "billing_quick".into(),
        "[connection.approvals]\nreviewers = [\"dba\"]\nhold = \"1s\"\nwindow = \"10m\"".into(),
    ));
    let mut ops = RoleSpec::new("ops", "analysts", CONNECTION, "admin");
    ops.connections.push("billing_quick".into());
    spec.roles.push(ops);
    let dir = tempfile::tempdir()?;
    let nodes = start_region(&spec, 3, dir.path(), "dba").await?;
    let bob = oidc.user_token("bob").await?;
    let alice = oidc.user_token("alice").await?;
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), &alice).await?;
    let bob_psql = |node: usize, connection: &'static str, sql: &'static str| {
        let conninfo = nodes[node].gateway.conninfo(connection, "bob", &bob);
        async move { common::psql(&conninfo, &["-v", "VERBOSITY=verbose", "-c", sql]).await }
    };

    // Statements outside the review rule run at once.
    let (ok, _, stderr) = bob_psql(
        0,
        CONNECTION,
        "CREATE TABLE held_probe(x int); INSERT INTO held_probe VALUES (1)",
    )
    .await?;
    assert!(ok, "{stderr}");

    // DROP TABLE through node 1 waits; the request is visible on node 2.
    let drop = tokio::spawn(bob_psql(0, CONNECTION, "DROP TABLE held_probe"));
    let id = pending_approval(&nodes[1], &alice, "DROP TABLE held_probe").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !drop.is_finished(),
        "the DROP ran before anyone approved it"
    );
    let (ok, own) = cli(&nodes[1], &bob, &["approvals", "approve", &id]).await?;
    assert!(!ok && own.contains("permission denied"), "{own}");

    // alice approves through node 3; the DROP runs and bob sees its result.
    cli_ok(
        &nodes[2],
        &alice,
        &["approvals", "approve", &id, "--reason", "cleanup"],
    )
    .await?;
    let (ok, stdout, stderr) = tokio::time::timeout(Duration::from_secs(20), drop).await???;
    assert!(ok, "the approved DROP failed: {stderr}");
    assert!(
        stderr.contains(&format!("statement held for review as {id}")),
        "bob was not told the request id: {stderr}"
    );
    let _ = stdout;
    let (ok, gone, stderr) =
        bob_psql(0, CONNECTION, "SELECT to_regclass('held_probe') IS NULL").await?;
    assert!(ok && gone.trim() == "t", "{gone} {stderr}");

    // Each step is in the audit trail of the node that committed it: the
    // request and its one use on node 1 (bob's session), the decision on
    // node 3 (alice's call). Ids are numbers in the records (`"id":4`).
    let number = id.trim_start_matches("ap-").to_string();
    for (node, actions) in [
        (1, &["approval_requested", "approval_consumed"][..]),
        (3, &["approval_reviewed", "approval_decided"][..]),
    ] {
        let audit_dir = dir.path().join(format!("node-{node}")).join("audit");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = audit_text(&audit_dir)?;
            let missing: Vec<_> = actions
                .iter()
                .filter(|a| {
                    !records.lines().any(|line| {
                        line.contains(&format!("\"action\":\"{a}\""))
                            && line.contains(&format!(":{number}"))
                    })
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {node}'s audit trail lacks {missing:?} for {id}:\n{records}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A denied statement fails with the reviewer's reason and never runs.
    let (ok, _, stderr) = bob_psql(1, CONNECTION, "CREATE TABLE keep_me(x int)").await?;
    assert!(ok, "{stderr}");
    let drop = tokio::spawn(bob_psql(1, CONNECTION, "DROP TABLE keep_me"));
    let id = pending_approval(&nodes[0], &alice, "DROP TABLE keep_me").await?;
    cli_ok(
        &nodes[0],
        &alice,
        &["approvals", "deny", &id, "--reason", "not today"],
    )
    .await?;
    let (ok, _, stderr) = tokio::time::timeout(Duration::from_secs(20), drop).await???;
    assert!(!ok, "a denied DROP ran");
    assert!(
        stderr.contains("42501")
            && stderr.contains(&format!("{id} was denied by alice"))
            && stderr.contains("not today"),
        "{stderr}"
    );
    let (ok, kept, _) =
        bob_psql(1, CONNECTION, "SELECT to_regclass('keep_me') IS NOT NULL").await?;
    assert!(ok && kept.trim() == "t", "keep_me was dropped");

    // A hold that runs out names the request; once approved, the identical
    // statement runs exactly once.
    let (ok, _, stderr) = bob_psql(2, "billing_quick", "TRUNCATE keep_me").await?;
    assert!(
        !ok && stderr.contains("57014") && stderr.contains("was not decided within 1s"),
        "{stderr}"
    );
    let id = id_with_prefix(
        stderr
            .lines()
            .find(|l| l.contains("approval request"))
            .unwrap_or_default(),
        "ap-",
    )?;
    cli_ok(&nodes[1], &alice, &["approvals", "approve", &id]).await?;
    let (ok, _, stderr) = bob_psql(2, "billing_quick", "TRUNCATE keep_me").await?;
    assert!(ok, "the approved TRUNCATE did not run: {stderr}");
    let (ok, _, stderr) = bob_psql(2, "billing_quick", "TRUNCATE keep_me").await?;
    assert!(
        !ok && stderr.contains("was not decided"),
        "an approval was used twice: {stderr}"
    );
    Ok(())
}
