//! Session facts (start, authentication, refusals, masking, end) reach the
//! node's hash-chained audit trail: a real node
//! with `node.data_dir`, a masked query through it, a graceful stop (which
//! seals the segment), then `juris audit export` and `juris audit verify`
//! on what it wrote. The chain holds the fact, never the cleartext.

mod common;

use std::time::Duration;

use common::{CONNECTION, Env};
use juris_testkit::gateway::juris_binary;
use juris_testkit::postgres::UpstreamAuth;

const MASKING: &str = r#"
[connection.masking]
[[connection.masking.column]]
name = "public.customers.ssn"
strategy = "partial"
[[connection.masking.value]]
detector = "card"
strategy = "redact"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn masking_events_are_chained_sealed_and_verify_offline() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("node");
    let mut env = Env::start_with(UpstreamAuth::ScramSha256, |spec| {
        spec.node_settings
            .push(format!("data_dir = {:?}", data_dir.display().to_string()));
        spec.connection_settings
            .push((CONNECTION.into(), MASKING.into()));
    })
    .await?;
    let direct = env.direct().await?;
    let cleartext: Vec<String> = direct
        .query(
            "select ssn, card_number from customers order by id limit 5",
            &[],
        )
        .await?
        .iter()
        .flat_map(|r| [r.get::<_, String>(0), r.get::<_, String>(1)])
        .collect();

    let token = env.oidc.user_token("bob").await?;
    let client = env.client(&token).await?;
    let rows = client
        .simple_query("select ssn, 'card ' || card_number from customers order by id limit 5")
        .await?;
    let shown: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(format!("{} {}", r.get(0)?, r.get(1)?))
            }
            _ => None,
        })
        .collect();
    assert_eq!(shown.len(), 5);
    let refused = client
        .simple_query("delete from customers")
        .await
        .unwrap_err();
    assert_eq!(common::db_error(&refused).unwrap().0, "42501");
    // A forged token: refused, and recorded without the token.
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.";
    assert!(env.client(forged).await.is_err());
    for value in &cleartext {
        assert!(
            !shown.iter().any(|s| s.contains(value.as_str())),
            "{value} leaked"
        );
    }
    drop(client);

    env.gateway.signal(15)?; // SIGTERM
    assert_eq!(env.gateway.wait(Duration::from_secs(60)).await?, Some(0));

    // The segment is sealed and holds the masking fact, not the values.
    let audit_dir = data_dir.join("audit");
    let mut segments = String::new();
    let mut seals = 0;
    for entry in std::fs::read_dir(&audit_dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".seal.json") {
            seals += 1;
        } else if name.ends_with(".jsonl") {
            segments.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    assert!(seals >= 1, "no sealed segment in {}", audit_dir.display());
    assert!(segments.contains("\"type\":\"masking\""), "{segments}");
    assert!(segments.contains("public.customers.ssn"), "{segments}");
    assert!(segments.contains("\"detector\":\"card\""), "{segments}");
    for kind in [
        "session_start",
        "auth_success",
        "auth_failure",
        "policy_refusal",
        "session_end",
    ] {
        assert!(
            segments.contains(&format!("\"type\":\"{kind}\"")),
            "no {kind} in {segments}"
        );
    }
    assert!(segments.contains("delete from customers"), "{segments}");
    assert!(
        !segments.contains(forged),
        "the token reached the audit chain"
    );
    assert!(
        !segments.contains(&token),
        "the token reached the audit chain"
    );
    for value in &cleartext {
        assert!(
            !segments.contains(value.as_str()),
            "{value} in the audit chain"
        );
    }
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.join("node.key"))?.permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the node key is private");

    let bundle = data.path().join("bundle.tar.zst");
    let export = std::process::Command::new(juris_binary()?)
        .args(["audit", "export", "--region", "test", "--dir"])
        .arg(&audit_dir)
        .arg("-o")
        .arg(&bundle)
        .output()?;
    assert!(export.status.success(), "{export:?}");
    let verify = std::process::Command::new(juris_binary()?)
        .args(["audit", "verify"])
        .arg(&bundle)
        .output()?;
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("VERIFIED"),
        "{verify:?}"
    );

    // One edited byte in the evidence and the bundle no longer verifies.
    let segment = std::fs::read_dir(&audit_dir)?
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let mut bytes = std::fs::read(&segment)?;
    let at = bytes.iter().position(|b| *b == b'5').unwrap();
    bytes[at] = b'6';
    std::fs::write(&segment, bytes)?;
    let tampered = data.path().join("tampered.tar.zst");
    let _ = std::process::Command::new(juris_binary()?)
        .args(["audit", "export", "--region", "test", "--dir"])
        .arg(&audit_dir)
        .arg("-o")
        .arg(&tampered)
        .output()?;
    let verify = std::process::Command::new(juris_binary()?)
        .args(["audit", "verify"])
        .arg(&tampered)
        .output()?;
    assert!(!verify.status.success(), "{verify:?}");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("FAILED"));
    Ok(())
}

/// `audit_statements = false` leaves each statement out of the audit
/// trail, and nothing else: the session's start and end, authentication
/// and refusals are still chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_without_statement_audit_still_audits_the_session() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("node");
    let mut env = Env::start_with(UpstreamAuth::ScramSha256, |spec| {
        spec.node_settings
            .push(format!("data_dir = {:?}", data_dir.display().to_string()));
        spec.connections[0]
            .settings
            .push("audit_statements = false".into());
    })
    .await?;
    let token = env.oidc.user_token("bob").await?;
    let client = env.client(&token).await?;
    let rows = client
        .simple_query("select count(*) from customers where id > 0")
        .await?;
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
    let refused = client
        .simple_query("delete from customers")
        .await
        .unwrap_err();
    assert_eq!(common::db_error(&refused).unwrap().0, "42501");
    drop(client);
    env.gateway.signal(15)?; // SIGTERM
    assert_eq!(env.gateway.wait(Duration::from_secs(60)).await?, Some(0));

    let mut types = Vec::new();
    for entry in std::fs::read_dir(data_dir.join("audit"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path)?.lines() {
                let record: serde_json::Value = serde_json::from_str(line)?;
                types.push(record["event"]["type"].as_str().unwrap_or("").to_string());
            }
        }
    }
    for kind in [
        "session_start",
        "auth_success",
        "policy_refusal",
        "session_end",
    ] {
        assert!(types.iter().any(|t| t == kind), "no {kind} in {types:?}");
    }
    assert!(
        !types.iter().any(|t| t == "statement"),
        "a statement was audited: {types:?}"
    );
    Ok(())
}
