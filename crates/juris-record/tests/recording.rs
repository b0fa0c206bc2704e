//! Recordings end to end against a local filesystem store: record, spool,
//! upload, replay, verify; crash recovery; tampering; spool limits;
//! renderings.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use juris_record::object_store::ObjectStore;
use juris_record::object_store::local::LocalFileSystem;
use juris_record::{
    AsciicastOptions, Direction, EventKind, ListFilter, Location, RecordError, RecordingStatus,
    Spool, SpoolLimits, Uploader, UploaderConfig, list_sessions, list_spool_sessions,
    open_recording, open_recording_in_dir, recover, render_asciicast, render_json, render_text,
};

const END: &str = "client closed the connection";

fn local_store(dir: &Path) -> Arc<dyn ObjectStore> {
    std::fs::create_dir_all(dir).unwrap();
    Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Upload what `spool` holds to `store`, then read `session` back, trusting
/// the test node's key; the recording must verify.
fn upload_and_open(
    rt: &tokio::runtime::Runtime,
    spool: &Spool,
    store: &Arc<dyn ObjectStore>,
    session: &str,
    key: &juris_record::NodeSigningKey,
) -> juris_record::Recording {
    rt.block_on(Uploader::new(spool, store.clone(), UploaderConfig::default()).run_once());
    open_verified(rt, store, session, key)
}

/// Read `session` back from `store`, trusting the test node's key; the
/// recording must verify.
fn open_verified(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    session: &str,
    key: &juris_record::NodeSigningKey,
) -> juris_record::Recording {
    let recording = rt
        .block_on(open_recording(
            store.as_ref(),
            Some(REGION),
            session,
            Some(&key.public_key_hex()),
        ))
        .unwrap();
    assert!(
        recording.verification.ok,
        "{:?}",
        recording.verification.problems
    );
    recording
}

/// (a) record → spool → upload → replay: the same events, verified.
#[test]
fn recorded_session_replays_identically_from_a_filesystem_store() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let session = session_id(1);
    let (manifest, expected) = record_session(&spool, &session, 120);
    assert_eq!(manifest.status, RecordingStatus::Complete);
    assert!(
        manifest.chunks.len() >= 3,
        "{} chunks",
        manifest.chunks.len()
    );
    assert_eq!(manifest.event_count, expected.len() as u64 + 1);
    assert_eq!(manifest.public_key, key.public_key_hex());
    assert!(spool.used_bytes() > 0);

    let store_dir = tmp.path().join("store");
    let store = local_store(&store_dir);
    let rt = runtime();
    let uploader = Uploader::new(&spool, store.clone(), UploaderConfig::default());
    let stats = rt.block_on(uploader.run_once());
    assert_eq!(stats.uploaded, manifest.chunks.len() as u64 + 1);
    assert_eq!(
        (stats.pending, stats.quarantined, stats.failures),
        (0, 0, 0)
    );
    assert!(spooled_sessions(spool.dir()).is_empty(), "spool emptied");
    assert_eq!(spool.used_bytes(), 0, "budget freed");
    assert_eq!(rt.block_on(all_keys(store.as_ref())), {
        let mut keys = expected_keys(&manifest);
        keys.sort();
        keys
    });

    let recording = open_verified(&rt, &store, &session, &key);
    assert!(recording.verification.key_was_given);
    assert_eq!(recording.manifest, manifest);
    assert_events(&recording.events, &expected, END);

    // The same from a directory, with no region and no trusted key.
    let again = rt
        .block_on(open_recording_in_dir(&store_dir, None, &session, None))
        .unwrap();
    assert!(again.verification.ok);
    assert!(!again.verification.key_was_given);
    assert_eq!(again.events, recording.events);

    // JSON rendering is the events, one per line.
    let json = render_json(&recording.events);
    let parsed: Vec<juris_record::RecordEvent> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, recording.events);

    // Text rendering: statements, masked rows as seen, errors, timing.
    let text = render_text(&recording.events);
    assert!(
        text.contains("query: SELECT id, email FROM customers ORDER BY id;"),
        "{text}"
    );
    assert!(text.contains("u5***@example.com"), "{text}");
    assert!(text.contains("(120 rows)"), "{text}");
    assert!(
        text.contains("ERROR 42501: juris: permission denied"),
        "{text}"
    );
    assert!(text.contains("bind s1: ('[REDACTED]', NULL)"), "{text}");
    assert!(text.contains("SELECT 120 ("), "{text}");
    assert!(text.contains(&format!("session ended: {END}")), "{text}");
}

/// (g) asciicast v2: a header object line, then `[time, "o", text]`
/// lines with non-decreasing float times.
#[test]
fn asciicast_is_valid_v2() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let session = session_id(2);
    record_session(&spool, &session, 5);
    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    rt.block_on(Uploader::new(&spool, store.clone(), UploaderConfig::default()).run_once());
    let recording = rt
        .block_on(open_recording(store.as_ref(), Some(REGION), &session, None))
        .unwrap();
    let cast = render_asciicast(
        &recording.events,
        &AsciicastOptions {
            width: 100,
            height: 30,
            title: None,
        },
    );
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 100);
    assert_eq!(header["height"], 30);
    assert_eq!(header["timestamp"], START_MS / 1000);
    assert!(header["title"].as_str().unwrap().contains(&session));
    let mut last = 0.0;
    let mut output = String::new();
    let mut count = 0;
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let array = event.as_array().unwrap();
        assert_eq!(array.len(), 3, "{line}");
        assert!(array[0].is_f64(), "time is a float: {line}");
        let time = array[0].as_f64().unwrap();
        assert!(time >= last, "times never go back: {line}");
        last = time;
        assert_eq!(array[1], "o");
        output.push_str(array[2].as_str().unwrap());
        count += 1;
    }
    assert!(count > 5);
    assert!(output.contains("billing-eu=> SELECT id, email FROM customers ORDER BY id;\r\n"));
    assert!(output.contains("\r\n----+------"), "{output}");
    assert!(output.contains("\r\n 3  |\r\n"), "NULL is empty: {output}");
    assert!(output.contains("(5 rows)\r\n"));
    assert!(output.contains("ERROR:  juris: permission denied"));
}

/// (d) kill -9: sealed chunks, fsync'd frames and a torn last frame are
/// left behind; recovery seals them as `interrupted` and the result
/// uploads and verifies.
#[test]
fn crash_recovery_seals_what_was_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let key = node_key();
    let session = session_id(3);
    let expected = {
        let spool = Spool::open(spool_config(&spool_dir), key.clone()).unwrap();
        let info = info(&session, "billing-eu", "bob");
        let mut recorder = spool.start_session(info.clone()).unwrap();
        let expected = record_script(&mut recorder, &info, &session_script(60));
        recorder.flush().unwrap();
        assert_eq!(recorder.durable_seq(), expected.len() as u64);
        recorder.abandon();
        expected
        // The spool (writer thread) goes away without sealing.
    };
    let dir = spool_dir.join(&session);
    let chunks_before = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".zst"))
        .count();
    assert!(
        chunks_before >= 2,
        "some chunks were sealed before the crash"
    );
    let events_file = dir.join("events.zframes");
    assert!(
        std::fs::metadata(&events_file).unwrap().len() > 0,
        "unsealed frames exist"
    );
    // A sync the crash cut in half (the first half of a batch's zstd
    // frame), and a chunk that was being sealed.
    let batch = zstd::bulk::compress(&[0x04, 0, 0, 0x20, b'D', 0, 2, 0, 0, 0, 1, b'x'], 1).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&events_file)
        .unwrap();
    std::io::Write::write_all(&mut file, &batch[..batch.len() / 2]).unwrap();
    std::fs::write(dir.join("chunk-000099.zst.tmp"), b"half a chunk").unwrap();

    let recovered = recover(&spool_dir, &key).unwrap();
    assert_eq!(recovered.len(), 1);
    let r = &recovered[0];
    assert_eq!(r.session_id, session);
    assert_eq!(r.torn_lines_dropped, 1);
    assert!(r.events_recovered > 0);
    assert_eq!(r.manifest.status, RecordingStatus::Interrupted);
    assert_eq!(r.manifest.lost_events, 1);
    assert!(!dir.join("chunk-000099.zst.tmp").exists());
    // Recovery is idempotent: nothing left to do.
    assert!(recover(&spool_dir, &key).unwrap().is_empty());

    // Listed from the spool as pending.
    let spooled = list_spool_sessions(&spool_dir, &ListFilter::default()).unwrap();
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].status, Some(RecordingStatus::Interrupted));
    assert_eq!(
        spooled[0].pending_files,
        Some(r.manifest.chunks.len() as u64 + 1)
    );

    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    let spool = Spool::open(spool_config(&spool_dir), key.clone()).unwrap();
    assert!(spool.recovered().is_empty());
    let stats =
        rt.block_on(Uploader::new(&spool, store.clone(), UploaderConfig::default()).run_once());
    assert_eq!(stats.pending, 0);
    let recording = open_verified(&rt, &store, &session, &key);
    assert_eq!(recording.manifest.status, RecordingStatus::Interrupted);
    // Every complete event, then a Gap for the torn line, then the end.
    let n = expected.len();
    assert_eq!(&recording.events[..n], &expected[..]);
    assert_eq!(recording.events.len(), n + 2);
    assert!(matches!(
        recording.events[n].kind,
        EventKind::Gap { lost_events: 1, .. }
    ));
    assert!(matches!(
        &recording.events[n + 1].kind,
        EventKind::SessionEnd { reason } if reason.contains("interrupted")
    ));
}

/// A PostgreSQL message body: `values` as a DataRow.
fn data_row_body(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = (values.len() as u16).to_be_bytes().to_vec();
    for value in values {
        match value {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body
}

/// A RowDescription body for text columns named `names` (type int4).
fn row_description_body(names: &[&str]) -> Vec<u8> {
    let mut body = (names.len() as u16).to_be_bytes().to_vec();
    for name in names {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&0i32.to_be_bytes()); // table
        body.extend_from_slice(&0i16.to_be_bytes()); // column
        body.extend_from_slice(&23u32.to_be_bytes()); // int4
        body.extend_from_slice(&4i16.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    body
}

/// The data plane records wire messages as the client got them; across
/// several chunks, uploaded and read back, they are the statements, rows
/// and tags a replay shows, and the recording verifies.
#[test]
fn wire_messages_replay_as_statements_and_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let session = session_id(7);
    let mut recorder = spool
        .start_session(info(&session, "billing-eu", "carol"))
        .unwrap();
    let c = Direction::ClientToServer;
    let s = Direction::ServerToClient;
    recorder
        .record_message(c, b'Q', b"SELECT id, email FROM customers\0")
        .unwrap();
    recorder.ship().unwrap();
    recorder
        .record_message(s, b'T', &row_description_body(&["id", "email"]))
        .unwrap();
    let rows = 300;
    for i in 0..rows {
        let id = i.to_string();
        let email = format!("u{i}***@example.com");
        let email = (i % 7 != 0).then_some(email.as_str());
        recorder
            .record_message(s, b'D', &data_row_body(&[Some(&id), email]))
            .unwrap();
        if i % 50 == 0 {
            recorder.ship().unwrap();
        }
    }
    // A DataRow the codec cannot decode went out all the same: raw.
    recorder.record_message(s, b'D', &[0, 9]).unwrap();
    recorder.record_message(s, b'C', b"SELECT 300\0").unwrap();
    // Bookkeeping is the caller's to filter; meta is not a wire direction.
    assert!(
        recorder
            .record_message(Direction::Meta, b'Z', b"I")
            .is_err()
    );
    let manifest = recorder.finish(END).unwrap();
    assert_eq!(manifest.status, RecordingStatus::Complete);
    assert!(
        manifest.chunks.len() >= 3,
        "{} chunks",
        manifest.chunks.len()
    );
    assert_eq!(manifest.event_count, 1 + 1 + 1 + rows + 1 + 1 + 1);

    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    let recording = upload_and_open(&rt, &spool, &store, &session, &key);
    let events = &recording.events;
    assert_eq!(events.len() as u64, manifest.event_count);
    assert_eq!(
        events[1].kind,
        EventKind::Query {
            text: "SELECT id, email FROM customers".into()
        }
    );
    assert_eq!(events[1].direction, c);
    assert!(matches!(
        &events[2].kind,
        EventKind::RowDescription { columns } if columns.len() == 2 && columns[1].name == "email"
    ));
    for i in 0..rows {
        let event = &events[3 + i as usize];
        assert_eq!(event.direction, s);
        let email = (i % 7 != 0).then(|| format!("u{i}***@example.com"));
        assert_eq!(
            event.kind,
            EventKind::DataRow {
                values: vec![Some(i.to_string()), email]
            }
        );
    }
    assert_eq!(events[3 + rows as usize].kind, EventKind::raw(&[0, 9]));
    assert_eq!(
        events[4 + rows as usize].kind,
        EventKind::CommandComplete {
            tag: "SELECT 300".into()
        }
    );
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert!(pair[1].elapsed_us >= pair[0].elapsed_us, "{pair:?}");
    }
    let text = render_text(events);
    assert!(text.contains("SELECT id, email FROM customers"), "{text}");
    assert!(text.contains("u299***@example.com"), "{text}");
}

/// The relay ships a query with its answer, in one batch: the answer still
/// gets a clock reading of its own, so replay shows how long it took.
#[test]
fn an_answer_shipped_with_its_query_keeps_its_own_time() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let session = session_id(8);
    let mut recorder = spool
        .start_session(info(&session, "billing-eu", "carol"))
        .unwrap();
    recorder
        .record_message(Direction::ClientToServer, b'Q', b"SELECT pg_sleep(0.03)\0")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    let answer = wire_run(&[
        (b'T', row_description_body(&["pg_sleep"])),
        (b'D', data_row_body(&[Some("")])),
        (b'C', b"SELECT 1\0".to_vec()),
    ]);
    let (used, error) = recorder.record_messages(Direction::ServerToClient, &answer, |_| true);
    assert_eq!((used, error.is_none()), (answer.len(), true));
    recorder.ship().unwrap();
    recorder.finish(END).unwrap();

    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    let recording = upload_and_open(&rt, &spool, &store, &session, &key);
    let events = &recording.events;
    let query = events
        .iter()
        .find(|e| e.direction == Direction::ClientToServer)
        .unwrap();
    let answer: Vec<_> = events
        .iter()
        .filter(|e| e.direction == Direction::ServerToClient)
        .collect();
    assert_eq!(answer.len(), 3, "{events:?}");
    for event in answer {
        assert!(
            event.elapsed_us >= query.elapsed_us + 30_000,
            "the answer is stamped with the query's time: {query:?} {event:?}"
        );
    }
}

/// A batch spans many network reads: each read's events carry its own
/// time, also when the direction does not change (notifications, a client
/// sending statements the server has not answered yet).
#[test]
fn each_read_in_a_batch_keeps_its_own_time() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let session = session_id(9);
    let mut recorder = spool
        .start_session(info(&session, "billing-eu", "carol"))
        .unwrap();
    let s = Direction::ServerToClient;
    let c = Direction::ClientToServer;
    let notice = wire_run(&[(b'C', b"LISTEN\0".to_vec())]);
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    assert!(recorder.record_messages(s, &notice, |_| true).1.is_none());
    pause();
    assert!(recorder.record_messages(s, &notice, |_| true).1.is_none());
    recorder.new_read();
    recorder.record_message(c, b'Q', b"SELECT 1\0").unwrap();
    pause();
    recorder.new_read();
    recorder.record_message(c, b'Q', b"SELECT 2\0").unwrap();
    recorder.ship().unwrap();
    recorder.finish(END).unwrap();

    let store = local_store(&tmp.path().join("store"));
    let recording = upload_and_open(&runtime(), &spool, &store, &session, &key);
    let times = |direction| -> Vec<u64> {
        recording
            .events
            .iter()
            .filter(|e| e.direction == direction)
            .map(|e| e.elapsed_us)
            .collect()
    };
    let (server, client) = (times(s), times(c));
    assert_eq!(
        (server.len(), client.len()),
        (2, 2),
        "{:?}",
        recording.events
    );
    assert!(server[1] >= server[0] + 30_000, "{server:?}");
    assert!(client[1] >= client[0] + 30_000, "{client:?}");
}

/// `messages` as a run in wire form (type byte, length, body).
fn wire_run(messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (tag, body) in messages {
        wire.push(*tag);
        wire.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        wire.extend_from_slice(body);
    }
    wire
}

/// What a way of recording got back: the error that stopped it, and the
/// (direction, kind) of every event after the start.
type Outcome = (Option<String>, Vec<(Direction, EventKind)>);

/// Record `wire` with `record_messages` in one session and message by
/// message with `record_message` in another (both retrying while the
/// writer is behind, as the relay does), skipping ParameterStatus; returns
/// what each got back, the events read back verified.
fn record_both_ways(config: juris_record::SpoolConfig, wire: &[u8]) -> [Outcome; 2] {
    let key = node_key();
    let store_dir = config.dir.with_extension("store");
    let spool = Spool::open(config, key.clone()).unwrap();
    let s = Direction::ServerToClient;
    let keep = |tag: u8| tag != b'S';
    let busy = || std::thread::sleep(std::time::Duration::from_millis(1));
    let mut outcomes = Vec::new();
    for (n, as_run) in [(21, true), (22, false)] {
        let session = session_id(n);
        let mut recorder = spool
            .start_session(info(&session, "billing-eu", "bob"))
            .unwrap();
        let mut stopped = None;
        if as_run {
            let mut at = 0;
            while at < wire.len() {
                match recorder.record_messages(s, &wire[at..], keep) {
                    (used, None) => at += used,
                    (used, Some(RecordError::Busy)) => {
                        at += used;
                        busy();
                    }
                    (_, Some(e)) => {
                        stopped = Some(e.to_string());
                        break;
                    }
                }
            }
        } else {
            let mut at = 0;
            while at < wire.len() {
                let tag = wire[at];
                let length = u32::from_be_bytes(wire[at + 1..at + 5].try_into().unwrap()) as usize;
                let body = &wire[at + 5..at + 1 + length];
                if keep(tag) {
                    match recorder.record_message(s, tag, body) {
                        Ok(_) => {}
                        Err(RecordError::Busy) => {
                            busy();
                            continue;
                        }
                        Err(e) => {
                            stopped = Some(e.to_string());
                            break;
                        }
                    }
                }
                at += 1 + length;
            }
        }
        recorder.finish(END).unwrap();
        let store = local_store(&store_dir);
        let recording = upload_and_open(&runtime(), &spool, &store, &session, &key);
        for pair in recording.events.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        let events = recording.events[1..]
            .iter()
            .map(|e| (e.direction, e.kind.clone()))
            .collect();
        outcomes.push((stopped, events));
    }
    outcomes.try_into().unwrap()
}

/// The data plane records a network read's messages in one call, which
/// appends most of them without the per-event checks: what it records
/// must be what one call per message records, across the batch sizes at
/// which a recorder ships, skipped types, a message over the event limit
/// and a spool that fills up part way.
#[test]
fn a_run_of_messages_records_what_one_call_per_message_does() {
    let tmp = tempfile::tempdir().unwrap();
    let filler = "f".repeat(80);
    let mut messages = vec![(b'S', b"application_name\0psql\0".to_vec())];
    for i in 0..9000 {
        let id = i.to_string();
        messages.push((b'D', data_row_body(&[Some(&id), Some(&filler)])));
        if i == 4321 {
            let huge = "h".repeat(5000);
            messages.push((b'D', data_row_body(&[Some(&huge)])));
        }
        if i % 1000 == 999 {
            messages.push((b'C', format!("SELECT {i}\0").into_bytes()));
            messages.push((b'S', b"TimeZone\0UTC\0".to_vec()));
        }
    }
    let wire = wire_run(&messages);

    let mut config = spool_config(&tmp.path().join("roomy"));
    config.max_event_bytes = 4096;
    let [run, one_by_one] = record_both_ways(config, &wire);
    assert_eq!(run.0, None);
    assert_eq!(run.1.len(), 9000 + 1 + 9 + 1, "rows, the gap, tags, end");
    let gaps: Vec<_> = run
        .1
        .iter()
        .filter(|(_, kind)| matches!(kind, EventKind::Gap { .. }))
        .collect();
    assert!(
        matches!(gaps[..], [(_, EventKind::Gap { lost_events: 1, .. })]),
        "{gaps:?}"
    );
    assert_eq!(run, one_by_one);
    let whole = run.1;

    // A spool too small for the run: both stop, having recorded the start
    // of what the roomy spool got, and their recordings say what was lost.
    // (Where each stops depends on how far the writer has compressed what
    // it was given, which frees budget: the writer's timing, not the
    // recorder's.)
    let mut config = spool_config(&tmp.path().join("small"));
    config.max_event_bytes = 4096;
    config.limits = SpoolLimits {
        max_bytes: 400 << 10,
    };
    for (how, (stopped, events)) in ["run", "one by one"]
        .into_iter()
        .zip(record_both_ways(config, &wire))
    {
        assert!(
            stopped.as_deref().is_some_and(|e| e.contains("spool")),
            "{how}: {stopped:?}"
        );
        let Some((kept, [(_, gap), (_, end)])) = events.split_last_chunk::<2>() else {
            panic!("{how}: {} events", events.len());
        };
        assert!(
            matches!(gap, EventKind::Gap { lost_events: 1, .. }),
            "{how}: {gap:?}"
        );
        assert!(
            matches!(end, EventKind::SessionEnd { .. }),
            "{how}: {end:?}"
        );
        assert!(
            kept.len() > 1000 && kept.len() < 9000,
            "{how}: {} kept",
            kept.len()
        );
        assert_eq!(kept, &whole[..kept.len()], "{how}");
    }
}

/// Frames that do not compress still make chunks of a bounded size: the
/// writer holds an open chunk's compressed bytes in memory, so it seals
/// at OPEN_CHUNK_MAX_COMPRESSED whatever `chunk_target_bytes` says.
#[test]
fn incompressible_rows_are_sealed_at_the_compressed_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let mut config = spool_config(&tmp.path().join("spool"));
    config.chunk_target_bytes = 60 << 20;
    let spool = Spool::open(config, key.clone()).unwrap();
    let session = session_id(23);
    let mut recorder = spool
        .start_session(info(&session, "billing-eu", "bob"))
        .unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'!' + (state % 90) as u8)
            })
            .collect()
    };
    let rows = 12 * 1024;
    for _ in 0..rows {
        let value = noise(1000);
        let body = data_row_body(&[Some(&value)]);
        loop {
            match recorder.record_message(Direction::ServerToClient, b'D', &body) {
                Err(RecordError::Busy) => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => {
                    other.unwrap();
                    break;
                }
            }
        }
    }
    let manifest = recorder.finish(END).unwrap();
    let bound = juris_record::spool::OPEN_CHUNK_MAX_COMPRESSED as u64;
    assert!(manifest.chunks.len() >= 3, "{:?}", manifest.chunks);
    for chunk in &manifest.chunks {
        assert!(chunk.size < bound + (1 << 20), "{chunk:?}");
    }
    let store = local_store(&tmp.path().join("store"));
    let recording = upload_and_open(&runtime(), &spool, &store, &session, &key);
    assert_eq!(recording.events.len(), rows + 2);
}

/// A recorder reserves the spool's budget ahead, a block at a time, so
/// that a row costs no update of the shared budget; what it did not use
/// is given back when it ships, and when it is dropped.
#[test]
fn budget_reserved_ahead_is_given_back() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), node_key()).unwrap();
    let mut recorder = spool
        .start_session(info(&session_id(14), "billing-eu", "bob"))
        .unwrap();
    recorder.flush().unwrap();
    let before = spool.used_bytes();
    recorder
        .record_message(Direction::ServerToClient, b'C', b"SELECT 1\0")
        .unwrap();
    let reserved = spool.used_bytes() - before;
    assert!(
        reserved >= 64 << 10,
        "a block is reserved ahead: {reserved}"
    );
    recorder.ship().unwrap();
    let kept = spool.used_bytes() - before;
    assert!(
        kept < 64,
        "only the frame stays counted after the ship: {kept}"
    );
    recorder
        .record_message(Direction::ServerToClient, b'C', b"SELECT 2\0")
        .unwrap();
    drop(recorder);
    assert!(spool.used_bytes() - before < 1024);
}

/// Record `rounds` queries with `rows` DataRows each, retrying while the
/// writer is behind; returns the event kinds a replay must show.
fn record_large_results(
    recorder: &mut juris_record::Recorder,
    rounds: u32,
    rows: u32,
) -> Vec<EventKind> {
    let c = Direction::ClientToServer;
    let s = Direction::ServerToClient;
    let record = |recorder: &mut juris_record::Recorder, direction, tag, body: &[u8]| loop {
        match recorder.record_message(direction, tag, body) {
            Err(RecordError::Busy) => std::thread::sleep(std::time::Duration::from_millis(1)),
            other => break other.unwrap(),
        }
    };
    let mut expected = Vec::new();
    let filler = "x".repeat(60);
    for round in 0..rounds {
        let text = format!("SELECT * FROM accounts -- {round}");
        record(recorder, c, b'Q', format!("{text}\0").as_bytes());
        expected.push(EventKind::Query { text });
        for i in 0..rows {
            let id = format!("{round}-{i}");
            record(
                recorder,
                s,
                b'D',
                &data_row_body(&[Some(&id), Some(&filler)]),
            );
            expected.push(EventKind::DataRow {
                values: vec![Some(id), Some(filler.clone())],
            });
        }
        let tag = format!("SELECT {rows}");
        record(recorder, s, b'C', format!("{tag}\0").as_bytes());
        expected.push(EventKind::CommandComplete { tag });
        // What the relay does at the end of each network read.
        while let Err(RecordError::Busy) = recorder.ship() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    expected
}

/// Results large enough that the writer compresses each batch as it
/// takes it (16 KiB or more, one zstd frame each), between small batches
/// that it gathers until a sync: the recording reads back event for
/// event, from sealed chunks and, after a crash, from the spool file.
#[test]
fn large_results_read_back_live_and_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let key = node_key();
    let mut config = juris_record::SpoolConfig::new(&spool_dir, "node-1");
    config.chunk_target_bytes = 256 << 10;
    let spool = Spool::open(config.clone(), key.clone()).unwrap();

    let live = session_id(12);
    let mut recorder = spool
        .start_session(info(&live, "billing-eu", "bob"))
        .unwrap();
    let expected = record_large_results(&mut recorder, 4, 1500);
    let manifest = recorder.finish(END).unwrap();
    assert!(
        manifest.chunks.len() >= 2,
        "{} chunks",
        manifest.chunks.len()
    );
    let store_dir = tmp.path().join("store");
    let store = local_store(&store_dir);
    let rt = runtime();
    let recording = upload_and_open(&rt, &spool, &store, &live, &key);
    let kinds: Vec<EventKind> = recording.events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds.len(), expected.len() + 2);
    assert_eq!(&kinds[1..=expected.len()], &expected[..]);

    // The same, cut off by a crash after the last sync (small enough that
    // no chunk is sealed: every event comes from the spool file).
    let crashed = session_id(13);
    let mut recorder = spool
        .start_session(info(&crashed, "billing-eu", "bob"))
        .unwrap();
    let expected = record_large_results(&mut recorder, 3, 600);
    recorder.flush().unwrap();
    recorder.abandon();
    drop(spool);
    let dir = spool_dir.join(&crashed);
    let spooled = std::fs::read(dir.join("events.zframes")).unwrap();
    assert!(
        zstd::zstd_safe::find_frame_compressed_size(&spooled).unwrap() < spooled.len(),
        "the spool file holds several zstd frames"
    );
    let recovered = recover(&spool_dir, &key).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].torn_lines_dropped, 0);
    // The spool holds the sealed chunks: read them in order.
    let mut recording = Vec::new();
    for chunk in &recovered[0].manifest.chunks {
        let bytes = std::fs::read(dir.join(format!("chunk-{:06}.zst", chunk.index))).unwrap();
        recording.extend(juris_record::decode_chunk(&bytes).unwrap().events);
    }
    let kinds: Vec<EventKind> = recording.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(&kinds[1..=expected.len()], &expected[..]);
    assert!(matches!(kinds.last(), Some(EventKind::SessionEnd { .. })));
}

/// A node that spooled raw frames (chunk format 2) left `events.frames`
/// behind: after the upgrade, recovery still seals its frames, into a
/// version-3 chunk.
#[test]
fn crash_recovery_reads_a_version_2_spool_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let key = node_key();
    let session = session_id(10);
    let info = info(&session, "billing-eu", "bob");
    let mut config = spool_config(&spool_dir);
    config.chunk_target_bytes = 1 << 20;
    let expected = {
        let spool = Spool::open(config, key.clone()).unwrap();
        let mut recorder = spool.start_session(info.clone()).unwrap();
        let expected = record_script(&mut recorder, &info, &session_script(20));
        recorder.flush().unwrap();
        recorder.abandon();
        expected
    };
    let dir = spool_dir.join(&session);
    let compressed = std::fs::read(dir.join("events.zframes")).unwrap();
    let frames = zstd::stream::decode_all(&compressed[..]).unwrap();
    std::fs::remove_file(dir.join("events.zframes")).unwrap();
    std::fs::write(dir.join("events.frames"), &frames).unwrap();

    let recovered = recover(&spool_dir, &key).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].events_recovered, expected.len() as u64);
    assert_eq!(recovered[0].torn_lines_dropped, 0);
    assert!(!dir.join("events.frames").exists());
    let bytes = std::fs::read(dir.join("chunk-000001.zst")).unwrap();
    assert_eq!(&bytes[8..10], &[0, 3]);
    let events = juris_record::decode_chunk(&bytes).unwrap().events;
    assert_eq!(&events[..expected.len()], &expected[..]);
    assert!(matches!(
        events[expected.len()].kind,
        EventKind::SessionEnd { .. }
    ));
}

/// A node that wrote chunk format 1 left `events.jsonl` behind: after
/// the upgrade, recovery still turns its complete lines into the last
/// chunk (a version-3 chunk) and counts the torn line.
#[test]
fn crash_recovery_reads_a_version_1_spool_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let key = node_key();
    let session = session_id(9);
    let info = info(&session, "billing-eu", "bob");
    {
        let spool = Spool::open(spool_config(&spool_dir), key.clone()).unwrap();
        let recorder = spool.start_session(info.clone()).unwrap();
        recorder.flush().unwrap();
        recorder.abandon();
    }
    let dir = spool_dir.join(&session);
    // What the version-1 writer would have spooled: JSON Lines.
    let started = juris_record::RecordEvent {
        seq: 1,
        at_ms: START_MS,
        elapsed_us: 0,
        direction: Direction::Meta,
        kind: EventKind::SessionStart {
            session_id: session.clone(),
            principal: info.principal.clone(),
            connection: info.connection.clone(),
            node: "node-1".into(),
            region: info.region.clone(),
            client_addr: info.client_addr.clone(),
        },
    };
    let query = juris_record::RecordEvent {
        seq: 2,
        at_ms: START_MS + 1,
        elapsed_us: 1500,
        direction: Direction::ClientToServer,
        kind: EventKind::Query {
            text: "select 1".into(),
        },
    };
    let mut lines = Vec::new();
    for event in [&started, &query] {
        serde_json::to_writer(&mut lines, event).unwrap();
        lines.push(b'\n');
    }
    lines.extend_from_slice(br#"{"seq":3,"at_ms":17672256"#);
    std::fs::remove_file(dir.join("events.zframes")).unwrap();
    std::fs::write(dir.join("events.jsonl"), &lines).unwrap();

    let recovered = recover(&spool_dir, &key).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].events_recovered, 2);
    assert_eq!(recovered[0].torn_lines_dropped, 1);
    assert!(!dir.join("events.jsonl").exists());
    assert_eq!(recovered[0].manifest.chunks.len(), 1);
    let bytes = std::fs::read(dir.join("chunk-000001.zst")).unwrap();
    assert_eq!(&bytes[8..10], &[0, 3], "recovery writes chunk format 3");
    assert_eq!(
        juris_record::chunk::sha256_hex(&bytes),
        recovered[0].manifest.chunks[0].sha256
    );
    let events = juris_record::decode_chunk(&bytes).unwrap().events;
    assert_eq!(&events[..2], &[started, query]);
    assert!(matches!(
        events[2].kind,
        EventKind::Gap { lost_events: 1, .. }
    ));
    assert!(matches!(events[3].kind, EventKind::SessionEnd { .. }));
    assert_eq!(events.len(), 4);
}

/// Spool::open recovers by itself, and a second open of a spool in use
/// is refused.
#[test]
fn open_recovers_and_locks() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let key = node_key();
    {
        let spool = Spool::open(spool_config(&spool_dir), key.clone()).unwrap();
        let err = Spool::open(spool_config(&spool_dir), key.clone()).unwrap_err();
        assert!(matches!(err, RecordError::Locked { .. }), "{err}");
        let mut recorder = spool.start_session(info(&session_id(4), "c", "u")).unwrap();
        recorder
            .record(
                Direction::ClientToServer,
                EventKind::Query {
                    text: "select 1".into(),
                },
            )
            .unwrap();
        recorder.flush().unwrap();
        recorder.abandon();
    }
    let spool = Spool::open(spool_config(&spool_dir), key).unwrap();
    assert_eq!(spool.recovered().len(), 1);
    assert_eq!(spool.recovered()[0].events_recovered, 2);
    assert_eq!(spool.recovered()[0].torn_lines_dropped, 0);
    assert_eq!(spool.recovered()[0].manifest.lost_events, 0);
}

/// A dropped recorder (a panicking session task) still ends its recording.
#[test]
fn dropped_recorder_finishes_its_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key).unwrap();
    let session = session_id(5);
    let mut recorder = spool.start_session(info(&session, "c", "u")).unwrap();
    recorder
        .record(
            Direction::ClientToServer,
            EventKind::Query {
                text: "select 1".into(),
            },
        )
        .unwrap();
    drop(recorder);
    let manifest_path = spool.dir().join(&session).join("manifest.json");
    for _ in 0..200 {
        if manifest_path.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let manifest =
        juris_record::Manifest::from_file_bytes(&std::fs::read(&manifest_path).unwrap(), 1 << 20)
            .unwrap();
    assert_eq!(manifest.event_count, 3);
    assert!(manifest.end_reason.contains("without closing"));
}

/// (e) tampering: each edit is reported where it happened.
#[test]
fn tampering_is_reported_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key.clone()).unwrap();
    let (a, b) = (session_id(6), session_id(7));
    let (manifest_a, _) = record_session(&spool, &a, 80);
    let (manifest_b, _) = record_session(&spool, &b, 80);
    assert!(manifest_a.chunks.len() >= 3 && manifest_b.chunks.len() >= 3);
    let pristine = tmp.path().join("pristine");
    let rt = runtime();
    rt.block_on(
        Uploader::new(&spool, local_store(&pristine), UploaderConfig::default()).run_once(),
    );
    let trusted = key.public_key_hex();

    let check = |name: &str, edit: &dyn Fn(&Path)| -> Vec<(Location, String)> {
        let copy = tmp.path().join(name);
        copy_dir(&pristine, &copy);
        edit(&copy);
        let recording = rt
            .block_on(open_recording_in_dir(
                &copy,
                Some(REGION),
                &a,
                Some(&trusted),
            ))
            .unwrap();
        assert!(
            !recording.verification.ok,
            "{name}: tampering went unnoticed"
        );
        recording
            .verification
            .problems
            .into_iter()
            .map(|p| (p.location, p.what))
            .collect()
    };
    let chunk2 = &manifest_a.chunks[1];
    let at = |chunk: &juris_record::ChunkEntry| Location::Chunk {
        index: chunk.index,
        key: chunk.key.clone(),
    };
    let has = |problems: &[(Location, String)], location: &Location, needle: &str| {
        problems
            .iter()
            .any(|(l, what)| l == location && what.contains(needle))
    };

    // A flipped byte in chunk 2: its hash, and the link from chunk 3.
    let problems = check("flip", &|root| {
        let path = root.join(&chunk2.key);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    });
    assert!(has(&problems, &at(chunk2), "content hash"), "{problems:?}");
    assert!(
        has(&problems, &at(&manifest_a.chunks[2]), "chain broken"),
        "{problems:?}"
    );

    // A deleted chunk.
    let problems = check("delete", &|root| {
        std::fs::remove_file(root.join(&chunk2.key)).unwrap();
    });
    assert!(has(&problems, &at(chunk2), "missing"), "{problems:?}");

    // Another session's valid chunk in its place.
    let problems = check("splice", &|root| {
        std::fs::copy(root.join(&manifest_b.chunks[1].key), root.join(&chunk2.key)).unwrap();
    });
    assert!(
        has(&problems, &at(chunk2), &format!("belongs to session {b}")),
        "{problems:?}"
    );
    assert!(has(&problems, &at(chunk2), "content hash"), "{problems:?}");
    assert!(has(&problems, &at(chunk2), "chain broken"), "{problems:?}");

    // An edited manifest (still canonical): the signature fails.
    let manifest_key = format!("{}/manifest.json", chunk2.key.rsplit_once('/').unwrap().0);
    let problems = check("edit", &|root| {
        let path = root.join(&manifest_key);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(END, "nothing to see here")).unwrap();
    });
    assert!(
        has(&problems, &Location::Manifest, "signature"),
        "{problems:?}"
    );

    // An edit that only changes formatting is noticed too.
    let problems = check("reformat", &|root| {
        let path = root.join(&manifest_key);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen(',', ", ", 1)).unwrap();
    });
    assert!(
        has(&problems, &Location::Manifest, "canonical"),
        "{problems:?}"
    );

    // A genuine recording checked against another node's key.
    let other = juris_record::NodeSigningKey::from_seed([7; 32]).public_key_hex();
    let recording = rt
        .block_on(open_recording_in_dir(
            &pristine,
            Some(REGION),
            &a,
            Some(&other),
        ))
        .unwrap();
    let problems: Vec<String> = recording
        .verification
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("manifest: signed-by key")),
        "{problems:?}"
    );
    // ... while the untouched copy verifies.
    let recording = rt
        .block_on(open_recording_in_dir(
            &pristine,
            Some(REGION),
            &a,
            Some(&trusted),
        ))
        .unwrap();
    assert!(
        recording.verification.ok,
        "{:?}",
        recording.verification.problems
    );
}

/// (f) a full spool refuses events with `SpoolFull`; in best-effort use
/// the recorder accounts for them with a Gap once there is room again.
#[test]
fn full_spool_refuses_then_records_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let mut config = spool_config(&tmp.path().join("spool"));
    config.limits = SpoolLimits {
        max_bytes: 8 * 1024,
    };
    config.chunk_target_bytes = 1024;
    let spool = Spool::open(config, key.clone()).unwrap();
    let session = session_id(8);
    let mut recorder = spool
        .start_session(info(&session, "billing-eu", "carol"))
        .unwrap();
    let row = EventKind::DataRow {
        values: vec![Some("x".repeat(200))],
    };
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..200 {
        match recorder.record(Direction::ServerToClient, row.clone()) {
            Ok(_) => accepted += 1,
            Err(RecordError::SpoolFull { used, max }) => {
                assert_eq!(max, 8 * 1024);
                assert!(used <= max);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
    assert_eq!(recorder.lost_events(), refused);

    // Uploading frees the budget; the next event is preceded by a Gap.
    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    recorder.flush().unwrap();
    // Wait until sealed chunks exist, then upload them.
    rt.block_on(Uploader::new(&spool, store.clone(), UploaderConfig::default()).run_once());
    assert!(spool.used_bytes() < 8 * 1024);
    recorder
        .record(
            Direction::ServerToClient,
            EventKind::CommandComplete {
                tag: "SELECT 1".into(),
            },
        )
        .unwrap();
    let manifest = recorder.finish("done").unwrap();
    assert_eq!(manifest.status, RecordingStatus::Incomplete);
    assert_eq!(manifest.lost_events, refused);
    rt.block_on(Uploader::new(&spool, store.clone(), UploaderConfig::default()).run_once());
    let recording = rt
        .block_on(open_recording(store.as_ref(), Some(REGION), &session, None))
        .unwrap();
    assert!(
        recording.verification.ok,
        "{:?}",
        recording.verification.problems
    );
    let gaps: Vec<u64> = recording
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Gap { lost_events, .. } => Some(*lost_events),
            _ => None,
        })
        .collect();
    // Every refused event is accounted for by a Gap (a Gap can be
    // written while the event after it is refused again, so there may be
    // several).
    assert!(!gaps.is_empty());
    assert_eq!(gaps.iter().sum::<u64>(), refused);
    // seq has no holes.
    for (i, event) in recording.events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1);
    }
}

/// An event larger than the event limit becomes a Gap instead of
/// failing the session or producing an unreadable chunk.
#[test]
fn oversized_event_becomes_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = spool_config(&tmp.path().join("spool"));
    config.max_event_bytes = 1000;
    let spool = Spool::open(config, node_key()).unwrap();
    let mut recorder = spool.start_session(info(&session_id(9), "c", "u")).unwrap();
    recorder
        .record(
            Direction::ServerToClient,
            EventKind::CopyData {
                text: "y".repeat(5000),
            },
        )
        .unwrap();
    let manifest = recorder.finish("done").unwrap();
    assert_eq!(manifest.lost_events, 1);
    assert_eq!(manifest.status, RecordingStatus::Incomplete);
}

/// Listing by index objects, with filters.
#[test]
fn sessions_are_listed_and_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let key = node_key();
    let spool = Spool::open(spool_config(&tmp.path().join("spool")), key).unwrap();
    let mut later = info(&session_id(11), "orders-eu", "dave");
    later.started_at_ms = START_MS + 86_400_000;
    let mut recorder = spool.start_session(later).unwrap();
    recorder
        .record(
            Direction::ClientToServer,
            EventKind::Query {
                text: "select 1".into(),
            },
        )
        .unwrap();
    recorder
        .finish_at(START_MS + 86_400_000 + 5000, 5_000_000, "bye")
        .unwrap();
    let mut first = spool
        .start_session(info(&session_id(10), "billing-eu", "alice@example.com"))
        .unwrap();
    record_script(
        &mut first,
        &info(&session_id(10), "billing-eu", "alice@example.com"),
        &session_script(3),
    );
    first
        .finish_at(START_MS + 60_000, 60_000_000, "bye")
        .unwrap();
    // Still in the spool: listed from there.
    let spooled = list_spool_sessions(spool.dir(), &ListFilter::default()).unwrap();
    assert_eq!(spooled.len(), 2);
    assert!(spooled.iter().all(|s| s.pending_files.unwrap() > 0));

    let store = local_store(&tmp.path().join("store"));
    let rt = runtime();
    rt.block_on(Uploader::new(&spool, store.clone(), UploaderConfig::default()).run_once());
    let list = |filter: ListFilter| -> Vec<String> {
        rt.block_on(list_sessions(store.as_ref(), REGION, &filter))
            .unwrap()
            .into_iter()
            .map(|s| s.session_id)
            .collect()
    };
    assert_eq!(
        list(ListFilter::default()),
        vec![session_id(10), session_id(11)]
    );
    let all = rt
        .block_on(list_sessions(
            store.as_ref(),
            REGION,
            &ListFilter::default(),
        ))
        .unwrap();
    assert_eq!(all[0].user, "alice@example.com");
    assert_eq!(all[0].connection, "billing-eu");
    assert_eq!(all[0].status, Some(RecordingStatus::Complete));
    assert!(all[0].chunk_count >= 1 && all[0].bytes > 0);
    assert_eq!(
        list(ListFilter {
            connection: Some("orders-eu".into()),
            ..ListFilter::default()
        }),
        vec![session_id(11)]
    );
    assert_eq!(
        list(ListFilter {
            user: Some("sub-alice@example.com".into()),
            ..ListFilter::default()
        }),
        vec![session_id(10)]
    );
    assert_eq!(
        list(ListFilter {
            until_ms: Some(START_MS + 1000),
            ..ListFilter::default()
        }),
        vec![session_id(10)]
    );
    assert_eq!(
        list(ListFilter {
            since_ms: Some(START_MS + 3_600_000),
            ..ListFilter::default()
        }),
        vec![session_id(11)]
    );
    assert!(
        list_spool_sessions(spool.dir(), &ListFilter::default())
            .unwrap()
            .is_empty()
    );
}

proptest::proptest! {
    /// (h) decode_chunk is total on arbitrary bytes.
    #[test]
    fn decode_chunk_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
        let _ = juris_record::decode_chunk(&bytes);
    }

    /// ... and on real chunks with bytes changed anywhere.
    #[test]
    fn decode_chunk_never_panics_on_mutated_chunks(
        edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8),
        cut in proptest::option::of(proptest::num::usize::ANY),
    ) {
        let mut bytes = sample_chunk().clone();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        let _ = juris_record::decode_chunk(&bytes);
    }
}

/// One real chunk file, made once.
fn sample_chunk() -> &'static Vec<u8> {
    static CHUNK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CHUNK.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(spool_config(&tmp.path().join("spool")), node_key()).unwrap();
        let session = session_id(12);
        let (manifest, _) = record_session(&spool, &session, 3);
        let name = manifest.chunks[0]
            .key
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let bytes = std::fs::read(spool.dir().join(&session).join(name)).unwrap();
        assert!(juris_record::decode_chunk(&bytes).is_ok());
        bytes
    })
}

/// Sessions whose syncs fall due at different times are synced together
/// when the first one is due: the second session's events are durable
/// long before its own interval has passed.
#[test]
fn sessions_are_synced_together_when_the_first_is_due() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = spool_config(&tmp.path().join("spool"));
    config.fsync_interval = std::time::Duration::from_millis(1000);
    let spool = Spool::open(config, node_key()).unwrap();
    let query = |sql: &str| EventKind::Query { text: sql.into() };
    let started = std::time::Instant::now();
    let mut first = spool
        .start_session(info(&session_id(1), "billing-eu", "alice"))
        .unwrap();
    let first_seq = first
        .record(Direction::ClientToServer, query("select 1"))
        .unwrap();
    first.ship().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut second = spool
        .start_session(info(&session_id(2), "billing-eu", "bob"))
        .unwrap();
    let second_seq = second
        .record(Direction::ClientToServer, query("select 2"))
        .unwrap();
    second.ship().unwrap();
    // The first session's sync is due at 1 s, the second's at 1.5 s.
    while first.durable_seq() < first_seq {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the first session was never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    while second.durable_seq() < second_seq {
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1300),
            "the second session was synced on its own, {:?} after the start",
            started.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.finish(END).unwrap();
    second.finish(END).unwrap();
}
