//! A real PgBouncer in front of a test PostgreSQL, for side-by-side
//! benchmarks: client TLS required, TLS to the server, one wildcard
//! database entry, the upstream superuser in its auth file.
//!
//! As root PgBouncer refuses to start, so it runs as the `postgres` system
//! user (like the test PostgreSQL); its temp dir is chowned to it. It is our
//! direct child, in the foreground; `Drop` kills it and removes the dir.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::gateway::free_port;
use anyhow::{Context, bail};
use juris_demo::postgres::{ServerTls, lookup_user};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The packaged binary (Debian installs it in /usr/sbin).
pub fn pgbouncer_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("pgbouncer");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("/usr/sbin/pgbouncer")
}

/// How to start PgBouncer.
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// The upstream PostgreSQL (it must accept TLS).
    pub upstream_host: String,
    pub upstream_port: u16,
    /// The one user clients log in as; PgBouncer uses the same name and
    /// password upstream.
    pub user: String,
    pub password: String,
    /// `session`, `transaction` or `statement`.
    pub pool_mode: String,
    /// Server connections per database/user pair.
    pub pool_size: u32,
    /// Certificate and key clients see (client TLS is required).
    pub client_tls: ServerTls,
}

/// A running PgBouncer on 127.0.0.1. Stopped, its directory removed, on drop.
pub struct PgBouncer {
    pub host: String,
    pub port: u16,
    log_path: PathBuf,
    child: Option<std::process::Child>,
    // Declared last: removed after the process has stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBouncer")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A value in pgbouncer.ini's `[databases]` connection strings and auth
/// file: double quotes doubled.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn write_private(path: &Path, contents: &str, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

impl PgBouncer {
    /// Write the configuration, start PgBouncer, wait until it accepts TCP.
    pub async fn start(options: &PgBouncerOptions) -> anyhow::Result<PgBouncer> {
        let dir = tempfile::Builder::new().prefix("juris-pgb-").tempdir()?;
        // The dir we just created is owned by our effective uid.
        let user =
            if std::fs::metadata(dir.path())?.uid() == 0 {
                Some(lookup_user("postgres").context(
                    "running as root and there is no `postgres` user to run pgbouncer as",
                )?)
            } else {
                None
            };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let path = |name: &str| dir.path().join(name);
        write_private(&path("server.pem"), &options.client_tls.cert_pem, user)?;
        write_private(&path("server.key"), &options.client_tls.key_pem, user)?;
        write_private(
            &path("userlist.txt"),
            &format!("{} {}\n", quoted(&options.user), quoted(&options.password)),
            user,
        )?;
        let port = free_port()?;
        let log_path = path("pgbouncer.log");
        let ini = format!(
            "[databases]\n\
             * = host={host} port={upstream_port}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             logfile = {log}\n\
             auth_type = scram-sha-256\n\
             auth_file = {auth}\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             client_tls_sslmode = require\n\
             client_tls_cert_file = {cert}\n\
             client_tls_key_file = {key}\n\
             server_tls_sslmode = require\n",
            host = options.upstream_host,
            upstream_port = options.upstream_port,
            log = log_path.display(),
            auth = path("userlist.txt").display(),
            pool_mode = options.pool_mode,
            pool_size = options.pool_size,
            cert = path("server.pem").display(),
            key = path("server.key").display(),
        );
        let ini_path = path("pgbouncer.ini");
        write_private(&ini_path, &ini, user)?;

        let mut command = std::process::Command::new(pgbouncer_binary());
        command
            .arg(&ini_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().context("cannot start pgbouncer")?;
        let mut bouncer = PgBouncer {
            host: "127.0.0.1".into(),
            port,
            log_path,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = bouncer.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "pgbouncer exited during startup ({status}); log:\n{}",
                    bouncer.log()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(bouncer);
            }
            if Instant::now() > deadline {
                bail!(
                    "pgbouncer did not listen within {}s; log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    bouncer.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PgBouncer's log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // PgBouncer keeps no state worth a graceful shutdown.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
