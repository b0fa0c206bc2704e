//! The hand-over latency benchmark (`relay-compare`): pgbench select-only
//! against PostgreSQL directly, against the node of the region that owns
//! the connection, and against a node of another region that hands the
//! session over (still encrypted, over its mutual-TLS relay link) to the
//! owning node, side by side in one run, round by round.
//!
//! The deployment: one PostgreSQL (TLS, SCRAM, `pgbench -i -s 10`), a demo
//! OIDC issuer, and two regions of one release node each, built by
//! [`crate::regions`]: `eu-west` owns `billing-eu` (that PostgreSQL),
//! `us-east` owns `crm-us` (the same server; never used). Clients name
//! `billing-eu.db.bench.test` (SNI) and verify the certificate
//! (`sslmode=verify-full`); "Owning" connects to the eu-west node, "Foreign"
//! to the us-east node. Both nodes are charged CPU on every target, so the
//! table shows what the relaying node costs per transaction.

use std::time::Duration;

use anyhow::{Context, bail};
use juris_demo::issuer::DevIssuer;

use crate::gateway::{GatewayProcess, GatewaySpec, RoleSpec};
use crate::pgbench::{
    BenchPostgres, CoreLayout, Endpoint, LoadWatch, Measurements, Options, Workload, cell, ratio,
    run_rounds, select_only_workloads,
};
use crate::regions::{Directory, RegionLayout, scrape};

pub const USAGE: &str = "usage: relay-compare [--rounds N] [--seconds S] [--only WORKLOAD-SUBSTRING] \
                         [--targets NAME,NAME] [--proxy-core]";

const AUDIENCE: &str = "urn:juris:gateway";
const DOMAIN: &str = "db.bench.test";
/// The measured connection, owned by eu-west.
const CONNECTION: &str = "billing-eu";
/// us-east's own connection (a region owns at least one).
const US_CONNECTION: &str = "crm-us";
/// Issue 6: relaying adds at most 10 % latency.
const TARGET_RATIO: f64 = 1.10;

/// The endpoints, in the order of the table's columns.
const DIRECT: usize = 0;
const OWNING: usize = 1;
const FOREIGN: usize = 2;
/// The charged processes of the node endpoints.
const EU_NODE: usize = 0;
const US_NODE: usize = 1;

/// pgbench select-only, 8 clients, 2 threads, each protocol; then a new
/// connection per transaction, where a hand-over costs most.
pub fn workloads() -> Vec<Workload> {
    let mut workloads = select_only_workloads();
    workloads.push(Workload::new(
        "select-only, simple, new connection per transaction (-S -M simple -C -c 8)",
        &["-S", "-M", "simple", "-C", "-c", "8", "-j", "2"],
    ));
    workloads
}

/// Start everything, run the rounds, print the report on stdout.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let workloads = options.select(workloads())?;
    // Before anything runs that would need stopping: this may take minutes.
    eprintln!("building juris ...");
    tokio::task::spawn_blocking(crate::gateway::juris_binary).await??;
    let cores = CoreLayout::for_driver(&options)?;
    let bench = BenchPostgres::start("Juris relay benchmark upstream CA").await?;

    eprintln!("starting the eu-west and us-east nodes ...");
    let issuer = DevIssuer::start(AUDIENCE).await?;
    let token = issuer.mint(
        "bench",
        "bench@example.test",
        &["dba"],
        Duration::from_secs(7200),
    )?;
    let dir = tempfile::tempdir()?;
    let directory = Directory::new(dir.path(), DOMAIN)?;
    let upstream = |name: &str| bench.connection(name);
    let layout = vec![
        RegionLayout::local("eu-west", "eu", 1, vec![upstream(CONNECTION)], dir.path())?,
        RegionLayout::local(
            "us-east",
            "us",
            1,
            vec![upstream(US_CONNECTION)],
            dir.path(),
        )?,
    ];
    let mut base = GatewaySpec::new(issuer.issuer(), AUDIENCE);
    let mut role = RoleSpec::new("dba", "dba", CONNECTION, "admin");
    role.connections.push(US_CONNECTION.into());
    base.roles.push(role);
    let eu_spec = directory.node_spec(&base, &layout, "eu-west", 0)?;
    let us_spec = directory.node_spec(&base, &layout, "us-east", 0)?;
    let (eu, us) = tokio::try_join!(
        GatewayProcess::start(&eu_spec),
        GatewayProcess::start(&us_spec),
    )?;
    if let Some(cores) = &cores {
        cores.pin_proxy(eu.pid())?;
        cores.pin_proxy(us.pid())?;
    }
    // By the connection's directory name, verifying the certificate, as a
    // client of the geo-DNS name would; only the node reached differs.
    let via = |name: &str, node: &GatewayProcess| Endpoint {
        host: directory.host(CONNECTION),
        hostaddr: Some(node.address.ip().to_string()),
        sslmode: "verify-full".into(),
        sslrootcert: Some(directory.client_ca_file.clone()),
        ..Endpoint::loopback(name, node.address.port(), "bench", CONNECTION, &token)
            .charging("eu-1", eu.pid())
            .charging("us-1", us.pid())
    };
    let endpoints = [
        bench.direct.clone(),
        via("Owning", &eu),
        via("Foreign", &us),
    ];
    if endpoints[OWNING].charged.len() != 2 {
        bail!("a node exited before the benchmark started");
    }

    let load = LoadWatch::start();
    let load_before = crate::pgbench::load_average();
    let measurements = run_rounds(&workloads, &endpoints, &options).await?;
    let load_during = load.range();

    let eu_metrics = scrape(&layout[0].nodes[0].metrics_address()).await?;
    let us_metrics = scrape(&layout[1].nodes[0].metrics_address()).await?;
    let metric =
        |m: &std::collections::HashMap<String, u64>, name: &str| m.get(name).copied().unwrap_or(0);
    let handshakes = format!("juris_client_tls_handshakes_total{{connection=\"{CONNECTION}\"}}");
    let handed_over = metric(&us_metrics, "juris_handovers_out_total");
    let foreign_runs = measurements
        .runs
        .iter()
        .map(|r| r[FOREIGN].len())
        .sum::<usize>();
    if foreign_runs > 0 && (handed_over == 0 || metric(&us_metrics, &handshakes) > 0) {
        bail!(
            "the us-east node did not hand the sessions over (hand-overs out {handed_over}, \
             {CONNECTION} TLS sessions terminated {}): the Foreign column measured something else",
            metric(&us_metrics, &handshakes)
        );
    }

    println!("{}", table(&workloads, &endpoints, &measurements, &options));
    println!(
        "Hand-overs: us-1 handed {handed_over} sessions over to eu-west (hand-overs out), \
         cut {} streams, relayed {} TLS records to the region and {} to clients; eu-1 took {} \
         in and terminated {} {CONNECTION} TLS sessions in all, us-1 {}.",
        metric(&us_metrics, "juris_handovers_cut_total"),
        metric(&us_metrics, "juris_handover_records_to_region_total"),
        metric(&us_metrics, "juris_handover_records_to_client_total"),
        metric(&eu_metrics, "juris_handovers_in_total"),
        metric(&eu_metrics, &handshakes),
        metric(&us_metrics, &handshakes),
    );
    println!(
        "1-minute load average: {} before the rounds, {} while they ran (sampled every 5 s), \
         on {} CPUs.",
        cell(load_before, 2),
        load_during
            .map(|(low, high)| format!("{low:.2}–{high:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some(path) = std::env::var_os("RELAY_COMPARE_NODE_LOGS") {
        let path = std::path::Path::new(&path);
        std::fs::write(path.with_extension("eu.log"), eu.log())
            .with_context(|| format!("cannot write next to {}", path.display()))?;
        std::fs::write(path.with_extension("us.log"), us.log())
            .with_context(|| format!("cannot write next to {}", path.display()))?;
    }
    drop((eu, us));
    drop(bench);
    Ok(())
}

/// The markdown report: medians per target, the foreign/owning latency
/// ratio against the target, and the nodes' CPU per transaction.
fn table(
    workloads: &[Workload],
    endpoints: &[Endpoint],
    m: &Measurements,
    options: &Options,
) -> String {
    let mut out = format!(
        "Median of {} rounds, {} s each, TLS on every hop. {} \"Owning\": the eu-west node, which \
         owns {CONNECTION}; \"Foreign\": the us-east node, which hands the session over to the \
         eu-west node. Latency is pgbench's \"latency average\"; CPU is per transaction, \
         eu-1 terminates TLS and runs the session on both targets, us-1 relays.\n\n\
         | Workload | Direct TPS | Owning TPS | Foreign TPS | Direct latency ms | Owning latency ms | Foreign latency ms | Added by relaying ms | Foreign/owning latency | per round | ≤ {TARGET_RATIO:.2} | Owning: eu-1 CPU µs/txn | Foreign: eu-1 CPU µs/txn | Foreign: us-1 CPU µs/txn |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|\n",
        options.rounds,
        options.seconds,
        options.layout()
    );
    let mut connections = String::new();
    for (w, workload) in workloads.iter().enumerate() {
        let latency = |t: usize| m.latency_ms(w, t);
        let relative = ratio(latency(FOREIGN), latency(OWNING));
        let added = match (latency(FOREIGN), latency(OWNING)) {
            (Some(f), Some(o)) => Some(f - o),
            _ => None,
        };
        let per_round = m
            .per_round_ratios(w, FOREIGN, OWNING, |r| r.latency_ms)
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = match relative {
            Some(r) if r <= TARGET_RATIO => "met",
            Some(_) => "**missed**",
            None => "n/a",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            workload.name,
            cell(m.tps(w, DIRECT), 0),
            cell(m.tps(w, OWNING), 0),
            cell(m.tps(w, FOREIGN), 0),
            cell(latency(DIRECT), 3),
            cell(latency(OWNING), 3),
            cell(latency(FOREIGN), 3),
            cell(added, 3),
            cell(relative, 2),
            per_round,
            verdict,
            cell(m.cpu_us_per_txn(w, OWNING, EU_NODE), 1),
            cell(m.cpu_us_per_txn(w, FOREIGN, EU_NODE), 1),
            cell(m.cpu_us_per_txn(w, FOREIGN, US_NODE), 1),
        ));
        if let Some(owning) = m.connection_ms(w, OWNING) {
            connections.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                workload.name,
                cell(m.connection_ms(w, DIRECT), 3),
                cell(Some(owning), 3),
                cell(m.connection_ms(w, FOREIGN), 3),
                cell(ratio(m.connection_ms(w, FOREIGN), Some(owning)), 2),
            ));
        }
    }
    if !connections.is_empty() {
        out.push_str(&format!(
            "\npgbench's \"average connection time\" (medians), where it reports one:\n\n\
             | Workload | Direct ms | Owning ms | Foreign ms | Foreign/owning |\n\
             |---|---:|---:|---:|---:|\n{connections}"
        ));
    }
    out.push_str(&m.footer(workloads, endpoints, options));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_is_select_only_with_eight_clients_on_two_threads() {
        for w in workloads() {
            let args = w.args.join(" ");
            assert!(args.starts_with("-S -M "), "{args}");
            assert!(args.ends_with("-c 8 -j 2"), "{args}");
        }
    }
}
