//! `pgbench-compare`: the same pgbench workloads against PostgreSQL directly,
//! through PgBouncer (session mode), through a release `juris node`, and
//! through the same node on a connection that masks every column of
//! `pgbench_accounts` (column rules on its four columns plus the ssn, card
//! and email detectors on every text value), and through the same node on
//! a connection that is not recorded (`recording = "off"`: what recording
//! costs), one that masks but is not recorded (what masking alone costs)
//! and one with neither recording nor a per-statement audit record
//! (`audit_statements = false`: what the evidence costs), all over TLS on
//! this machine,
//! interleaved round by round. Prints a markdown
//! table of median TPS, the ratios, and the proxies' CPU time per
//! transaction (from /proc/<pid>/stat).
//!
//! Usage: `pgbench-compare [--rounds N] [--seconds S]`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use juris_demo::issuer::DevIssuer;
use juris_testkit::gateway::{GatewayProcess, GatewaySpec, RoleSpec};
use juris_testkit::pgbench::{
    BenchPostgres, CoreLayout, Endpoint, Measurements, Options, Workload, cell, ratio, run_rounds,
    select_only_workloads, until_interrupted,
};
use juris_testkit::pgbouncer::{PgBouncer, PgBouncerOptions};

const AUDIENCE: &str = "urn:juris:gateway";
const CONNECTION: &str = "bench";
const MASKED_CONNECTION: &str = "bench_masked";
const UNRECORDED_CONNECTION: &str = "bench_unrecorded";
const MASKED_UNRECORDED_CONNECTION: &str = "bench_masked_unrecorded";
const BARE_CONNECTION: &str = "bench_bare";
/// Four masked columns: every column of `pgbench_accounts`, with each strategy.
const MASKING_POLICY: &str = r#"
[connection.masking]
[[connection.masking.column]]
name = "public.pgbench_accounts.aid"
strategy = "partial"
keep_last = 2
[[connection.masking.column]]
name = "public.pgbench_accounts.bid"
strategy = "hash"
[[connection.masking.column]]
name = "public.pgbench_accounts.abalance"
strategy = "redact"
[[connection.masking.column]]
name = "public.pgbench_accounts.filler"
strategy = "partial"
[[connection.masking.value]]
detector = "ssn"
strategy = "partial"
[[connection.masking.value]]
detector = "card"
strategy = "partial"
[[connection.masking.value]]
detector = "email"
strategy = "hash"
"#;
const WIDE_SCRIPT: &str = "SELECT * FROM pgbench_accounts LIMIT 10000;\n";

const USAGE: &str = "usage: pgbench-compare [--rounds N] [--seconds S] [--only WORKLOAD-SUBSTRING] \
                     [--targets NAME,NAME] [--proxy-core]";

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    Options::parse(args, USAGE)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_args(std::env::args().skip(1))?;
    until_interrupted(run(options)).await
}

/// Where pgbench connects, in the order of `Measurements`' columns.
const DIRECT: usize = 0;
const PGBOUNCER: usize = 1;
const JURIS: usize = 2;
const MASKING: usize = 3;
const UNRECORDED: usize = 4;
const MASKING_UNRECORDED: usize = 5;
const BARE: usize = 6;

fn workloads(script: &Path) -> Vec<Workload> {
    let wide = [
        "-M",
        "simple",
        "-c",
        "4",
        "-j",
        "2",
        "-f",
        &script.display().to_string(),
    ]
    .map(String::from);
    let mut workloads = select_only_workloads();
    // Below every target's capacity, so each serves the same load and the
    // proxies' CPU per transaction is what differs: steadier than the
    // saturated runs, whose per-transaction CPU moves with how the two
    // cores happen to be shared (the TPS columns only show the rate held).
    workloads.push(Workload::new(
        "select-only at 8,000 TPS (-S -M simple -c 8 -R 8000)",
        &["-S", "-M", "simple", "-c", "8", "-j", "2", "-R", "8000"],
    ));
    workloads.push(Workload::new(
        "TPC-B-like, simple (-M simple -c 8)",
        &["-M", "simple", "-c", "8", "-j", "2"],
    ));
    workloads.push(Workload {
        name: "10,000-row SELECT (-f, -c 4)".into(),
        args: wide.to_vec(),
    });
    workloads
}

async fn run(options: Options) -> anyhow::Result<()> {
    // Before anything runs that would need stopping: this may take minutes.
    eprintln!("building juris (release) ...");
    tokio::task::spawn_blocking(juris_testkit::gateway::juris_binary).await??;
    let layout = CoreLayout::for_driver(&options)?;
    let bench = BenchPostgres::start("Juris benchmark CA").await?;
    let pg = &bench.pg;

    eprintln!("starting PgBouncer (session mode) ...");
    let bouncer = PgBouncer::start(&PgBouncerOptions {
        upstream_host: pg.host.clone(),
        upstream_port: pg.port,
        user: pg.superuser.clone(),
        password: pg.password.clone(),
        pool_mode: "session".into(),
        pool_size: 20,
        client_tls: bench.tls.clone(),
    })
    .await?;
    if let Some(layout) = &layout {
        layout.pin_proxy(bouncer.pid())?;
    }
    let pgbouncer = Endpoint::loopback(
        "PgBouncer",
        bouncer.port,
        &pg.superuser,
        "postgres",
        &pg.password,
    )
    .charging("pgbouncer", bouncer.pid());

    eprintln!("starting juris node ...");
    let issuer = DevIssuer::start(AUDIENCE).await?;
    let token = issuer.mint(
        "bench",
        "bench@example.test",
        &["dba"],
        Duration::from_secs(7200),
    )?;
    let mut spec = GatewaySpec::new(issuer.issuer(), AUDIENCE);
    for name in [
        CONNECTION,
        MASKED_CONNECTION,
        UNRECORDED_CONNECTION,
        MASKED_UNRECORDED_CONNECTION,
        BARE_CONNECTION,
    ] {
        let mut connection = bench.connection(name);
        if name != CONNECTION && name != MASKED_CONNECTION {
            connection.settings.push("recording = \"off\"".into());
        }
        if name == BARE_CONNECTION {
            connection.settings.push("audit_statements = false".into());
        }
        spec.connections.push(connection);
        spec.roles.push(RoleSpec::new(name, "dba", name, "admin"));
    }
    spec.mask_hash_key = Some("benchmark-only-mask-key-0123456789".into());
    for name in [MASKED_CONNECTION, MASKED_UNRECORDED_CONNECTION] {
        spec.connection_settings
            .push((name.into(), MASKING_POLICY.into()));
    }
    let gateway = GatewayProcess::start(&spec).await?;
    if let Some(layout) = &layout {
        layout.pin_proxy(gateway.pid())?;
    }
    let juris = |name: &str, connection: &str| {
        Endpoint::loopback(name, gateway.address.port(), "bench", connection, &token)
            .charging("juris", gateway.pid())
    };
    // The order of the column constants above.
    let endpoints = [
        bench.direct.clone(),
        pgbouncer,
        juris("Juris", CONNECTION),
        juris("JurisMasking", MASKED_CONNECTION),
        juris("JurisUnrecorded", UNRECORDED_CONNECTION),
        juris("JurisMaskingUnrecorded", MASKED_UNRECORDED_CONNECTION),
        juris("JurisBare", BARE_CONNECTION),
    ];

    let script_dir = tempfile::tempdir()?;
    let script = script_dir.path().join("wide.sql");
    std::fs::write(&script, WIDE_SCRIPT)?;
    let workloads = options.select(workloads(&script))?;
    let measurements = run_rounds(&workloads, &endpoints, &options).await?;

    println!("{}", table(&workloads, &endpoints, &measurements, &options));
    // For investigating stalls: the node's whole log, on request.
    if let Some(path) = std::env::var_os("PGBENCH_COMPARE_NODE_LOG") {
        std::fs::write(&path, gateway.log())
            .with_context(|| format!("cannot write {}", Path::new(&path).display()))?;
    }
    drop(gateway);
    drop(bouncer);
    drop(bench);
    Ok(())
}

fn table(
    workloads: &[Workload],
    endpoints: &[Endpoint],
    m: &Measurements,
    options: &Options,
) -> String {
    let mut out = format!(
        "Median of {} rounds, {} s each, TLS on every hop. {} \"Masking\" is the same node on a \
         connection that masks all four columns of pgbench_accounts; \"Unrecorded\" the same node \
         on a connection with `recording = \"off\"` (Juris and Masking record every session); \
         \"Masking unrec.\" masks like Masking and is not recorded, so Masking unrec./Unrecorded \
         is what masking alone costs and Juris/Unrecorded what recording alone costs. \
         \"Bare\" is neither recorded nor audited per statement (`audit_statements = false`): \
         Juris/Bare is what recording and the statement audit cost together.\n\n\
         | Workload | Direct TPS | PgBouncer TPS | Juris TPS | Masking TPS | Unrecorded TPS | Masking unrec. TPS | Bare TPS | Juris/direct | PgBouncer/direct | Juris/PgBouncer | Masking/direct | Masking/PgBouncer | Juris/Unrecorded | Juris/Bare | Unrecorded/Bare | Masking unrec./direct | Masking unrec./PgBouncer | Masking unrec./Unrecorded | Juris CPU µs/txn | Masking CPU µs/txn | Unrecorded CPU µs/txn | Masking unrec. CPU µs/txn | Bare CPU µs/txn | PgBouncer CPU µs/txn |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        options.rounds,
        options.seconds,
        options.layout()
    );
    for (w, workload) in workloads.iter().enumerate() {
        let tps = |t: usize| m.tps(w, t);
        let cpu = |t: usize| m.cpu_us_per_txn(w, t, 0);
        let (direct, bouncer, juris, masking, unrecorded, masking_unrecorded, bare) = (
            tps(DIRECT),
            tps(PGBOUNCER),
            tps(JURIS),
            tps(MASKING),
            tps(UNRECORDED),
            tps(MASKING_UNRECORDED),
            tps(BARE),
        );
        let cells = [
            cell(direct, 0),
            cell(bouncer, 0),
            cell(juris, 0),
            cell(masking, 0),
            cell(unrecorded, 0),
            cell(masking_unrecorded, 0),
            cell(bare, 0),
            cell(ratio(juris, direct), 2),
            cell(ratio(bouncer, direct), 2),
            cell(ratio(juris, bouncer), 2),
            cell(ratio(masking, direct), 2),
            cell(ratio(masking, bouncer), 2),
            cell(ratio(juris, unrecorded), 2),
            cell(ratio(juris, bare), 2),
            cell(ratio(unrecorded, bare), 2),
            cell(ratio(masking_unrecorded, direct), 2),
            cell(ratio(masking_unrecorded, bouncer), 2),
            cell(ratio(masking_unrecorded, unrecorded), 2),
            cell(cpu(JURIS), 1),
            cell(cpu(MASKING), 1),
            cell(cpu(UNRECORDED), 1),
            cell(cpu(MASKING_UNRECORDED), 1),
            cell(cpu(BARE), 1),
            cell(cpu(PGBOUNCER), 1),
        ];
        out.push_str(&format!("| {} | {} |\n", workload.name, cells.join(" | ")));
    }
    out.push_str(&m.footer(workloads, endpoints, options));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(args(&["--rounds", "2", "--seconds", "5"])).unwrap();
        assert_eq!((o.rounds, o.seconds), (2, 5));
        let o = parse_args(args(&[])).unwrap();
        assert_eq!((o.rounds, o.seconds), (3, 10));
        assert!(parse_args(args(&["--rounds"])).is_err());
        assert!(parse_args(args(&["--rounds", "0"])).is_err());
        assert!(parse_args(args(&["--bogus"])).is_err());
    }
}
