//! `juris audit export` and `juris audit verify` as a user runs them: the
//! real binary over segments written by the crate's own writer.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Context;
use juris_audit::event::{AuthFailure, SessionStart};
use juris_audit::{AuditEvent, ChainWriter, NodeKey, Timestamp, WriterConfig};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_micros((1_748_736_000 + secs) * 1_000_000).unwrap()
}

fn write_node(dir: &Path, node: &str, seed: u8, count: u64) -> anyhow::Result<()> {
    let mut config = WriterConfig::new(dir, node, "eu-west");
    config.max_segment_records = 3;
    let (mut writer, _) = ChainWriter::open(config, NodeKey::from_seed([seed; 32]), t(0))?;
    for i in 0..count {
        let event = if i % 2 == 0 {
            AuditEvent::SessionStart(SessionStart {
                session: format!("{i:032x}"),
                connection: "billing-eu".into(),
                client: "127.0.0.1:5555".into(),
                protocol: "postgres".into(),
            })
        } else {
            AuditEvent::AuthFailure(AuthFailure {
                session: format!("{i:032x}"),
                connection: "billing-eu".into(),
                client: "127.0.0.1:5555".into(),
                reason: "token expired".into(),
            })
        };
        writer.append(t(i as i64), event)?;
    }
    writer.close()?;
    Ok(())
}

fn juris(args: &[&str]) -> anyhow::Result<Output> {
    let binary = juris_testkit::gateway::juris_binary()?;
    Command::new(&binary)
        .args(args)
        .env("JURIS_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", binary.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn export_then_verify_and_catch_tampering() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    write_node(&d1, "n1", 1, 8)?;
    write_node(&d2, "n2", 2, 5)?;
    let bundle = tmp.path().join("bundle.tar.zst");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let out = juris(&[
        "audit",
        "export",
        "--dir",
        &s(&d1),
        "--dir",
        &s(&d2),
        "--region",
        "eu-west",
        "--since",
        "2025-06-01T00:00:00Z",
        "--until",
        "2025-06-01T03:00:00+02:00",
        "-o",
        &s(&bundle),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("5 segments, 13 records from 2 nodes (n1, n2)"),
        "{}",
        text(&out)
    );

    let out = juris(&["audit", "verify", &s(&bundle)])?;
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "{report}");
    assert!(report.contains("VERIFIED"), "{report}");
    assert!(
        report.contains("node n1: seq 1..8 in 3 segments"),
        "{report}"
    );

    // Pinning the right key passes; a wrong one fails.
    let key = NodeKey::from_seed([1; 32]).public_key_hex();
    let out = juris(&[
        "audit",
        "verify",
        &s(&bundle),
        "--key",
        &format!("n1={key}"),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    let wrong = NodeKey::from_seed([7; 32]).public_key_hex();
    let out = juris(&[
        "audit",
        "verify",
        &s(&bundle),
        "--key",
        &format!("n1={wrong}"),
    ])?;
    assert!(!out.status.success(), "{}", text(&out));

    // Edit a record in a sealed segment (the reason of an auth failure),
    // then export again: the bundle carries the evidence as found.
    let segment = d1.join("n1-00000000000000000004.jsonl");
    let edited = std::fs::read_to_string(&segment)?.replacen("token expired", "token renewed", 1);
    std::fs::write(&segment, edited)?;
    let tampered = tmp.path().join("tampered.tar.zst");
    let out = juris(&[
        "audit",
        "export",
        "--dir",
        &s(&d1),
        "--dir",
        &s(&d2),
        "--region",
        "eu-west",
        "-o",
        &s(&tampered),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not match its seal; included as found"),
        "{}",
        text(&out)
    );

    let out = juris(&["audit", "verify", &s(&tampered)])?;
    let report = text(&out);
    println!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("FAILED"), "{report}");
    assert!(
        report.contains("segments/n1-00000000000000000004.jsonl:1 (seq 4): hash"),
        "{report}"
    );
    assert!(report.contains("verification failed"), "{report}");

    // Not a bundle at all.
    let junk = tmp.path().join("junk.tar.zst");
    std::fs::write(&junk, b"hello")?;
    let out = juris(&["audit", "verify", &s(&junk)])?;
    assert!(!out.status.success(), "{}", text(&out));
    Ok(())
}
