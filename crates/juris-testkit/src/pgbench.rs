//! pgbench as a benchmark driver, shared by the comparison binaries
//! (`pgbench-compare`, `relay-compare`): command-line options, one pgbench
//! run against an endpoint (its report parsed, the CPU time of the proxy
//! processes read from `/proc/<pid>/stat` around it), rounds in which the
//! order of the targets rotates, medians, and the helpers their markdown
//! tables are made of. Loopback only; TLS is required on every run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use juris_demo::certs::DemoCa;

use crate::gateway::ConnectionSpec;
use crate::postgres::{ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth};

/// pgbench's scale factor for every benchmark (1,000,000 accounts).
pub const SCALE: &str = "10";
/// How long `pgbench -i` may take.
const INIT_LIMIT: Duration = Duration::from_secs(600);

/// How much longer than `-T` a run may take before it counts as stalled.
pub const STALL_GRACE: Duration = Duration::from_secs(30);

/// Runtime knobs common to the comparison binaries.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub seconds: u64,
    /// Only the workloads whose name contains this.
    pub only: Option<String>,
    /// Only these targets (endpoint names, e.g. `Juris,JurisBare`): more
    /// rounds of a pair in the same time, for a tighter paired ratio.
    pub targets: Option<Vec<String>>,
    /// `--proxy-core`: the proxies on a core of their own (see
    /// [`CoreLayout`]).
    pub proxy_core: bool,
}

impl Options {
    /// `[--rounds N] [--seconds S] [--only TEXT] [--targets A,B]
    /// [--proxy-core]` (defaults 3 and 10);
    /// `-h` prints `usage` and exits.
    pub fn parse(args: impl IntoIterator<Item = String>, usage: &str) -> anyhow::Result<Options> {
        let mut options = Options {
            rounds: 3,
            seconds: 10,
            only: None,
            targets: None,
            proxy_core: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value\n{usage}"))
            };
            match arg.as_str() {
                "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds")?,
                "--seconds" => {
                    options.seconds = value("--seconds")?.parse().context("--seconds")?
                }
                "--only" => options.only = Some(value("--only")?),
                "--targets" => {
                    options.targets = Some(
                        value("--targets")?
                            .split(',')
                            .map(|t| t.trim().to_string())
                            .filter(|t| !t.is_empty())
                            .collect(),
                    )
                }
                "--proxy-core" => options.proxy_core = true,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{usage}"),
            }
        }
        if options.rounds == 0 || options.seconds == 0 {
            bail!("--rounds and --seconds must be at least 1");
        }
        Ok(options)
    }

    /// The workloads `--only` selects (all without it); an error if none.
    pub fn select(&self, workloads: Vec<Workload>) -> anyhow::Result<Vec<Workload>> {
        let selected: Vec<Workload> = workloads
            .into_iter()
            .filter(|w| {
                self.only
                    .as_ref()
                    .is_none_or(|only| w.name.contains(only.as_str()))
            })
            .collect();
        if selected.is_empty() {
            bail!("no workload matches --only");
        }
        Ok(selected)
    }

    /// Whether `--targets` (if given) names this endpoint.
    pub fn runs(&self, endpoint: &str) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|targets| targets.iter().any(|t| t == endpoint))
    }

    /// Where the processes ran, for a report's preamble.
    pub fn layout(&self) -> &'static str {
        if self.proxy_core {
            "The proxies ran on a core of their own (`--proxy-core`), PostgreSQL and pgbench on \
             the others."
        } else {
            "Every process shared every core."
        }
    }

    /// How long one run may take before it is killed.
    pub fn limit(&self) -> Duration {
        Duration::from_secs(self.seconds) + STALL_GRACE
    }
}

/// Which cores the processes of a benchmark run on, with `--proxy-core`:
/// the proxies (PgBouncer, `juris node`) on the last core this process may
/// use, and everything else (PostgreSQL, pgbench, this process) on the
/// others. That is the production layout in small, where the gateway has
/// hosts of its own: what a proxy costs shows as the latency and the
/// throughput it adds or takes, not as CPU taken from PostgreSQL and
/// pgbench (which the default, shared layout measures: every cycle a proxy
/// spends there is one the database does not get).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreLayout {
    /// `taskset` list of the cores for PostgreSQL, pgbench and the driver.
    pub clients: String,
    /// The core for the proxies.
    pub proxies: String,
}

impl CoreLayout {
    /// The layout over the cores this process may run on (at least two).
    pub fn detect() -> anyhow::Result<CoreLayout> {
        let status = std::fs::read_to_string("/proc/self/status")
            .context("cannot read /proc/self/status")?;
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list in /proc/self/status")?;
        CoreLayout::over(allowed.trim())
    }

    /// The layout over a cpu list such as `0-3,6`.
    pub fn over(list: &str) -> anyhow::Result<CoreLayout> {
        let mut cpus = Vec::new();
        for part in list.split(',').filter(|p| !p.is_empty()) {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let first: usize = first
                .parse()
                .with_context(|| format!("cpu list {list:?}"))?;
            let last: usize = last.parse().with_context(|| format!("cpu list {list:?}"))?;
            cpus.extend(first..=last);
        }
        let Some((proxy, clients)) = cpus.split_last().filter(|(_, rest)| !rest.is_empty()) else {
            bail!("--proxy-core needs at least two cores; this process may use {list:?}");
        };
        Ok(CoreLayout {
            clients: clients
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
            proxies: proxy.to_string(),
        })
    }

    /// With `--proxy-core`: the layout, with this process (every thread)
    /// already on the clients' cores, so that what it starts afterwards
    /// (PostgreSQL, pgbench) starts there too; `None` without.
    pub fn for_driver(options: &Options) -> anyhow::Result<Option<CoreLayout>> {
        if !options.proxy_core {
            return Ok(None);
        }
        let layout = CoreLayout::detect()?;
        eprintln!(
            "PostgreSQL and pgbench on cores {}, the proxies on core {}",
            layout.clients, layout.proxies
        );
        taskset(&layout.clients, std::process::id())?;
        Ok(Some(layout))
    }

    /// Move a proxy (every thread; those it starts later follow) to the
    /// proxies' core.
    pub fn pin_proxy(&self, pid: Option<u32>) -> anyhow::Result<()> {
        taskset(&self.proxies, pid.context("the proxy has exited")?)
    }
}

fn taskset(cpus: &str, pid: u32) -> anyhow::Result<()> {
    let output = std::process::Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
        .output()
        .context("cannot run taskset (util-linux)")?;
    if !output.status.success() {
        bail!(
            "taskset --cpu-list {cpus} --pid {pid}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One pgbench workload: a name for the table and pgbench's arguments
/// (besides `-n -T <seconds>` and the connection).
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub args: Vec<String>,
}

impl Workload {
    pub fn new(name: &str, args: &[&str]) -> Workload {
        Workload {
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A process whose CPU time is charged to a target's transactions.
#[derive(Debug, Clone)]
pub struct Charged {
    pub label: String,
    pub pid: u32,
}

/// How pgbench reaches one target (libpq parameters, passed as `-h`, `-p`,
/// `-U`, the database argument and `PG*` variables), and which processes
/// to charge CPU to. No `Debug`: it holds the password.
#[derive(Clone)]
pub struct Endpoint {
    /// The target's name in progress lines and notes.
    pub name: String,
    /// libpq `host`: an address, or the name TLS verifies and sends as SNI.
    pub host: String,
    /// libpq `hostaddr`, where to connect when `host` is a name.
    pub hostaddr: Option<String>,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: String,
    /// libpq `sslmode` (`require` unless the certificate is verified).
    pub sslmode: String,
    /// libpq `sslrootcert`, for `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    pub charged: Vec<Charged>,
}

impl Endpoint {
    /// `127.0.0.1:port` with `sslmode=require`, charging no process.
    pub fn loopback(name: &str, port: u16, user: &str, dbname: &str, password: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: "127.0.0.1".into(),
            hostaddr: None,
            port,
            user: user.into(),
            dbname: dbname.into(),
            password: password.into(),
            sslmode: "require".into(),
            sslrootcert: None,
            charged: Vec::new(),
        }
    }

    /// Also charge `pid`'s CPU time (nothing when the process is gone).
    pub fn charging(mut self, label: &str, pid: Option<u32>) -> Endpoint {
        if let Some(pid) = pid {
            self.charged.push(Charged {
                label: label.into(),
                pid,
            });
        }
        self
    }
}

/// What one pgbench run reported.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The round (0-based) it ran in.
    pub round: usize,
    /// `tps = … (without initial connection time)`, or with `-C`
    /// `(including reconnection times)`.
    pub tps: f64,
    /// `latency average = … ms`.
    pub latency_ms: Option<f64>,
    /// `average connection time = … ms` (pgbench prints it with `-C`).
    pub connection_ms: Option<f64>,
    pub transactions: u64,
    /// CPU time per transaction of each of the endpoint's charged processes.
    pub cpu_us_per_txn: Vec<Option<f64>>,
}

/// Run pgbench against `endpoint` and charge its processes' CPU to it.
pub async fn measure(
    endpoint: &Endpoint,
    args: &[&str],
    ticks: f64,
    limit: Duration,
    round: usize,
) -> anyhow::Result<RunResult> {
    let cpu = || -> anyhow::Result<Vec<u64>> {
        endpoint.charged.iter().map(|c| cpu_ticks(c.pid)).collect()
    };
    let before = cpu()?;
    let output = pgbench(endpoint, args, limit).await?;
    let after = cpu()?;
    let tps = parse_tps(&output).context("no tps line in pgbench output")?;
    let transactions: u64 =
        parse_field(&output, "number of transactions actually processed: ", "\n")
            .context("no transaction count in pgbench output")?;
    let cpu_us_per_txn = before
        .iter()
        .zip(&after)
        .map(|(before, after)| {
            (transactions > 0).then(|| (after - before) as f64 / ticks * 1e6 / transactions as f64)
        })
        .collect();
    Ok(RunResult {
        round,
        tps,
        latency_ms: parse_field(&output, "latency average = ", " ms"),
        connection_ms: parse_field(&output, "average connection time = ", " ms"),
        transactions,
        cpu_us_per_txn,
    })
}

/// Run pgbench with TLS; its stdout on success. Killed after `limit`.
pub async fn pgbench(
    endpoint: &Endpoint,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new("pgbench");
    command
        .args(args)
        .args(["-h", &endpoint.host, "-p", &endpoint.port.to_string()])
        .args(["-U", &endpoint.user, &endpoint.dbname])
        .env("PGPASSWORD", &endpoint.password)
        .env("PGSSLMODE", &endpoint.sslmode)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSERVICE")
        .env_remove("PGHOSTADDR")
        .env_remove("PGSSLROOTCERT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(hostaddr) = &endpoint.hostaddr {
        command.env("PGHOSTADDR", hostaddr);
    }
    if let Some(root) = &endpoint.sslrootcert {
        command.env("PGSSLROOTCERT", root);
    }
    let output = tokio::time::timeout(limit, command.output())
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

/// Every workload against every endpoint for `-T options.seconds`, round
/// by round; the order of the endpoints rotates every workload and round
/// so that none always runs first (cold) or last. A failed or stalled run
/// is reported on stderr and counted, and the rest go on.
pub async fn run_rounds(
    workloads: &[Workload],
    endpoints: &[Endpoint],
    options: &Options,
) -> anyhow::Result<Measurements> {
    if let Some(targets) = &options.targets
        && let Some(unknown) = targets
            .iter()
            .find(|t| !endpoints.iter().any(|e| &e.name == *t))
    {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        bail!(
            "--targets: no target is named {unknown:?} (the targets are {})",
            names.join(", ")
        );
    }
    let ticks = clock_ticks()?;
    let n = endpoints.len();
    let mut measurements = Measurements {
        runs: vec![vec![Vec::new(); n]; workloads.len()],
        failures: vec![vec![0; n]; workloads.len()],
    };
    let seconds = options.seconds.to_string();
    for round in 0..options.rounds {
        for (w, workload) in workloads.iter().enumerate() {
            for i in 0..n {
                let t = (i + round + w) % n;
                let endpoint = &endpoints[t];
                if !options.runs(&endpoint.name) {
                    continue;
                }
                let mut args: Vec<&str> = vec!["-n", "-T", &seconds];
                args.extend(workload.args.iter().map(String::as_str));
                let result = match measure(endpoint, &args, ticks, options.limit(), round).await {
                    Ok(result) => result,
                    Err(e) => {
                        // Keep going: one failing target must not hide the rest.
                        eprintln!(
                            "round {}/{}  {} via {} FAILED: {e:#}",
                            round + 1,
                            options.rounds,
                            workload.name,
                            endpoint.name
                        );
                        measurements.failures[w][t] += 1;
                        continue;
                    }
                };
                eprintln!(
                    "round {}/{}  {:<45} {:<9} tps {:>10.1}{}",
                    round + 1,
                    options.rounds,
                    workload.name,
                    endpoint.name,
                    result.tps,
                    cpu_summary(endpoint, &result)
                );
                measurements.runs[w][t].push(result);
            }
        }
    }
    Ok(measurements)
}

/// `  proxy cpu 12.3 µs/txn` for one charged process; each one labelled
/// when there are several.
fn cpu_summary(endpoint: &Endpoint, result: &RunResult) -> String {
    let values: Vec<(&str, f64)> = endpoint
        .charged
        .iter()
        .zip(&result.cpu_us_per_txn)
        .filter_map(|(c, us)| Some((c.label.as_str(), (*us)?)))
        .collect();
    match values.as_slice() {
        [] => String::new(),
        [(_, us)] if endpoint.charged.len() == 1 => format!("  proxy cpu {us:.1} µs/txn"),
        _ => format!(
            "  proxy cpu {} µs/txn",
            values
                .iter()
                .map(|(label, us)| format!("{label} {us:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The successful runs of [`run_rounds`], indexed `[workload][endpoint]`.
#[derive(Debug, Clone, Default)]
pub struct Measurements {
    /// One entry per round that succeeded.
    pub runs: Vec<Vec<Vec<RunResult>>>,
    /// How many rounds failed or stalled.
    pub failures: Vec<Vec<usize>>,
}

impl Measurements {
    /// Median TPS over rounds.
    pub fn tps(&self, w: usize, t: usize) -> Option<f64> {
        median(self.runs[w][t].iter().map(|r| r.tps).collect())
    }

    /// Median of pgbench's latency average over rounds, in ms.
    pub fn latency_ms(&self, w: usize, t: usize) -> Option<f64> {
        median(
            self.runs[w][t]
                .iter()
                .filter_map(|r| r.latency_ms)
                .collect(),
        )
    }

    /// Median of pgbench's average connection time over rounds, in ms.
    pub fn connection_ms(&self, w: usize, t: usize) -> Option<f64> {
        median(
            self.runs[w][t]
                .iter()
                .filter_map(|r| r.connection_ms)
                .collect(),
        )
    }

    /// Median CPU time per transaction of the endpoint's `process`-th
    /// charged process.
    pub fn cpu_us_per_txn(&self, w: usize, t: usize, process: usize) -> Option<f64> {
        median(
            self.runs[w][t]
                .iter()
                .filter_map(|r| *r.cpu_us_per_txn.get(process)?)
                .collect(),
        )
    }

    /// `value(a) / value(b)` of each round in which both ran.
    pub fn per_round_ratios(
        &self,
        w: usize,
        a: usize,
        b: usize,
        value: impl Fn(&RunResult) -> Option<f64>,
    ) -> Vec<f64> {
        self.runs[w][a]
            .iter()
            .filter_map(|ra| {
                let rb = self.runs[w][b].iter().find(|rb| rb.round == ra.round)?;
                ratio(value(ra), value(rb))
            })
            .collect()
    }

    /// Transactions of every run.
    pub fn transactions(&self) -> u64 {
        self.runs
            .iter()
            .flat_map(|r| r.iter().flatten())
            .map(|r| r.transactions)
            .sum()
    }

    /// What every report ends with: the transaction count and the failed
    /// runs.
    pub fn footer(
        &self,
        workloads: &[Workload],
        endpoints: &[Endpoint],
        options: &Options,
    ) -> String {
        let mut out = format!("\n{} transactions in all.\n", self.transactions());
        let notes = self.failure_notes(workloads, endpoints, options);
        if !notes.is_empty() {
            out.push('\n');
            out.push_str(&notes);
        }
        out
    }

    /// One markdown bullet per workload and endpoint with failed runs.
    fn failure_notes(
        &self,
        workloads: &[Workload],
        endpoints: &[Endpoint],
        options: &Options,
    ) -> String {
        let mut notes = String::new();
        for (workload, failed) in workloads.iter().zip(&self.failures) {
            for (endpoint, &failed) in endpoints.iter().zip(failed) {
                if failed > 0 {
                    notes.push_str(&format!(
                        "- {}: {} of {} runs via {} failed or stalled (> {} s); medians use the rest.\n",
                        workload.name,
                        failed,
                        options.rounds,
                        endpoint.name,
                        options.limit().as_secs()
                    ));
                }
            }
        }
        notes
    }
}

/// The PostgreSQL every benchmark measures: TLS required with a throwaway
/// CA's certificate for `localhost`, SCRAM, 200 connections, initialised
/// with `pgbench -i -s` [`SCALE`].
pub struct BenchPostgres {
    pub pg: TempPostgres,
    pub ca: DemoCa,
    /// Its server certificate and key (PgBouncer's client side reuses them).
    pub tls: ServerTls,
    /// It, reached directly as the superuser.
    pub direct: Endpoint,
}

impl BenchPostgres {
    pub async fn start(ca_name: &str) -> anyhow::Result<BenchPostgres> {
        let ca = DemoCa::new(ca_name)?;
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
        let direct = Endpoint::loopback("Direct", pg.port, &pg.superuser, "postgres", &pg.password);
        eprintln!("pgbench -i -s {SCALE} ...");
        pgbench(&direct, &["-i", "-s", SCALE, "-q"], INIT_LIMIT).await?;
        Ok(BenchPostgres {
            pg,
            ca,
            tls,
            direct,
        })
    }

    /// A gateway connection `name` to its `postgres` database as the
    /// superuser, verifying its certificate.
    pub fn connection(&self, name: &str) -> ConnectionSpec {
        ConnectionSpec {
            name: name.into(),
            host: self.pg.host.clone(),
            port: self.pg.port,
            database: "postgres".into(),
            user: self.pg.superuser.clone(),
            password: Some(self.pg.password.clone()),
            tls_ca_pem: Some(self.ca.ca_cert_pem.clone()),
            settings: Vec::new(),
        }
    }
}

/// pgbench's built-in select-only script, 8 clients on 2 threads, in each
/// query protocol.
pub fn select_only_workloads() -> Vec<Workload> {
    ["simple", "extended", "prepared"]
        .into_iter()
        .map(|mode| {
            Workload::new(
                &format!("select-only, {mode} (-S -M {mode} -c 8)"),
                &["-S", "-M", mode, "-c", "8", "-j", "2"],
            )
        })
        .collect()
}

/// Run `bench` until it ends, Ctrl-C or SIGTERM. On a signal the future is
/// dropped, so every process it started is stopped by `Drop`.
pub async fn until_interrupted(
    bench: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = bench => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

/// The lowest and highest 1-minute load average seen while it runs
/// (`/proc/loadavg`, sampled every 5 s); stops when dropped.
pub struct LoadWatch {
    seen: std::sync::Arc<std::sync::Mutex<Option<(f64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadWatch {
    pub fn start() -> LoadWatch {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let writer = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(load) = load_average() {
                    let mut seen = writer.lock().unwrap_or_else(|p| p.into_inner());
                    let (low, high) = seen.unwrap_or((load, load));
                    *seen = Some((low.min(load), high.max(load)));
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        LoadWatch { seen, task }
    }

    /// `(lowest, highest)` so far.
    pub fn range(&self) -> Option<(f64, f64)> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LoadWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// pgbench's `tps = …` line: `(without initial connection time)`, or with
/// `-C`, where every transaction reconnects, `(including reconnection times)`.
pub fn parse_tps(output: &str) -> Option<f64> {
    parse_field(output, "tps = ", " (without initial connection time)")
        .or_else(|| parse_field(output, "tps = ", " (including reconnection times)"))
}

/// The value between `prefix` and `suffix` in pgbench's report.
pub fn parse_field<T: std::str::FromStr>(output: &str, prefix: &str, suffix: &str) -> Option<T> {
    let rest = &output[output.find(prefix)? + prefix.len()..];
    rest[..rest.find(suffix)?].trim().parse().ok()
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

/// Fields 14 and 15 of /proc/<pid>/stat; the command name (field 2) may
/// contain spaces and parentheses, so count from the last ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks() -> anyhow::Result<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("cannot run getconf CLK_TCK")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
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

/// `a / b` when both are known and `b` is positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A table cell: the value with `digits` decimals, or `n/a`.
pub fn cell(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_report_and_proc_stat() {
        let report = "transaction type: <builtin: select only>\n\
                      number of transactions actually processed: 123456\n\
                      number of failed transactions: 0 (0.000%)\n\
                      latency average = 0.648 ms\n\
                      average connection time = 3.217 ms\n\
                      tps = 12345.678901 (without initial connection time)\n";
        assert_eq!(
            parse_field::<f64>(report, "tps = ", " (without initial connection time)"),
            Some(12345.678901)
        );
        assert_eq!(
            parse_field::<u64>(report, "number of transactions actually processed: ", "\n"),
            Some(123456)
        );
        assert_eq!(
            parse_field::<f64>(report, "latency average = ", " ms"),
            Some(0.648)
        );
        assert_eq!(
            parse_field::<f64>(report, "average connection time = ", " ms"),
            Some(3.217)
        );
        let reconnecting = "latency average = 4.120 ms\n\
                            tps = 1941.7 (including reconnection times)\n";
        assert_eq!(parse_tps(reconnecting), Some(1941.7));
        assert_eq!(parse_tps(report), Some(12345.678901));
        let stat = "4242 (juris (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(cell(Some(1.234), 2), "1.23");
        assert_eq!(cell(None, 2), "n/a");
    }

    #[test]
    fn the_proxy_core_is_the_last_allowed_one() {
        assert_eq!(
            CoreLayout::over("0-1").unwrap(),
            CoreLayout {
                clients: "0".into(),
                proxies: "1".into()
            }
        );
        assert_eq!(
            CoreLayout::over("2-4,7").unwrap(),
            CoreLayout {
                clients: "2,3,4".into(),
                proxies: "7".into()
            }
        );
        let one = CoreLayout::over("3").unwrap_err().to_string();
        assert!(one.contains("at least two cores"), "{one}");
        assert!(CoreLayout::over("0-x").is_err());
        let flag = Options::parse(["--proxy-core".to_string()], "usage").unwrap();
        assert!(flag.proxy_core);
        assert!(!Options::parse(Vec::new(), "usage").unwrap().proxy_core);
    }

    /// The layout moves a real process, every thread of it, to the
    /// proxies' core.
    #[test]
    fn pinning_moves_every_thread_of_a_process() {
        let Ok(layout) = CoreLayout::detect() else {
            // One core: nothing to lay out (`detect` says so to the user).
            return;
        };
        let allowed = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap()
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        layout.pin_proxy(Some(child.id())).unwrap();
        assert_eq!(allowed(child.id()), layout.proxies);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(layout.pin_proxy(None).is_err());
    }

    #[test]
    fn selects_workloads_and_pairs_rounds() {
        let options = Options::parse(["--only".to_string(), "prep".to_string()], "usage").unwrap();
        let all = vec![
            Workload::new("simple", &["-S"]),
            Workload::new("prepared", &["-S", "-M", "prepared"]),
        ];
        let selected = options.select(all.clone()).unwrap();
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].args, ["-S", "-M", "prepared"]);
        let none = Options::parse(["--only".to_string(), "x".to_string()], "usage").unwrap();
        assert!(none.select(all).is_err());
        let pair = Options::parse(
            ["--targets".to_string(), "Juris, JurisBare".to_string()],
            "usage",
        )
        .unwrap();
        assert!(pair.runs("Juris") && pair.runs("JurisBare"));
        assert!(!pair.runs("Direct") && !pair.runs("JurisUnrecorded"));
        assert!(
            options.runs("Direct"),
            "without --targets every target runs"
        );

        let run = |round, latency| RunResult {
            round,
            tps: 1.0,
            latency_ms: Some(latency),
            connection_ms: None,
            transactions: 10,
            cpu_us_per_txn: vec![Some(latency * 10.0)],
        };
        let m = Measurements {
            // Endpoint 1 failed in round 1: round 2 pairs with round 2.
            runs: vec![vec![
                vec![run(0, 1.0), run(1, 1.0), run(2, 2.0)],
                vec![run(0, 1.1), run(2, 2.4)],
            ]],
            failures: vec![vec![0, 1]],
        };
        let ratios = m.per_round_ratios(0, 1, 0, |r| r.latency_ms);
        assert_eq!(ratios.len(), 2);
        assert!((ratios[0] - 1.1).abs() < 1e-9 && (ratios[1] - 1.2).abs() < 1e-9);
        assert_eq!(m.latency_ms(0, 0), Some(1.0));
        assert_eq!(m.cpu_us_per_txn(0, 1, 0), Some(17.5));
        assert_eq!(m.cpu_us_per_txn(0, 1, 1), None);
        assert_eq!(m.transactions(), 50);
    }
}
