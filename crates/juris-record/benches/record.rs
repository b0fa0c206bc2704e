//! What recording costs the data plane per row, side by side with what the
//! relay itself does for a row (building and copying the DataRow frame).
//!
//! `record/data_row_sustained` includes the writer thread's work (append,
//! batched fsync, zstd sealing): it waits for queue room instead of
//! counting `SpoolFull`, and flushes at the end of each batch, so it is
//! the sustainable rate, not the cost of a channel send.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use juris_record::{
    Direction, EventKind, NodeSigningKey, RecordError, RecordedPrincipal, SessionInfo, Spool,
    SpoolConfig, SpoolLimits,
};

fn row(i: u64) -> Vec<Option<String>> {
    vec![
        Some(i.to_string()),
        Some(format!("u{i}***@example.com")),
        Some("Jane Doe".into()),
        None,
        Some("2026-01-01 12:00:00+00".into()),
    ]
}

/// The PostgreSQL DataRow frame for `values` (what the relay forwards).
fn data_row_frame(values: &[Option<String>], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'D');
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for value in values {
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let length = (out.len() - length_at) as u32;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = SpoolConfig::new(tmp.path().join("spool"), "bench");
    config.limits = SpoolLimits {
        max_bytes: u64::MAX,
    };
    let spool = Spool::open(config, Arc::new(NodeSigningKey::from_seed([1; 32]))).unwrap();
    let info = SessionInfo {
        session_id: format!("{:032x}", 1),
        principal: RecordedPrincipal {
            issuer: "https://idp".into(),
            subject: "s".into(),
            name: "bench".into(),
            groups: vec![],
        },
        connection: "billing-eu".into(),
        region: "eu-west".into(),
        client_addr: None,
        started_at_ms: 0,
    };
    let mut recorder = spool.start_session(info).unwrap();
    let line_bytes = serde_json::to_vec(&juris_record::RecordEvent {
        seq: 1_000_000,
        at_ms: 1_767_225_600_000,
        elapsed_us: 1_000_000,
        direction: Direction::ServerToClient,
        kind: EventKind::DataRow { values: row(1000) },
    })
    .unwrap()
    .len() as u64
        + 1;

    let mut group = c.benchmark_group("record");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let mut frame = Vec::new();
    group.bench_function("relay_baseline_data_row_frame", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let values = row(i);
            data_row_frame(&values, &mut frame);
            black_box(&frame);
        })
    });
    group.bench_function("data_row_sustained", |b| {
        let mut i = 0u64;
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                i += 1;
                loop {
                    match recorder.record(
                        Direction::ServerToClient,
                        EventKind::DataRow { values: row(i) },
                    ) {
                        Ok(_) => break,
                        Err(RecordError::SpoolFull { .. } | RecordError::Busy) => {
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            recorder.flush().unwrap();
            start.elapsed()
        })
    });
    group.bench_function("data_row_call_only", |b| {
        // What the data-plane thread pays per event: serialise and queue.
        // Batches stay below the queue capacity, and the writer catches
        // up (flush) outside the timed part.
        let mut i = 0u64;
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            let mut left = iterations;
            while left > 0 {
                let batch = left.min(2048);
                let start = Instant::now();
                for _ in 0..batch {
                    i += 1;
                    recorder
                        .record(
                            Direction::ServerToClient,
                            EventKind::DataRow { values: row(i) },
                        )
                        .unwrap();
                }
                total += start.elapsed();
                recorder.flush().unwrap();
                left -= batch;
            }
            total
        })
    });
    group.throughput(Throughput::Bytes(line_bytes));
    group.bench_function("data_row_sustained_bytes", |b| {
        let mut i = 0u64;
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                i += 1;
                loop {
                    match recorder.record(
                        Direction::ServerToClient,
                        EventKind::DataRow { values: row(i) },
                    ) {
                        Ok(_) => break,
                        Err(RecordError::SpoolFull { .. } | RecordError::Busy) => {
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            recorder.flush().unwrap();
            start.elapsed()
        })
    });
    group.finish();
    let lost = recorder.lost_events();
    recorder.finish("bench done").unwrap();
    eprintln!("events refused while the writer was behind (retried): {lost}");
}

/// A pgbench-accounts-like row as the relay forwards it: three integers,
/// a short text and a timestamp (about 60 bytes on the wire).
fn account_row_frame(i: u64, out: &mut Vec<u8>) {
    let values = [
        Some(i.to_string()),
        Some((i % 100 + 1).to_string()),
        Some(((i * 7919) % 100_000) as i64 - 50_000).map(|v| v.to_string()),
        Some(format!("customer-{i:06}")),
        Some("2026-11-24 06:00:00+00".to_string()),
    ];
    data_row_frame(&values, out);
}

const ROWS: u64 = 10_000;
/// The relay hands what it recorded to the writer once per network read:
/// about 64 KiB, 900 of these rows.
const ROWS_PER_READ: u64 = 900;

/// One session of `frames` (DataRows), recorded as the relay does, then
/// finished: sealed chunk and signed manifest on disk.
fn record_session(spool: &Spool, session: u64, frames: &[Vec<u8>]) {
    let info = SessionInfo {
        session_id: format!("{session:032x}"),
        principal: RecordedPrincipal {
            issuer: "https://idp".into(),
            subject: "s".into(),
            name: "bench".into(),
            groups: vec![],
        },
        connection: "billing-eu".into(),
        region: "eu-west".into(),
        client_addr: None,
        started_at_ms: 1_767_225_600_000,
    };
    let mut recorder = spool.start_session(info).unwrap();
    for (n, frame) in frames.iter().enumerate() {
        record_data_row_frame(&mut recorder, frame);
        if (n as u64 + 1).is_multiple_of(ROWS_PER_READ) {
            while let Err(e) = recorder.ship() {
                assert!(matches!(e, RecordError::Busy), "{e}");
                std::thread::yield_now();
            }
        }
    }
    black_box(recorder.finish("bench done").unwrap());
}

/// CPU time of the calling thread (the relay's share), from `/proc`.
fn thread_cpu_time() -> Duration {
    let nanos = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

/// CPU time of every live thread of this process (the recording thread's
/// and the spool writer's), from `/proc`: what recording costs the
/// machine, apart from how long the disk takes to fsync.
fn process_cpu_time() -> Duration {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            nanos += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(nanos)
}

/// 10,000 DataRows of one session, end to end: the relay's per-row call
/// (from the wire frame it forwarded: [`record_data_row_frame`]), the
/// hand-over once per network read, the writer thread's append and
/// fsyncs, and the sealed chunk and signed manifest at the end. Reported
/// per row (throughput elements): `end_to_end` in wall-clock time (which
/// includes waiting for fsyncs), `end_to_end_cpu` in CPU time of both
/// threads (what the gateway's cores pay), `relay_thread_cpu` in CPU time
/// of the recording thread alone (what the data path pays; the spool
/// writer's appends, fsyncs and zstd are the difference).
fn bench_rows_end_to_end(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = SpoolConfig::new(tmp.path().join("spool"), "bench");
    config.limits = SpoolLimits {
        max_bytes: u64::MAX,
    };
    let spool = Spool::open(config, Arc::new(NodeSigningKey::from_seed([2; 32]))).unwrap();
    let frames: Vec<Vec<u8>> = (1..=ROWS)
        .map(|i| {
            let mut frame = Vec::new();
            account_row_frame(i, &mut frame);
            frame
        })
        .collect();
    let mut group = c.benchmark_group("record_10k_rows");
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(20);
    group.throughput(Throughput::Elements(ROWS));
    let mut session = 0u64;
    group.bench_function("end_to_end", |b| {
        b.iter(|| {
            session += 1;
            record_session(&spool, session, &frames);
        })
    });
    group.bench_function("end_to_end_cpu", |b| {
        b.iter_custom(|iterations| {
            let start = process_cpu_time();
            for _ in 0..iterations {
                session += 1;
                record_session(&spool, session, &frames);
            }
            process_cpu_time().saturating_sub(start)
        })
    });
    group.bench_function("relay_thread_cpu", |b| {
        b.iter_custom(|iterations| {
            let start = thread_cpu_time();
            for _ in 0..iterations {
                session += 1;
                record_session(&spool, session, &frames);
            }
            thread_cpu_time().saturating_sub(start)
        })
    });
    group.finish();
}

/// What the relay does per forwarded DataRow: record the wire message
/// as the client receives it. (On main at 2e393df it decoded the frame
/// into per-value strings first and recorded a JSON event: 2,255 ns of
/// CPU per row in `end_to_end_cpu`, against 487 ns now; see
/// docs/BENCHMARKS.md.)
fn record_data_row_frame(recorder: &mut juris_record::Recorder, frame: &[u8]) {
    loop {
        match recorder.record_message(Direction::ServerToClient, frame[0], &frame[5..]) {
            Ok(_) => break,
            Err(RecordError::Busy) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// zstd levels on a chunk payload of realistic rows: what sealing costs
/// the writer thread per byte, and the compressed size (printed).
fn bench_chunk_compression(c: &mut Criterion) {
    use juris_record::frame::{FrameCursor, FrameKind, encode_frame};
    let mut payload = Vec::new();
    let mut cursor = FrameCursor::new();
    let mut frame = Vec::new();
    let mut seq = 1;
    while payload.len() < 1 << 20 {
        account_row_frame(seq, &mut frame);
        encode_frame(
            &mut payload,
            &mut cursor,
            seq,
            1_767_225_600_000 + seq / 1000,
            seq,
            FrameKind::ServerMessage,
            &[&frame[..1], &frame[5..]],
        );
        seq += 1;
    }
    let mut group = c.benchmark_group("chunk_zstd");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload.len() as u64));
    for level in [3, 1, -1, -3, -5] {
        let compressed = zstd::bulk::compress(&payload, level).unwrap();
        eprintln!(
            "zstd level {level}: {} -> {} bytes ({:.1} %)",
            payload.len(),
            compressed.len(),
            compressed.len() as f64 * 100.0 / payload.len() as f64
        );
        group.bench_function(format!("level_{level}"), |b| {
            b.iter(|| black_box(zstd::bulk::compress(&payload, level).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench,
    bench_rows_end_to_end,
    bench_chunk_compression
);
criterion_main!(benches);
