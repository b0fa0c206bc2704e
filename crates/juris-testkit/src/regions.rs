//! Deployments of several regions on loopback: one deployment file per
//! node, all describing the same regions, connections and directory.
//!
//! Certificates are laid out as production would: one CA that clients
//! trust signs each region's server certificate, which names only that
//! region's connections (`<connection>.<domain>`); a second CA signs every
//! node's relay certificate (`<region>.relay.juris`) for the handover links
//! between regions.

use std::path::{Path, PathBuf};

use juris_demo::certs::DemoCa;

use crate::gateway::{ConnectionSpec, GatewaySpec, ServerTlsFiles, free_port};

/// One region of the layout.
#[derive(Debug, Clone)]
pub struct RegionLayout {
    pub name: String,
    /// Node ids, e.g. `eu-1`.
    pub nodes: Vec<PlannedNode>,
    /// The connections it owns.
    pub connections: Vec<ConnectionSpec>,
    /// Its `store = { ... }` inline table.
    pub store: String,
    /// Its nodes' control APIs (`[[region]] control`), when it runs a Raft
    /// group.
    pub control: Vec<String>,
    /// More `key = value` lines of its `[[region]]` table (e.g.
    /// `cloud_regions`), in every node's deployment file.
    pub settings: Vec<String>,
}

/// A node's fixed ports (its PostgreSQL listener is chosen at start).
#[derive(Debug, Clone)]
pub struct PlannedNode {
    pub id: String,
    pub relay_port: u16,
    pub metrics_port: u16,
}

impl PlannedNode {
    pub fn new(id: &str) -> anyhow::Result<PlannedNode> {
        Ok(PlannedNode {
            id: id.into(),
            relay_port: free_port()?,
            metrics_port: free_port()?,
        })
    }

    /// `http://127.0.0.1:<port>/metrics`'s address.
    pub fn metrics_address(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }
}

impl RegionLayout {
    /// A region of nodes `<prefix>-1..=count` with a local store in `dir`.
    pub fn local(
        name: &str,
        node_prefix: &str,
        count: usize,
        connections: Vec<ConnectionSpec>,
        dir: &Path,
    ) -> anyhow::Result<RegionLayout> {
        let nodes = (1..=count)
            .map(|i| PlannedNode::new(&format!("{node_prefix}-{i}")))
            .collect::<anyhow::Result<_>>()?;
        let store = dir.join(format!("store-{name}"));
        Ok(RegionLayout {
            name: name.into(),
            nodes,
            connections,
            store: format!(
                "{{ kind = \"local\", path = {:?} }}",
                store.display().to_string()
            ),
            control: Vec::new(),
            settings: Vec::new(),
        })
    }

    fn control_endpoints(&self) -> String {
        self.control
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn relay_endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.relay_port))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The directory domain, the two CAs, and where their files live.
pub struct Directory {
    pub domain: String,
    dir: PathBuf,
    client_ca: DemoCa,
    relay_ca: DemoCa,
    /// The CA clients trust (`sslrootcert`).
    pub client_ca_file: PathBuf,
    relay_ca_file: PathBuf,
}

impl Directory {
    pub fn new(dir: &Path, domain: &str) -> anyhow::Result<Directory> {
        let client_ca = DemoCa::new("Juris test client-facing CA")?;
        let relay_ca = DemoCa::new("Juris test relay CA")?;
        let client_ca_file = dir.join("client-ca.pem");
        let relay_ca_file = dir.join("relay-ca.pem");
        std::fs::write(&client_ca_file, &client_ca.ca_cert_pem)?;
        std::fs::write(&relay_ca_file, &relay_ca.ca_cert_pem)?;
        Ok(Directory {
            domain: domain.into(),
            dir: dir.to_path_buf(),
            client_ca,
            relay_ca,
            client_ca_file,
            relay_ca_file,
        })
    }

    /// The name clients use for `connection`.
    pub fn host(&self, connection: &str) -> String {
        format!("{connection}.{}", self.domain)
    }

    /// The deployment of node `index` of region `region`: `base` (identity
    /// provider, roles) plus every region's connections and the node's
    /// certificates, relay and metrics listeners.
    pub fn node_spec(
        &self,
        base: &GatewaySpec,
        regions: &[RegionLayout],
        region: &str,
        index: usize,
    ) -> anyhow::Result<GatewaySpec> {
        let own = regions
            .iter()
            .find(|r| r.name == region)
            .ok_or_else(|| anyhow::anyhow!("no region {region} in the layout"))?;
        let node = own
            .nodes
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("region {region} has no node {index}"))?;
        // The connections' names, and `localhost` for the control API.
        let mut names: Vec<String> = own.connections.iter().map(|c| self.host(&c.name)).collect();
        names.push("localhost".into());
        let server = self.client_ca.issue_server(&names, true)?;
        let relay = self
            .relay_ca
            .issue_peer(&[format!("{region}.relay.juris")])?;
        let file = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = self.dir.join(format!("{}-{name}", node.id));
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        let mut spec = base.clone();
        spec.node_id = node.id.clone();
        spec.region = region.into();
        spec.server_tls = Some(ServerTlsFiles {
            cert_file: file("server.pem", &server.cert_pem)?,
            key_file: file("server.key", &server.key_pem)?,
            ca_file: self.client_ca_file.clone(),
        });
        spec.node_settings.push(format!(
            "relay = {{ listen = \"127.0.0.1:{}\", connect_timeout_ms = 2000, tls = {{ cert_file = {:?}, key_file = {:?}, ca_file = {:?} }} }}",
            node.relay_port,
            file("relay.pem", &relay.cert_pem)?.display().to_string(),
            file("relay.key", &relay.key_pem)?.display().to_string(),
            self.relay_ca_file.display().to_string(),
        ));
        spec.node_settings
            .push(format!("metrics_listen = \"{}\"", node.metrics_address()));
        spec.node_settings.push(format!(
            "data_dir = {:?}",
            self.dir
                .join(format!("{}-data", node.id))
                .display()
                .to_string()
        ));
        spec.region_settings.push(format!("store = {}", own.store));
        spec.region_settings
            .push(format!("relay = [{}]", own.relay_endpoints()));
        spec.region_settings
            .push(format!("control = [{}]", own.control_endpoints()));
        spec.region_settings.extend(own.settings.iter().cloned());
        for r in regions {
            for c in &r.connections {
                let mut c = c.clone();
                c.settings.push(format!("region = {:?}", r.name));
                spec.connections.push(c);
            }
            if r.name != region {
                let mut table = format!(
                    "[[region]]\nname = {:?}\nstore = {}\nrelay = [{}]\ncontrol = [{}]",
                    r.name,
                    r.store,
                    r.relay_endpoints(),
                    r.control_endpoints()
                );
                for line in &r.settings {
                    table.push('\n');
                    table.push_str(line);
                }
                spec.extra_tables.push(table);
            }
        }
        spec.extra_tables
            .push(format!("[directory]\ndomain = {:?}", self.domain));
        Ok(spec)
    }
}

/// `GET /metrics` of a node; returns the value of each sample line.
pub async fn scrape(address: &str) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response from {address}"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}
