//! `juris demo`: everything a newcomer needs to see Juris work, on embedded
//! defaults: a throwaway PostgreSQL seeded with fake customers, a DEMO-ONLY
//! OIDC issuer on loopback, a throwaway CA, and one node in this process.
//! Prints ready-to-paste psql commands and URIs, runs until Ctrl-C, then
//! removes everything it started.

use std::path::Path;
use std::time::Duration;

use juris_config::{
    ConnectionConfig, ConnectionKind, Deployment, IdentityConfig, NodeConfig, RecordingMode,
    RegionConfig, RoleConfig, SecretRef, ServerTlsConfig, StoreConfig, UpstreamConfig,
    UpstreamTlsConfig,
};
use juris_mask::{ColumnRule, MaskingPolicy, StrategyName, ValueRule};
use juris_types::AccessLevel;

use crate::DemoError;
use crate::certs::DemoCa;
use crate::issuer::DevIssuer;
use crate::postgres::{TempPostgres, TempPostgresOptions, UpstreamAuth, seed_customers};

pub(crate) const AUDIENCE: &str = "urn:juris:gateway";
const CONNECTION: &str = "billing";
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

/// The demo's principals: (login, email, groups, what they may do).
pub(crate) const PEOPLE: &[(&str, &[&str], &str)] = &[
    ("alice", &["dba"], "admin: anything, including DDL"),
    (
        "carol",
        &["developers"],
        "write: read and modify data, no DDL",
    ),
    (
        "bob",
        &["analysts"],
        "read: SELECT only; SSNs, cards and emails masked",
    ),
    (
        "dora",
        &["pii-readers"],
        "read, exempt from masking: sees cleartext",
    ),
];

/// The demo's masking: SSN and card partial, email hashed, and the same
/// detectors on every other text value (computed expressions, errors).
fn demo_masking() -> MaskingPolicy {
    let column = |name: &str, strategy, keep_last| ColumnRule {
        name: Some(name.into()),
        pattern: None,
        strategy,
        keep_last,
    };
    let value = |detector: &str, strategy, keep_last| ValueRule {
        detector: detector.into(),
        strategy,
        keep_last,
    };
    MaskingPolicy {
        exempt_groups: vec!["pii-readers".into()],
        columns: vec![
            column("public.customers.ssn", StrategyName::Partial, Some(4)),
            column(
                "public.customers.card_number",
                StrategyName::Partial,
                Some(4),
            ),
            column("public.customers.email", StrategyName::Hash, None),
        ],
        values: vec![
            value("ssn", StrategyName::Partial, Some(4)),
            value("card", StrategyName::Partial, Some(4)),
            value("email", StrategyName::Hash, None),
        ],
        detectors: Vec::new(),
    }
}

/// Build the demo deployment around already started parts.
pub fn deployment(dir: &Path, listen: &str, issuer: &str, pg: &TempPostgres) -> Deployment {
    let role = |name: &str, group: &str, level| RoleConfig {
        name: name.into(),
        groups: vec![group.into()],
        connections: vec![CONNECTION.into()],
        level,
        access: Default::default(),
        review: None,
    };
    Deployment {
        node: NodeConfig {
            id: "demo-1".into(),
            region: "demo".into(),
            listen: listen.into(),
            tls: ServerTlsConfig {
                cert_file: dir.join("server.pem"),
                key_file: dir.join("server.key"),
            },
            auth_timeout_secs: 30,
            upstream_connect_timeout_secs: 10,
            shutdown_grace_secs: 5,
            max_message_bytes: 256 * 1024 * 1024,
            masking_catalog_ttl_ms: 1000,
            data_dir: Some(dir.join("data")),
            cluster: None,
            recording: Default::default(),
            audit: Default::default(),
            evidence_nice: juris_config::defaults::evidence_nice(),
            relay: None,
            metrics_listen: None,
        },
        identity: IdentityConfig {
            issuer: issuer.into(),
            audience: AUDIENCE.into(),
            groups_claim: "groups".into(),
            algorithms: vec!["ES256".into()],
            leeway_secs: 30,
            jwks_refresh_secs: 60,
        },
        regions: vec![RegionConfig {
            name: "demo".into(),
            mask_hash_key: Some(SecretRef {
                env: None,
                file: Some(dir.join("mask.key")),
            }),
            // Recordings of the demo's sessions: `juris sessions list` and
            // `juris replay` read them from here.
            store: Some(StoreConfig::Local {
                path: dir.join("evidence"),
            }),
            cloud_regions: Vec::new(),
            endpoint: None,
            relay: Vec::new(),
            control: Vec::new(),
        }],
        connections: vec![ConnectionConfig {
            name: CONNECTION.into(),
            kind: ConnectionKind::Postgres,
            region: "demo".into(),
            upstream: UpstreamConfig {
                host: pg.host.clone(),
                port: pg.port,
                database: "postgres".into(),
                user: pg.superuser.clone(),
                password: Some(SecretRef {
                    env: None,
                    file: Some(dir.join("billing.password")),
                }),
                tls: UpstreamTlsConfig::default(),
            },
            masking: demo_masking(),
            approvals: None,
            recording: RecordingMode::Strict,
            audit_statements: true,
        }],
        roles: vec![
            role("dba", "dba", AccessLevel::Admin),
            role("developers", "developers", AccessLevel::Write),
            role("analysts", "analysts", AccessLevel::Read),
            role("pii-readers", "pii-readers", AccessLevel::Read),
        ],
        directory: None,
    }
}

/// Run the demo until Ctrl-C or SIGTERM.
pub async fn run(port: u16) -> Result<(), DemoError> {
    let dir = tempfile::Builder::new().prefix("juris-demo-").tempdir()?;
    println!(
        "Starting the Juris demo (everything lives in {} and is removed on exit)...",
        dir.path().display()
    );

    let ca = DemoCa::new("Juris demo CA (throwaway)")?;
    let server = ca.issue_server(&["localhost".to_string()], true)?;
    write_private(&dir.path().join("server.pem"), &server.cert_pem)?;
    write_private(&dir.path().join("server.key"), &server.key_pem)?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_cert_pem)?;

    let pg = start_postgres(dir.path()).await?;

    let issuer = DevIssuer::start(AUDIENCE).await?;
    let deployment = deployment(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        issuer.issuer(),
        &pg,
    );
    deployment.validate("demo")?;
    std::fs::write(
        dir.path().join("juris.toml"),
        toml_text(&deployment).unwrap_or_default(),
    )?;
    let node = juris_node::start(deployment).await?;
    let address = node.postgres_address;

    println!();
    println!(
        "Juris demo is running. Node: {address}  PostgreSQL (direct, for comparison): 127.0.0.1:{}",
        pg.port
    );
    println!(
        "Demo-only OIDC issuer: {} (loopback only; never use it for anything real)",
        issuer.issuer()
    );
    println!(
        "Deployment file: {}",
        dir.path().join("juris.toml").display()
    );
    println!();
    for (login, groups, what) in PEOPLE {
        let token = issuer.mint(login, &format!("{login}@example.com"), groups, TOKEN_TTL)?;
        println!("── {login} (groups {groups:?}; {what})");
        println!(
            "  psql \"host=localhost hostaddr=127.0.0.1 port={} dbname={CONNECTION} user={login} sslmode=verify-full sslrootcert={} password={token}\"",
            address.port(),
            ca_file.display()
        );
        println!(
            "  postgresql://{login}:{token}@localhost:{}/{CONNECTION}?sslmode=verify-full&sslrootcert={}&hostaddr=127.0.0.1",
            address.port(),
            ca_file.display()
        );
        println!();
    }
    println!(
        "Try as bob: select full_name, email, ssn, card_number from customers limit 3;  (masked)"
    );
    println!("         then: delete from customers;  (refused with 42501)");
    println!("Try as dora: the same select shows cleartext (pii-readers is exempt from masking).");
    let juris = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "juris".into());
    let config = dir.path().join("juris.toml");
    println!(
        "Every session is recorded (masked, as the client saw it); once it ends, list and replay it:"
    );
    println!("  {juris} sessions list --config {}", config.display());
    println!(
        "  {juris} replay <session id> --config {}   (add --format asciicast for asciinema)",
        config.display()
    );
    println!("Press Ctrl-C to stop; everything started here is cleaned up.");

    juris_node::wait_for_signal().await;
    println!("\nStopping...");
    node.shutdown();
    node.wait().await;
    pg.stop().await?;
    drop(issuer);
    drop(dir);
    println!("Stopped and cleaned up.");
    Ok(())
}

/// A throwaway PostgreSQL with the demo's customers; its password and a
/// masking hash key go to `dir` (`billing.password`, `mask.key`), where
/// [`deployment`] refers to them.
pub(crate) async fn start_postgres(dir: &Path) -> Result<TempPostgres, DemoError> {
    let password = format!("demo-{:016x}", rand::random::<u64>());
    let pg = TempPostgres::start(TempPostgresOptions {
        auth: UpstreamAuth::ScramSha256,
        tls: None,
        superuser_password: password.clone(),
        extra_conf: Vec::new(),
    })
    .await?;
    seed_customers(&pg, 1000).await?;
    write_private(&dir.join("billing.password"), &password)?;
    write_private(
        &dir.join("mask.key"),
        &format!("{:032x}", rand::random::<u128>()),
    )?;
    Ok(pg)
}

pub(crate) fn toml_text(deployment: &Deployment) -> Option<String> {
    toml::to_string_pretty(deployment).ok()
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), DemoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
