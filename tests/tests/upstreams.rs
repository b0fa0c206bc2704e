//! The gateway logs in to the upstream with the connection's stored
//! credential by every method PostgreSQL offers to passwords (SCRAM-SHA-256,
//! md5, cleartext, trust), optionally over verify-full TLS.

mod common;

use common::{CONNECTION, Env, connection_spec, standard_roles};
use juris_demo::certs::DemoCa;
use juris_testkit::gateway::{GatewayProcess, GatewaySpec};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::{ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn md5_cleartext_and_trust_upstreams_work() -> anyhow::Result<()> {
    for auth in [
        UpstreamAuth::Md5,
        UpstreamAuth::Password,
        UpstreamAuth::Trust,
    ] {
        let env = Env::start_with(auth, |_| {}).await?;
        let client = env.client(&env.oidc.user_token("bob").await?).await?;
        let n: i64 = client
            .query_one("select count(*) from customers", &[])
            .await?
            .get(0);
        assert_eq!(n, 1000, "{auth:?}");
    }
    Ok(())
}

async fn tls_upstream(ca: &DemoCa) -> anyhow::Result<TempPostgres> {
    let cert = ca.issue_server(&["localhost".to_string()], true)?;
    let pg = TempPostgres::start(TempPostgresOptions {
        auth: UpstreamAuth::ScramSha256,
        tls: Some(ServerTls {
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        }),
        superuser_password: "tls-upstream-secret".into(),
        extra_conf: Vec::new(),
    })
    .await?;
    juris_testkit::postgres::seed_customers(&pg, 10).await?;
    Ok(pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_tls_is_verified_against_the_configured_ca() -> anyhow::Result<()> {
    let upstream_ca = DemoCa::new("upstream CA")?;
    let (pg, oidc) = tokio::try_join!(tls_upstream(&upstream_ca), OidcProvider::start())?;

    let mut good = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    let mut connection = connection_spec(&pg, &UpstreamAuth::ScramSha256);
    connection.host = "localhost".into();
    connection.tls_ca_pem = Some(upstream_ca.ca_cert_pem.clone());
    good.connections.push(connection.clone());
    good.roles = standard_roles();
    let gateway = GatewayProcess::start(&good).await?;
    let token = oidc.user_token("bob").await?;
    let client = common::connect(&gateway, CONNECTION, "bob", &token).await?;
    let ssl: bool = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0);
    assert!(ssl, "the gateway's upstream session is not encrypted");

    // A CA that did not sign the upstream's certificate: refused, not downgraded.
    let mut bad = good.clone();
    bad.connections[0].tls_ca_pem = Some(DemoCa::new("some other CA")?.ca_cert_pem);
    let gateway = GatewayProcess::start(&bad).await?;
    let err = common::connect(&gateway, CONNECTION, "bob", &token)
        .await
        .unwrap_err();
    let err = err.downcast::<tokio_postgres::Error>()?;
    assert_eq!(common::db_error(&err).unwrap().0, "08006", "{err}");
    Ok(())
}
