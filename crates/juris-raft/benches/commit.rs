//! Commit latency and throughput of a real three-node group in one process
//! (RocksDB with fsync, gRPC over mTLS on 127.0.0.1).
//!
//! Prints p50/p99 single-writer commit latency and 64-writer throughput
//! measured directly, then runs the same two workloads under criterion.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use criterion::{Criterion, Throughput};
use juris_raft::RaftConfig;

const WRITERS: usize = 64;

fn tune(cfg: &mut RaftConfig) {
    cfg.snapshot_every_logs = 50_000;
    cfg.logs_to_keep_after_snapshot = 5_000;
}

/// Runs `WRITERS` concurrent writers, each doing `per_writer` writes through
/// the leader; returns the elapsed time.
async fn concurrent(c: &Arc<Cluster>, leader: u64, per_writer: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(WRITERS);
    for w in 0..WRITERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let cmd = format!("w{w}=v{i}").into_bytes();
                if let Err(e) = c.node(leader).write(cmd).await {
                    panic!("write failed: {e}");
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            panic!("writer task failed: {e}");
        }
    }
    start.elapsed()
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (cluster, leader) = rt.block_on(async {
        let c = match Cluster::form(tune, 3).await {
            Ok(c) => c,
            Err(e) => panic!("form cluster: {e:#}"),
        };
        let leader = match c.wait_leader(Duration::from_secs(20)).await {
            Ok(l) => l,
            Err(e) => panic!("leader: {e:#}"),
        };
        (Arc::new(c), leader)
    });
    let node = || cluster.node(leader);

    // Direct measurement: single writer latency distribution.
    let lat = rt.block_on(async {
        for i in 0..200 {
            let _ = node().write(format!("warm={i}").into_bytes()).await;
        }
        let mut lat = Vec::with_capacity(2_000);
        for i in 0..2_000 {
            let t = Instant::now();
            if let Err(e) = node().write(format!("k={i}").into_bytes()).await {
                panic!("write: {e}");
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        lat
    });
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "single writer: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
    let per_writer = 200;
    let elapsed = rt.block_on(concurrent(&cluster, leader, per_writer));
    let total = (WRITERS * per_writer) as f64;
    println!(
        "{WRITERS} writers: {} commits in {elapsed:?} = {:.0} commits/s",
        total,
        total / elapsed.as_secs_f64()
    );

    let mut crit = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    {
        let mut g = crit.benchmark_group("commit");
        g.throughput(Throughput::Elements(1));
        g.bench_function("single_writer", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for i in 0..iters {
                        if let Err(e) = node().write(format!("s={i}").into_bytes()).await {
                            panic!("write: {e}");
                        }
                    }
                    t.elapsed()
                })
            });
        });
        g.throughput(Throughput::Elements(WRITERS as u64 * 20));
        g.bench_function("64_writers_x20", |b| {
            b.iter_custom(|iters| {
                let mut sum = Duration::ZERO;
                for _ in 0..iters {
                    sum += rt.block_on(concurrent(&cluster, leader, 20));
                }
                sum
            });
        });
        g.finish();
    }
    crit.final_summary();

    rt.block_on(async {
        let Ok(mut c) = Arc::try_unwrap(cluster) else {
            panic!("cluster still shared");
        };
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        for id in ids {
            let _ = c.stop(id).await;
        }
    });
}
