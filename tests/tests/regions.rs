//! Two regions on loopback, each with its own PostgreSQL, object store and
//! nodes, sharing one directory domain (`db.juris.test`). A client that
//! reaches a node of the wrong region by name gets a working session from
//! the owning region, and the wrong region's node provably only relayed
//! ciphertext: its counters show no TLS session terminated and only TLS
//! records forwarded, and nothing of the session is in its log, data
//! directory or store. With the owning region down, clients are told which
//! region is unreachable and the other region carries on.

mod common;

use std::path::Path;
use std::time::Duration;

use common::control::{id_with_prefix, wait_for_leader};
use common::{juris, juris_with_env, psql};
use juris_testkit::gateway::{ConnectionSpec, GatewayProcess, GatewaySpec, RoleSpec, TestRegion};
use juris_testkit::oidc::{AUDIENCE, OidcProvider};
use juris_testkit::postgres::{TempPostgres, UpstreamAuth};
use juris_testkit::regions::{Directory, RegionLayout, scrape};

const DOMAIN: &str = "db.juris.test";
const EU_CONNECTION: &str = "billing-eu";
const US_CONNECTION: &str = "crm-us";
/// A statement only a session of `billing-eu` runs: it must never appear on
/// a us-east node.
const EU_MARKER: &str = "eu_residency_marker_7f3a";

struct TwoRegions {
    _pgs: (TempPostgres, TempPostgres),
    oidc: OidcProvider,
    directory: Directory,
    layout: Vec<RegionLayout>,
    eu: GatewayProcess,
    us: GatewayProcess,
    dir: tempfile::TempDir,
}

fn connection(name: &str, pg: &TempPostgres) -> ConnectionSpec {
    let mut spec = common::connection_spec(pg, &UpstreamAuth::ScramSha256);
    spec.name = name.into();
    spec
}

/// One PostgreSQL per region and the IdP.
async fn upstreams() -> anyhow::Result<(TempPostgres, TempPostgres, OidcProvider)> {
    Ok(tokio::try_join!(
        common::start_pg(UpstreamAuth::ScramSha256),
        common::start_pg(UpstreamAuth::ScramSha256),
        OidcProvider::start()
    )?)
}

/// eu-west owning billing-eu and us-east owning crm-us, one node each.
fn two_layouts(
    dir: &Path,
    pg_eu: &TempPostgres,
    pg_us: &TempPostgres,
) -> anyhow::Result<Vec<RegionLayout>> {
    Ok(vec![
        RegionLayout::local(
            "eu-west",
            "eu",
            1,
            vec![connection(EU_CONNECTION, pg_eu)],
            dir,
        )?,
        RegionLayout::local(
            "us-east",
            "us",
            1,
            vec![connection(US_CONNECTION, pg_us)],
            dir,
        )?,
    ])
}

impl TwoRegions {
    async fn start() -> anyhow::Result<TwoRegions> {
        let (pg_eu, pg_us, oidc) = upstreams().await?;
        let dir = tempfile::tempdir()?;
        let directory = Directory::new(dir.path(), DOMAIN)?;
        let layout = two_layouts(dir.path(), &pg_eu, &pg_us)?;
        let mut base = GatewaySpec::new(&oidc.issuer, AUDIENCE);
        base.roles = vec![RoleSpec {
            name: "dba".into(),
            groups: vec!["dba".into()],
            connections: vec![EU_CONNECTION.into(), US_CONNECTION.into()],
            level: "admin".into(),
            settings: Vec::new(),
        }];
        let eu_spec = directory.node_spec(&base, &layout, "eu-west", 0)?;
        let us_spec = directory.node_spec(&base, &layout, "us-east", 0)?;
        let (eu, us) = tokio::try_join!(
            GatewayProcess::start(&eu_spec),
            GatewayProcess::start(&us_spec),
        )?;
        Ok(TwoRegions {
            _pgs: (pg_eu, pg_us),
            oidc,
            directory,
            layout,
            eu,
            us,
            dir,
        })
    }

    /// libpq connection string for `connection` by its directory name,
    /// reaching `via`'s listener, verifying the certificate.
    fn conninfo(&self, via: &GatewayProcess, connection: &str, token: &str, ssl: &str) -> String {
        format!(
            "host={} hostaddr={} port={} dbname={connection} user=alice sslmode={ssl} sslrootcert={} password={token} connect_timeout=20",
            self.directory.host(connection),
            via.address.ip(),
            via.address.port(),
            self.directory.client_ca_file.display(),
        )
    }

    /// Wait until eu-west's PostgreSQL runs `statement`.
    async fn wait_until_eu_runs(&self, statement: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let query = format!(
            "select count(*) from pg_stat_activity where query = '{}'",
            statement.replace('\'', "''")
        );
        loop {
            if self._pgs.0.psql(&query).await?.trim() == "1" {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the statement never started"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(
        &self,
        region: usize,
    ) -> anyhow::Result<std::collections::HashMap<String, u64>> {
        scrape(&self.layout[region].nodes[0].metrics_address()).await
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let mut haystacks = vec![bytes.clone()];
                if path.extension().is_some_and(|e| e == "zst")
                    && let Some(at) = bytes.windows(4).position(|w| w == [0x28, 0xb5, 0x2f, 0xfd])
                    && let Ok(plain) = zstd_decode(&bytes[at..])
                {
                    haystacks.push(plain);
                }
                if haystacks
                    .iter()
                    .any(|h| h.windows(needle.len()).any(|w| w == needle.as_bytes()))
                {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

fn zstd_decode(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let output = std::process::Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut s| s.write_all(bytes));
            child.wait_with_output()
        })?;
    Ok(output.stdout)
}

/// `juris audit export --config … --region R --recordings` into `bundle`,
/// then `juris audit verify`, which must accept the bundle and its
/// residency section (read from `store`, e.g. `file://` or `s3://bucket`,
/// every object under the region's prefixes). Returns the export's output.
async fn export_verified(
    config: &Path,
    region: &str,
    bundle: &Path,
    store: &str,
) -> anyhow::Result<String> {
    let (config, bundle) = (config.display().to_string(), bundle.display().to_string());
    let (ok, exported, err) = juris(&[
        "audit",
        "export",
        "--config",
        &config,
        "--region",
        region,
        "--recordings",
        "-o",
        &bundle,
    ])
    .await?;
    assert!(ok, "export {region}: {exported}{err}");
    let (ok, out, err) = juris(&["audit", "verify", &bundle]).await?;
    assert!(ok, "verify {region}: {out}{err}");
    assert!(
        out.contains(&format!("read from region {region}'s store {store}"))
            && out.contains("every one under the region's own prefixes"),
        "{out}"
    );
    Ok(exported)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_region_hands_the_session_over_still_encrypted() -> anyhow::Result<()> {
    let env = TwoRegions::start().await?;
    let token = env.oidc.user_token("alice").await?;

    // psql reaches the us-east node, naming billing-eu: the session is
    // served by eu-west (its PostgreSQL, its certificate: verify-full).
    let eu_port: u16 = env._pgs.0.port;
    let (ok, out, err) = psql(
        &env.conninfo(&env.us, EU_CONNECTION, &token, "verify-full"),
        &[
            "-c",
            &format!("select '{EU_MARKER}' as marker, current_setting('port')"),
        ],
    )
    .await?;
    assert!(ok, "psql via the us-east node failed: {err}");
    assert_eq!(out.trim(), format!("{EU_MARKER}|{eu_port}"));

    // And the other way round: a driver with PostgreSQL 17's direct TLS
    // (ALPN postgresql, no SSLRequest) through the eu-west node.
    let mut config = tokio_postgres::Config::new();
    config
        .host(env.directory.host(US_CONNECTION))
        .hostaddr(env.eu.address.ip())
        .port(env.eu.address.port())
        .dbname(US_CONNECTION)
        .user("alice")
        .password(&token)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct)
        .connect_timeout(Duration::from_secs(20));
    let client = common::connect_with(&env.eu, config).await?;
    let port: String = client
        .query_one("select current_setting('port')", &[])
        .await?
        .get(0);
    assert_eq!(port, env._pgs.1.port.to_string());
    drop(client);

    // The us-east node relayed one session and terminated none: every
    // byte it forwarded was part of a TLS record.
    let us = env.metrics(1).await?;
    let eu = env.metrics(0).await?;
    assert_eq!(us["juris_handovers_out_total"], 1, "{us:?}");
    let handshakes = |connection: &str| {
        format!("juris_client_tls_handshakes_total{{connection=\"{connection}\"}}")
    };
    assert_eq!(us[&handshakes(EU_CONNECTION)], 0, "{us:?}");
    assert_eq!(us[&handshakes(US_CONNECTION)], 1, "{us:?}");
    assert_eq!(us["juris_handovers_cut_total"], 0, "{us:?}");
    assert!(us["juris_handover_records_to_region_total"] >= 3, "{us:?}");
    assert!(us["juris_handover_records_to_client_total"] >= 3, "{us:?}");
    assert!(us["juris_handover_bytes_to_client_total"] > 0, "{us:?}");
    assert_eq!(us["juris_handovers_in_total"], 1, "{us:?}");
    assert_eq!(eu["juris_handovers_in_total"], 1, "{eu:?}");
    assert_eq!(eu["juris_handovers_out_total"], 1, "{eu:?}");
    assert_eq!(eu[&handshakes(EU_CONNECTION)], 1, "{eu:?}");
    assert_eq!(eu[&handshakes(US_CONNECTION)], 0, "{eu:?}");

    // The statement is evidence in eu-west only.
    env.eu.signal(15)?;
    env.us.signal(15)?;
    let mut eu_node = env.eu;
    let mut us_node = env.us;
    eu_node.wait(Duration::from_secs(30)).await?;
    us_node.wait(Duration::from_secs(30)).await?;
    let root = env.dir.path();
    let eu_files = files_containing(&root.join("store-eu-west"), EU_MARKER);
    assert!(
        !eu_files.is_empty(),
        "the eu-west store holds no recording of the session"
    );
    for place in ["store-us-east", "us-1-data"] {
        let found = files_containing(&root.join(place), EU_MARKER);
        assert!(found.is_empty(), "eu-west evidence in us-east: {found:?}");
    }
    assert!(
        !us_node.log().contains(EU_MARKER),
        "the us-east node logged the session's statement"
    );
    assert!(us_node.log().contains("handed over"), "{}", us_node.log());

    // Each region's audit bundle holds its own evidence only, and its
    // residency section verifies.
    for (region, node, other) in [
        ("eu-west", &eu_node, "us-east"),
        ("us-east", &us_node, "eu-west"),
    ] {
        let bundle = root.join(format!("{region}.tar.zst"));
        let out = export_verified(&node.config_file, region, &bundle, "file://").await?;
        assert!(
            out.contains("1 recording manifests with their chunks"),
            "{out}"
        );
        let listing = std::process::Command::new("tar")
            .args(["--zstd", "-tf", bundle.to_str().unwrap()])
            .output()?;
        let names = String::from_utf8_lossy(&listing.stdout).into_owned();
        assert!(names.contains(&format!("recordings/{region}/")), "{names}");
        assert!(
            !names.contains(other),
            "{region}'s bundle lists {other}'s evidence: {names}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_names_and_a_region_that_is_down_get_clear_errors() -> anyhow::Result<()> {
    let mut env = TwoRegions::start().await?;
    let token = env.oidc.user_token("alice").await?;

    // The TLS name routes to billing-eu; the startup packet may not switch
    // to another connection behind it.
    let switched = env
        .conninfo(&env.us, EU_CONNECTION, &token, "verify-full")
        .replace(
            &format!("dbname={EU_CONNECTION}"),
            &format!("dbname={US_CONNECTION}"),
        );
    let (ok, _, err) = psql(&switched, &["-c", "select 1"]).await?;
    assert!(!ok);
    assert!(
        err.contains("asks for connection \"billing-eu\"") && err.contains("use dbname=billing-eu"),
        "{err}"
    );

    // A client without the directory name (no SNI: an IP address) is told
    // which region owns the connection.
    let by_address = format!(
        "host={} port={} dbname={EU_CONNECTION} user=alice sslmode=require password={token}",
        env.us.address.ip(),
        env.us.address.port()
    );
    let (ok, _, err) = psql(&by_address, &["-c", "select 1"]).await?;
    assert!(!ok);
    assert!(err.contains("belongs to region eu-west"), "{err}");

    // eu-west goes down.
    env.eu.kill().await?;
    let (ok, _, err) = psql(
        &env.conninfo(&env.us, EU_CONNECTION, &token, "require"),
        &["-c", "select 1"],
    )
    .await?;
    assert!(!ok);
    assert!(
        err.contains("no node of region eu-west can be reached"),
        "{err}"
    );
    // A verifying client never accepts the us-east node in eu-west's place.
    let (ok, _, err) = psql(
        &env.conninfo(&env.us, EU_CONNECTION, &token, "verify-full"),
        &["-c", "select 1"],
    )
    .await?;
    assert!(!ok);
    assert!(
        err.contains("does not match host name") || err.contains("certificate"),
        "{err}"
    );
    // us-east is unaffected.
    let (ok, out, err) = psql(
        &env.conninfo(&env.us, US_CONNECTION, &token, "verify-full"),
        &["-c", "select 1"],
    )
    .await?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
    let us = env.metrics(1).await?;
    assert_eq!(us["juris_handovers_unreachable_total"], 2, "{us:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_refuses_to_start_with_a_bucket_outside_its_jurisdiction() -> anyhow::Result<()> {
    use juris_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start_in_regions(
        &dir.path().join("s3"),
        "127.0.0.1:0".parse()?,
        &[("evidence-eu", "eu-west-1"), ("evidence-us", "us-east-1")],
    )
    .await?;
    std::fs::write(dir.path().join("key-id"), ACCESS_KEY)?;
    std::fs::write(dir.path().join("secret"), SECRET_KEY)?;
    let oidc = OidcProvider::start().await?;
    let node = |bucket: &str, claimed: &str| {
        let mut spec = GatewaySpec::new(&oidc.issuer, AUDIENCE);
        spec.region = "eu-west".into();
        spec.region_settings
            .push("cloud_regions = [\"eu-west-1\", \"eu-central-1\"]".into());
        spec.region_settings.push(format!(
            "store = {{ kind = \"s3\", bucket = \"{bucket}\", region = \"{claimed}\", endpoint = \"{}\", allow_http = true, access_key_id = {{ file = {:?} }}, secret_access_key = {{ file = {:?} }} }}",
            s3.endpoint(),
            dir.path().join("key-id").display().to_string(),
            dir.path().join("secret").display().to_string(),
        ));
        spec
    };
    // The config claims eu-west-1, the bucket says us-east-1.
    let refused = GatewayProcess::start(&node("evidence-us", "eu-west-1")).await;
    let Err(error) = refused else {
        anyhow::bail!("a node with a us-east-1 bucket started in eu-west");
    };
    let error = error.to_string();
    assert!(
        error.contains("region[0].store: bucket `evidence-us` is in cloud region `us-east-1`, not `eu-west-1` as configured"),
        "{error}"
    );
    // A bucket that does not exist cannot be placed either.
    let Err(error) = GatewayProcess::start(&node("evidence-nowhere", "eu-west-1")).await else {
        anyhow::bail!("a node started with a missing bucket");
    };
    assert!(
        error
            .to_string()
            .contains("cannot confirm the cloud region of bucket `evidence-nowhere`"),
        "{error}"
    );
    // The bucket that is where the config says starts.
    let node = GatewayProcess::start(&node("evidence-eu", "eu-west-1")).await?;
    assert!(
        node.log()
            .contains("object store is in the region's jurisdiction")
    );
    s3.stop().await;
    Ok(())
}

/// Run the CLI as the holder of `token`, trusting `ca`, with no control
/// API named: the deployment file (`--config`) must route the call.
async fn routed(token: &str, ca: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let ca = ca.display().to_string();
    let (ok, out, err) = juris_with_env(args, &[("JURIS_TOKEN", token), ("JURIS_CA", &ca)]).await?;
    Ok((ok, format!("{out}{err}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_requests_are_created_and_decided_only_in_the_owning_region() -> anyhow::Result<()> {
    let (pg_eu, pg_us, oidc) = upstreams().await?;
    let dir = tempfile::tempdir()?;
    let directory = Directory::new(dir.path(), DOMAIN)?;
    let mut rafts = Vec::new();
    for name in ["eu-raft", "us-raft"] {
        let raft_dir = dir.path().join(name);
        std::fs::create_dir_all(&raft_dir)?;
        rafts.push(TestRegion::new(1, &raft_dir, "dba")?);
    }
    let mut layout = two_layouts(dir.path(), &pg_eu, &pg_us)?;
    layout[0].control = rafts[0].control_endpoints();
    layout[1].control = rafts[1].control_endpoints();
    let mut base = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    base.roles = vec![
        RoleSpec::jit("oncall-eu", "analysts", EU_CONNECTION, "read", "dba"),
        RoleSpec::jit("oncall-us", "analysts", US_CONNECTION, "read", "dba"),
    ];
    let eu = rafts[0]
        .start(&directory.node_spec(&base, &layout, "eu-west", 0)?)
        .await?;
    let us = rafts[1]
        .start(&directory.node_spec(&base, &layout, "us-east", 0)?)
        .await?;
    let alice = oidc.user_token("alice").await?;
    let bob = oidc.user_token("bob").await?;
    wait_for_leader(&[&eu[0]], &alice).await?;
    wait_for_leader(&[&us[0]], &alice).await?;
    let ca = directory.client_ca_file.clone();
    let us_config = us[0].gateway.config_file.display().to_string();

    // bob works from a us-east deployment file; his request for an eu-west
    // connection goes to eu-west's control plane.
    let (ok, out) = routed(
        &bob,
        &ca,
        &[
            "access",
            "request",
            EU_CONNECTION,
            "--role",
            "oncall-eu",
            "--for",
            "1h",
            "--reason",
            "eu incident 42",
            "--config",
            &us_config,
        ],
    )
    .await?;
    assert!(ok, "{out}");
    let request = id_with_prefix(&out, "ar-")?;
    let list = |region: &'static str| {
        let (alice, ca, config) = (alice.clone(), ca.clone(), us_config.clone());
        async move {
            routed(
                &alice,
                &ca,
                &["access", "list", "--config", &config, "--region", region],
            )
            .await
        }
    };
    let (ok, in_eu) = list("eu-west").await?;
    assert!(ok && in_eu.contains("eu incident 42"), "{in_eu}");
    let (ok, in_us) = list("us-east").await?;
    assert!(ok && !in_us.contains("eu incident 42"), "{in_us}");

    // Asked directly, us-east's control API refuses, naming the owner.
    let (ok, out) = routed(
        &bob,
        &ca,
        &[
            "access",
            "request",
            EU_CONNECTION,
            "--role",
            "oncall-eu",
            "--for",
            "1h",
            "--reason",
            "wrong region",
            "--control",
            &us[0].control,
        ],
    )
    .await?;
    assert!(!ok && out.contains("belongs to region eu-west"), "{out}");

    // alice approves in eu-west; bob's session, reaching the us-east node by
    // name, is handed over and rides the eu-west grant.
    let (ok, out) = routed(
        &alice,
        &ca,
        &[
            "access", "approve", &request, "--reason", "ok", "--config", &us_config, "--region",
            "eu-west",
        ],
    )
    .await?;
    assert!(ok, "{out}");
    let conninfo = format!(
        "host={} hostaddr={} port={} dbname={EU_CONNECTION} user=bob sslmode=verify-full sslrootcert={} password={bob} connect_timeout=20",
        directory.host(EU_CONNECTION),
        us[0].gateway.address.ip(),
        us[0].gateway.address.port(),
        ca.display(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, err) = psql(&conninfo, &["-c", "select count(*) from customers"]).await?;
        if ok {
            assert_eq!(out.trim(), "1000");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session on the grant: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A token that every piece of `region`'s workload carries (statements,
/// table names, reasons), so a byte scan finds it wherever it went.
fn residency_token(region: &str) -> String {
    format!("{}_residency_6d1c", region.replace('-', "_"))
}

/// Every file under `dir`, as paths relative to it.
fn relative_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.display().to_string());
            }
        }
    }
    found
}

/// Run `juris … --config <file>` as the holder of `token`; fails the test
/// with the output when the command fails.
async fn routed_ok(token: &str, ca: &Path, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out) = routed(token, ca, args).await?;
    anyhow::ensure!(ok, "juris {args:?} failed: {out}");
    Ok(out)
}

/// Two regions of three nodes, each with its own Raft group, PostgreSQL
/// and S3 bucket (one S3-compatible server, a bucket per cloud region),
/// one identity provider. In each region: a JIT request made and approved
/// with the *other* region's deployment file, sessions on the grant reaching
/// the other region's nodes, a statement held for review and approved, and
/// a direct session. Afterwards every bucket, data directory, log and audit
/// bundle is scanned: each region's evidence is found in that region only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_workload_leaves_each_regions_evidence_only_in_that_region() -> anyhow::Result<()> {
    use juris_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let (pg_eu, pg_us, oidc) = upstreams().await?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let s3 = S3Server::start_in_regions(
        &root.join("s3"),
        "127.0.0.1:0".parse()?,
        &[("evidence-eu", "eu-west-1"), ("evidence-us", "us-east-1")],
    )
    .await?;
    std::fs::write(root.join("key-id"), ACCESS_KEY)?;
    std::fs::write(root.join("secret"), SECRET_KEY)?;
    let directory = Directory::new(root, DOMAIN)?;
    let regions = [
        (
            "eu-west",
            "eu",
            EU_CONNECTION,
            "evidence-eu",
            "eu-west-1",
            &pg_eu,
        ),
        (
            "us-east",
            "us",
            US_CONNECTION,
            "evidence-us",
            "us-east-1",
            &pg_us,
        ),
    ];
    let mut layout = Vec::new();
    let mut rafts = Vec::new();
    for (name, prefix, connection_name, bucket, cloud_region, pg) in regions {
        let mut region =
            RegionLayout::local(name, prefix, 3, vec![connection(connection_name, pg)], root)?;
        region.store = format!(
            "{{ kind = \"s3\", bucket = \"{bucket}\", region = \"{cloud_region}\", endpoint = \"{}\", allow_http = true, access_key_id = {{ file = {:?} }}, secret_access_key = {{ file = {:?} }} }}",
            s3.endpoint(),
            root.join("key-id").display().to_string(),
            root.join("secret").display().to_string(),
        );
        region
            .settings
            .push(format!("cloud_regions = [\"{cloud_region}\"]"));
        let raft_dir = root.join(format!("{prefix}-raft"));
        std::fs::create_dir_all(&raft_dir)?;
        let raft = TestRegion::new(3, &raft_dir, "dba")?;
        region.control = raft.control_endpoints();
        rafts.push(raft);
        layout.push(region);
    }
    let mut base = GatewaySpec::new(&oidc.issuer, AUDIENCE);
    base.roles = vec![
        RoleSpec {
            name: "dba".into(),
            groups: vec!["dba".into()],
            connections: vec![EU_CONNECTION.into(), US_CONNECTION.into()],
            level: "admin".into(),
            settings: Vec::new(),
        },
        RoleSpec::jit("oncall-eu", "analysts", EU_CONNECTION, "admin", "dba"),
        RoleSpec::jit("oncall-us", "analysts", US_CONNECTION, "admin", "dba"),
    ];
    for connection in [EU_CONNECTION, US_CONNECTION] {
        base.connection_settings.push((
            connection.into(),
            "[connection.approvals]\nreviewers = [\"dba\"]\nhold = \"60s\"".into(),
        ));
    }
    let mut nodes = Vec::new();
    for (raft, (name, ..)) in rafts.iter().zip(regions) {
        let specs = (0..3)
            .map(|i| directory.node_spec(&base, &layout, name, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        nodes.push(raft.start_each(&specs).await?);
    }
    let alice = oidc.user_token("alice").await?;
    let bob = oidc.user_token("bob").await?;
    for region in &nodes {
        wait_for_leader(&region.iter().collect::<Vec<_>>(), &alice).await?;
    }
    let ca = directory.client_ca_file.clone();
    let conninfo = |node: &juris_testkit::gateway::RegionNode,
                    connection: &str,
                    user: &str,
                    token: &str| {
        format!(
            "host={} hostaddr={} port={} dbname={connection} user={user} sslmode=verify-full sslrootcert={} password={token} connect_timeout=20",
            directory.host(connection),
            node.gateway.address.ip(),
            node.gateway.address.port(),
            ca.display(),
        )
    };

    for (owner, (region, _, connection, ..)) in regions.into_iter().enumerate() {
        let foreign = &nodes[1 - owner];
        let foreign_config = foreign[0].gateway.config_file.display().to_string();
        let token = residency_token(region);
        let role = format!("oncall-{}", &region[..2]);

        // bob asks with the other region's deployment file; the request is
        // created and decided in the owning region.
        let out = routed_ok(
            &bob,
            &ca,
            &[
                "access",
                "request",
                connection,
                "--role",
                &role,
                "--for",
                "1h",
                "--reason",
                &format!("incident {token}"),
                "--config",
                &foreign_config,
            ],
        )
        .await?;
        let request = id_with_prefix(&out, "ar-")?;
        routed_ok(
            &alice,
            &ca,
            &[
                "access",
                "approve",
                &request,
                "--reason",
                "ok",
                "--config",
                &foreign_config,
                "--region",
                region,
            ],
        )
        .await?;

        // bob's sessions on the grant reach the other region's nodes and
        // are handed over.
        let table = format!("{token}_t");
        let via_foreign = conninfo(&foreign[1], connection, "bob", &bob);
        let create = format!(
            "CREATE TABLE {table}(x int); INSERT INTO {table} VALUES (7); SELECT '{token}_session', count(*) FROM customers"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (ok, out, err) = psql(&via_foreign, &["-c", &create]).await?;
            if ok {
                assert_eq!(out.lines().last(), Some(&*format!("{token}_session|1000")));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no session on the {region} grant: {err}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A DROP through a third node waits for review in the owning region.
        let drop_sql = format!("DROP TABLE {table}");
        let drop = tokio::spawn({
            let conninfo = conninfo(&foreign[2], connection, "bob", &bob);
            let sql = drop_sql.clone();
            async move { psql(&conninfo, &["-c", &sql]).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let approval = loop {
            let listed = routed_ok(
                &alice,
                &ca,
                &[
                    "approvals",
                    "list",
                    "--status",
                    "pending",
                    "--config",
                    &foreign_config,
                    "--region",
                    region,
                ],
            )
            .await?;
            if let Some(line) = listed.lines().find(|l| l.contains(&drop_sql)) {
                break id_with_prefix(line, "ap-")?;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pending approval in {region}: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        routed_ok(
            &alice,
            &ca,
            &[
                "approvals",
                "approve",
                &approval,
                "--reason",
                &format!("approved {token}"),
                "--config",
                &foreign_config,
                "--region",
                region,
            ],
        )
        .await?;
        let (ok, _, err) = tokio::time::timeout(Duration::from_secs(30), drop).await???;
        assert!(ok, "the approved DROP in {region} failed: {err}");

        // And alice, directly on an owning node.
        let (ok, out, err) = psql(
            &conninfo(&nodes[owner][0], connection, "alice", &alice),
            &["-c", &format!("SELECT '{token}_direct'")],
        )
        .await?;
        assert!(ok, "{err}");
        assert_eq!(out.trim(), format!("{token}_direct"));
    }

    // The foreign nodes only relayed: none of them terminated TLS for a
    // connection of the other region.
    for (owner, (_, _, connection, ..)) in regions.into_iter().enumerate() {
        let mut handed_over = 0;
        for planned in &layout[1 - owner].nodes {
            let metrics = scrape(&planned.metrics_address()).await?;
            let handshakes = metrics
                [&format!("juris_client_tls_handshakes_total{{connection=\"{connection}\"}}")];
            assert_eq!(handshakes, 0, "{}: {metrics:?}", planned.id);
            assert_eq!(metrics["juris_handovers_cut_total"], 0, "{metrics:?}");
            handed_over += metrics["juris_handovers_out_total"];
        }
        assert_eq!(handed_over, 2, "sessions of {connection} handed over");
    }

    // Stop every node (sealing and uploading its evidence).
    let mut stopped = Vec::new();
    for region in nodes {
        for node in region {
            node.gateway.signal(15)?;
            stopped.push(node.gateway);
        }
    }
    for node in &mut stopped {
        node.wait(Duration::from_secs(60)).await?;
    }
    let (eu_nodes, us_nodes) = stopped.split_at(3);

    for (owner, (region, prefix, _, bucket, ..)) in regions.into_iter().enumerate() {
        let (_, other_prefix, _, other_bucket, ..) = regions[1 - owner];
        let token = residency_token(region);
        let (own_nodes, other_nodes) = if owner == 0 {
            (eu_nodes, us_nodes)
        } else {
            (us_nodes, eu_nodes)
        };

        // The region's bucket holds only its own prefixes, with its
        // recordings and audit segments.
        let objects = relative_files(&root.join("s3").join(bucket));
        let stray: Vec<_> = objects
            .iter()
            .filter(|key| {
                !key.starts_with(&format!("audit/{region}/"))
                    && !key.starts_with(&format!("recordings/{region}/"))
                    && !key.starts_with(".")
            })
            .collect();
        assert!(stray.is_empty(), "{bucket} holds {stray:?}");
        for kind in ["audit", "recordings"] {
            assert!(
                objects
                    .iter()
                    .any(|k| k.starts_with(&format!("{kind}/{region}/"))),
                "{bucket} has no {kind}: {objects:?}"
            );
        }
        let in_bucket =
            files_containing(&root.join("s3").join(bucket), &format!("{token}_session"));
        assert!(
            !in_bucket.is_empty(),
            "{bucket} holds no recording of {region}'s sessions"
        );

        // The approval decided in the region is in its nodes' data
        // directories (Raft log) and nowhere in the other region's.
        let own_dirs: Vec<_> = (1..=3)
            .flat_map(|i| {
                files_containing(
                    &root.join(format!("{prefix}-{i}-data")),
                    &format!("approved {token}"),
                )
            })
            .collect();
        assert!(
            !own_dirs.is_empty(),
            "no node of {region} holds the approval"
        );
        for place in [
            root.join("s3").join(other_bucket),
            root.join(format!("{other_prefix}-raft")),
        ]
        .into_iter()
        .chain((1..=3).map(|i| root.join(format!("{other_prefix}-{i}-data"))))
        {
            let found = files_containing(&place, &token);
            assert!(
                found.is_empty(),
                "{region}'s evidence outside {region}: {found:?}"
            );
        }
        for node in other_nodes {
            assert!(
                !node.log().contains(&token),
                "a node of another region logged {region}'s workload"
            );
        }

        // The region's bundle, exported from its bucket, verifies with its
        // residency section and holds its evidence only.
        let bundle = root.join(format!("{region}.tar.zst"));
        export_verified(
            &own_nodes[0].config_file,
            region,
            &bundle,
            &format!("s3://{bucket}"),
        )
        .await?;
        let unpacked = root.join(format!("{region}-bundle"));
        std::fs::create_dir_all(&unpacked)?;
        let status = std::process::Command::new("tar")
            .args(["--zstd", "-xf", bundle.to_str().unwrap(), "-C"])
            .arg(&unpacked)
            .status()?;
        assert!(status.success());
        assert!(!files_containing(&unpacked, &format!("{token}_session")).is_empty());
        let other_token = residency_token(regions[1 - owner].0);
        let found = files_containing(&unpacked, &other_token);
        assert!(found.is_empty(), "{region}'s bundle holds {found:?}");
    }
    s3.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn juris_connect_goes_straight_to_the_owning_region() -> anyhow::Result<()> {
    let env = TwoRegions::start().await?;
    let token = env.oidc.user_token("alice").await?;
    // A user's copy of the deployment file in which each region publishes
    // its endpoint (in production, the region's geo-DNS or load balancer).
    let mut deployment = std::fs::read_to_string(&env.us.config_file)?;
    for (region, node) in [("eu-west", &env.eu), ("us-east", &env.us)] {
        deployment = deployment.replace(
            &format!("name = \"{region}\"\n"),
            &format!(
                "name = \"{region}\"\nendpoint = \"127.0.0.1:{}\"\n",
                node.address.port()
            ),
        );
    }
    let deployment_file = env.dir.path().join("user-deployment.toml");
    std::fs::write(&deployment_file, deployment)?;
    let ca = env.directory.client_ca_file.display().to_string();
    let config = deployment_file.display().to_string();

    for (connection, pg_port) in [
        (EU_CONNECTION, env._pgs.0.port),
        (US_CONNECTION, env._pgs.1.port),
    ] {
        let (_connect, port) =
            common::juris_connect(&[connection, "--config", &config, "--ca", &ca], &token).await?;
        let (ok, out, err) = psql(
            &format!("host=127.0.0.1 port={port} dbname={connection} user=alice sslmode=disable"),
            &["-c", "select current_setting('port')"],
        )
        .await?;
        assert!(ok, "{connection}: {err}");
        assert_eq!(out.trim(), pg_port.to_string());
    }
    // Each session went to its own region's node directly (verify-full on
    // the connection's directory name): nothing was handed over.
    for region in 0..2 {
        let metrics = env.metrics(region).await?;
        assert_eq!(metrics["juris_handovers_out_total"], 0, "{metrics:?}");
        assert_eq!(metrics["juris_handovers_in_total"], 0, "{metrics:?}");
    }
    let handshakes = env.metrics(0).await?;
    assert_eq!(
        handshakes[&format!("juris_client_tls_handshakes_total{{connection=\"{EU_CONNECTION}\"}}")],
        1
    );

    // A connection the file does not declare is named in the error.
    let (ok, _, err) = juris_with_env(
        &[
            "connect", "nowhere", "--config", &config, "--ca", &ca, "--port", "0",
        ],
        &[("JURIS_TOKEN", &token)],
    )
    .await?;
    assert!(
        !ok && err.contains("connection \"nowhere\" is not declared"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_in_psql_cancels_a_statement_served_by_another_region() -> anyhow::Result<()> {
    let env = TwoRegions::start().await?;
    let token = env.oidc.user_token("alice").await?;
    // psql sends its CancelRequest in plaintext to the address it
    // connected to: the us-east node, which only relays the session.
    let started = std::time::Instant::now();
    let sleeper = tokio::process::Command::new("psql")
        .arg(env.conninfo(&env.us, EU_CONNECTION, &token, "verify-full"))
        .args(["-X", "-A", "-t", "-c", "select pg_sleep(60)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = sleeper.id().expect("psql is running").to_string();
    env.wait_until_eu_runs("select pg_sleep(60)").await?;
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    assert!(status.success());
    let output =
        tokio::time::timeout(Duration::from_secs(20), sleeper.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(50));
    let us = env.metrics(1).await?;
    let eu = env.metrics(0).await?;
    assert_eq!(us["juris_handover_cancels_out_total"], 1, "{us:?}");
    assert_eq!(eu["juris_handover_cancels_in_total"], 1, "{eu:?}");

    // A forged key cancels nothing and is not passed on.
    let mut forged = tokio::net::TcpStream::connect(env.us.address).await?;
    let mut request = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    request.extend_from_slice(&[0, 0, 0, 42, 1, 2, 3, 4]);
    tokio::io::AsyncWriteExt::write_all(&mut forged, &request).await?;
    drop(forged);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let us = env.metrics(1).await?;
    assert_eq!(us["juris_handover_cancels_out_total"], 1, "{us:?}");
    Ok(())
}

/// Behind a load balancer or geo-DNS a client's cancel request (a new
/// connection) may reach any node. Here the session runs on the eu-west
/// node and its cancel request reaches the us-east node, which never saw
/// the session: the key names the node that issued it, so the us-east
/// node passes the request on to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_request_that_reaches_another_node_still_cancels() -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let env = TwoRegions::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&env.directory.client_ca_file)? {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    let mut config = tokio_postgres::Config::new();
    config
        .host(env.directory.host(EU_CONNECTION))
        .hostaddr(env.eu.address.ip())
        .port(env.eu.address.port())
        .dbname(EU_CONNECTION)
        .user("alice")
        .password(&token)
        // TLS for the session; the cancel request below goes in plaintext,
        // as libpq sends it.
        .ssl_mode(tokio_postgres::config::SslMode::Prefer)
        .connect_timeout(Duration::from_secs(20));
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(connection);
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    env.wait_until_eu_runs("select pg_sleep(60)").await?;
    let wrong_node = tokio::net::TcpStream::connect(env.us.address).await?;
    cancel
        .cancel_query_raw(wrong_node, tokio_postgres::NoTls)
        .await?;
    let outcome = tokio::time::timeout(Duration::from_secs(20), sleeping).await??;
    let error = outcome.expect_err("the statement was cancelled");
    let (code, message) = common::db_error(&error).expect("a server error");
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("57014", "canceling statement due to user request")
    );
    let us = env.metrics(1).await?;
    let eu = env.metrics(0).await?;
    assert_eq!(us["juris_handover_cancels_out_total"], 1, "{us:?}");
    assert_eq!(eu["juris_handover_cancels_in_total"], 1, "{eu:?}");
    Ok(())
}
