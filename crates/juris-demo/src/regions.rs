//! `juris demo --regions eu-west,us-east [--nodes 3]`: the demo with one
//! region per name, all in this process: a throwaway PostgreSQL and one or
//! more nodes per region (several form the region's own Raft group, with a
//! peer CA of its own), one connection per region (`billing-<region>`),
//! one directory domain, and the certificates a real multi-region
//! deployment has (each region's server certificate names only its own
//! connection; a relay CA for the hand-overs between regions). It prints
//! how to reach every connection through its own region's node and through
//! another region's node (the session is handed over, still encrypted).

use std::path::{Path, PathBuf};

use juris_config::{
    ClusterConfig, ClusterMember, Deployment, DirectoryConfig, PeerTlsConfig, RelayConfig,
    defaults, relay_server_name,
};

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
    nodes: Vec<DemoNode>,
    deployment: Deployment,
}

/// One node's addresses (Raft and control only in a group of several).
struct DemoNode {
    listen: String,
    relay: String,
    metrics: String,
    raft: String,
    control: String,
}

impl DemoNode {
    fn new() -> Result<DemoNode, DemoError> {
        Ok(DemoNode {
            listen: free_address()?,
            relay: free_address()?,
            metrics: free_address()?,
            raft: free_address()?,
            control: free_address()?,
        })
    }
}

fn free_address() -> Result<String, DemoError> {
    Ok(format!("127.0.0.1:{}", crate::ports::free_port()?))
}

fn connection_name(region: &str) -> String {
    format!("billing-{region}")
}

/// Run a demo of `names` regions of `nodes_per_region` nodes each until
/// Ctrl-C or SIGTERM.
pub async fn run(names: &[String], nodes_per_region: usize) -> Result<(), DemoError> {
    let nodes_per_region = nodes_per_region.max(1);
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
        // The connection's directory name for clients; localhost for the
        // control API.
        let server = client_ca.issue_server(
            &[
                format!("{}.{DOMAIN}", connection_name(name)),
                "localhost".into(),
            ],
            true,
        )?;
        write_private(&region_dir.join("server.pem"), &server.cert_pem)?;
        write_private(&region_dir.join("server.key"), &server.key_pem)?;
        let relay = relay_ca.issue_peer(&[relay_server_name(name)])?;
        write_private(&region_dir.join("relay.pem"), &relay.cert_pem)?;
        write_private(&region_dir.join("relay.key"), &relay.key_pem)?;
        if nodes_per_region > 1 {
            // The region's own peer CA: no node of another region can
            // join its Raft group.
            let peer_ca = DemoCa::new(&format!("Juris demo {name} peer CA (throwaway)"))?;
            std::fs::write(region_dir.join("peer-ca.pem"), &peer_ca.ca_cert_pem)?;
            let peer = peer_ca.issue_peer(&["localhost".into()])?;
            write_private(&region_dir.join("peer.pem"), &peer.cert_pem)?;
            write_private(&region_dir.join("peer.key"), &peer.key_pem)?;
        }
        let nodes = (0..nodes_per_region)
            .map(|_| DemoNode::new())
            .collect::<Result<Vec<_>, _>>()?;
        let deployment = deployment(&region_dir, &nodes[0].listen, issuer.issuer(), &pg);
        regions.push(DemoRegion {
            name: name.clone(),
            dir: region_dir,
            pg,
            nodes,
            deployment,
        });
    }
    let mut nodes = Vec::new();
    for region in &regions {
        for index in 0..region.nodes.len() {
            let deployment = compose(region, index, &regions, &relay_ca_file);
            deployment.validate(&region.name)?;
            std::fs::write(
                region.dir.join(format!("juris-{}.toml", index + 1)),
                toml_text(&deployment).unwrap_or_default(),
            )?;
            nodes.push(juris_node::start(deployment).await?);
        }
    }

    println!();
    println!(
        "Juris demo is running: {nodes_per_region} node(s) per region{}, one directory domain ({DOMAIN}).",
        if nodes_per_region > 1 {
            ", each region's nodes in their own Raft group"
        } else {
            ""
        }
    );
    println!(
        "Demo-only OIDC issuer: {} (loopback only; never use it for anything real)",
        issuer.issuer()
    );
    for region in &regions {
        println!(
            "  region {}: PostgreSQL 127.0.0.1:{}, connection {}",
            region.name,
            region.pg.port,
            connection_name(&region.name),
        );
        for (index, node) in region.nodes.iter().enumerate() {
            let control = if nodes_per_region > 1 {
                format!(", control API {}", node.control)
            } else {
                String::new()
            };
            println!(
                "    node {}-{}: {} (metrics: curl http://{}/metrics){control}, deployment file {}",
                region.name,
                index + 1,
                node.listen,
                node.metrics,
                region
                    .dir
                    .join(format!("juris-{}.toml", index + 1))
                    .display()
            );
        }
    }
    println!();
    let (login, groups, what) = PEOPLE[1];
    let token = issuer.mint(login, &format!("{login}@example.com"), groups, TOKEN_TTL)?;
    println!("As {login} ({what}):");
    for (i, region) in regions.iter().enumerate() {
        let connection = connection_name(&region.name);
        let other = &regions[(i + 1) % regions.len()];
        let psql = |via: &DemoRegion| {
            let (host, port) = via.nodes[0]
                .listen
                .rsplit_once(':')
                .unwrap_or(("127.0.0.1", "0"));
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

/// The deployment of node `index` of `region`: its own addresses and
/// files, every region's connection and endpoints, the directory, the
/// relay link, and with several nodes per region its Raft group.
fn compose(
    region: &DemoRegion,
    index: usize,
    all: &[DemoRegion],
    relay_ca_file: &Path,
) -> Deployment {
    let node = &region.nodes[index];
    let mut deployment = region.deployment.clone();
    deployment.node.id = format!("{}-{}", region.name, index + 1);
    deployment.node.region = region.name.clone();
    deployment.node.listen = node.listen.clone();
    deployment.node.data_dir = Some(region.dir.join(format!("node-{}", index + 1)));
    deployment.node.metrics_listen = Some(node.metrics.clone());
    deployment.node.relay = Some(RelayConfig {
        listen: node.relay.clone(),
        advertise: None,
        tls: PeerTlsConfig {
            cert_file: region.dir.join("relay.pem"),
            key_file: region.dir.join("relay.key"),
            ca_file: relay_ca_file.to_path_buf(),
        },
        connect_timeout_ms: 3000,
        forward_threads: None,
    });
    if region.nodes.len() > 1 {
        deployment.node.cluster = Some(ClusterConfig {
            raft_id: index as u64 + 1,
            listen: node.raft.clone(),
            advertise: None,
            control_listen: node.control.clone(),
            members: region
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| ClusterMember {
                    id: i as u64 + 1,
                    address: n.raft.clone(),
                    control: Some(n.control.clone()),
                })
                .collect(),
            tls: PeerTlsConfig {
                cert_file: region.dir.join("peer.pem"),
                key_file: region.dir.join("peer.key"),
                ca_file: region.dir.join("peer-ca.pem"),
            },
            admin_groups: vec!["dba".into()],
            lease_bound: defaults::lease_bound(),
            snapshot_every: defaults::snapshot_every(),
        });
    }
    deployment.directory = Some(DirectoryConfig {
        domain: DOMAIN.into(),
    });
    deployment.regions.clear();
    deployment.connections.clear();
    for other in all {
        let mut own = other.deployment.regions[0].clone();
        own.name = other.name.clone();
        own.endpoint = Some(other.nodes[0].listen.clone());
        own.relay = other.nodes.iter().map(|n| n.relay.clone()).collect();
        if other.nodes.len() > 1 {
            own.control = other.nodes.iter().map(|n| n.control.clone()).collect();
        }
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
