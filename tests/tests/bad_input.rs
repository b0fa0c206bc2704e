//! Bad input gets a clear answer and never takes the node down: each case
//! asserts the SQLSTATE and that a session opened before it keeps working.

mod common;

use std::time::{Duration, Instant};

use common::{CONNECTION, Env, connect, db_error, psql};
use juris_testkit::gateway::{ConnectionSpec, GatewayProcess, GatewaySpec};
use juris_testkit::oidc::AUDIENCE;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn assert_healthy(client: &tokio_postgres::Client) {
    let n: i64 = client
        .query_one("select count(*) from customers", &[])
        .await
        .expect("healthy session broke")
        .get(0);
    assert_eq!(n, 1000);
}

/// Connect and expect a FATAL; returns (code, message).
async fn refused(env: &Env, dbname: &str, token: &str) -> (String, String) {
    match connect(&env.gateway, dbname, "mallory", token).await {
        Ok(_) => panic!("connection with a bad token was accepted"),
        Err(e) => {
            let e = e
                .downcast::<tokio_postgres::Error>()
                .expect("a postgres error");
            db_error(&e).unwrap_or_else(|| panic!("no server error: {e}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_token_is_refused_with_28000_saying_which_check_failed() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let healthy = env.client(&env.oidc.user_token("alice").await?).await?;
    let iss = env.oidc.issuer.clone();
    let good = |extra: serde_json::Value| {
        let mut claims = json!({"iss": iss, "sub": "mallory", "aud": AUDIENCE, "iat": now(), "exp": now() + 300, "groups": ["dba"]});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let cases = vec![
        (
            "expired",
            env.oidc
                .mint(json!({}), good(json!({"exp": now() - 3600})))
                .await?,
            "expired",
        ),
        (
            "not yet valid",
            env.oidc
                .mint(json!({}), good(json!({"nbf": now() + 3600})))
                .await?,
            "not yet valid",
        ),
        (
            "wrong issuer",
            env.oidc
                .mint(json!({}), good(json!({"iss": "http://127.0.0.1:1/evil"})))
                .await?,
            "issuer",
        ),
        (
            "wrong audience",
            env.oidc
                .mint(json!({}), good(json!({"aud": "urn:someone:else"})))
                .await?,
            "audience",
        ),
        (
            "alg none",
            env.oidc
                .mint(json!({"alg": "none"}), good(json!({})))
                .await?,
            "algorithm",
        ),
        (
            "unknown kid",
            env.oidc
                .mint(json!({"kid": "no-such-key"}), good(json!({})))
                .await?,
            "key",
        ),
        (
            "badly signed",
            env.oidc.mint_foreign(good(json!({}))).await?,
            "signature",
        ),
        ("garbage", "this.is-not.a-jwt".to_string(), "malformed"),
    ];
    for (what, token, needle) in cases {
        let (code, message) = refused(&env, CONNECTION, &token).await;
        assert_eq!(code, "28000", "{what}: {message}");
        assert!(
            message.to_lowercase().contains(needle),
            "{what}: {message:?} should mention {needle:?}"
        );
        assert!(!message.contains(&token), "{what}: the token was echoed");
    }
    assert!(!env.gateway.log().contains("this.is-not.a-jwt"));
    assert_healthy(&healthy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_connection_plaintext_and_garbage_are_refused_and_others_keep_working()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let healthy = env.client(&token).await?;

    let (code, message) = refused(&env, "payroll", &token).await;
    assert_eq!(code, "3D000");
    assert!(message.contains("\"payroll\""), "{message}");

    // Plaintext to the TLS-only listener.
    let plain = format!(
        "host=127.0.0.1 port={} dbname={CONNECTION} user=alice sslmode=disable password={token}",
        env.gateway.address.port()
    );
    let (ok, _, err) = psql(&plain, &["-c", "select 1"]).await?;
    assert!(!ok);
    assert!(err.contains("accepts only TLS"), "{err}");

    // Garbage, truncated and oversized startup packets: the connection is closed with an error.
    let packets: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0, 0, 0, 3],                          // length below the minimum
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],  // 2 GiB startup packet
        vec![0, 0, 0, 40, 0, 3, 0, 0, b'u', b's'], // truncated, then closed
        vec![0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78],  // unknown request code
    ];
    for packet in packets {
        let mut tcp = tokio::net::TcpStream::connect(env.gateway.address).await?;
        tcp.write_all(&packet).await?;
        tcp.shutdown().await?;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "connection left hanging after {packet:?}");
        if !answer.is_empty() {
            assert_eq!(answer[0], b'E', "expected an ErrorResponse for {packet:?}");
        }
    }
    assert_healthy(&healthy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_regions_connection_is_refused_naming_its_region_and_endpoint() -> anyhow::Result<()>
{
    let store = tempfile::tempdir()?;
    let mut foreign = None;
    let env = Env::start_with(
        juris_testkit::postgres::UpstreamAuth::ScramSha256,
        |spec: &mut GatewaySpec| {
            // The same real PostgreSQL, so that relaying it would work: only
            // residency stops this node. Its credential is an environment
            // variable this node does not have: a node never resolves
            // another region's secrets.
            let pg = &spec.connections[0];
            foreign = Some((pg.host.clone(), pg.port));
            spec.extra_tables.push(format!(
                "[[region]]\nname = \"us-east\"\nendpoint = \"us-east.juris.test:5432\"\nstore = {{ kind = \"local\", path = {:?} }}\n\n[[connection]]\nname = \"billing-us\"\nkind = \"postgres\"\nregion = \"us-east\"\nupstream = {{ host = {:?}, port = {}, database = \"postgres\", user = \"postgres\", password = {{ env = \"JURIS_TEST_US_EAST_PASSWORD_NOT_HERE\" }} }}",
                store.path().display().to_string(),
                pg.host,
                pg.port,
            ));
            spec.roles.push(juris_testkit::gateway::RoleSpec::new(
                "dba-us", "dba", "billing-us", "admin",
            ));
        },
    )
    .await?;
    assert!(foreign.is_some());
    let token = env.oidc.user_token("alice").await?;
    let (code, message) = refused(&env, "billing-us", &token).await;
    assert_eq!(code, "08004", "{message}");
    assert!(
        message.contains("belongs to region us-east")
            && message.contains("serves region test")
            && message.contains("connect to us-east.juris.test:5432"),
        "{message}"
    );
    // The node's own connection still works, and the refusal is audited
    // with the owning region.
    let client = env.client(&token).await?;
    client.simple_query("select 1").await?;
    // The audit writer appends asynchronously (group commit): allow it a
    // moment on a loaded machine.
    let dir = env.gateway.config_file.parent().unwrap().join("data/audit");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut audit = String::new();
        for entry in std::fs::read_dir(&dir)? {
            audit.push_str(&std::fs::read_to_string(entry?.path()).unwrap_or_default());
        }
        if audit.contains("\"owning_region\":\"us-east\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection_refusal naming us-east in the audit chain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_dir(store.path())?.next().is_none(),
        "nothing may be written to the other region's store"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_upstream_gives_08006_within_the_timeout() -> anyhow::Result<()> {
    // One connection to a closed port, one to a server that accepts but never answers.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let closed_port = closed.local_addr()?.port();
    drop(closed);
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let blackhole_port = blackhole.local_addr()?.port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            held.push(socket);
        }
    });
    let spec_connection = |name: &str, port: u16| ConnectionSpec {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        database: "postgres".into(),
        user: "postgres".into(),
        password: Some("irrelevant".into()),
        tls_ca_pem: None,
        settings: Vec::new(),
    };
    let env = Env::start_with(
        juris_testkit::postgres::UpstreamAuth::ScramSha256,
        |spec: &mut GatewaySpec| {
            spec.node_settings
                .push("upstream_connect_timeout_secs = 2".into());
            spec.connections
                .push(spec_connection("closed-db", closed_port));
            spec.connections
                .push(spec_connection("blackhole-db", blackhole_port));
            spec.roles.push(juris_testkit::gateway::RoleSpec {
                name: "dba-everywhere".into(),
                groups: vec!["dba".into()],
                connections: vec!["*".into()],
                level: "admin".into(),
                settings: Vec::new(),
            });
        },
    )
    .await?;
    let token = env.oidc.user_token("alice").await?;
    let healthy = env.client(&token).await?;
    for name in ["closed-db", "blackhole-db"] {
        let started = Instant::now();
        let (code, message) = refused(&env, name, &token).await;
        assert_eq!(code, "08006", "{name}: {message}");
        assert!(message.contains(&format!("\"{name}\"")), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    assert_healthy(&healthy).await;
    let _: &GatewayProcess = &env.gateway;
    Ok(())
}
