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
                        Err(RecordError::SpoolFull { .. }) => std::thread::yield_now(),
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
                let batch = left.min(8192);
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
                        Err(RecordError::SpoolFull { .. }) => std::thread::yield_now(),
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

criterion_group!(benches, bench);
criterion_main!(benches);
