//! Shared fixtures: a node key, spool configs, a realistic PostgreSQL
//! session, and the in-process S3 server from juris-testkit.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use juris_record::event::Column;
use juris_record::object_store::aws::AmazonS3Builder;
use juris_record::object_store::{ObjectStore, RetryConfig};
use juris_record::{
    Direction, EventKind, Manifest, NodeSigningKey, RecordEvent, RecordedPrincipal, Recorder,
    SessionInfo, Spool, SpoolConfig,
};

pub const REGION: &str = "eu-west";
pub const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
#[allow(unused_imports)]
pub use juris_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
pub const BUCKET: &str = "recordings-eu-west";

pub fn node_key() -> Arc<NodeSigningKey> {
    Arc::new(NodeSigningKey::from_seed([42; 32]))
}

/// Small chunks so that every session spans several.
pub fn spool_config(dir: &Path) -> SpoolConfig {
    let mut config = SpoolConfig::new(dir, "node-1");
    config.chunk_target_bytes = 2048;
    config
}

pub fn session_id(n: u8) -> String {
    format!("{:032x}", 0xabc0_0000_u128 + u128::from(n))
}

pub fn info(session: &str, connection: &str, user: &str) -> SessionInfo {
    SessionInfo {
        session_id: session.to_string(),
        principal: RecordedPrincipal {
            issuer: "https://idp.example.com".into(),
            subject: format!("sub-{user}"),
            name: user.to_string(),
            groups: vec!["dba".into()],
        },
        connection: connection.to_string(),
        region: REGION.to_string(),
        client_addr: Some("127.0.0.1:54321".into()),
        started_at_ms: START_MS,
    }
}

/// The client/server messages of a typical session (after masking).
pub fn session_script(rows: usize) -> Vec<(Direction, EventKind)> {
    use Direction::{ClientToServer as C, ServerToClient as S};
    let mut script = vec![
        (
            C,
            EventKind::Query {
                text: "SELECT id, email FROM customers ORDER BY id;".into(),
            },
        ),
        (
            S,
            EventKind::RowDescription {
                columns: vec![
                    Column {
                        name: "id".into(),
                        type_oid: 23,
                    },
                    Column {
                        name: "email".into(),
                        type_oid: 25,
                    },
                ],
            },
        ),
    ];
    for i in 0..rows {
        script.push((
            S,
            EventKind::DataRow {
                values: vec![
                    Some(i.to_string()),
                    if i % 7 == 3 {
                        None
                    } else {
                        Some(format!("u{i}***@example.com"))
                    },
                ],
            },
        ));
    }
    script.extend([
        (
            S,
            EventKind::CommandComplete {
                tag: format!("SELECT {rows}"),
            },
        ),
        (
            C,
            EventKind::Parse {
                statement: "s1".into(),
                text: "UPDATE customers SET note = $1 WHERE id = $2".into(),
            },
        ),
        (
            C,
            EventKind::Bind {
                portal: String::new(),
                statement: "s1".into(),
                params: vec![Some("[REDACTED]".into()), None],
            },
        ),
        (
            C,
            EventKind::Execute {
                portal: String::new(),
                max_rows: 0,
            },
        ),
        (
            S,
            EventKind::Error {
                sqlstate: "42501".into(),
                message: "juris: permission denied: write on billing-eu needs role write".into(),
            },
        ),
        (
            S,
            EventKind::Notice {
                sqlstate: "00000".into(),
                message: "hello".into(),
            },
        ),
        (
            C,
            EventKind::Query {
                text: "COPY customers (id) TO STDOUT".into(),
            },
        ),
        (
            S,
            EventKind::CopyData {
                text: "1\n2\n".into(),
            },
        ),
        (
            S,
            EventKind::CommandComplete {
                tag: "COPY 2".into(),
            },
        ),
        (S, EventKind::raw(b"Z\x00\x00\x00\x05I")),
    ]);
    script
}

/// Record `script` with deterministic times; returns the events as they
/// must read back (without the final SessionEnd, whose time is the
/// clock's).
pub fn record_script(
    recorder: &mut Recorder,
    session: &SessionInfo,
    script: &[(Direction, EventKind)],
) -> Vec<RecordEvent> {
    let mut expected = vec![RecordEvent {
        seq: 1,
        at_ms: START_MS,
        elapsed_us: 0,
        direction: Direction::Meta,
        kind: EventKind::SessionStart {
            session_id: session.session_id.clone(),
            principal: session.principal.clone(),
            connection: session.connection.clone(),
            node: "node-1".into(),
            region: session.region.clone(),
            client_addr: session.client_addr.clone(),
        },
    }];
    for (i, (direction, kind)) in script.iter().enumerate() {
        let elapsed_us = (i as u64 + 1) * 1500;
        let at_ms = START_MS + elapsed_us / 1000;
        let seq = recorder
            .record_at(at_ms, elapsed_us, *direction, kind.clone())
            .expect("record");
        expected.push(RecordEvent {
            seq,
            at_ms,
            elapsed_us,
            direction: *direction,
            kind: kind.clone(),
        });
    }
    expected
}

/// Record and finish a whole session (blocking; not inside a runtime).
pub fn record_session(spool: &Spool, session: &str, rows: usize) -> (Manifest, Vec<RecordEvent>) {
    let info = info(session, "billing-eu", "alice@example.com");
    let mut recorder = spool.start_session(info.clone()).expect("start");
    let expected = record_script(&mut recorder, &info, &session_script(rows));
    let manifest = recorder
        .finish("client closed the connection")
        .expect("finish");
    (manifest, expected)
}

/// Compare read-back events with what was recorded: identical, plus a
/// final SessionEnd.
pub fn assert_events(read: &[RecordEvent], expected: &[RecordEvent], end_reason: &str) {
    assert_eq!(read.len(), expected.len() + 1, "event count");
    assert_eq!(&read[..expected.len()], expected);
    let last = read.last().unwrap();
    assert_eq!(last.seq, expected.len() as u64 + 1);
    assert_eq!(
        last.kind,
        EventKind::SessionEnd {
            reason: end_reason.into()
        }
    );
}

/// The in-process S3 server, with this suite's bucket.
pub async fn start_s3(root: &Path, addr: SocketAddr) -> S3Server {
    S3Server::start(root, addr, &[BUCKET]).await.unwrap()
}

/// An S3 store for `addr`, path-style over plain HTTP, with object_store's
/// own retries off (the uploader's retries are under test).
pub fn s3_store(addr: SocketAddr, secret: &str) -> Arc<dyn ObjectStore> {
    let builder = AmazonS3Builder::new()
        .with_endpoint(format!("http://{addr}"))
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(secret)
        .with_retry(RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(5),
            ..RetryConfig::default()
        });
    juris_record::s3_store(builder).unwrap()
}

/// All object keys in a store, sorted.
pub async fn all_keys(store: &dyn ObjectStore) -> Vec<String> {
    use futures_util::StreamExt;
    let mut keys: Vec<String> = store
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

/// The keys a finished recording must have in the store.
pub fn expected_keys(manifest: &Manifest) -> Vec<String> {
    let mut keys: Vec<String> = manifest.chunks.iter().map(|c| c.key.clone()).collect();
    let prefix = manifest.chunks[0]
        .key
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    keys.push(format!("{prefix}/manifest.json"));
    keys.push(format!(
        "recordings/{}/index/{:013}-{}.json",
        manifest.region, manifest.started_at_ms, manifest.session_id
    ));
    keys
}

/// Session directories left in a spool.
pub fn spooled_sessions(spool_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 32)
        .collect();
    names.sort();
    names
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
