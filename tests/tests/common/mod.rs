//! Shared set-up for the end-to-end suite: a real PostgreSQL seeded with fake
//! customers, the real OIDC provider, and a real `juris node` in front.

#![allow(dead_code)]

pub mod control;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use juris_testkit::gateway::{ConnectionSpec, GatewayProcess, GatewaySpec, RoleSpec};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::{TempPostgres, TempPostgresOptions, UpstreamAuth, seed_customers};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub const CONNECTION: &str = "billing";

/// One PostgreSQL, the IdP and a gateway with the standard roles:
/// dba → admin, developers → write, analysts → read, ci → read.
pub struct Env {
    pub pg: TempPostgres,
    pub oidc: OidcProvider,
    pub gateway: GatewayProcess,
}

pub fn standard_roles() -> Vec<RoleSpec> {
    vec![
        RoleSpec::new("dba", "dba", CONNECTION, "admin"),
        RoleSpec::new("developers", "developers", CONNECTION, "write"),
        RoleSpec::new("analysts", "analysts", CONNECTION, "read"),
        RoleSpec::new("ci", "ci", CONNECTION, "read"),
    ]
}

pub fn connection_spec(pg: &TempPostgres, auth: &UpstreamAuth) -> ConnectionSpec {
    ConnectionSpec {
        name: CONNECTION.into(),
        host: pg.host.clone(),
        port: pg.port,
        database: "postgres".into(),
        user: pg.superuser.clone(),
        password: (!matches!(auth, UpstreamAuth::Trust)).then(|| pg.password.clone()),
        tls_ca_pem: None,
        settings: Vec::new(),
    }
}

pub async fn start_pg(auth: UpstreamAuth) -> anyhow::Result<TempPostgres> {
    let pg = TempPostgres::start(TempPostgresOptions {
        auth,
        tls: None,
        superuser_password: format!("upstream-secret-{:08x}", std::process::id()),
        extra_conf: Vec::new(),
    })
    .await?;
    seed_customers(&pg, 1000).await?;
    Ok(pg)
}

impl Env {
    /// The standard environment with a SCRAM upstream.
    pub async fn start() -> anyhow::Result<Env> {
        Env::start_with(UpstreamAuth::ScramSha256, |_| {}).await
    }

    /// Customise the gateway spec before start.
    pub async fn start_with(
        auth: UpstreamAuth,
        customise: impl FnOnce(&mut GatewaySpec),
    ) -> anyhow::Result<Env> {
        let (pg, oidc) = tokio::try_join!(start_pg(auth), OidcProvider::start())?;
        let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
        spec.connections.push(connection_spec(&pg, &auth));
        spec.roles = standard_roles();
        customise(&mut spec);
        let gateway = GatewayProcess::start(&spec).await?;
        Ok(Env { pg, oidc, gateway })
    }

    /// A tokio-postgres client through the gateway with verify-full TLS.
    pub async fn client(&self, token: &str) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.gateway, CONNECTION, "tester", token).await
    }

    /// A direct client to the upstream (no gateway), as the superuser.
    pub async fn direct(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.pg.host)
            .port(self.pg.port)
            .user(&self.pg.superuser)
            .password(&self.pg.password)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// rustls client config trusting the gateway's test CA, ALPN postgresql.
pub fn tls_config(gateway: &GatewayProcess) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&gateway.ca_file)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

pub fn client_config(
    gateway: &GatewayProcess,
    dbname: &str,
    user: &str,
    token: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(gateway.address.ip())
        .port(gateway.address.port())
        .dbname(dbname)
        .user(user)
        .password(token)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    config
}

pub async fn connect(
    gateway: &GatewayProcess,
    dbname: &str,
    user: &str,
    token: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    connect_with(gateway, client_config(gateway, dbname, user, token)).await
}

pub async fn connect_with(
    gateway: &GatewayProcess,
    config: tokio_postgres::Config,
) -> anyhow::Result<tokio_postgres::Client> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(gateway)?);
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server error behind a tokio-postgres error: (SQLSTATE, message).
pub fn db_error(error: &tokio_postgres::Error) -> Option<(String, String)> {
    error
        .as_db_error()
        .map(|e| (e.code().code().to_string(), e.message().to_string()))
}

/// Run psql with a conninfo string and `-c` commands; returns (status ok, stdout, stderr).
pub async fn psql(conninfo: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = tokio::process::Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .await
        .context("cannot run psql")?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// A tokio-postgres client through the gateway whose notices and
/// notifications arrive on the returned channel (instead of being dropped).
pub async fn connect_with_messages(
    gateway: &GatewayProcess,
    dbname: &str,
    user: &str,
    token: &str,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
)> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(gateway)?);
    let (client, mut connection) = client_config(gateway, dbname, user, token)
        .connect(tls)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            let _ = tx.send(message);
        }
    });
    Ok((client, rx))
}

/// Run the `juris` CLI; returns (success, stdout, stderr).
pub async fn juris(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    juris_with_env(args, &[]).await
}

/// [`juris`] with extra environment variables (e.g. `JURIS_TOKEN`).
pub async fn juris_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(juris_testkit::gateway::juris_binary()?)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `juris connect <args> --port 0` as the holder of `token`, running until
/// the returned child is dropped; returns it and the local port it printed.
pub async fn juris_connect(
    args: &[&str],
    token: &str,
) -> anyhow::Result<(tokio::process::Child, u16)> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let home = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(juris_testkit::gateway::juris_binary()?)
        .arg("connect")
        .args(args)
        .args(["--port", "0"])
        .env("JURIS_TOKEN", token)
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("juris connect exited before listening")?;
        // "juris connect: C via <gateway> on 127.0.0.1:<port>"
        if let Some((_, rest)) = line.rsplit_once(" on 127.0.0.1:") {
            let port = rest.trim().parse()?;
            // Keep reading: a closed pipe would end the process at its
            // next line of output.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, port));
        }
    }
}
