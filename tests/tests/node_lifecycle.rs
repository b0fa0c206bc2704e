//! The node as an operator runs it: `juris node --config`, validation errors
//! naming file and key, graceful drain on SIGTERM, and `juris connect` as the
//! local entry point for tools that cannot present a token.

mod common;

use std::time::{Duration, Instant};

use common::{CONNECTION, Env, db_error, psql};
use juris_testkit::gateway::juris_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_accepting_lets_sessions_finish_then_ends_them_with_57p01()
-> anyhow::Result<()> {
    let mut env = Env::start_with(juris_testkit::postgres::UpstreamAuth::ScramSha256, |spec| {
        spec.node_settings.push("shutdown_grace_secs = 3".into());
    })
    .await?;
    let token = env.oidc.user_token("alice").await?;
    let session = env.client(&token).await?;
    session.query_one("select 1", &[]).await?;

    env.gateway.signal(libc_sigterm())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New sessions are refused...
    assert!(
        env.client(&token).await.is_err(),
        "a new session was accepted while draining"
    );
    // ...while the open one keeps working during the grace period.
    assert_eq!(
        session.query_one("select 2", &[]).await?.get::<_, i32>(0),
        2
    );

    // After the grace period the session is ended with 57P01.
    let started = Instant::now();
    let err = loop {
        match session.query_one("select pg_sleep(0.2)", &[]).await {
            Ok(_) if started.elapsed() < Duration::from_secs(15) => continue,
            Ok(_) => panic!("session was never ended"),
            Err(e) => break e,
        }
    };
    let ended_with_57p01 =
        db_error(&err).map(|e| e.0 == "57P01").unwrap_or(false) || session.is_closed();
    assert!(ended_with_57p01, "{err}");
    assert_eq!(env.gateway.wait(Duration::from_secs(15)).await?, Some(0));
    let log = env.gateway.log();
    assert!(log.contains("grace period over"), "{log}");
    Ok(())
}

fn libc_sigterm() -> i32 {
    15
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_config_names_file_key_and_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        r#"
[node]
id = "n1"
region = "eu-west"
listen = "not an address"
tls = { cert_file = "c.pem", key_file = "k.pem" }
[identity]
issuer = "https://idp.example.test/"
audience = "urn:juris:gateway"
[[region]]
name = "eu-west"
[[connection]]
name = "billing"
kind = "postgres"
region = "us-east"
upstream = { host = "127.0.0.1", port = 5432, database = "b", user = "u", password = { env = "X" } }
"#,
    )?;
    let output = tokio::process::Command::new(juris_binary()?)
        .arg("node")
        .arg("--config")
        .arg(&file)
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("node.listen"), "{stderr}");
    assert!(
        stderr.contains("connection[0].region: region `us-east` is not declared"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn juris_connect_lets_plain_psql_in_with_the_callers_token() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("bob").await?;
    let gateway = format!("localhost:{}", env.gateway.address.port());
    let ca = env.gateway.ca_file.display().to_string();
    let (_connect, port) =
        common::juris_connect(&[CONNECTION, "--gateway", &gateway, "--ca", &ca], &token).await?;
    let conninfo =
        format!("host=127.0.0.1 port={port} dbname={CONNECTION} user=bob sslmode=disable");
    let (ok, out, err) = psql(&conninfo, &["-c", "select count(*) from customers"]).await?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1000");
    // Roles still apply: bob reads only.
    let (ok, _, err) = psql(&conninfo, &["-c", "delete from customers"]).await?;
    assert!(!ok && err.contains("permission denied"), "{err}");
    Ok(())
}

/// What `ps -L -o tid,comm,nice` shows for the node's threads: id, name
/// and nice value of each (`/proc/<pid>/task/*/stat`, field 19).
fn thread_nice_values(pid: u32) -> anyhow::Result<Vec<(u32, String, i32)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let tid = task.file_name().to_string_lossy().parse()?;
        let stat = std::fs::read_to_string(task.path().join("stat"))?;
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            anyhow::bail!("unexpected stat line {stat:?}");
        };
        let name = stat[open + 1..close].to_string();
        let nice = stat[close + 2..]
            .split(' ')
            .nth(16)
            .ok_or_else(|| anyhow::anyhow!("stat line without a nice value: {stat:?}"))?
            .parse()?;
        threads.push((tid, name, nice));
    }
    Ok(threads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evidence_writers_run_at_the_configured_nice_and_sessions_do_not() -> anyhow::Result<()> {
    for (setting, expected) in [(None, 10), (Some("evidence_nice = 0"), 0)] {
        let env = Env::start_with(juris_testkit::postgres::UpstreamAuth::ScramSha256, |spec| {
            spec.node_settings.extend(setting.map(String::from));
        })
        .await?;
        let token = env.oidc.user_token("alice").await?;
        let session = env.client(&token).await?;
        session.query_one("select 1", &[]).await?;
        let pid = env
            .gateway
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the node has exited"))?;
        let threads = thread_nice_values(pid)?;
        // Relative to the process's own nice value, in case the tests run
        // under `nice` themselves.
        let base = threads
            .iter()
            .find(|(tid, _, _)| *tid == pid)
            .map(|(_, _, nice)| *nice)
            .ok_or_else(|| anyhow::anyhow!("no main thread in {threads:?}"))?;
        let lowered = (base + expected).min(19);
        for writer in ["juris-audit", "juris-record-sp", "juris-upload"] {
            let found: Vec<_> = threads
                .iter()
                .filter(|(_, name, _)| name == writer)
                .collect();
            assert!(!found.is_empty(), "no {writer} thread in {threads:?}");
            assert!(
                found.iter().all(|(_, _, nice)| *nice == lowered),
                "{setting:?}: {writer} should run at nice {lowered}: {threads:?}"
            );
        }
        let sessions: Vec<_> = threads
            .iter()
            .filter(|(_, name, _)| name.starts_with("tokio"))
            .collect();
        assert!(!sessions.is_empty(), "no runtime threads in {threads:?}");
        assert!(
            sessions.iter().all(|(_, _, nice)| *nice == base),
            "the threads that serve sessions must keep their priority: {threads:?}"
        );
    }
    Ok(())
}
