//! `juris demo --regions eu-west,us-east`: the demo with one region per
//! name, all in this process: a throwaway PostgreSQL and a node per region,
//! one connection per region (`billing-<region>`), one directory domain, and
//! the certificates a real multi-region deployment has (each region's
//! server certificate names only its own connection; a relay CA for the
//! hand-overs between regions). It prints how to reach every connection
//! through its own region's node and through another region's node (the
//! session is handed over, still encrypted).

use std::path::{Path, PathBuf};

use juris_config::{Deployment, DirectoryConfig, PeerTlsConfig, RelayConfig, relay_server_name};

use crate::DemoError;
use crate::certs::DemoCa;
use crate::demo::{
    AUDIENCE, PEOPLE, TOKEN_TTL, deployment, start_postgres, toml_text, write_private,
};
use crate::issuer::DevIssuer;
use crate::postgres::TempPostgres;

/// The demo's directory domain (`.test` is reserved for testing).
pub const DOMAIN: &str = "db.juris.test";

/// One region of the demo as it is being set up.
struct DemoRegion {
    name: String,
    dir: PathBuf,
    pg: TempPostgres,
    listen: String,
    relay: String,
    metrics: String,
    deployment: Deployment,
}

fn free_address() -> Result<String, DemoError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

fn connection_name(region: &str) -> String {
    format!("billing-{region}")
}

/// Run a demo of `names` regions until Ctrl-C or SIGTERM.
pub async fn run(names: &[String]) -> Result<(), DemoError> {
    let dir = tempfile::Builder::new().prefix("juris-demo-").tempdir()?;
    println!(
        "Starting the Juris demo with regions {} (everything lives in {} and is removed on exit)...",
        names.join(", "),
        dir.path().display()
    );
    let client_ca = DemoCa::new("Juris demo client-facing CA (throwaway)")?;
    let relay_ca = DemoCa::new("Juris demo relay CA (throwaway)")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &client_ca.ca_cert_pem)?;
    let relay_ca_file = dir.path().join("relay-ca.pem");
    std::fs::write(&relay_ca_file, &relay_ca.ca_cert_pem)?;
    let issuer = DevIssuer::start(AUDIENCE).await?;

    let mut regions = Vec::new();
    for name in names {
        let region_dir = dir.path().join(name);
        std::fs::create_dir_all(&region_dir)?;
        let pg = start_postgres(&region_dir).await?;
        let server =
            client_ca.issue_server(&[format!("{}.{DOMAIN}", connection_name(name))], false)?;
        write_private(&region_dir.join("server.pem"), &server.cert_pem)?;
        write_private(&region_dir.join("server.key"), &server.key_pem)?;
        let relay = relay_ca.issue_peer(&[relay_server_name(name)])?;
        write_private(&region_dir.join("relay.pem"), &relay.cert_pem)?;
        write_private(&region_dir.join("relay.key"), &relay.key_pem)?;
        let listen = free_address()?;
        let deployment = deployment(&region_dir, &listen, issuer.issuer(), &pg);
        regions.push(DemoRegion {
            name: name.clone(),
            dir: region_dir,
            pg,
            listen,
            relay: free_address()?,
            metrics: free_address()?,
            deployment,
        });
    }
    let deployments: Vec<Deployment> = regions
        .iter()
        .map(|r| compose(r, &regions, &relay_ca_file))
        .collect();
    let mut nodes = Vec::new();
    for (region, deployment) in regions.iter().zip(deployments) {
        deployment.validate(&region.name)?;
        std::fs::write(
            region.dir.join("juris.toml"),
            toml_text(&deployment).unwrap_or_default(),
        )?;
        nodes.push(juris_node::start(deployment).await?);
    }

    println!();
    println!("Juris demo is running: one node per region, one directory domain ({DOMAIN}).");
    println!(
        "Demo-only OIDC issuer: {} (loopback only; never use it for anything real)",
        issuer.issuer()
    );
    for region in &regions {
        println!(
            "  region {}: node {} (metrics: curl http://{}/metrics), PostgreSQL 127.0.0.1:{}, connection {}, deployment file {}",
            region.name,
            region.listen,
            region.metrics,
            region.pg.port,
            connection_name(&region.name),
            region.dir.join("juris.toml").display()
        );
    }
    println!();
    let (login, groups, what) = PEOPLE[1];
    let token = issuer.mint(login, &format!("{login}@example.com"), groups, TOKEN_TTL)?;
    println!("As {login} ({what}):");
    for (i, region) in regions.iter().enumerate() {
        let connection = connection_name(&region.name);
        let other = &regions[(i + 1) % regions.len()];
        let psql = |via: &DemoRegion| {
            let (host, port) = via.listen.rsplit_once(':').unwrap_or(("127.0.0.1", "0"));
            format!(
                "psql \"host={connection}.{DOMAIN} hostaddr={host} port={port} dbname={connection} user={login} sslmode=verify-full sslrootcert={} password={token}\"",
                ca_file.display()
            )
        };
        println!("── {connection} (region {}):", region.name);
        println!("  through its own region's node:\n    {}", psql(region));
        if other.name != region.name {
            println!(
                "  through region {}'s node, which hands it over still encrypted:\n    {}",
                other.name,
                psql(other)
            );
        }
        println!();
    }
    println!(
        "Each session is decrypted, masked and recorded only in its connection's region: a node's metrics count the sessions it handed over and show no TLS session terminated for another region's connection."
    );
    println!("Press Ctrl-C to stop; everything started here is cleaned up.");

    juris_node::wait_for_signal().await;
    println!("\nStopping...");
    for node in &nodes {
        node.shutdown();
    }
    for node in nodes {
        node.wait().await;
    }
    for region in regions {
        region.pg.stop().await?;
    }
    drop(issuer);
    drop(dir);
    println!("Stopped and cleaned up.");
    Ok(())
}

/// `region`'s deployment: its own node and connection, every other
/// region's connection and endpoints, the directory and the relay link.
fn compose(region: &DemoRegion, all: &[DemoRegion], relay_ca_file: &Path) -> Deployment {
    let mut deployment = region.deployment.clone();
    deployment.node.id = format!("{}-1", region.name);
    deployment.node.region = region.name.clone();
    deployment.node.metrics_listen = Some(region.metrics.clone());
    deployment.node.relay = Some(RelayConfig {
        listen: region.relay.clone(),
        tls: PeerTlsConfig {
            cert_file: region.dir.join("relay.pem"),
            key_file: region.dir.join("relay.key"),
            ca_file: relay_ca_file.to_path_buf(),
        },
        connect_timeout_ms: 3000,
    });
    deployment.directory = Some(DirectoryConfig {
        domain: DOMAIN.into(),
    });
    deployment.regions.clear();
    deployment.connections.clear();
    for other in all {
        let mut own = other.deployment.regions[0].clone();
        own.name = other.name.clone();
        own.endpoint = Some(other.listen.clone());
        own.relay = vec![other.relay.clone()];
        deployment.regions.push(own);
        let mut connection = other.deployment.connections[0].clone();
        connection.name = connection_name(&other.name);
        connection.region = other.name.clone();
        deployment.connections.push(connection);
    }
    let names: Vec<String> = all.iter().map(|r| connection_name(&r.name)).collect();
    for role in &mut deployment.roles {
        role.connections = names.clone();
    }
    deployment
}
