//! A throwaway, real PostgreSQL server: initdb into a temp dir, its own port
//! on 127.0.0.1, the authentication method of your choice, optional TLS.
//!
//! As root (CI, containers) the server runs as the `postgres` system user,
//! because initdb refuses to run as root. The postmaster is our child
//! process, never daemonized, so it cannot outlive us: `stop` and `Drop`
//! send it SIGINT (fast shutdown) and wait.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::DemoError;

/// How clients over TCP must authenticate (pg_hba.conf method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    ScramSha256,
    Md5,
    Password,
    Trust,
}

impl UpstreamAuth {
    fn hba_method(&self) -> &'static str {
        match self {
            UpstreamAuth::ScramSha256 => "scram-sha-256",
            UpstreamAuth::Md5 => "md5",
            UpstreamAuth::Password => "password",
            UpstreamAuth::Trust => "trust",
        }
    }
}

/// A server certificate for the upstream.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct TempPostgresOptions {
    pub auth: UpstreamAuth,
    pub tls: Option<ServerTls>,
    pub superuser_password: String,
    /// Extra `-c name=value` settings.
    pub extra_conf: Vec<(String, String)>,
}

/// A running server. Stopped and deleted on drop.
pub struct TempPostgres {
    pub host: String,
    pub port: u16,
    pub superuser: String,
    pub password: String,
    pub data_dir: PathBuf,
    socket_dir: PathBuf,
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

fn bin(name: &str) -> PathBuf {
    let packaged = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if packaged.exists() { packaged } else { PathBuf::from(name) }
}

/// uid and gid of the `postgres` system user, when we are root.
fn run_as() -> Result<Option<(u32, u32)>, DemoError> {
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1);
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for name in ["postgres", "nobody"] {
        if let Some(line) = passwd.lines().find(|l| l.starts_with(&format!("{name}:"))) {
            let fields: Vec<&str> = line.split(':').collect();
            if let (Some(uid), Some(gid)) = (fields.get(2).and_then(|s| s.parse().ok()), fields.get(3).and_then(|s| s.parse().ok())) {
                return Ok(Some((uid, gid)));
            }
        }
    }
    Err(DemoError::Postgres("running as root and no `postgres` user exists to run the server as".into()))
}

fn command(program: &str, user: Option<(u32, u32)>) -> std::process::Command {
    let mut command = std::process::Command::new(bin(program));
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> Result<u16, DemoError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl TempPostgres {
    /// initdb, start, set the superuser password, wait until it answers.
    pub async fn start(options: TempPostgresOptions) -> Result<TempPostgres, DemoError> {
        let user = run_as()?;
        let dir = tempfile::Builder::new().prefix("juris-pg-").tempdir()?;
        let data_dir = dir.path().join("data");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let init = command("initdb", user)
            .args(["-D"])
            .arg(&data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])
            .stdout(Stdio::null())
            .output()?;
        if !init.status.success() {
            return Err(DemoError::Postgres(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr))));
        }
        let method = options.auth.hba_method();
        std::fs::write(
            data_dir.join("pg_hba.conf"),
            format!("local all all trust\nhost all all 127.0.0.1/32 {method}\nhost all all ::1/128 {method}\n"),
        )?;
        let port = free_port()?;
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), port.to_string()),
            ("unix_socket_directories".into(), dir.path().display().to_string()),
            ("fsync".into(), "off".into()),
            ("max_connections".into(), "200".into()),
        ];
        if let Some(tls) = &options.tls {
            let (cert, key) = (data_dir.join("server.crt"), data_dir.join("server.key"));
            std::fs::write(&cert, &tls.cert_pem)?;
            std::fs::write(&key, &tls.key_pem)?;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&cert, Some(uid), Some(gid))?;
                std::os::unix::fs::chown(&key, Some(uid), Some(gid))?;
            }
            settings.push(("ssl".into(), "on".into()));
            settings.push(("ssl_cert_file".into(), cert.display().to_string()));
            settings.push(("ssl_key_file".into(), key.display().to_string()));
        }
        settings.extend(options.extra_conf.iter().cloned());
        let mut postgres = command("postgres", user);
        postgres.arg("-D").arg(&data_dir);
        for (name, value) in &settings {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(uid), Some(gid))?;
        }
        let child = postgres.stdout(Stdio::null()).stderr(log).stdin(Stdio::null()).spawn()?;
        let mut server = TempPostgres {
            host: "127.0.0.1".into(),
            port,
            superuser: "postgres".into(),
            password: options.superuser_password.clone(),
            data_dir,
            socket_dir: dir.path().to_path_buf(),
            child: Some(child),
            _dir: dir,
        };
        server.wait_ready().await?;
        let encryption = if options.auth == UpstreamAuth::Md5 { "md5" } else { "scram-sha-256" };
        server
            .psql(&format!(
                "set password_encryption = '{encryption}'; alter user postgres password {};",
                sql_literal(&options.superuser_password)
            ))
            .await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), DemoError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(DemoError::Postgres(format!("postgres exited ({status}):\n{}", self.log_tail())));
            }
            if self.psql("select 1").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError::Postgres(format!("postgres did not become ready:\n{}", self.log_tail())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.socket_dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Run SQL as the superuser over the unix socket; returns unaligned, tuples-only output.
    pub async fn psql(&self, sql: &str) -> Result<String, DemoError> {
        let mut child = tokio::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| DemoError::Postgres("no stdin".into()))?;
        stdin.write_all(sql.as_bytes()).await?;
        drop(stdin);
        let output = child.wait_with_output().await?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(DemoError::Postgres(format!("psql: {}", String::from_utf8_lossy(&output.stderr).trim())))
        }
    }

    /// Fast shutdown, then remove the data directory.
    pub async fn stop(mut self) -> Result<(), DemoError> {
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
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
            let d = u32::from(b - b'0');
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

/// Whether a digit string passes the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    digits.len() >= 2 && luhn_check_digit(&digits[..digits.len() - 1]) == u32::from(digits.as_bytes()[digits.len() - 1] - b'0')
}

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Wirth"];

/// One fake customer row: (name, email, ssn, card, phone). Deterministic.
pub fn fake_customer(i: usize) -> (String, String, String, String, String) {
    let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
    let mut area = 100 + (i * 37) % 565;
    if area == 666 {
        area = 667;
    }
    let ssn = format!("{area:03}-{:02}-{:04}", 1 + (i * 13) % 99, 1 + (i * 7919) % 9999);
    let (prefix, len) = match i % 3 {
        0 => ("4111", 16),
        1 => ("5555", 16),
        _ => ("3782", 15),
    };
    let body = format!("{prefix}{:0width$}", (i as u64 * 7_919_317) % 10u64.pow((len - 5) as u32), width = len - 5);
    let card = format!("{body}{}", luhn_check_digit(&body));
    let phone = format!("+1-555-01{:02}", i % 100);
    (format!("{first} {last}"), format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase()), ssn, card, phone)
}

/// Create and fill `public.customers` with `rows` fake people.
pub async fn seed_customers(pg: &TempPostgres, rows: usize) -> Result<(), DemoError> {
    let mut sql = String::from(
        "create table customers (id serial primary key, full_name text not null, email text not null, ssn text not null, card_number text not null, phone text not null, created_at timestamptz not null default now());\n",
    );
    for chunk in (0..rows).collect::<Vec<_>>().chunks(500) {
        sql.push_str("insert into customers (full_name, email, ssn, card_number, phone) values\n");
        let values: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let (name, email, ssn, card, phone) = fake_customer(i);
                format!("({}, {}, {}, {}, {})", sql_literal(&name), sql_literal(&email), sql_literal(&ssn), sql_literal(&card), sql_literal(&phone))
            })
            .collect();
        sql.push_str(&values.join(",\n"));
        sql.push_str(";\n");
    }
    pg.psql(&sql).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_data_looks_valid() {
        for i in 0..1000 {
            let (_, email, ssn, card, _) = fake_customer(i);
            assert!(luhn_valid(&card), "{card}");
            assert!(email.ends_with("@example.com"));
            let parts: Vec<&str> = ssn.split('-').collect();
            assert!(parts[0] != "000" && parts[0] != "666" && !parts[0].starts_with('9'), "{ssn}");
            assert!(parts[1] != "00" && parts[2] != "0000", "{ssn}");
        }
        assert!(luhn_valid("4111111111111111") && !luhn_valid("4111111111111112"));
    }
}
