//! A Juris node: reads a deployment, builds the data plane's context
//! (resolved upstream credentials, TLS, token validation), runs the listener,
//! and drains gracefully.
//!
//! Shutdown: stop accepting; let sessions run for the grace period; then end
//! the rest with FATAL 57P01; then give them a few seconds to say so.

mod audit;
mod auth;
mod control;
mod evidence;
mod metrics;
mod residency;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use juris_config::{Deployment, UpstreamTlsMode};
use juris_mask::Masker;
use juris_pgwire::Limits;
use juris_proxy_pg::{
    AuditSink, CancelRegistry, ConnectionMasking, HandoverLinks, KeyOrigin, LogAuditSink,
    ProxyContext, ProxySettings, UpstreamTarget,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use auth::OidcAuthenticator;

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] juris_config::ConfigError),
    #[error("{0}")]
    Tls(#[from] juris_tls::TlsError),
    #[error("node.listen: cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "connection[{index}].upstream.tls.server_name: `{name}` is not a valid DNS name or IP address"
    )]
    ServerName { index: usize, name: String },
    #[error("identity.algorithms: {0}")]
    Algorithm(String),
    #[error("connection[{index}].masking: {reason}")]
    Masking { index: usize, reason: String },
    #[error("connection[{index}].approvals.{reason}")]
    Review { index: usize, reason: String },
    #[error("node.data_dir: audit chain: {0}")]
    Audit(#[from] juris_audit::AuditError),
    #[error("node.cluster: {0}")]
    Cluster(String),
    #[error("node.relay.tls: {0}")]
    RelayTls(juris_tls::TlsError),
    /// The threads that forward sessions handed over to other regions.
    #[error("cannot start the threads that forward relayed sessions: {0}")]
    Forwarders(std::io::Error),
    /// The recording spool or the region's object store.
    #[error("{0}")]
    Evidence(String),
    /// The region's object store is not (provably) in its jurisdiction.
    #[error("{0}")]
    Residency(String),
}

/// A node whose listener is up.
pub struct RunningNode {
    /// Where the PostgreSQL listener accepts clients.
    pub postgres_address: SocketAddr,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    /// The audit writer thread; it ends (sealing its segment) once the
    /// last session has dropped the sink.
    audit: Option<std::thread::JoinHandle<()>>,
    /// Recording spool and uploads; stopped last, after the audit chain's
    /// final seal, so that segment is uploaded too.
    evidence: Option<evidence::Evidence>,
}

impl RunningNode {
    /// Begin a graceful shutdown (same as SIGTERM).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the node has drained and stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
        if let Some(thread) = self.audit {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(evidence) = self.evidence {
            evidence.stop().await;
        }
    }
}

/// Build the data plane's context from a validated deployment, with the
/// given audit sink.
pub fn build_context(
    deployment: Arc<Deployment>,
    audit_sink: Arc<dyn AuditSink>,
) -> Result<ProxyContext, NodeError> {
    let server_tls = juris_tls::server_config(
        &deployment.node.tls.cert_file,
        &deployment.node.tls.key_file,
    )?;
    let mut targets = HashMap::new();
    for (index, connection) in deployment.connections.iter().enumerate() {
        if connection.region != deployment.node.region {
            // Another region's: never reached from here (its credential
            // need not even exist on this node).
            continue;
        }
        let upstream = &connection.upstream;
        let password = upstream
            .password
            .as_ref()
            .map(|secret| secret.resolve(&format!("connection[{index}].upstream.password")))
            .transpose()?;
        let tls = match upstream.tls.mode {
            UpstreamTlsMode::Disable => None,
            UpstreamTlsMode::VerifyFull => {
                let config = juris_tls::client_config(upstream.tls.ca_file.as_deref())?;
                let name = upstream
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| upstream.host.clone());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| NodeError::ServerName { index, name })?;
                Some((config, server_name))
            }
        };
        targets.insert(
            connection.name.clone(),
            Arc::new(UpstreamTarget::new(
                connection.name.clone(),
                upstream.host.clone(),
                upstream.port,
                upstream.database.clone(),
                upstream.user.clone(),
                password,
                tls,
            )),
        );
    }
    let node = &deployment.node;
    let limits = Limits {
        max_message_len: node.max_message_bytes,
        ..Limits::default()
    };
    let masking = build_masking(&deployment, &targets, limits)?;
    let mut reviews = HashMap::new();
    for (index, connection) in deployment.connections.iter().enumerate() {
        if let Some(rule) = &connection.approvals {
            let policy = juris_policy::ReviewPolicy::new(&rule.statements, &rule.patterns)
                .map_err(|e| NodeError::Review {
                    index,
                    reason: e.to_string(),
                })?;
            reviews.insert(connection.name.clone(), policy);
        }
    }
    let authenticator = OidcAuthenticator::new(&deployment.identity)?;
    let handover = node
        .relay
        .as_ref()
        .map(|relay| -> Result<_, NodeError> {
            Ok(HandoverLinks {
                tls: juris_tls::mutual_tls(
                    &relay.tls.cert_file,
                    &relay.tls.key_file,
                    &relay.tls.ca_file,
                )
                .map_err(NodeError::RelayTls)?,
                connect_timeout: Duration::from_millis(relay.connect_timeout_ms),
                forwarders: juris_proxy_pg::Forwarders::start(
                    relay
                        .forward_threads
                        .unwrap_or_else(default_forward_threads),
                )
                .map_err(NodeError::Forwarders)?,
            })
        })
        .transpose()?;
    Ok(ProxyContext {
        handover,
        metrics: Arc::new(juris_proxy_pg::ProxyMetrics::new(
            deployment.connections.iter().map(|c| c.name.as_str()),
        )),
        grants: None,
        reviews,
        command_review: None,
        live: Default::default(),
        recordings: None,
        targets,
        tls: TlsAcceptor::from(server_tls),
        authenticator: Arc::new(authenticator),
        cancels: CancelRegistry::issuing_as(KeyOrigin::of_node(&deployment)),
        settings: ProxySettings {
            auth_timeout: Duration::from_secs(node.auth_timeout_secs),
            upstream_connect_timeout: Duration::from_secs(node.upstream_connect_timeout_secs),
            limits,
        },
        masking,
        audit: audit_sink,
        deployment,
    })
}

/// `node.relay.forward_threads` when unset: forwarding a relayed session
/// is mostly kernel work on sockets, so one event loop keeps up with the
/// sessions of about four CPUs' worth of clients.
fn default_forward_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(4))
}

/// Compile each connection's masking policy with its region's hash key.
fn build_masking(
    deployment: &Deployment,
    targets: &HashMap<String, Arc<UpstreamTarget>>,
    limits: Limits,
) -> Result<HashMap<String, ConnectionMasking>, NodeError> {
    let mut keys: HashMap<&str, Option<String>> = HashMap::new();
    for (index, region) in deployment.regions.iter().enumerate() {
        // Only this node's own region's key: another region's stays there.
        if region.name != deployment.node.region {
            continue;
        }
        let key = region
            .mask_hash_key
            .as_ref()
            .map(|k| k.resolve(&format!("region[{index}].mask_hash_key")))
            .transpose()?;
        keys.insert(region.name.as_str(), key);
    }
    let mut out = HashMap::new();
    for (index, connection) in deployment.connections.iter().enumerate() {
        if !targets.contains_key(&connection.name) {
            continue;
        }
        let key = keys.get(connection.region.as_str()).cloned().flatten();
        let masker = Masker::compile(&connection.masking, key.as_deref().map(str::as_bytes))
            .map_err(|e| NodeError::Masking {
                index,
                reason: e.to_string(),
            })?;
        if masker.is_empty() {
            continue;
        }
        let Some(target) = targets.get(&connection.name) else {
            continue;
        };
        out.insert(
            connection.name.clone(),
            ConnectionMasking::new(
                masker,
                target.clone(),
                limits,
                Duration::from_millis(deployment.node.masking_catalog_ttl_ms),
            ),
        );
    }
    Ok(out)
}

/// Start a node: bind its listener and serve until [`RunningNode::shutdown`].
pub async fn start(deployment: Deployment) -> Result<RunningNode, NodeError> {
    residency::check_store(&deployment).await?;
    let deployment = Arc::new(deployment);
    let (audit_sink, audit): (Arc<dyn AuditSink>, _) = match &deployment.node.data_dir {
        Some(dir) => {
            let (sink, thread) = audit::start(
                dir,
                &deployment.node.id,
                &deployment.node.region,
                deployment.node.audit.seal_every,
                deployment.node.evidence_nice,
            )?;
            (sink, Some(thread))
        }
        None => (Arc::new(LogAuditSink), None),
    };
    let mut context = build_context(deployment.clone(), audit_sink)?;
    let evidence = match &deployment.node.data_dir {
        Some(dir) => Some(evidence::start(&deployment, dir)?),
        None => None,
    };
    context.recordings = evidence.as_ref().map(|e| e.spool.clone());
    let shutdown = CancellationToken::new();
    let mut control_plane = None;
    if let Some(cluster) = &deployment.node.cluster {
        let region = control::start_region(&deployment, cluster, context.audit.clone()).await?;
        context.grants = Some(Arc::new(control::RegionGrants {
            region: region.clone(),
        }));
        context.command_review = Some(Arc::new(control::RegionReview {
            region: region.clone(),
            deployment: deployment.clone(),
        }));
        let listener = TcpListener::bind(&cluster.control_listen)
            .await
            .map_err(|source| NodeError::Listen {
                address: cluster.control_listen.clone(),
                source,
            })?;
        info!(control_address = %cluster.control_listen, "control API listening");
        control_plane = Some((
            region.clone(),
            tokio::spawn(control::serve_control(
                deployment.clone(),
                region,
                context.authenticator.clone(),
                context.live.clone(),
                listener,
                shutdown.clone(),
            )),
        ));
    }
    let context = Arc::new(context);
    let mut side_tasks = Vec::new();
    if let Some(relay) = &deployment.node.relay
        && let Some(links) = &context.handover
    {
        let listener = bind(&relay.listen).await?;
        info!(relay_address = %relay.listen, "handover listener for sessions relayed by other regions' nodes");
        let acceptor = TlsAcceptor::from(links.tls.server.clone());
        let grace = Duration::from_secs(deployment.node.shutdown_grace_secs);
        // Handed-over sessions drain like any other.
        side_tasks.push(tokio::spawn(serve(
            listener,
            context.clone(),
            shutdown.clone(),
            grace,
            move |context, tcp, peer, terminate| {
                juris_proxy_pg::handover::serve_link(
                    context,
                    tcp,
                    peer,
                    acceptor.clone(),
                    terminate,
                )
            },
        )));
    }
    if let Some(address) = &deployment.node.metrics_listen {
        let listener = bind(address).await?;
        info!(metrics_address = %address, "metrics listening");
        let sources = Arc::new(metrics::Sources {
            proxy: context.metrics.clone(),
            spool: context.recordings.clone(),
            uploads: evidence.as_ref().map(|e| e.uploader.monitor()),
        });
        side_tasks.push(tokio::spawn(metrics::serve(
            listener,
            sources,
            shutdown.clone(),
        )));
    }
    let address = deployment.node.listen.clone();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| NodeError::Listen {
            address: address.clone(),
            source,
        })?;
    let postgres_address = listener
        .local_addr()
        .map_err(|source| NodeError::Listen { address, source })?;
    let grace = Duration::from_secs(deployment.node.shutdown_grace_secs);
    info!(node = %deployment.node.id, region = %deployment.node.region, %postgres_address, "node listening");
    let serving = serve(
        listener,
        context,
        shutdown.clone(),
        grace,
        juris_proxy_pg::serve_connection,
    );
    let done = tokio::spawn(async move {
        serving.await;
        for task in side_tasks {
            let _ = task.await;
        }
        if let Some((region, control)) = control_plane {
            if let Ok(Err(e)) = control.await {
                warn!("control API: {e}");
            }
            control::stop_region(region).await;
        }
        info!("node stopped");
    });
    Ok(RunningNode {
        postgres_address,
        shutdown,
        done,
        audit,
        evidence,
    })
}

/// Accept on `listener` until shutdown, one `session` task per connection;
/// then drain: `grace` for the sessions to end, then end the rest.
async fn serve<F, S>(
    listener: TcpListener,
    context: Arc<ProxyContext>,
    shutdown: CancellationToken,
    grace: Duration,
    session: S,
) where
    S: Fn(Arc<ProxyContext>, tokio::net::TcpStream, SocketAddr, CancellationToken) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let sessions = TaskTracker::new();
    let terminate = CancellationToken::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    sessions.spawn(session(context.clone(), tcp, peer, terminate.clone()));
                }
                Err(e) => {
                    // Usually EMFILE: back off rather than spin.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    sessions.close();
    info!(
        sessions = sessions.len(),
        grace_secs = grace.as_secs(),
        "stopped accepting; draining sessions"
    );
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        info!(
            sessions = sessions.len(),
            "grace period over; ending remaining sessions"
        );
        terminate.cancel();
        if tokio::time::timeout(Duration::from_secs(5), sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = sessions.len(),
                "sessions did not end in time; abandoning them"
            );
        }
    }
}

async fn bind(address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Listen {
            address: address.to_string(),
            source,
        })
}

/// Run a node from a deployment file until SIGTERM or SIGINT, then drain.
pub async fn run_from_file(path: &Path) -> Result<(), NodeError> {
    let deployment = Deployment::load(path)?;
    let node = start(deployment).await?;
    wait_for_signal().await;
    info!("shutdown requested");
    node.shutdown();
    node.wait().await;
    Ok(())
}

/// Resolve on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
