//! A throwaway, real PostgreSQL server: initdb into a temp dir, its own port
//! on 127.0.0.1, the client authentication method of your choice, optional
//! TLS, and fake customer data to look at.
//!
//! As root (CI, containers) the server runs as the `postgres` system user,
//! because initdb refuses to run as root; the temp dir is chowned to it.
//! The postmaster is our direct child, never daemonized through `pg_ctl`:
//! [`TempPostgres::stop`] and `Drop` (also while a test panics) send it
//! SIGINT (fast shutdown), wait, and remove the directory. A small watchdog
//! process holds the read end of a pipe we keep open; if this process dies
//! without running `Drop` (SIGKILL, abort), the pipe closes and the
//! watchdog shuts the server down, so the server never outlives us.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::DemoError;

/// The number of rows `juris demo` seeds.
pub const DEFAULT_CUSTOMERS: usize = 1000;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

/// How clients over TCP must authenticate (the pg_hba.conf method). The
/// superuser password is stored to match: MD5 for `Md5`, SCRAM otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuth {
    ScramSha256,
    Md5,
    /// Cleartext password.
    Password,
    Trust,
}

impl UpstreamAuth {
    /// Every method, for tests that try them all.
    pub const ALL: [UpstreamAuth; 4] = [
        UpstreamAuth::ScramSha256,
        UpstreamAuth::Md5,
        UpstreamAuth::Password,
        UpstreamAuth::Trust,
    ];

    /// The pg_hba.conf method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            UpstreamAuth::ScramSha256 => "scram-sha-256",
            UpstreamAuth::Md5 => "md5",
            UpstreamAuth::Password => "password",
            UpstreamAuth::Trust => "trust",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            UpstreamAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// A server certificate (chain) and key for the upstream, PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct TempPostgresOptions {
    pub auth: UpstreamAuth,
    /// With TLS, TCP clients must use it (`hostssl` lines only).
    pub tls: Option<ServerTls>,
    pub superuser_password: String,
    /// Extra server settings, passed as `-c name=value`.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for TempPostgresOptions {
    fn default() -> Self {
        TempPostgresOptions {
            auth: UpstreamAuth::ScramSha256,
            tls: None,
            superuser_password: format!("pg-{:016x}", rand::random::<u64>()),
            extra_conf: Vec::new(),
        }
    }
}

/// A running server. Stopped, and its directory removed, on drop.
pub struct TempPostgres {
    /// Always `127.0.0.1`.
    pub host: String,
    pub port: u16,
    /// Always `postgres`.
    pub superuser: String,
    /// The superuser's password (for TCP clients).
    pub password: String,
    pub data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    auth: UpstreamAuth,
    user: Option<(u32, u32)>,
    child: Option<std::process::Child>,
    watchdog: Option<std::process::Child>,
    // Declared last: removed after the server has stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("superuser", &self.superuser)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL 15 program: PATH first (/usr/local/bin links there), then
/// the Debian package directory.
pub fn pg_bin(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    Path::new("/usr/lib/postgresql/15/bin").join(name)
}

/// uid/gid of a system user, from `getent` (NSS) or /etc/passwd.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let parse = |line: &str| {
        let fields: Vec<&str> = line.trim().split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
    };
    if let Ok(out) = std::process::Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        && out.status.success()
        && let Some(ids) = parse(&String::from_utf8_lossy(&out.stdout))
    {
        return Some(ids);
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(parse)
}

/// Who the server runs as: None (ourselves) unless we are root, then the
/// `postgres` user. `probe` is a directory we just created: its owner is
/// our effective uid (no unsafe `geteuid` needed).
fn server_user(probe: &Path) -> Result<Option<(u32, u32)>, DemoError> {
    if std::fs::metadata(probe)?.uid() != 0 {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| {
        DemoError::Postgres(
            "running as root and there is no `postgres` user to run the server as".into(),
        )
    })
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<(), DemoError> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// A SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted.
pub fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn send_signal(signal: &str, pid: u32) {
    let _ = std::process::Command::new("sh")
        .args(["-c", &format!("kill -s {signal} {pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A watchdog for a child process `pid` that must not outlive us: it sends
/// `pid` SIGINT (then SIGKILL 15 s later) once its stdin closes, which
/// happens when the returned `Child` is dropped or this process dies in any
/// way. Kill the watchdog (`Child::kill`) to disarm it before stopping
/// `pid` yourself.
pub fn spawn_watchdog(pid: u32) -> Result<std::process::Child, DemoError> {
    let script = "read _ignored; kill -s INT \"$0\" 2>/dev/null || exit 0; \
                  sleep 15; kill -s KILL \"$0\" 2>/dev/null; exit 0";
    Ok(std::process::Command::new("sh")
        .args(["-c", script, &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

impl TempPostgres {
    /// initdb, start, set the superuser password, wait until it answers
    /// over both the unix socket and TCP.
    pub async fn start(options: TempPostgresOptions) -> Result<TempPostgres, DemoError> {
        let dir = tempfile::Builder::new().prefix("juris-pg-").tempdir()?;
        let user = server_user(dir.path())?;
        chown(dir.path(), user)?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)?;
        chown(&socket_dir, user)?;

        let mut initdb = tokio::process::Command::new(pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--no-sync", "--locale=C", "--no-instructions"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let init = initdb.output().await?;
        if !init.status.success() {
            return Err(DemoError::Postgres(format!(
                "initdb failed ({}): {}",
                init.status,
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }

        let method = options.auth.hba_method();
        let host = if options.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        std::fs::write(
            data_dir.join("pg_hba.conf"),
            format!(
                "# juris TempPostgres\n\
                 local all all trust\n\
                 {host} all all 127.0.0.1/32 {method}\n\
                 {host} all all ::1/128 {method}\n"
            ),
        )?;

        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            (
                "unix_socket_directories".into(),
                socket_dir.display().to_string(),
            ),
            (
                "password_encryption".into(),
                options.auth.password_encryption().into(),
            ),
            ("fsync".into(), "off".into()),
            ("synchronous_commit".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
            ("max_connections".into(), "200".into()),
        ];
        if let Some(tls) = &options.tls {
            let (cert, key) = (data_dir.join("server.crt"), data_dir.join("server.key"));
            std::fs::write(&cert, &tls.cert_pem)?;
            std::fs::write(&key, &tls.key_pem)?;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            chown(&cert, user)?;
            chown(&key, user)?;
            settings.push(("ssl".into(), "on".into()));
            settings.push(("ssl_cert_file".into(), cert.display().to_string()));
            settings.push(("ssl_key_file".into(), key.display().to_string()));
        }
        settings.extend(options.extra_conf.iter().cloned());

        let log_path = dir.path().join("postgres.log");
        let mut server = TempPostgres {
            host: "127.0.0.1".into(),
            port: 0,
            superuser: "postgres".into(),
            password: options.superuser_password.clone(),
            data_dir,
            socket_dir,
            log_path,
            auth: options.auth,
            user,
            child: None,
            watchdog: None,
            _dir: dir,
        };
        // The free port can be taken between our probe and the server's
        // bind (tests start servers in parallel): retry with another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = crate::ports::free_port()?;
            server.spawn(&settings)?;
            match server.wait_ready().await {
                Ok(()) => break,
                Err(error) => {
                    server.shutdown();
                    let taken = server.log_tail().contains("could not bind");
                    if !taken || attempt >= START_ATTEMPTS {
                        return Err(error);
                    }
                }
            }
        }
        server
            .psql(&format!(
                "alter role postgres password {};",
                sql_literal(&options.superuser_password)
            ))
            .await?;
        Ok(server)
    }

    fn spawn(&mut self, settings: &[(String, String)]) -> Result<(), DemoError> {
        let log = std::fs::File::create(&self.log_path)?;
        let mut postgres = std::process::Command::new(pg_bin("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string());
        for (name, value) in settings {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        if let Some((uid, gid)) = self.user {
            postgres.uid(uid).gid(gid);
        }
        let child = postgres
            .current_dir(&self.socket_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = Some(spawn_watchdog(pid)?);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), DemoError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(DemoError::Postgres(format!(
                    "postgres exited during startup ({status}); log tail:\n{}",
                    self.log_tail()
                )));
            }
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .is_ok();
            if tcp && self.psql("select 1").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError::Postgres(format!(
                    "postgres did not accept connections within {}s; log tail:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The TCP client authentication method.
    pub fn auth(&self) -> UpstreamAuth {
        self.auth
    }

    /// uid/gid the server runs as, when not ourselves (we are root).
    pub fn os_user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// Run SQL as the superuser over the unix socket with `psql -X -A -t`
    /// (stops at the first error); returns the unaligned, tuples-only output.
    pub async fn psql(&self, sql: &str) -> Result<String, DemoError> {
        let mut child = tokio::process::Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-U", "postgres", "-d", "postgres", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-f", "-"])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .env_remove("PGSSLMODE")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| DemoError::Postgres("psql has no stdin".into()))?;
        let sql = sql.to_owned();
        // Write concurrently with reading: large scripts would otherwise
        // dead-lock against a full stdout pipe.
        let writer = tokio::spawn(async move {
            let result = stdin.write_all(sql.as_bytes()).await;
            drop(stdin);
            result
        });
        let output = child.wait_with_output().await?;
        let written = writer
            .await
            .map_err(|e| DemoError::Postgres(format!("psql writer: {e}")))?;
        if output.status.success() {
            written?;
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(DemoError::Postgres(format!(
                "psql: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Create a login role with a password (stored with the server's
    /// `password_encryption`, i.e. matching the configured method).
    pub async fn create_role(&self, name: &str, password: &str) -> Result<(), DemoError> {
        self.psql(&format!(
            "create role {} login password {};",
            sql_ident(name),
            sql_literal(password)
        ))
        .await
        .map(|_| ())
    }

    /// Fast shutdown, wait, then remove the directory.
    pub async fn stop(self) -> Result<(), DemoError> {
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .map_err(|e| DemoError::Postgres(format!("stopping: {e}")))
    }

    fn shutdown(&mut self) {
        // Kill the watchdog first (SIGKILL: it must not act), then stop the
        // server ourselves.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                send_signal("INT", child.id());
                let deadline = Instant::now() + STOP_TIMEOUT;
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Luhn check digit for a digit string.
pub fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Whether a number (digits, optional separators) passes the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    digits.len() >= 2
        && luhn_check_digit(&digits[..digits.len() - 1])
            == u32::from(digits.as_bytes()[digits.len() - 1] - b'0')
}

/// Whether `ssn` is a well-formed US SSN: `AAA-GG-SSSS`, area not 000, 666
/// or 9xx, group not 00, serial not 0000.
pub fn ssn_valid(ssn: &str) -> bool {
    let parts: Vec<&str> = ssn.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    digits(area, 3)
        && digits(group, 2)
        && digits(serial, 4)
        && area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000"
}

const FIRST: &[&str] = &[
    "Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Morgan", "Riley",
];
const LAST: &[&str] = &[
    "Example",
    "Sample",
    "Placeholder",
    "Fakerson",
    "Testwood",
    "Mockridge",
    "Dummett",
    "Stubbs",
    "Fixture",
    "Specimen",
];

/// One fake customer row. Deterministic in `i`; nothing in it is real.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCustomer {
    pub full_name: String,
    pub email: String,
    pub ssn: String,
    pub card_number: String,
    pub phone: String,
}

/// The `i`th fake customer: valid-looking SSN, a Luhn-valid card number on
/// a test prefix (Visa 4111, Mastercard 5555, Amex 3782), an example.com
/// email and a +1-555-01xx phone number.
pub fn fake_customer(i: usize) -> FakeCustomer {
    let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
    // area 100..=664: never 000, 666 or 9xx.
    let area = 100 + (i * 37) % 565;
    let ssn = format!(
        "{area:03}-{:02}-{:04}",
        1 + (i * 13) % 99,
        1 + (i * 7919) % 9999
    );
    let (prefix, len) = match i % 3 {
        0 => ("4111", 16),
        1 => ("5555", 16),
        _ => ("3782", 15),
    };
    let width = len - prefix.len() - 1;
    let body = format!(
        "{prefix}{:0width$}",
        (i as u64).wrapping_mul(7_919_317) % 10u64.pow(width as u32),
    );
    let card_number = format!("{body}{}", luhn_check_digit(&body));
    FakeCustomer {
        full_name: format!("{first} {last}"),
        email: format!(
            "{}.{}{i}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        ssn,
        card_number,
        phone: format!("+1-555-01{:02}", i % 100),
    }
}

/// Create `public.customers` and fill it with `rows` fake customers
/// ([`fake_customer`] 0..rows).
pub async fn seed_customers(pg: &TempPostgres, rows: usize) -> Result<(), DemoError> {
    let mut sql = String::from(
        "create table public.customers (\n  id serial primary key,\n  full_name text not null,\n  \
         email text not null,\n  ssn text not null,\n  card_number text not null,\n  \
         phone text not null,\n  created_at timestamptz not null default now()\n);\n",
    );
    for start in (0..rows).step_by(500) {
        sql.push_str(
            "insert into public.customers (full_name, email, ssn, card_number, phone) values\n",
        );
        let values: Vec<String> = (start..rows.min(start + 500))
            .map(|i| {
                let c = fake_customer(i);
                format!(
                    "({}, {}, {}, {}, {})",
                    sql_literal(&c.full_name),
                    sql_literal(&c.email),
                    sql_literal(&c.ssn),
                    sql_literal(&c.card_number),
                    sql_literal(&c.phone)
                )
            })
            .collect();
        sql.push_str(&values.join(",\n"));
        sql.push_str(";\n");
    }
    sql.push_str("analyze public.customers;\n");
    pg.psql(&sql).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_data_looks_valid() {
        let mut emails = std::collections::HashSet::new();
        for i in 0..10_000 {
            let c = fake_customer(i);
            assert!(luhn_valid(&c.card_number), "{}", c.card_number);
            assert!(ssn_valid(&c.ssn), "{}", c.ssn);
            assert!(c.email.ends_with("@example.com"));
            assert!(emails.insert(c.email));
            assert!(c.phone.starts_with("+1-555-01") && c.phone.len() == 11);
        }
        assert!(luhn_valid("4111111111111111") && !luhn_valid("4111111111111112"));
        assert!(luhn_valid("378282246310005"));
        assert!(!ssn_valid("000-12-3456") && !ssn_valid("666-12-3456"));
        assert!(!ssn_valid("912-12-3456") && !ssn_valid("123-00-3456"));
        assert!(!ssn_valid("123-45-0000") && ssn_valid("123-45-6789"));
    }

    #[test]
    fn watchdog_interrupts_the_server_when_we_go_away() {
        let mut server = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let watchdog = spawn_watchdog(server.id()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(server.try_wait().unwrap().is_none());
        // What the kernel does when this process dies: our pipe end closes.
        drop(watchdog);
        // SIGINT first; a shell that starts the suite in the background
        // makes its children ignore SIGINT, and then the SIGKILL 15 s later
        // is what ends the server.
        let deadline = Instant::now() + Duration::from_secs(25);
        while server.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the watchdog did not act");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(sql_ident("a\"b"), "\"a\"\"b\"");
    }
}
