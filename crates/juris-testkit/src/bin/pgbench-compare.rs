//! `pgbench-compare`: the same pgbench workloads against PostgreSQL directly,
//! through PgBouncer (session mode), through a release `juris node`, and
//! through the same node on a connection that masks every column of
//! `pgbench_accounts` (column rules on its four columns plus the ssn, card
//! and email detectors on every text value), and through the same node on
//! a connection that is not recorded (`recording = "off"`: what recording
//! costs), all over TLS on this machine,
//! interleaved round by round. Prints a markdown
//! table of median TPS, the ratios, and the proxies' CPU time per
//! transaction (from /proc/<pid>/stat).
//!
//! Usage: `pgbench-compare [--rounds N] [--seconds S]`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use juris_demo::certs::DemoCa;
use juris_demo::issuer::DevIssuer;
use juris_testkit::gateway::{ConnectionSpec, GatewayProcess, GatewaySpec, RoleSpec};
use juris_testkit::pgbouncer::{PgBouncer, PgBouncerOptions};
use juris_testkit::postgres::{ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth};

const AUDIENCE: &str = "urn:juris:gateway";
const CONNECTION: &str = "bench";
const MASKED_CONNECTION: &str = "bench_masked";
const UNRECORDED_CONNECTION: &str = "bench_unrecorded";
/// Four masked columns: every column of `pgbench_accounts`, with each strategy.
const MASKING: &str = r#"
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
const SCALE: &str = "10";
const WIDE_SCRIPT: &str = "SELECT * FROM pgbench_accounts LIMIT 10000;\n";

const INIT_LIMIT: Duration = Duration::from_secs(600);
/// How much longer than `-T` a run may take before it counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: pgbench-compare [--rounds N] [--seconds S] [--only WORKLOAD-SUBSTRING]";

/// Runtime knobs.
#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    seconds: u64,
    /// Only the workloads whose name contains this.
    only: Option<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut options = Options {
        rounds: 3,
        seconds: 10,
        only: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--seconds" => options.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--only" => options.only = Some(value("--only")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_args(std::env::args().skip(1))?;
    // On Ctrl-C or SIGTERM the run future is dropped, so every process is stopped by Drop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = run(options) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

/// Where pgbench connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    PgBouncer,
    Juris,
    JurisMasking,
    JurisUnrecorded,
}

const TARGETS: [Target; 5] = [
    Target::Direct,
    Target::PgBouncer,
    Target::Juris,
    Target::JurisMasking,
    Target::JurisUnrecorded,
];
const N: usize = TARGETS.len();

/// How pgbench reaches one target, and which process to charge CPU to.
#[derive(Clone)]
struct Endpoint {
    port: u16,
    user: String,
    dbname: String,
    password: String,
    pid: Option<u32>,
}

/// One pgbench workload.
struct Workload {
    name: &'static str,
    args: Vec<String>,
}

fn workloads(script: &Path) -> Vec<Workload> {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut wide = args(&["-M", "simple", "-c", "4", "-j", "2", "-f"]);
    wide.push(script.display().to_string());
    vec![
        Workload {
            name: "select-only, simple (-S -M simple -c 8)",
            args: args(&["-S", "-M", "simple", "-c", "8", "-j", "2"]),
        },
        Workload {
            name: "select-only, extended (-S -M extended -c 8)",
            args: args(&["-S", "-M", "extended", "-c", "8", "-j", "2"]),
        },
        Workload {
            name: "select-only, prepared (-S -M prepared -c 8)",
            args: args(&["-S", "-M", "prepared", "-c", "8", "-j", "2"]),
        },
        Workload {
            name: "TPC-B-like, simple (-M simple -c 8)",
            args: args(&["-M", "simple", "-c", "8", "-j", "2"]),
        },
        Workload {
            name: "10,000-row SELECT (-f, -c 4)",
            args: wide,
        },
    ]
}

/// What one pgbench run reported.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    tps: f64,
    transactions: u64,
    /// Proxy CPU time per transaction, when there is a proxy.
    cpu_us_per_txn: Option<f64>,
}

async fn run(options: Options) -> anyhow::Result<()> {
    // Before anything runs that would need stopping: this may take minutes.
    eprintln!("building juris (release) ...");
    tokio::task::spawn_blocking(juris_testkit::gateway::juris_binary).await??;
    let ca = DemoCa::new("Juris benchmark CA")?;
    let cert = ca.issue_server(&["localhost".to_string()], true)?;
    let tls = ServerTls {
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
    };

    eprintln!("starting PostgreSQL (TLS required) ...");
    let pg = TempPostgres::start(TempPostgresOptions {
        auth: UpstreamAuth::ScramSha256,
        tls: Some(tls.clone()),
        superuser_password: format!("bench-{:08x}", std::process::id()),
        extra_conf: vec![("max_connections".into(), "200".into())],
    })
    .await?;
    let direct = Endpoint {
        port: pg.port,
        user: pg.superuser.clone(),
        dbname: "postgres".into(),
        password: pg.password.clone(),
        pid: None,
    };
    eprintln!("pgbench -i -s {SCALE} ...");
    pgbench(&direct, &["-i", "-s", SCALE, "-q"], INIT_LIMIT).await?;

    eprintln!("starting PgBouncer (session mode) ...");
    let bouncer = PgBouncer::start(&PgBouncerOptions {
        upstream_host: pg.host.clone(),
        upstream_port: pg.port,
        user: pg.superuser.clone(),
        password: pg.password.clone(),
        pool_mode: "session".into(),
        pool_size: 20,
        client_tls: tls,
    })
    .await?;
    let pgbouncer = Endpoint {
        port: bouncer.port,
        user: pg.superuser.clone(),
        dbname: "postgres".into(),
        password: pg.password.clone(),
        pid: bouncer.pid(),
    };

    eprintln!("starting juris node ...");
    let issuer = DevIssuer::start(AUDIENCE).await?;
    let token = issuer.mint(
        "bench",
        "bench@example.test",
        &["dba"],
        Duration::from_secs(7200),
    )?;
    let mut spec = GatewaySpec::new(issuer.issuer(), AUDIENCE);
    for name in [CONNECTION, MASKED_CONNECTION, UNRECORDED_CONNECTION] {
        spec.connections.push(ConnectionSpec {
            name: name.into(),
            host: pg.host.clone(),
            port: pg.port,
            database: "postgres".into(),
            user: pg.superuser.clone(),
            password: Some(pg.password.clone()),
            tls_ca_pem: Some(ca.ca_cert_pem.clone()),
            settings: if name == UNRECORDED_CONNECTION {
                vec!["recording = \"off\"".into()]
            } else {
                Vec::new()
            },
        });
        spec.roles.push(RoleSpec::new(name, "dba", name, "admin"));
    }
    spec.mask_hash_key = Some("benchmark-only-mask-key-0123456789".into());
    spec.connection_settings
        .push((MASKED_CONNECTION.into(), MASKING.into()));
    let gateway = GatewayProcess::start(&spec).await?;
    let juris = Endpoint {
        port: gateway.address.port(),
        user: "bench".into(),
        dbname: CONNECTION.into(),
        password: token.clone(),
        pid: gateway.pid(),
    };
    let juris_masking = Endpoint {
        dbname: MASKED_CONNECTION.into(),
        password: token.clone(),
        ..juris.clone()
    };
    let juris_unrecorded = Endpoint {
        dbname: UNRECORDED_CONNECTION.into(),
        password: token,
        ..juris.clone()
    };

    let script_dir = tempfile::tempdir()?;
    let script = script_dir.path().join("wide.sql");
    std::fs::write(&script, WIDE_SCRIPT)?;
    let workloads: Vec<Workload> = workloads(&script)
        .into_iter()
        .filter(|w| {
            options
                .only
                .as_ref()
                .is_none_or(|only| w.name.contains(only.as_str()))
        })
        .collect();
    if workloads.is_empty() {
        bail!("no workload matches --only");
    }
    let ticks = clock_ticks()?;

    // results[workload][target] = one entry per round.
    let mut failures: Vec<[usize; N]> = vec![[0; N]; workloads.len()];
    let mut results: Vec<[Vec<RunResult>; N]> =
        workloads.iter().map(|_| Default::default()).collect();
    let seconds = options.seconds.to_string();
    for round in 0..options.rounds {
        for (w, workload) in workloads.iter().enumerate() {
            // Rotate the order so no target always runs first (cold) or last.
            for i in 0..TARGETS.len() {
                let t = (i + round + w) % TARGETS.len();
                let endpoint = match TARGETS[t] {
                    Target::Direct => &direct,
                    Target::PgBouncer => &pgbouncer,
                    Target::Juris => &juris,
                    Target::JurisMasking => &juris_masking,
                    Target::JurisUnrecorded => &juris_unrecorded,
                };
                let mut args: Vec<&str> = vec!["-n", "-T", &seconds];
                args.extend(workload.args.iter().map(String::as_str));
                let limit = Duration::from_secs(options.seconds) + STALL_GRACE;
                let result = match measure(endpoint, &args, ticks, limit).await {
                    Ok(result) => result,
                    Err(e) => {
                        // Keep going: one failing target must not hide the rest.
                        eprintln!(
                            "round {}/{}  {} via {:?} FAILED: {e:#}",
                            round + 1,
                            options.rounds,
                            workload.name,
                            TARGETS[t]
                        );
                        failures[w][t] += 1;
                        continue;
                    }
                };
                eprintln!(
                    "round {}/{}  {:<45} {:<9?} tps {:>10.1}{}",
                    round + 1,
                    options.rounds,
                    workload.name,
                    TARGETS[t],
                    result.tps,
                    result
                        .cpu_us_per_txn
                        .map(|us| format!("  proxy cpu {us:.1} µs/txn"))
                        .unwrap_or_default()
                );
                results[w][t].push(result);
            }
        }
    }

    println!("{}", table(&workloads, &results, &failures, &options));
    // For investigating stalls: the node's whole log, on request.
    if let Some(path) = std::env::var_os("PGBENCH_COMPARE_NODE_LOG") {
        std::fs::write(&path, gateway.log())
            .with_context(|| format!("cannot write {}", Path::new(&path).display()))?;
    }
    drop(gateway);
    drop(bouncer);
    drop(pg);
    Ok(())
}

/// Run pgbench against `endpoint` and charge the proxy's CPU to it.
async fn measure(
    endpoint: &Endpoint,
    args: &[&str],
    ticks: f64,
    limit: Duration,
) -> anyhow::Result<RunResult> {
    let before = endpoint.pid.map(cpu_ticks).transpose()?;
    let output = pgbench(endpoint, args, limit).await?;
    let after = endpoint.pid.map(cpu_ticks).transpose()?;
    let tps = parse_field(&output, "tps = ", " (without initial connection time)")
        .context("no tps line in pgbench output")?;
    let transactions: u64 =
        parse_field(&output, "number of transactions actually processed: ", "\n")
            .context("no transaction count in pgbench output")?;
    let cpu_us_per_txn = match (before, after) {
        (Some(before), Some(after)) if transactions > 0 => {
            Some((after - before) as f64 / ticks * 1e6 / transactions as f64)
        }
        _ => None,
    };
    Ok(RunResult {
        tps,
        transactions,
        cpu_us_per_txn,
    })
}

/// Run pgbench with TLS required; its stdout on success. Killed after `limit`.
async fn pgbench(endpoint: &Endpoint, args: &[&str], limit: Duration) -> anyhow::Result<String> {
    let run = tokio::process::Command::new("pgbench")
        .args(args)
        .args(["-h", "127.0.0.1", "-p", &endpoint.port.to_string()])
        .args(["-U", &endpoint.user, &endpoint.dbname])
        .env("PGPASSWORD", &endpoint.password)
        .env("PGSSLMODE", "require")
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, run)
        .await
        .with_context(|| format!("pgbench stalled: no result after {} s", limit.as_secs()))?
        .context("cannot run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench {args:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The value between `prefix` and `suffix` in pgbench's report.
fn parse_field<T: std::str::FromStr>(output: &str, prefix: &str, suffix: &str) -> Option<T> {
    let rest = &output[output.find(prefix)? + prefix.len()..];
    rest[..rest.find(suffix)?].trim().parse().ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

/// Fields 14 and 15 of /proc/<pid>/stat; the command name (field 2) may
/// contain spaces and parentheses, so count from the last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> anyhow::Result<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("cannot run getconf CLK_TCK")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn table(
    workloads: &[Workload],
    results: &[[Vec<RunResult>; N]],
    failures: &[[usize; N]],
    options: &Options,
) -> String {
    let fmt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".into(),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut out = format!(
        "Median of {} rounds, {} s each, TLS on every hop. \"Masking\" is the same node on a \
         connection that masks all four columns of pgbench_accounts; \"Unrecorded\" the same node \
         on a connection with `recording = \"off\"` (Juris and Masking record every session).\n\n\
         | Workload | Direct TPS | PgBouncer TPS | Juris TPS | Masking TPS | Unrecorded TPS | Juris/direct | PgBouncer/direct | Juris/PgBouncer | Masking/direct | Masking/PgBouncer | Juris/Unrecorded | Juris CPU µs/txn | Masking CPU µs/txn | Unrecorded CPU µs/txn | PgBouncer CPU µs/txn |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        options.rounds, options.seconds
    );
    let mut notes = String::new();
    for ((workload, runs), failed) in workloads.iter().zip(results).zip(failures) {
        for (t, target) in TARGETS.iter().enumerate() {
            if failed[t] > 0 {
                notes.push_str(&format!(
                    "- {}: {} of {} runs via {target:?} failed or stalled (> {} s); medians use the rest.\n",
                    workload.name,
                    failed[t],
                    options.rounds,
                    (Duration::from_secs(options.seconds) + STALL_GRACE).as_secs()
                ));
            }
        }
        let tps = |t: usize| median(runs[t].iter().map(|r| r.tps).collect());
        let cpu = |t: usize| median(runs[t].iter().filter_map(|r| r.cpu_us_per_txn).collect());
        let (direct, bouncer, juris, masking, unrecorded) =
            (tps(0), tps(1), tps(2), tps(3), tps(4));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            workload.name,
            fmt(direct, 0),
            fmt(bouncer, 0),
            fmt(juris, 0),
            fmt(masking, 0),
            fmt(unrecorded, 0),
            fmt(ratio(juris, direct), 2),
            fmt(ratio(bouncer, direct), 2),
            fmt(ratio(juris, bouncer), 2),
            fmt(ratio(masking, direct), 2),
            fmt(ratio(masking, bouncer), 2),
            fmt(ratio(juris, unrecorded), 2),
            fmt(cpu(2), 1),
            fmt(cpu(3), 1),
            fmt(cpu(4), 1),
            fmt(cpu(1), 1),
        ));
    }
    let transactions: u64 = results
        .iter()
        .flat_map(|r| r.iter().flatten())
        .map(|r| r.transactions)
        .sum();
    out.push_str(&format!("\n{transactions} transactions in all.\n"));
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_report_and_proc_stat() {
        let report = "transaction type: <builtin: select only>\n\
                      number of transactions actually processed: 123456\n\
                      number of failed transactions: 0 (0.000%)\n\
                      tps = 12345.678901 (without initial connection time)\n";
        assert_eq!(
            parse_field::<f64>(report, "tps = ", " (without initial connection time)"),
            Some(12345.678901)
        );
        assert_eq!(
            parse_field::<u64>(report, "number of transactions actually processed: ", "\n"),
            Some(123456)
        );
        let stat = "4242 (juris (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

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
