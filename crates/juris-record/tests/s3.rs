//! Recordings against a real S3 API: an in-process s3s-fs server on
//! 127.0.0.1 that checks SigV4 signatures, reached through
//! `object_store`'s S3 client (path-style, plain HTTP).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use juris_record::{
    RecordingStatus, Spool, Uploader, UploaderConfig, UploaderStats, list_sessions, open_recording,
};

const END: &str = "client closed the connection";

fn fast_retries() -> UploaderConfig {
    UploaderConfig {
        max_attempts: 1000,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        quarantine_retry: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
    }
}

async fn wait_for(
    what: &str,
    mut stats: impl FnMut() -> UploaderStats,
    done: impl Fn(&UploaderStats) -> bool,
) -> UploaderStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = stats();
        if done(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Record on a blocking thread (the recorder's blocking calls must not
/// run on the runtime's thread).
async fn record_sessions(spool: Arc<Spool>, sessions: Vec<String>) -> Vec<juris_record::Manifest> {
    tokio::task::spawn_blocking(move || {
        sessions
            .iter()
            .map(|s| record_session(&spool, s, 90).0)
            .collect()
    })
    .await
    .unwrap()
}

/// (b) the whole path over S3 with real SigV4 credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_upload_and_replay_over_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_s3(&tmp.path().join("s3"), "127.0.0.1:0".parse().unwrap()).await;
    let store = s3_store(server.addr, SECRET_KEY);
    let key = node_key();
    let spool =
        Arc::new(Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap());
    let session = session_id(20);
    let expected = {
        let spool = spool.clone();
        let session = session.clone();
        tokio::task::spawn_blocking(move || record_session(&spool, &session, 90))
            .await
            .unwrap()
    };
    let (manifest, expected) = expected;

    let uploader = Uploader::new(&spool, store.clone(), UploaderConfig::default());
    let stats = uploader.run_once().await;
    assert_eq!(
        stats.uploaded,
        manifest.chunks.len() as u64 + 1,
        "{stats:?}"
    );
    assert_eq!((stats.pending, stats.failures), (0, 0));

    let mut keys = expected_keys(&manifest);
    keys.sort();
    assert_eq!(all_keys(store.as_ref()).await, keys);

    let recording = open_recording(
        store.as_ref(),
        Some(REGION),
        &session,
        Some(&key.public_key_hex()),
    )
    .await
    .unwrap();
    assert!(
        recording.verification.ok,
        "{:?}",
        recording.verification.problems
    );
    assert_events(&recording.events, &expected, END);
    let listed = list_sessions(store.as_ref(), REGION, &Default::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, session);

    // The server really checks signatures: a wrong secret is refused.
    let forged = s3_store(server.addr, "not-the-secret");
    let err = open_recording(forged.as_ref(), Some(REGION), &session, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("object store"), "{err}");
    server.stop().await;
}

/// (c) the store is down while sessions finish; once it is up everything
/// is uploaded exactly once and the spool is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_wait_for_the_store_then_complete_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Reserve a port, then leave it closed: connections are refused.
    let addr: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let store = s3_store(addr, SECRET_KEY);
    let key = node_key();
    let spool =
        Arc::new(Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap());
    let uploader = Uploader::new(&spool, store.clone(), fast_retries()).spawn();

    let sessions: Vec<String> = (21..24).map(session_id).collect();
    let manifests = record_sessions(spool.clone(), sessions.clone()).await;
    let stats = wait_for(
        "failed attempts",
        || uploader.stats(),
        |s| s.failures >= 5 && s.pending > 0,
    )
    .await;
    assert_eq!(stats.uploaded, 0);
    assert_eq!(
        spooled_sessions(spool.dir()).len(),
        3,
        "nothing deleted while failing"
    );

    let server = start_s3(&tmp.path().join("s3"), addr).await;
    let files: u64 = manifests.iter().map(|m| m.chunks.len() as u64 + 1).sum();
    let stats = wait_for(
        "uploads",
        || uploader.stats(),
        |s| s.pending == 0 && s.uploaded >= files,
    )
    .await;
    assert_eq!(stats.uploaded, files, "each file uploaded once: {stats:?}");
    assert_eq!(stats.quarantined, 0);
    uploader.shutdown().await;

    let mut expected: Vec<String> = manifests.iter().flat_map(expected_keys).collect();
    expected.sort();
    assert_eq!(all_keys(store.as_ref()).await, expected);
    assert!(spooled_sessions(spool.dir()).is_empty());
    assert_eq!(spool.used_bytes(), 0);
    for (session, manifest) in sessions.iter().zip(&manifests) {
        let recording = open_recording(store.as_ref(), None, session, Some(&key.public_key_hex()))
            .await
            .unwrap();
        assert!(
            recording.verification.ok,
            "{:?}",
            recording.verification.problems
        );
        assert_eq!(&recording.manifest, manifest);
    }
    server.stop().await;
}

/// (c) a chunk the store keeps refusing goes to quarantine (never
/// deleted), is reported, does not hold back the manifest, and is
/// uploaded when the store accepts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_keeps_failing_is_quarantined_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let s3_root = tmp.path().join("s3");
    let server = start_s3(&s3_root, "127.0.0.1:0".parse().unwrap()).await;
    let store = s3_store(server.addr, SECRET_KEY);
    let key = node_key();
    let spool =
        Arc::new(Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap());
    let session = session_id(25);
    let manifest = record_sessions(spool.clone(), vec![session.clone()])
        .await
        .remove(0);
    let poisoned = &manifest.chunks[1];
    // A non-empty directory where the object would go: the server fails
    // every PUT to that key.
    let blocker = s3_root.join(BUCKET).join(&poisoned.key);
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();

    let config = UploaderConfig {
        max_attempts: 3,
        quarantine_retry: Duration::from_secs(3600),
        ..fast_retries()
    };
    let uploader = Uploader::new(&spool, store.clone(), config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = uploader.run_once().await;
        if stats.quarantined == 1 && stats.pending == 0 {
            break stats;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats.failures, 3);
    assert_eq!(
        stats.uploaded,
        manifest.chunks.len() as u64,
        "all but one chunk, plus the manifest"
    );
    let quarantined = spool.dir().join("quarantine").join(&poisoned.key);
    assert!(quarantined.is_file(), "kept in quarantine");
    assert!(spooled_sessions(spool.dir()).is_empty());
    let listed = juris_record::list_spool_sessions(spool.dir(), &Default::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].quarantined_files, Some(1));

    // Replay tells exactly what is missing (once the obstacle, which the
    // server would report as an error, is gone).
    std::fs::remove_dir_all(&blocker).unwrap();
    let recording = open_recording(store.as_ref(), Some(REGION), &session, None)
        .await
        .unwrap();
    let problems: Vec<String> = recording
        .verification
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        problems,
        vec![format!(
            "chunk 2 ({}): missing from the store",
            poisoned.key
        )]
    );
    assert_eq!(recording.manifest.status, RecordingStatus::Complete);

    // The store accepts it again: the slow-cadence retry uploads it.
    let uploader = Uploader::new(
        &spool,
        store.clone(),
        UploaderConfig {
            quarantine_retry: Duration::from_millis(10),
            ..fast_retries()
        },
    );
    let stats = uploader.run_once().await;
    assert_eq!((stats.uploaded, stats.quarantined), (1, 0), "{stats:?}");
    assert!(!quarantined.exists());
    let recording = open_recording(
        store.as_ref(),
        Some(REGION),
        &session,
        Some(&key.public_key_hex()),
    )
    .await
    .unwrap();
    assert!(
        recording.verification.ok,
        "{:?}",
        recording.verification.problems
    );
    server.stop().await;
}
