//! `TempPostgres` against the real `postgres` and `psql`: every client
//! authentication method over TCP, TLS with `sslmode=verify-full`, the fake
//! customer data, and that no server process outlives its handle.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use juris_demo::certs::DemoCa;
use juris_demo::postgres::{
    ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth, seed_customers,
};

const PASSWORD: &str = "correct horse 'battery' staple";

fn options(auth: UpstreamAuth) -> TempPostgresOptions {
    TempPostgresOptions {
        auth,
        tls: None,
        superuser_password: PASSWORD.into(),
        extra_conf: Vec::new(),
    }
}

/// `psql` as a user would run it: over TCP, password in PGPASSWORD.
async fn client_psql(conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let mut command = tokio::process::Command::new("psql");
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            conninfo,
        ])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().await.expect("run psql")
}

fn tcp(pg: &TempPostgres) -> String {
    format!(
        "host={} port={} user={} dbname=postgres sslmode=disable",
        pg.host, pg.port, pg.superuser
    )
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn processes_using(path: &Path) -> String {
    let out = std::process::Command::new("pgrep")
        .arg("-af")
        .arg(path)
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn check_auth(auth: UpstreamAuth) -> anyhow::Result<()> {
    let pg = TempPostgres::start(options(auth)).await?;
    assert_eq!(pg.host, "127.0.0.1");
    assert_eq!(pg.superuser, "postgres");

    let ok = client_psql(&tcp(&pg), Some(PASSWORD), "select 40 + 2").await;
    assert!(ok.status.success(), "{auth:?}: {}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");

    let wrong = client_psql(&tcp(&pg), Some("not the password"), "select 1").await;
    let none = client_psql(&tcp(&pg), None, "select 1").await;
    if auth == UpstreamAuth::Trust {
        assert!(wrong.status.success(), "{}", text(&wrong));
        assert!(none.status.success(), "{}", text(&none));
    } else {
        assert!(
            !wrong.status.success(),
            "{auth:?} accepted a wrong password"
        );
        assert!(
            text(&wrong).contains("password authentication failed"),
            "{auth:?}: {}",
            text(&wrong)
        );
        assert!(!none.status.success(), "{auth:?} accepted no password");
    }

    // The stored verifier matches the method: md5 needs an MD5 hash (a SCRAM
    // verifier would make the server silently upgrade to SCRAM).
    let stored = pg
        .psql("select left(rolpassword, 13) from pg_authid where rolname = 'postgres'")
        .await?;
    let expected = if auth == UpstreamAuth::Md5 {
        "md5"
    } else {
        "SCRAM-SHA-256"
    };
    assert!(stored.trim().starts_with(expected), "{auth:?}: {stored}");

    // Roles created later get the same treatment.
    pg.create_role("app user", "app-secret").await?;
    let app = format!(
        "host=127.0.0.1 port={} user='app user' dbname=postgres sslmode=disable",
        pg.port
    );
    let ok = client_psql(&app, Some("app-secret"), "select current_user").await;
    assert!(ok.status.success(), "{auth:?}: {}", text(&ok));
    pg.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_method_works_over_tcp_and_wrong_passwords_fail() -> anyhow::Result<()> {
    tokio::try_join!(
        check_auth(UpstreamAuth::ScramSha256),
        check_auth(UpstreamAuth::Md5),
        check_auth(UpstreamAuth::Password),
        check_auth(UpstreamAuth::Trust),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_passes_verify_full_and_refuses_plaintext() -> anyhow::Result<()> {
    let ca = DemoCa::new("TempPostgres test CA")?;
    let cert = ca.issue_server(&["localhost".to_string()], true)?;
    let pg = TempPostgres::start(TempPostgresOptions {
        tls: Some(ServerTls {
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        }),
        ..options(UpstreamAuth::ScramSha256)
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &ca.ca_cert_pem)?;
    let other_root = dir.path().join("other.pem");
    std::fs::write(&other_root, DemoCa::new("another CA")?.ca_cert_pem)?;

    let ssl = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    for host in ["host=localhost hostaddr=127.0.0.1", "host=127.0.0.1"] {
        let conninfo = format!(
            "{host} port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            pg.port,
            root.display()
        );
        let out = client_psql(&conninfo, Some(PASSWORD), ssl).await;
        assert!(out.status.success(), "{host}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }

    let untrusted = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        pg.port,
        other_root.display()
    );
    let out = client_psql(&untrusted, Some(PASSWORD), "select 1").await;
    assert!(!out.status.success(), "a foreign CA verified the server");
    assert!(
        text(&out).contains("certificate verify failed"),
        "{}",
        text(&out)
    );

    let plaintext = client_psql(&tcp(&pg), Some(PASSWORD), "select 1").await;
    assert!(!plaintext.status.success(), "plaintext TCP was accepted");
    assert!(
        text(&plaintext).contains("no pg_hba.conf entry"),
        "{}",
        text(&plaintext)
    );
    Ok(())
}

/// An independent Luhn check (not the crate's own).
fn luhn(number: &str) -> bool {
    let mut sum = 0;
    for (i, c) in number.chars().rev().enumerate() {
        let mut d = c.to_digit(10).expect("digit");
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_customers_look_real_and_are_fake() -> anyhow::Result<()> {
    let pg = TempPostgres::start(options(UpstreamAuth::ScramSha256)).await?;
    seed_customers(&pg, 1000).await?;
    let rows = pg
        .psql("select id, full_name, email, ssn, card_number, phone, created_at is not null from public.customers order by id")
        .await?;
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 1000);
    let mut prefixes = std::collections::BTreeSet::new();
    for row in &rows {
        let [_, name, email, ssn, card, phone, created] = row[..] else {
            panic!("bad row {row:?}");
        };
        assert!(!name.is_empty());
        assert!(email.ends_with("@example.com"), "{email}");
        let ssn_parts: Vec<&str> = ssn.split('-').collect();
        assert_eq!(
            ssn_parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [3, 2, 4]
        );
        assert!(ssn.chars().all(|c| c.is_ascii_digit() || c == '-'), "{ssn}");
        let area: u32 = ssn_parts[0].parse()?;
        assert!(area != 0 && area != 666 && area < 900, "{ssn}");
        assert!(ssn_parts[1] != "00" && ssn_parts[2] != "0000", "{ssn}");
        assert!(luhn(card), "{card} fails Luhn");
        let prefix = &card[..4];
        assert!(["4111", "5555", "3782"].contains(&prefix), "{card}");
        assert_eq!(card.len(), if prefix == "3782" { 15 } else { 16 });
        prefixes.insert(prefix.to_string());
        assert!(
            phone.starts_with("+1-555-01") && phone.len() == 11,
            "{phone}"
        );
        assert_eq!(created, "t");
    }
    assert_eq!(prefixes.len(), 3);
    let distinct = pg
        .psql("select count(distinct email), count(distinct ssn) > 900 from public.customers")
        .await?;
    assert_eq!(distinct.trim(), "1000|t");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_panics_leave_no_server_behind() -> anyhow::Result<()> {
    // Plain drop.
    let pg = TempPostgres::start(options(UpstreamAuth::Trust)).await?;
    let data_dir = pg.data_dir.clone();
    assert!(pg.pid().is_some());
    assert!(
        !processes_using(&data_dir).is_empty(),
        "server not found by pgrep"
    );
    drop(pg);
    assert_eq!(processes_using(&data_dir), "");
    assert!(!data_dir.exists(), "data dir left behind");

    // A test that panics while holding the server.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let pg = TempPostgres::start(options(UpstreamAuth::Trust))
            .await
            .expect("start");
        tx.send(pg.data_dir.clone()).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        panic!("deliberate panic with a running server");
    });
    let data_dir = rx.await?;
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(processes_using(&data_dir), "");
    assert!(!data_dir.exists(), "data dir left behind");
    Ok(())
}
