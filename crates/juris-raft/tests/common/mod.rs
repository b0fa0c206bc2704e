//! Shared test harness: a throwaway PKI (rcgen), a tiny key/value state
//! machine, and an in-process cluster of real nodes (RocksDB in temp dirs,
//! gRPC over mTLS on 127.0.0.1).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use juris_raft::{PeerTls, RaftConfig, RaftNode, StateMachine};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the directory its issued files are written to.
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca_key: KeyPair,
    ca_params: CertificateParams,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca_key: key,
            ca_params: params,
            ca_file,
        })
    }

    /// A certificate for 127.0.0.1 usable as server and client, signed by
    /// this CA; returns the TLS config using `trust` as the CA file.
    pub fn issue(&self, label: &str, trust: &Path) -> Result<PeerTls> {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        let cert_file = self.dir.join(format!("{}-{label}.pem", self.name));
        let key_file = self.dir.join(format!("{}-{label}.key", self.name));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok(PeerTls {
            cert_file,
            key_file,
            ca_file: trust.to_path_buf(),
        })
    }
}

/// Key/value state machine: command `key=value` sets a key; the response is
/// the number of commands applied so far. Records the leader time it saw.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    pub applied: u64,
    pub last_leader_time_ms: u64,
}

impl StateMachine for Kv {
    fn apply(&mut self, command: &[u8], leader_time_ms: u64) -> Vec<u8> {
        let text = String::from_utf8_lossy(command);
        if let Some((k, v)) = text.split_once('=') {
            self.map.insert(k.to_string(), v.to_string());
        }
        self.applied += 1;
        self.last_leader_time_ms = leader_time_ms;
        self.applied.to_string().into_bytes()
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Timing used by the tests: fast, but with enough slack for a debug build
/// on a shared 2-core machine.
pub fn test_config(id: u64, listen: SocketAddr, data_dir: PathBuf, tls: PeerTls) -> RaftConfig {
    let mut cfg = RaftConfig::new(id, listen, data_dir, tls);
    cfg.heartbeat_ms = 50;
    cfg.election_timeout_min_ms = 400;
    cfg.election_timeout_max_ms = 800;
    cfg.snapshot_every_logs = 1_000;
    cfg.logs_to_keep_after_snapshot = 100;
    cfg.write_timeout_ms = 5_000;
    cfg.rpc_timeout_ms = 1_000;
    cfg
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually<F: FnMut() -> bool>(
    what: &str,
    timeout: Duration,
    mut cond: F,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An in-process cluster whose nodes can be stopped and restarted on the
/// same directory and port.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub pki: Pki,
    pub nodes: BTreeMap<u64, RaftNode<Kv>>,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub tune: fn(&mut RaftConfig),
}

impl Cluster {
    pub fn new(tune: fn(&mut RaftConfig)) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let pki = Pki::new(&root.path().join("pki"), "region")?;
        Ok(Self {
            root,
            pki,
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            tune,
        })
    }

    pub fn config(&self, id: u64) -> Result<RaftConfig> {
        let tls = self.pki.issue(&format!("node{id}"), &self.pki.ca_file)?;
        let listen = self
            .addrs
            .get(&id)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut cfg = test_config(id, listen, self.root.path().join(format!("node{id}")), tls);
        (self.tune)(&mut cfg);
        Ok(cfg)
    }

    /// Starts (or restarts) node `id` on its directory and previous port.
    pub async fn start(&mut self, id: u64) -> Result<()> {
        let node = RaftNode::start(self.config(id)?, Kv::default())
            .await
            .with_context(|| format!("start node {id}"))?;
        self.addrs.insert(id, node.local_addr());
        self.nodes.insert(id, node);
        Ok(())
    }

    pub async fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.remove(&id).context("node not running")?;
        node.shutdown()
            .await
            .with_context(|| format!("shut down node {id}"))?;
        Ok(())
    }

    pub fn node(&self, id: u64) -> &RaftNode<Kv> {
        &self.nodes[&id]
    }

    /// Starts nodes `1..=n` and initializes the group from node 1.
    pub async fn form(tune: fn(&mut RaftConfig), n: u64) -> Result<Self> {
        let mut c = Self::new(tune)?;
        for id in 1..=n {
            c.start(id).await?;
        }
        let members: BTreeMap<u64, String> =
            c.addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        c.node(1).initialize(members).await?;
        c.wait_leader(Duration::from_secs(20)).await?;
        Ok(c)
    }

    /// Waits until every running node names the same leader, which is
    /// itself running and leading.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let mut found = 0;
        eventually("a leader all running nodes agree on", timeout, || {
            let leaders: BTreeSet<Option<u64>> =
                self.nodes.values().map(|n| n.status().leader_id).collect();
            match leaders.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(l)]
                    if self
                        .nodes
                        .get(l)
                        .is_some_and(|n| n.status().role == juris_raft::Role::Leader) =>
                {
                    found = *l;
                    true
                }
                _ => false,
            }
        })
        .await?;
        Ok(found)
    }

    /// Some running node that is not `leader`.
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.nodes
            .keys()
            .copied()
            .find(|id| *id != leader)
            .unwrap_or(leader)
    }

    /// Waits until every running node's state equals `expected`.
    pub async fn wait_all_state(
        &self,
        expected: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()> {
        eventually("all nodes to apply the same state", timeout, || {
            self.nodes
                .values()
                .all(|n| n.with_state(|s| &s.map == expected))
        })
        .await
    }
}
