//! Session recordings end to end: real `juris node` processes record what
//! psql and tokio-postgres sessions sent and (masked) received, upload it
//! to the region's store (a local directory, or a real S3 API), and
//! `juris sessions list` / `juris replay` read it back verified. A node
//! killed with SIGKILL mid-stream loses nothing that was spooled; an S3
//! outage delays uploads without losing or duplicating anything; a
//! `strict` connection refuses sessions once the spool cannot take more,
//! a `best_effort` one carries on and says what it lost.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{CONNECTION, Env, juris, psql};
use juris_testkit::gateway::{GatewayProcess, RoleSpec};
use juris_testkit::postgres::{UpstreamAuth, fake_customer};
use juris_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

/// Column rules for the seeded table, value detectors for everything else
/// (statement text and bind values included).
const MASKING: &str = r#"
[connection.masking]
exempt_groups = ["pii-readers"]
[[connection.masking.column]]
name = "public.customers.ssn"
strategy = "partial"
keep_last = 4
[[connection.masking.column]]
name = "public.customers.card_number"
strategy = "partial"
keep_last = 4
[[connection.masking.value]]
detector = "ssn"
strategy = "redact"
[[connection.masking.value]]
detector = "card"
strategy = "redact"
"#;

/// Customers seeded by `common::start_pg`.
const CUSTOMERS: usize = 1000;

async fn masked_env(
    customise: impl FnOnce(&mut juris_testkit::gateway::GatewaySpec),
) -> anyhow::Result<Env> {
    Env::start_with(UpstreamAuth::ScramSha256, |spec| {
        spec.connection_settings
            .push((CONNECTION.into(), MASKING.into()));
        customise(spec);
    })
    .await
}

fn config(gateway: &GatewayProcess) -> String {
    gateway.config_file.display().to_string()
}

/// The gateway's temp dir: `data/` (spool, audit, key) and `store/`.
fn gateway_dir(gateway: &GatewayProcess) -> PathBuf {
    gateway.config_file.parent().unwrap().to_path_buf()
}

/// `juris sessions list --json` rows.
async fn listing(
    gateway: &GatewayProcess,
    extra: &[&str],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let config = config(gateway);
    let mut args = vec!["sessions", "list", "--config", &config, "--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = juris(&args).await?;
    anyhow::ensure!(ok, "juris sessions list failed: {err}");
    out.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// Poll the listing until `done` holds (30 s at most).
async fn wait_for_listing(
    gateway: &GatewayProcess,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = listing(gateway, &[]).await?;
        if done(&rows) {
            return Ok(rows);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}; listing: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn uploaded(row: &serde_json::Value, status: &str) -> bool {
    all_uploaded(row) && row["status"] == status
}

/// Listed from the store, with nothing left in the spool.
fn all_uploaded(row: &serde_json::Value) -> bool {
    row["source"] == "store"
        && row["pending_files"].as_u64().unwrap_or(0) == 0
        && row["quarantined_files"].as_u64().unwrap_or(0) == 0
}

/// About 6 MB of poorly compressible rows: more than a 1 MiB spool holds
/// even once sealed into zstd chunks.
const BIG_RESULT: &str = "select g, (select string_agg(md5(random()::text || g || s), '') from generate_series(1, 30) s) from generate_series(1, 6000) g";
const BIG_ROWS: usize = 6000;

/// Every file under `dir`, recursively.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk_files(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every byte the node keeps or stored as evidence, with recording chunks
/// decompressed (a compressed SSN would not be found by a byte search).
fn evidence_text(dirs: &[&Path]) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "zst") {
                let chunk = juris_record::decode_chunk(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for event in chunk.events {
                    out.push_str(&serde_json::to_string(&event).unwrap());
                    out.push('\n');
                }
            } else {
                out.push_str(&String::from_utf8_lossy(&bytes));
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    for dir in dirs {
        walk(dir, &mut out);
    }
    out
}

/// Fail if `text` holds any seeded SSN or card number.
fn assert_no_seeded_pii(what: &str, text: &str) {
    for i in 0..CUSTOMERS {
        let c = fake_customer(i);
        assert!(
            !text.contains(&c.ssn),
            "{what} holds customer {i}'s SSN {}",
            c.ssn
        );
        assert!(
            !text.contains(&c.card_number),
            "{what} holds customer {i}'s card number {}",
            c.card_number
        );
    }
}

fn last4(value: &str) -> &str {
    &value[value.len() - 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_are_recorded_as_the_client_saw_them_and_replay_verified() -> anyhow::Result<()> {
    let mut env = masked_env(|_| {}).await?;
    let token = env.oidc.user_token("bob").await?;
    let first = fake_customer(0);
    let fifth = fake_customer(4);
    let seventh = fake_customer(6);

    // Simple protocol through psql: masked columns, and a literal SSN in the statement.
    let conninfo = env.gateway.conninfo(CONNECTION, "bob", &token);
    let (ok, out, err) = psql(
        &conninfo,
        &[
            "-c",
            "select id, ssn, card_number from customers where id <= 3 order by id",
            "-c",
            &format!("select count(*) from customers where ssn = '{}'", fifth.ssn),
        ],
    )
    .await?;
    assert!(ok, "psql failed: {err}");
    assert!(
        out.contains(&format!("1|***-**-{}", last4(&first.ssn))),
        "{out}"
    );

    // Extended protocol, binary results, an SSN as a bind value.
    {
        let client = env.client(&token).await?;
        let rows = client
            .query("select id from customers where ssn = $1", &[&seventh.ssn])
            .await?;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), 7);
    }

    // A statement beyond bob's role is refused (and recorded as such).
    let (ok, _, err) = psql(&conninfo, &["-c", "delete from customers where id = 1"]).await?;
    assert!(!ok && err.contains("permission denied"), "{err}");

    let rows = wait_for_listing(&env.gateway, "three complete recordings", |rows| {
        rows.len() == 3 && rows.iter().all(|r| uploaded(r, "complete"))
    })
    .await?;
    for row in &rows {
        assert_eq!(row["connection"], CONNECTION);
        assert_eq!(row["region"], "test");
        assert_eq!(row["node"], "test-1");
    }
    assert!(
        listing(&env.gateway, &["--user", "nobody"])
            .await?
            .is_empty()
    );
    assert_eq!(
        listing(&env.gateway, &["--connection", CONNECTION, "--since", "1h"])
            .await?
            .len(),
        3
    );
    assert!(
        listing(&env.gateway, &["--until", "2000-01-01T00:00:00Z"])
            .await?
            .is_empty()
    );
    let (ok, table, _) = juris(&["sessions", "list", "--config", &config(&env.gateway)]).await?;
    assert!(ok && table.contains("complete"), "{table}");

    // Find each session by what it ran.
    let mut psql_replay = None;
    let mut bind_replay = None;
    for row in &rows {
        let id = row["session_id"].as_str().unwrap();
        let (ok, text, verdict) = juris(&["replay", id, "--config", &config(&env.gateway)]).await?;
        assert!(ok, "replay {id} failed: {verdict}");
        assert!(verdict.contains("verified:"), "{verdict}");
        assert!(verdict.contains("hash chain intact"), "{verdict}");
        if text.contains("select id, ssn, card_number") {
            psql_replay = Some((id.to_string(), text));
        } else if text.contains("$1") {
            bind_replay = Some((id.to_string(), text));
        } else {
            assert!(text.contains("delete from customers"), "{text}");
            assert!(text.contains("permission denied"), "{text}");
        }
    }
    let (psql_id, psql_text) = psql_replay.expect("the psql session was recorded");
    let (_, bind_text) = bind_replay.expect("the tokio-postgres session was recorded");
    // Results as the client saw them, masked; the statement's literal SSN masked.
    assert!(
        psql_text.contains(&format!("***-**-{}", last4(&first.ssn))),
        "{psql_text}"
    );
    assert!(
        psql_text.contains(&format!("************{}", last4(&first.card_number))),
        "{psql_text}"
    );
    assert!(
        psql_text.contains("select count(*) from customers where ssn = '"),
        "{psql_text}"
    );
    assert!(psql_text.contains("SELECT 3"), "{psql_text}");
    assert!(
        bind_text.contains("select id from customers where ssn = $1"),
        "{bind_text}"
    );

    // JSON Lines and asciicast renderings of the same recording.
    let (ok, json, _) = juris(&[
        "replay",
        &psql_id,
        "--config",
        &config(&env.gateway),
        "--format",
        "json",
    ])
    .await?;
    assert!(ok);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(events[0]["kind"]["session_start"]["principal"]["name"].is_string());
    assert!(events.last().unwrap()["kind"]["session_end"].is_object());
    assert!(events.iter().any(|e| e["kind"]["data_row"].is_object()));
    let (ok, cast, _) = juris(&[
        "replay",
        &psql_id,
        "--config",
        &config(&env.gateway),
        "--format",
        "asciicast",
    ])
    .await?;
    assert!(ok);
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap())?;
    assert_eq!(header["version"], 2);

    // Nothing the node spooled, uploaded or logged holds a seeded SSN or card.
    let dir = gateway_dir(&env.gateway);
    let evidence = evidence_text(&[&dir.join("store"), &dir.join("data")]);
    assert!(
        evidence.contains("select count(*) from customers"),
        "the scan saw the recordings"
    );
    assert_no_seeded_pii("the evidence", &evidence);
    assert_no_seeded_pii("the node log", &env.gateway.log());

    // One audit record per statement: text (value-masked), class,
    // fingerprint, duration, rows, outcome.
    let statements: Vec<serde_json::Value> = evidence_text(&[&dir.join("data/audit")])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event"]["type"] == "statement")
        .map(|r| r["event"].clone())
        .collect();
    let find = |prefix: &str| {
        statements
            .iter()
            .find(|s| s["text"].as_str().unwrap_or("").starts_with(prefix))
            .unwrap_or_else(|| panic!("no statement record for {prefix:?} in {statements:#?}"))
            .clone()
    };
    let select = find("select id, ssn, card_number");
    assert_eq!(select["rows"], 3);
    assert_eq!(select["outcome"], "ok");
    assert_eq!(select["class"], "read");
    assert_eq!(select["fingerprint"].as_str().unwrap().len(), 16);
    assert!(select["duration_us"].as_u64().unwrap() > 0);
    let literal = find("select count(*) from customers where ssn = ");
    assert_eq!(literal["rows"], 1);
    let bound = find("select id from customers where ssn = $1");
    assert_eq!(bound["rows"], 1);
    assert_eq!(bound["outcome"], "ok");
    let refused = find("delete from customers");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["sqlstate"], "42501");
    assert_eq!(refused["class"], "write");

    // An audit bundle from the region's store: the sealed (and uploaded)
    // segments, the recording manifests and, on request, their chunks.
    env.gateway.signal(15)?;
    env.gateway.wait(Duration::from_secs(30)).await?;
    let bundle = dir.join("bundle.tar.zst");
    let export = |recordings: bool| {
        let bundle = bundle.display().to_string();
        let config = config(&env.gateway);
        async move {
            let mut args = vec![
                "audit", "export", "--config", &config, "--region", "test", "-o", &bundle,
            ];
            if recordings {
                args.push("--recordings");
            }
            juris(&args).await
        }
    };
    let bundle_arg = bundle.display().to_string();
    let verify = || {
        let bundle = bundle_arg.clone();
        async move { juris(&["audit", "verify", &bundle]).await }
    };
    let (ok, out, err) = export(true).await?;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("3 recording manifests with their chunks"),
        "{out}"
    );
    let (ok, out, err) = verify().await?;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("recordings: 3 manifests (3 with their chunks): VERIFIED"),
        "{out}"
    );
    assert!(
        out.contains("test-1"),
        "the node's segments are in the bundle: {out}"
    );
    let (ok, _, err) = export(false).await?;
    assert!(ok, "{err}");
    let (ok, out, _) = verify().await?;
    assert!(
        ok && out.contains("(0 with their chunks): VERIFIED"),
        "{out}"
    );
    // A recording chunk replaced in the store by another session's is caught.
    let chunks: Vec<PathBuf> = walk_files(&dir.join("store/recordings"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "chunk-000001.zst"))
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    std::fs::copy(&chunks[0], &chunks[1])?;
    let (ok, _, err) = export(true).await?;
    assert!(ok, "{err}");
    let (ok, out, _) = verify().await?;
    assert!(!ok, "a replaced chunk must fail verification: {out}");
    assert!(
        out.contains("NOT VERIFIED") && out.contains("chunk"),
        "{out}"
    );

    // An unknown session is a clear error.
    let (ok, _, err) = juris(&[
        "replay",
        "0123456789abcdef0123456789abcdef",
        "--config",
        &config(&env.gateway),
    ])
    .await?;
    assert!(!ok && err.contains("not found"), "{err}");
    Ok(())
}

/// After `after`, kill -9 the node while `client` is in a session; check
/// the client was cut off; restart the node and wait for the interrupted
/// recording's upload. Returns its session id, its replay and the
/// replay's verdict (already checked to be a success).
async fn kill_restart_and_replay(
    env: &mut Env,
    after: Duration,
    client: tokio::task::JoinHandle<anyhow::Result<(bool, String, String)>>,
) -> anyhow::Result<(String, String, String)> {
    tokio::time::sleep(after).await;
    env.gateway.kill().await?;
    let (ok, _, err) = client.await??;
    assert!(!ok, "the session should have been cut: {err}");

    env.gateway.restart().await?;
    let rows = wait_for_listing(&env.gateway, "the interrupted recording", |rows| {
        rows.len() == 1 && uploaded(&rows[0], "interrupted")
    })
    .await?;
    let id = rows[0]["session_id"].as_str().unwrap().to_string();
    let (ok, text, verdict) = juris(&["replay", &id, "--config", &config(&env.gateway)]).await?;
    assert!(ok, "{verdict}");
    Ok((id, text, verdict))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_stream_uploads_the_spooled_recording_after_restart() -> anyhow::Result<()>
{
    let mut env = masked_env(|_| {}).await?;
    let token = env.oidc.user_token("bob").await?;
    let conninfo = env.gateway.conninfo(CONNECTION, "bob", &token);
    // About 16 rows per network write, one row every 10 ms: rows keep
    // flowing for 10 s.
    let stream = tokio::spawn(async move {
        psql(
            &conninfo,
            &[
                "-c",
                "select id, ssn, repeat('x', 500), pg_sleep(0.01) from customers",
            ],
        )
        .await
    });
    // Wait until some rows went through (and the spool's fsync interval passed).
    let (id, text, verdict) =
        kill_restart_and_replay(&mut env, Duration::from_secs(3), stream).await?;
    assert!(verdict.contains("status interrupted"), "{verdict}");
    assert!(text.contains("select id, ssn, repeat('x', 500)"), "{text}");
    // Rows up to the kill, masked.
    let first = fake_customer(0);
    assert!(
        text.contains(&format!("***-**-{}", last4(&first.ssn))),
        "{text}"
    );
    let (_, json, _) = juris(&[
        "replay",
        &id,
        "--config",
        &config(&env.gateway),
        "--format",
        "json",
    ])
    .await?;
    let data_rows = json.lines().filter(|l| l.contains("\"data_row\"")).count();
    assert!(
        data_rows >= 16,
        "only {data_rows} rows recorded before the kill"
    );
    assert!(data_rows < CUSTOMERS, "the kill came after the last row");

    // The audit chain survived the kill without a gap.
    env.gateway.signal(15)?;
    env.gateway.wait(Duration::from_secs(30)).await?;
    let dir = gateway_dir(&env.gateway);
    let bundle = dir.join("audit.tar.zst");
    let audit_dir = dir.join("data/audit");
    let (ok, _, err) = juris(&[
        "audit",
        "export",
        "--dir",
        audit_dir.to_str().unwrap(),
        "--region",
        "test",
        "-o",
        bundle.to_str().unwrap(),
    ])
    .await?;
    assert!(ok, "{err}");
    let (ok, out, err) = juris(&["audit", "verify", bundle.to_str().unwrap()]).await?;
    assert!(ok, "audit verify: {out}{err}");
    let evidence = evidence_text(&[&dir.join("store"), &dir.join("data")]);
    assert_no_seeded_pii("the evidence", &evidence);
    Ok(())
}

/// What the client sent is shipped with its answer, or at the latest a
/// moment after it: a statement the server has not answered when the node
/// dies is still in the recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_still_running_when_the_node_is_killed_is_in_the_recording()
-> anyhow::Result<()> {
    let mut env = masked_env(|_| {}).await?;
    let token = env.oidc.user_token("bob").await?;
    let conninfo = env.gateway.conninfo(CONNECTION, "bob", &token);
    let running = tokio::spawn(async move {
        psql(&conninfo, &["-c", "select 'still running', pg_sleep(60)"]).await
    });
    // Past the spool's fsync interval, long before the answer.
    let (_, text, _) = kill_restart_and_replay(&mut env, Duration::from_secs(2), running).await?;
    assert!(
        text.contains("select 'still running', pg_sleep(60)"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_outage_delays_uploads_strict_sessions_stop_when_the_spool_is_full()
-> anyhow::Result<()> {
    let s3_dir = tempfile::tempdir()?;
    let bucket = "juris-test-recordings";
    let s3 = S3Server::start(&s3_dir.path().join("s3"), "127.0.0.1:0".parse()?, &[bucket]).await?;
    let s3_addr = s3.addr;
    std::fs::write(s3_dir.path().join("key-id"), ACCESS_KEY)?;
    std::fs::write(s3_dir.path().join("secret"), SECRET_KEY)?;
    let endpoint = s3.endpoint();
    let secrets = s3_dir.path().to_path_buf();
    let metrics_address = format!("127.0.0.1:{}", juris_testkit::gateway::free_port()?);
    let env = Env::start_with(UpstreamAuth::ScramSha256, |spec| {
        spec.node_settings
            .push(format!("metrics_listen = \"{metrics_address}\""));
        spec.region_settings.push(format!(
            "store = {{ kind = \"s3\", bucket = \"{bucket}\", region = \"us-east-1\", endpoint = \"{endpoint}\", allow_http = true, access_key_id = {{ file = {:?} }}, secret_access_key = {{ file = {:?} }} }}",
            secrets.join("key-id").display().to_string(),
            secrets.join("secret").display().to_string(),
        ));
        spec.node_settings.push(
            "recording = { spool_max_bytes = 1048576, upload_attempts = 3, upload_max_backoff = \"1s\", quarantine_retry = \"2s\" }".into(),
        );
        let mut reports = spec.connections[0].clone();
        reports.name = "reports".into();
        reports.settings.push("recording = \"best_effort\"".into());
        spec.connections.push(reports);
        spec.roles.push(RoleSpec::new("report-readers", "analysts", "reports", "read"));
    })
    .await?;
    let token = env.oidc.user_token("bob").await?;
    let billing = env.gateway.conninfo(CONNECTION, "bob", &token);
    let reports = env.gateway.conninfo("reports", "bob", &token);

    // While S3 is up, a session is uploaded.
    let (ok, _, err) = psql(&billing, &["-c", "select 1"]).await?;
    assert!(ok, "{err}");
    wait_for_listing(&env.gateway, "the first upload", |rows| {
        rows.len() == 1 && uploaded(&rows[0], "complete")
    })
    .await?;

    // S3 goes away. A small strict session still fits in the spool.
    s3.stop().await;
    let (ok, _, err) = psql(&billing, &["-c", "select 2"]).await?;
    assert!(
        ok,
        "a strict session must run while the spool has room: {err}"
    );
    // A best-effort session that records more than the spool holds runs to the end.
    let (ok, out, err) = psql(&reports, &["-c", BIG_RESULT]).await?;
    assert!(ok, "the best-effort session must not fail: {err}");
    assert_eq!(
        out.lines().count(),
        BIG_ROWS,
        "every row reached the client"
    );
    // A strict session doing the same is ended (or refused) once the spool is full.
    let (ok, out, err) = psql(&billing, &["-c", BIG_RESULT]).await?;
    assert!(!ok, "a strict session must not outrun its recording");
    assert!(err.contains("cannot be recorded"), "{err}");
    assert!(out.lines().count() < BIG_ROWS);
    // Uploads waiting (or quarantined) are visible, and so is the outage.
    let (ok, table, err) = juris(&["sessions", "list", "--config", &config(&env.gateway)]).await?;
    assert!(
        !ok && err.contains("cannot read region test's store"),
        "{err}"
    );
    assert!(
        table.contains("not uploaded yet") || table.contains("QUARANTINED"),
        "{table}"
    );
    // So do the metrics, once the uploader has tried.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = juris_testkit::regions::scrape(&metrics_address).await?;
        let waiting = metrics["juris_recording_upload_pending_files"]
            + metrics["juris_recording_quarantined_files"];
        if metrics["juris_recording_upload_failures_total"] > 0 && waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // S3 comes back on the same address: everything is uploaded, once.
    let s3 = S3Server::start(&s3_dir.path().join("s3"), s3_addr, &[bucket]).await?;
    let rows = wait_for_listing(&env.gateway, "all uploads after the outage", |rows| {
        rows.len() >= 3 && rows.iter().all(all_uploaded)
    })
    .await?;
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    let listed = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), listed, "no session listed twice");
    // The metrics agree once the uploader has made its pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = juris_testkit::regions::scrape(&metrics_address).await?;
        if metrics["juris_recording_upload_pending_files"] == 0
            && metrics["juris_recording_quarantined_files"] == 0
        {
            assert!(
                metrics["juris_recording_uploaded_files_total"] >= 6,
                "{metrics:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut saw_gap = false;
    for id in ids {
        let (ok, json, verdict) = juris(&[
            "replay",
            id,
            "--config",
            &config(&env.gateway),
            "--format",
            "json",
        ])
        .await?;
        assert!(ok, "{id}: {verdict}");
        saw_gap |= json.contains("\"gap\"");
    }
    assert!(saw_gap, "the best-effort recording says what it lost");
    // The audit trail says what was lost and what was refused.
    let audit = evidence_text(&[&gateway_dir(&env.gateway).join("data/audit")]);
    assert!(
        audit.contains("\"recording_loss\""),
        "no recording_loss event"
    );
    assert!(audit.contains("\"best_effort\""), "{audit}");
    assert!(
        !env.gateway.log().contains(SECRET_KEY),
        "the S3 secret reached the log"
    );
    s3.stop().await;
    Ok(())
}
