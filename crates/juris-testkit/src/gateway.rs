//! Real `juris node` processes for end-to-end tests: a deployment file and
//! certificates in a temp dir, the binary built by cargo, the listening
//! address read from the node's own log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use juris_demo::certs::DemoCa;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One upstream connection in a test deployment.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// CA for upstream verify-full TLS; the name verified is `host`.
    pub tls_ca_pem: Option<String>,
    /// Extra `key = value` lines of the `[[connection]]` entry itself
    /// (before its sub-tables), e.g. `recording = "best_effort"`.
    pub settings: Vec<String>,
}

/// A role binding in a test deployment.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub name: String,
    pub groups: Vec<String>,
    pub connections: Vec<String>,
    pub level: String,
    /// Extra `key = value` lines of the `[[role]]` entry, e.g.
    /// `access = "jit"` and a `review = { ... }` inline table.
    pub settings: Vec<String>,
}

impl RoleSpec {
    pub fn new(name: &str, group: &str, connection: &str, level: &str) -> Self {
        RoleSpec {
            name: name.into(),
            groups: vec![group.into()],
            connections: vec![connection.into()],
            level: level.into(),
            settings: Vec::new(),
        }
    }

    /// A `jit` role: `group` may request it; `reviewers` approve.
    pub fn jit(name: &str, group: &str, connection: &str, level: &str, reviewers: &str) -> Self {
        let mut role = RoleSpec::new(name, group, connection, level);
        role.settings.push("access = \"jit\"".into());
        role.settings.push(format!(
            "review = {{ reviewers = [{reviewers:?}], approvals = 1, max_duration = \"8h\" }}"
        ));
        role
    }
}

/// What to put in the deployment file.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    pub issuer: String,
    pub audience: String,
    pub connections: Vec<ConnectionSpec>,
    pub roles: Vec<RoleSpec>,
    /// Extra `key = value` lines for the `[node]` table.
    pub node_settings: Vec<String>,
    /// Extra `key = value` lines for the `[[region]]` table (region `test`).
    pub region_settings: Vec<String>,
    /// The region's masking hash key: written to a file next to the
    /// deployment and referenced as `mask_hash_key = { file = ... }`.
    pub mask_hash_key: Option<String>,
    /// Extra TOML appended to the `[[connection]]` entry of the named
    /// connection, after its upstream, e.g. a `[connection.masking]` table
    /// with `[[connection.masking.column]]` entries.
    pub connection_settings: Vec<(String, String)>,
    /// Whole top-level entries appended to the file (e.g. another
    /// `[[region]]` and its `[[connection]]`s).
    pub extra_tables: Vec<String>,
    /// `node.id` (`test-1` by default).
    pub node_id: String,
    /// The node's region, declared by the first `[[region]]` table, and
    /// the region of every connection without a `region` setting (`test`
    /// by default).
    pub region: String,
    /// The node's server certificate, key and the CA that signed it; a
    /// fresh CA and a `localhost` certificate when `None`.
    pub server_tls: Option<ServerTlsFiles>,
}

/// PEM files of a node's client-facing TLS.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// One node of a test region: its process, Raft id and control API.
pub struct RegionNode {
    pub raft_id: u64,
    /// `127.0.0.1:port` of the Raft peer transport (what `juris cluster
    /// add-learner` takes).
    pub raft: String,
    /// `127.0.0.1:port` of the control API.
    pub control: String,
    pub gateway: GatewayProcess,
}

/// A free TCP port on 127.0.0.1 for a process started later to listen on
/// (see [`juris_demo::ports::free_port`]).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(juris_demo::ports::free_port()?)
}

/// Start `size` nodes of one region that form a Raft group over mutual TLS
/// (peer certificates from one test CA written into `dir`). Members of
/// `admin_group` may manage membership.
pub async fn start_region(
    spec: &GatewaySpec,
    size: u64,
    dir: &Path,
    admin_group: &str,
) -> anyhow::Result<Vec<RegionNode>> {
    TestRegion::new(size, dir, admin_group)?.start(spec).await
}

/// A test region's shared material: the peer CA (kept so nodes can be added
/// later), the initial members' ports, and where node files go. Node `id`
/// keeps its Raft state in `dir/node-{id}`, so a node restarted with the
/// same config file finds its log again.
pub struct TestRegion {
    peer_ca: DemoCa,
    ca_file: PathBuf,
    dir: PathBuf,
    admin_group: String,
    /// Initial voters: (raft id, Raft port, control port).
    members: Vec<(u64, u16, u16)>,
    /// `node.cluster.snapshot_every` for every node (the node's default
    /// when `None`).
    pub snapshot_every: Option<u64>,
}

impl TestRegion {
    /// Plan a region of `size` initial voters (ids 1..=size) in `dir`.
    pub fn new(size: u64, dir: &Path, admin_group: &str) -> anyhow::Result<TestRegion> {
        let peer_ca = DemoCa::new("Juris test peer CA")?;
        let ca_file = dir.join("peer-ca.pem");
        std::fs::write(&ca_file, &peer_ca.ca_cert_pem)?;
        let mut members = Vec::new();
        for id in 1..=size {
            members.push((id, free_port()?, free_port()?));
        }
        Ok(TestRegion {
            peer_ca,
            ca_file,
            dir: dir.to_path_buf(),
            admin_group: admin_group.into(),
            members,
            snapshot_every: None,
        })
    }

    /// `127.0.0.1:port` of each initial voter's control API.
    pub fn control_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|(_, _, control)| format!("127.0.0.1:{control}"))
            .collect()
    }

    /// Start the initial voters; the lowest id initializes the group.
    pub async fn start(&self, spec: &GatewaySpec) -> anyhow::Result<Vec<RegionNode>> {
        self.start_each(&vec![spec.clone(); self.members.len()])
            .await
    }

    /// Start the initial voters, voter `i` from `specs[i]` (nodes that
    /// differ in more than their Raft table, e.g. their relay listener).
    pub async fn start_each(&self, specs: &[GatewaySpec]) -> anyhow::Result<Vec<RegionNode>> {
        if specs.len() != self.members.len() {
            bail!(
                "{} specs for a region of {} voters",
                specs.len(),
                self.members.len()
            );
        }
        let mut starting = Vec::new();
        for (&(id, raft, control), spec) in self.members.iter().zip(specs) {
            let node_spec = self.node_spec(spec, id, raft, control)?;
            starting.push(Self::launch(node_spec, id, raft, control));
        }
        futures_util::future::try_join_all(starting).await
    }

    /// Start one more node, `raft_id`, that is not an initial voter: its
    /// config lists the initial voters (so it knows their control APIs) but
    /// not itself, so it never initializes a group of its own and waits to be
    /// added with `juris cluster add-learner <raft_id> <node.raft>`.
    pub async fn start_learner(
        &self,
        spec: &GatewaySpec,
        raft_id: u64,
    ) -> anyhow::Result<RegionNode> {
        if self.members.iter().any(|(id, _, _)| *id == raft_id) {
            bail!("raft id {raft_id} is already an initial member");
        }
        let (raft, control) = (free_port()?, free_port()?);
        let node_spec = self.node_spec(spec, raft_id, raft, control)?;
        Self::launch(node_spec, raft_id, raft, control).await
    }

    async fn launch(
        spec: GatewaySpec,
        raft_id: u64,
        raft: u16,
        control: u16,
    ) -> anyhow::Result<RegionNode> {
        Ok(RegionNode {
            raft_id,
            raft: format!("127.0.0.1:{raft}"),
            control: format!("127.0.0.1:{control}"),
            gateway: GatewayProcess::start(&spec).await?,
        })
    }

    /// `spec` plus node `id`'s data dir and `[node.cluster]` table, with a
    /// peer certificate of its own.
    fn node_spec(
        &self,
        spec: &GatewaySpec,
        id: u64,
        raft: u16,
        control: u16,
    ) -> anyhow::Result<GatewaySpec> {
        let member_list = self
            .members
            .iter()
            .map(|(id, raft, control)| {
                format!(
                    "{{ id = {id}, address = \"127.0.0.1:{raft}\", control = \"127.0.0.1:{control}\" }}"
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let peer = self.peer_ca.issue_peer(&["localhost".to_string()])?;
        let cert = self.dir.join(format!("peer-{id}.pem"));
        let key = self.dir.join(format!("peer-{id}.key"));
        std::fs::write(&cert, &peer.cert_pem)?;
        std::fs::write(&key, &peer.key_pem)?;
        let data_dir = self.dir.join(format!("node-{id}"));
        let mut node_spec = spec.clone();
        if !spec.node_settings.iter().any(|l| l.starts_with("data_dir")) {
            node_spec.node_settings.push(format!(
                "data_dir = {}",
                quote(&data_dir.display().to_string())
            ));
        }
        // One object store for the whole region.
        if !spec.region_settings.iter().any(|l| l.starts_with("store")) {
            node_spec.region_settings.push(format!(
                "store = {{ kind = \"local\", path = {} }}",
                quote(&self.dir.join("store").display().to_string())
            ));
        }
        node_spec.node_settings.push(format!(
            "cluster = {{ raft_id = {id}, listen = \"127.0.0.1:{raft}\", control_listen = \"127.0.0.1:{control}\", admin_groups = [{:?}], lease_bound = \"5s\",{} tls = {{ cert_file = {}, key_file = {}, ca_file = {} }}, member = [{member_list}] }}",
            self.admin_group,
            self.snapshot_every
                .map(|n| format!(" snapshot_every = {n},"))
                .unwrap_or_default(),
            quote(&cert.display().to_string()),
            quote(&key.display().to_string()),
            quote(&self.ca_file.display().to_string()),
        ));
        Ok(node_spec)
    }
}

/// A running `juris node`.
pub struct GatewayProcess {
    pub address: SocketAddr,
    /// CA that signed the gateway's certificate (for sslrootcert).
    pub ca_file: PathBuf,
    pub config_file: PathBuf,
    log: Arc<Mutex<String>>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Path of the `juris` binary: `JURIS_BIN` when set (the test script builds
/// it once), else built here once per process, in the profile of the
/// current executable (`--release` when it lives under `release/`, so
/// benchmarks measure an optimised gateway; debug for tests).
pub fn juris_binary() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("JURIS_BIN") {
        return Ok(PathBuf::from(binary));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Test binaries live in <target>/<profile>/deps/, other binaries
            // in <target>/<profile>/; juris in <target>/<profile>/.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut profile_dir = exe.parent().ok_or("cannot locate the target directory")?;
            if profile_dir.file_name().is_some_and(|name| name == "deps") {
                profile_dir = profile_dir
                    .parent()
                    .ok_or("cannot locate the target directory")?;
            }
            let release = profile_dir
                .file_name()
                .is_some_and(|name| name == "release");
            let target_dir = profile_dir
                .parent()
                .ok_or("cannot locate the target directory")?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "-q", "-p", "juris-cli", "--bin", "juris"]);
            if release {
                build.arg("--release");
            }
            let status = build
                .current_dir(workspace_root())
                // Build where we look, also when run without cargo's environment.
                .env("CARGO_TARGET_DIR", target_dir)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("cargo build -p juris-cli failed".into());
            }
            let binary = profile_dir.join("juris");
            if binary.exists() {
                Ok(binary)
            } else {
                Err(format!("{} was not built", binary.display()))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

impl GatewaySpec {
    /// A spec with the given IdP and no connections yet.
    pub fn new(issuer: &str, audience: &str) -> Self {
        GatewaySpec {
            issuer: issuer.into(),
            audience: audience.into(),
            connections: Vec::new(),
            roles: Vec::new(),
            node_settings: Vec::new(),
            region_settings: Vec::new(),
            mask_hash_key: None,
            connection_settings: Vec::new(),
            extra_tables: Vec::new(),
            node_id: "test-1".into(),
            region: "test".into(),
            server_tls: None,
        }
    }

    /// Write the deployment file (and the secret files it references) into
    /// `dir`; returns the file's path. The TLS files it names are not
    /// created: enough for `juris check`, not for `juris node`.
    pub fn write_config(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let config_file = dir.join("juris.toml");
        std::fs::write(&config_file, self.render(dir)?)?;
        Ok(config_file)
    }

    fn render(&self, dir: &Path) -> anyhow::Result<String> {
        let (cert_file, key_file) = match &self.server_tls {
            Some(files) => (files.cert_file.clone(), files.key_file.clone()),
            None => (dir.join("server.pem"), dir.join("server.key")),
        };
        let mut toml = format!(
            "[node]\nid = {}\nregion = {}\nlisten = \"127.0.0.1:0\"\ntls = {{ cert_file = {}, key_file = {} }}\n",
            quote(&self.node_id),
            quote(&self.region),
            quote(&cert_file.display().to_string()),
            quote(&key_file.display().to_string()),
        );
        for line in &self.node_settings {
            toml.push_str(line);
            toml.push('\n');
        }
        if !self.node_settings.iter().any(|l| l.starts_with("data_dir")) {
            toml.push_str(&format!(
                "data_dir = {}\n",
                quote(&dir.join("data").display().to_string())
            ));
        }
        toml.push_str(&format!(
            "\n[identity]\nissuer = {}\naudience = {}\nleeway_secs = 5\njwks_refresh_secs = 1\n\n[[region]]\nname = {}\n",
            quote(&self.issuer),
            quote(&self.audience),
            quote(&self.region),
        ));
        if let Some(key) = &self.mask_hash_key {
            let file = dir.join(format!("region-{}.mask-hash-key", self.region));
            std::fs::write(&file, key)?;
            toml.push_str(&format!(
                "mask_hash_key = {{ file = {} }}\n",
                quote(&file.display().to_string())
            ));
        }
        for line in &self.region_settings {
            toml.push_str(line);
            toml.push('\n');
        }
        if !self.region_settings.iter().any(|l| l.starts_with("store")) {
            toml.push_str(&format!(
                "store = {{ kind = \"local\", path = {} }}\n",
                quote(&dir.join("store").display().to_string())
            ));
        }
        for c in &self.connections {
            toml.push_str(&format!(
                "\n[[connection]]\nname = {}\nkind = \"postgres\"\n{}{}[connection.upstream]\nhost = {}\nport = {}\ndatabase = {}\nuser = {}\n",
                quote(&c.name),
                if c.settings.iter().any(|l| l.starts_with("region")) {
                    String::new()
                } else {
                    format!("region = {}\n", quote(&self.region))
                },
                c.settings
                    .iter()
                    .map(|line| format!("{line}\n"))
                    .collect::<String>(),
                quote(&c.host),
                c.port,
                quote(&c.database),
                quote(&c.user)
            ));
            if let Some(password) = &c.password {
                let file = dir.join(format!("{}.password", c.name));
                std::fs::write(&file, password)?;
                toml.push_str(&format!(
                    "password = {{ file = {} }}\n",
                    quote(&file.display().to_string())
                ));
            }
            if let Some(ca) = &c.tls_ca_pem {
                let file = dir.join(format!("{}.ca.pem", c.name));
                std::fs::write(&file, ca)?;
                toml.push_str(&format!(
                    "tls = {{ mode = \"verify-full\", ca_file = {} }}\n",
                    quote(&file.display().to_string())
                ));
            }
            for (name, extra) in &self.connection_settings {
                if name == &c.name {
                    toml.push('\n');
                    toml.push_str(extra.trim());
                    toml.push('\n');
                }
            }
        }
        for table in &self.extra_tables {
            toml.push('\n');
            toml.push_str(table.trim());
            toml.push('\n');
        }
        for r in &self.roles {
            toml.push_str(&format!(
                "\n[[role]]\nname = {}\ngroups = {:?}\nconnections = {:?}\nlevel = {}\n",
                quote(&r.name),
                r.groups,
                r.connections,
                quote(&r.level)
            ));
            for line in &r.settings {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        Ok(toml)
    }
}

impl GatewayProcess {
    /// Write the deployment, start `juris node`, wait until it listens.
    pub async fn start(spec: &GatewaySpec) -> anyhow::Result<GatewayProcess> {
        let dir = tempfile::tempdir()?;
        let ca_file = match &spec.server_tls {
            Some(files) => files.ca_file.clone(),
            None => {
                let ca = DemoCa::new("Juris test CA")?;
                let server = ca.issue_server(&["localhost".to_string()], true)?;
                std::fs::write(dir.path().join("server.pem"), &server.cert_pem)?;
                std::fs::write(dir.path().join("server.key"), &server.key_pem)?;
                let ca_file = dir.path().join("ca.pem");
                std::fs::write(&ca_file, &ca.ca_cert_pem)?;
                ca_file
            }
        };
        let config_file = spec.write_config(dir.path())?;
        let log = Arc::new(Mutex::new(String::new()));
        let (child, address) = Self::spawn(&config_file, &log).await?;
        Ok(GatewayProcess {
            address,
            ca_file,
            config_file,
            log,
            child,
            _dir: dir,
        })
    }

    /// Run `juris node --config <config_file>`, append its stderr to `log`
    /// and wait until it says where it listens for PostgreSQL clients.
    async fn spawn(
        config_file: &Path,
        log: &Arc<Mutex<String>>,
    ) -> anyhow::Result<(Child, SocketAddr)> {
        let mut child = Command::new(juris_binary()?)
            .arg("node")
            .arg("--config")
            .arg(config_file)
            .env("JURIS_LOG", "info,juris_proxy_pg=debug,juris::audit=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start juris node")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let log_writer = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut address_tx = Some(address_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("postgres_address=").nth(1)
                    && let Some(tx) = address_tx.take()
                {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut log = log_writer.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        match tokio::time::timeout(Duration::from_secs(60), address_rx).await {
            Ok(Ok(address)) => Ok((child, address.parse().context("bad listen address in log")?)),
            _ => {
                let _ = child.kill().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "juris node did not start:\n{}",
                    log.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        }
    }

    /// SIGKILL the node and reap it: a crash, with no chance to flush or
    /// say goodbye to peers.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .context("cannot kill the juris node")
    }

    /// Start the node again from the same config file (same data dir, ports
    /// and certificates) after it exited (see [`Self::kill`], or
    /// [`Self::signal`] and [`Self::wait`]). The PostgreSQL listener is
    /// `127.0.0.1:0`, so [`Self::address`] changes. The new process's
    /// output is appended to the same [`Self::log`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("juris node (pid {:?}) is still running", self.pid());
        }
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_str("--- restarted by the test ---\n");
        let (child, address) = Self::spawn(&self.config_file, &self.log).await?;
        self.child = child;
        self.address = address;
        Ok(())
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGTERM`) to the node.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("node already exited")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// Wait for the node to exit; returns its exit code.
    pub async fn wait(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .context("node did not exit in time")??;
        Ok(status.code())
    }

    /// A libpq connection string for `dbname` through this gateway with verify-full.
    pub fn conninfo(&self, dbname: &str, user: &str, token: &str) -> String {
        format!(
            "host=localhost hostaddr={} port={} dbname={dbname} user={user} sslmode=verify-full sslrootcert={} password={token}",
            self.address.ip(),
            self.address.port(),
            self.ca_file.display()
        )
    }

    /// Peak resident memory of the node process, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
