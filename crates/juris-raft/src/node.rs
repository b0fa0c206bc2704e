//! A running member of the Raft group: storage, openraft core, peer server,
//! and the client-facing write/read/status surface the node uses.
//!
//! Writes are placed wherever they arrive: the leader stamps its wall time
//! into the entry and proposes it; a follower forwards the command to the
//! leader over the peer transport. Reads never touch the network: the data
//! path reads the locally applied state and uses
//! [`RaftNode::leader_lease_age`] to decide whether that state is fresh
//! enough.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use juris_proto::RaftTransportServer;
use juris_proto::v1::{ForwardRequest, forward_reply};
use openraft::error::{ClientWriteError, InitializeError, RaftError as OrRaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use rocksdb::DB;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::StateMachine;
use crate::config::RaftConfig;
use crate::error::RaftError;
use crate::network::{MAX_MESSAGE_BYTES, NetworkFactory, Peers, TlsMaterial};
use crate::server::Service;
use crate::status::{ClusterStatus, ReplicaStatus, Role};
use crate::store::{LogStore, SmStore, open_db};
use crate::types::{LogPayload, NodeId, Raft};

type Metrics = RaftMetrics<NodeId, BasicNode>;
type MembershipResult<T> = Result<
    Result<T, OrRaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    tokio::time::error::Elapsed,
>;

/// How long a follower waits before re-trying a write whose forward failed
/// or was bounced (leadership in flux). Bounded by the write deadline.
const FORWARD_RETRY: Duration = Duration::from_millis(50);

/// How long shutdown waits for in-flight peer RPCs and for RocksDB to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A change of the group's membership.
#[derive(Debug, Clone)]
pub(crate) enum MembershipChange {
    AddLearner { id: NodeId, addr: String },
    SetVoters(BTreeSet<NodeId>),
}

/// Why a leader-local write did not happen.
#[derive(Clone)]
pub(crate) enum LocalWriteError {
    /// This node is not the leader (hint where it is, when known).
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// A definitive failure.
    Failed(RaftError),
}

/// The state-machine-independent part of a node, shared with the gRPC
/// service.
pub(crate) struct Core {
    pub(crate) id: NodeId,
    pub(crate) cfg: RaftConfig,
    pub(crate) raft: Raft,
    pub(crate) peers: Arc<Peers>,
    committed: Arc<AtomicU64>,
    leader_contact: Mutex<Option<Instant>>,
    last_stamp: AtomicU64,
    /// Writes waiting to be proposed together (see [`run_batcher`]).
    batch: mpsc::UnboundedSender<PendingWrite>,
}

/// Most commands one log entry carries.
const MAX_BATCH: usize = 512;

/// A leader-local write waiting for the batcher.
pub(crate) struct PendingWrite {
    command: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Result<(Vec<u8>, u64), LocalWriteError>>,
}

/// Proposes leader-local writes in batches: whatever arrived while the
/// previous entry was being committed goes into the next entry, so under
/// load many commands share one entry, one fsync and one replication
/// round, and a lone write is proposed at once. Ends when the node is gone.
pub(crate) async fn run_batcher(
    core: Weak<Core>,
    mut queue: mpsc::UnboundedReceiver<PendingWrite>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(core) = core.upgrade() else {
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(LocalWriteError::Failed(RaftError::Stopped(
                        "the raft node has stopped".into(),
                    ))));
            }
            return;
        };
        let deadline = batch
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or_else(|| core.write_deadline());
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        match core.propose(commands, deadline).await {
            Ok((responses, index)) => {
                let mut responses = responses.into_iter();
                for reply in replies {
                    let response = responses.next().unwrap_or_default();
                    let _ = reply.send(Ok((response, index)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn voter_ids(m: &Metrics) -> Vec<NodeId> {
    m.membership_config.membership().voter_ids().collect()
}

fn node_addr(m: &Metrics, id: NodeId) -> Option<String> {
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// Applies `change` on the leader, or forwards it there.
    pub(crate) async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<(), RaftError> {
        let m = self.metrics();
        match m.current_leader {
            Some(leader) if leader == self.id => self.change_membership_local(change).await,
            Some(leader) => {
                let addr = node_addr(&m, leader).ok_or_else(|| {
                    RaftError::Membership(format!("the leader {leader} has no known address"))
                })?;
                self.forward_membership(leader, &addr, change).await
            }
            None => {
                let (reachable, voters, _) = self.reachability(&m);
                Err(RaftError::NoLeader { reachable, voters })
            }
        }
    }

    /// Applies `change` here; fails when this node is not the leader.
    pub(crate) async fn change_membership_local(
        &self,
        change: MembershipChange,
    ) -> Result<(), RaftError> {
        let deadline = self.write_deadline();
        match change {
            MembershipChange::AddLearner { id, addr } => {
                let fut = self.raft.add_learner(id, BasicNode::new(addr), false);
                self.membership_result(tokio::time::timeout_at(deadline.into(), fut).await)
            }
            MembershipChange::SetVoters(voters) => {
                let fut = self.raft.change_membership(voters, false);
                self.membership_result(tokio::time::timeout_at(deadline.into(), fut).await)
            }
        }
    }

    async fn forward_membership(
        &self,
        leader: NodeId,
        addr: &str,
        change: MembershipChange,
    ) -> Result<(), RaftError> {
        use juris_proto::v1::{Learner, MembershipRequest, Voters, membership_request};
        let fail = |reason: String| RaftError::Forward {
            leader,
            addr: addr.to_string(),
            reason,
        };
        let change = match change {
            MembershipChange::AddLearner { id, addr } => {
                membership_request::Change::AddLearner(Learner { id, address: addr })
            }
            MembershipChange::SetVoters(voters) => membership_request::Change::SetVoters(Voters {
                ids: voters.into_iter().collect(),
            }),
        };
        let mut client = self.peers.client(addr).map_err(fail)?;
        let mut request = tonic::Request::new(MembershipRequest {
            change: Some(change),
        });
        request.set_timeout(Duration::from_millis(self.cfg.write_timeout_ms));
        let reply = client
            .change_membership(request)
            .await
            .map_err(|status| fail(format!("{:?}: {}", status.code(), status.message())))?
            .into_inner();
        self.peers.heard_from(leader);
        if reply.error.is_empty() {
            Ok(())
        } else {
            Err(RaftError::Membership(reply.error))
        }
    }

    fn membership_result<T>(&self, r: MembershipResult<T>) -> Result<(), RaftError> {
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(OrRaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(RaftError::Membership(self.leader_hint()))
            }
            Ok(Err(OrRaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(RaftError::Membership(e.to_string()))
            }
            Ok(Err(OrRaftError::Fatal(f))) => Err(RaftError::Stopped(f.to_string())),
            Err(_) => Err(RaftError::Timeout(self.cfg.write_timeout_ms)),
        }
    }

    fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow().clone()
    }

    pub(crate) fn touch_leader_contact(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn leader_contact_age(&self) -> Option<Duration> {
        self.leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| t.elapsed())
    }

    pub(crate) fn write_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.cfg.write_timeout_ms)
    }

    fn reach_window(&self) -> Duration {
        Duration::from_millis(self.cfg.reach_window_ms())
    }

    /// `(reachable, voters, needed)` for the current membership.
    fn reachability(&self, m: &Metrics) -> (usize, usize, usize) {
        let voters = voter_ids(m);
        let reachable = self.peers.reachable(&voters, self.reach_window());
        (reachable, voters.len(), voters.len() / 2 + 1)
    }

    /// Leader wall time in ms, never decreasing within this process.
    fn stamp(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
        let prev = self.last_stamp.fetch_max(now, Ordering::Relaxed);
        prev.max(now)
    }

    fn not_leader(m: &Metrics) -> LocalWriteError {
        LocalWriteError::NotLeader {
            leader_id: m.current_leader,
            leader_addr: m.current_leader.and_then(|l| node_addr(m, l)),
        }
    }

    /// Proposes `command` (batched with concurrent writes) if this node
    /// leads; never forwards. Returns the state machine's answer and the
    /// entry's log index.
    pub(crate) async fn write_local(
        &self,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, u64), LocalWriteError> {
        let (reply, answer) = oneshot::channel();
        let stopped =
            || LocalWriteError::Failed(RaftError::Stopped("the raft node has stopped".into()));
        self.batch
            .send(PendingWrite {
                command,
                deadline,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Proposes `commands` as one log entry if this node leads.
    async fn propose(
        &self,
        commands: Vec<Vec<u8>>,
        deadline: Instant,
    ) -> Result<(Vec<Vec<u8>>, u64), LocalWriteError> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(Self::not_leader(&m));
        }
        // A leader that has not heard from a majority for longer than the
        // reach window fails fast instead of queueing a write that cannot
        // commit.
        if m.millis_since_quorum_ack
            .is_some_and(|a| a > self.cfg.reach_window_ms())
        {
            let (reachable, voters, needed) = self.reachability(&m);
            if reachable < needed {
                return Err(LocalWriteError::Failed(RaftError::NoQuorum {
                    reachable,
                    voters,
                    needed,
                }));
            }
        }
        let payload = LogPayload {
            leader_time_ms: self.stamp(),
            commands,
        };
        match tokio::time::timeout_at(deadline.into(), self.raft.client_write(payload)).await {
            Ok(Ok(resp)) => Ok((resp.data.0, resp.log_id.index)),
            Ok(Err(OrRaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(LocalWriteError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Ok(Err(OrRaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(
                LocalWriteError::Failed(RaftError::Membership(e.to_string())),
            ),
            Ok(Err(OrRaftError::Fatal(f))) => {
                Err(LocalWriteError::Failed(RaftError::Stopped(f.to_string())))
            }
            Err(_elapsed) => {
                let (reachable, voters, needed) = self.reachability(&self.metrics());
                Err(LocalWriteError::Failed(if reachable < needed {
                    RaftError::NoQuorum {
                        reachable,
                        voters,
                        needed,
                    }
                } else {
                    RaftError::Timeout(self.cfg.write_timeout_ms)
                }))
            }
        }
    }

    /// Sends `command` to the leader `leader` at `addr`. `Err((retry, e))`:
    /// `retry` says whether leadership may simply be moving.
    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, u64), (bool, RaftError)> {
        let fail = |reason: String| RaftError::Forward {
            leader,
            addr: addr.to_string(),
            reason,
        };
        let mut client = self.peers.client(addr).map_err(|e| (false, fail(e)))?;
        let mut request = tonic::Request::new(ForwardRequest { command });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.forward(request).await {
            Err(status) => Err((
                true,
                fail(format!("{:?}: {}", status.code(), status.message())),
            )),
            Ok(reply) => {
                self.peers.heard_from(leader);
                let reply = reply.into_inner();
                match reply.result {
                    Some(forward_reply::Result::Response(r)) => Ok((r, reply.log_index)),
                    Some(forward_reply::Result::NotLeader(_)) => {
                        Err((true, fail("no longer the leader".into())))
                    }
                    Some(forward_reply::Result::Error(e)) => Err((false, fail(e))),
                    None => Err((false, fail("empty reply".into()))),
                }
            }
        }
    }

    /// Places a write from any node: locally on the leader, forwarded
    /// otherwise; waits out elections up to the write deadline.
    pub(crate) async fn write(&self, command: Vec<u8>) -> Result<(Vec<u8>, u64), RaftError> {
        let deadline = self.write_deadline();
        let mut metrics = self.raft.metrics();
        let mut last_err: Option<RaftError> = None;
        loop {
            let m = metrics.borrow_and_update().clone();
            match m.current_leader {
                Some(l) if l == self.id => {
                    match self.write_local(command.clone(), deadline).await {
                        Ok(r) => return Ok(r),
                        Err(LocalWriteError::Failed(e)) => return Err(e),
                        Err(LocalWriteError::NotLeader { .. }) => {}
                    }
                }
                Some(l) => {
                    if let Some(addr) = node_addr(&m, l) {
                        match self.forward(l, &addr, command.clone(), deadline).await {
                            Ok(r) => return Ok(r),
                            Err((false, e)) => return Err(e),
                            Err((true, e)) => last_err = Some(e),
                        }
                    }
                }
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let (reachable, voters, needed) = self.reachability(&self.metrics());
                return Err(match last_err {
                    Some(e) if reachable >= needed => e,
                    _ => RaftError::NoLeader { reachable, voters },
                });
            }
            let wake = deadline.min(now + FORWARD_RETRY);
            if let Ok(Err(_)) = tokio::time::timeout_at(wake.into(), metrics.changed()).await {
                return Err(RaftError::Stopped("raft core is not running".into()));
            }
        }
    }

    pub(crate) fn lease_age(&self) -> Option<Duration> {
        let m = self.metrics();
        match m.state {
            ServerState::Leader => m.millis_since_quorum_ack.map(Duration::from_millis),
            ServerState::Shutdown => None,
            _ => self.leader_contact_age(),
        }
    }

    pub(crate) fn status(&self) -> ClusterStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let addr_of = |id: NodeId| {
            membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let last_log = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| {
                        let matched_index = matched.map(|l| l.index);
                        let lag = last_log.saturating_sub(matched_index.unwrap_or(0));
                        (*id, ReplicaStatus { matched_index, lag })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let committed = self.committed.load(Ordering::Relaxed);
        ClusterStatus {
            id: self.id,
            role,
            leader_id: m.current_leader,
            leader_addr: m.current_leader.and_then(|l| node_addr(&m, l)),
            term: m.current_term,
            voters: membership.voter_ids().map(|id| (id, addr_of(id))).collect(),
            learners: membership
                .learner_ids()
                .map(|id| (id, addr_of(id)))
                .collect(),
            last_log_index: m.last_log_index,
            committed_index: committed.checked_sub(1),
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            replication,
            millis_since_quorum_ack: if role == Role::Leader {
                m.millis_since_quorum_ack
            } else {
                None
            },
            millis_since_leader_contact: if role == Role::Leader {
                None
            } else {
                self.leader_contact_age().map(ms)
            },
            reachable_voters: self.reachability(&m).0,
        }
    }

    fn leader_hint(&self) -> String {
        let m = self.metrics();
        match m.current_leader {
            Some(l) => format!(
                "this node is not the leader; node {l} at {} is",
                node_addr(&m, l).unwrap_or_default()
            ),
            None => "this node is not the leader and no leader is known".to_string(),
        }
    }
}

/// A member of the Raft group replicating commands into `S`.
pub struct RaftNode<S: StateMachine> {
    core: Arc<Core>,
    sm: Arc<RwLock<S>>,
    applied: watch::Receiver<u64>,
    local_addr: SocketAddr,
    advertise: String,
    db: Weak<DB>,
    server_stop: Option<oneshot::Sender<()>>,
    server_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl<S: StateMachine> RaftNode<S> {
    /// Opens the store under `cfg.data_dir`, restores `sm` from the stored
    /// snapshot (openraft then re-applies the committed log tail), starts the
    /// Raft core and serves the peer transport on `cfg.listen`.
    pub async fn start(cfg: RaftConfig, sm: S) -> Result<Self, RaftError> {
        // The workspace's TLS provider; harmless if the process already chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = TlsMaterial::load(&cfg.tls)?;

        let db = open_db(&cfg.data_dir)?;
        let committed = Arc::new(AtomicU64::new(0));
        let log_store = LogStore::new(db.clone(), committed.clone())?;
        let (applied_tx, applied) = watch::channel(0);
        let sm = Arc::new(RwLock::new(sm));
        let sm_store = SmStore::open(db.clone(), sm.clone(), applied_tx)?;
        let db_weak = Arc::downgrade(&db);
        drop(db);

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| RaftError::Server(format!("bind {}: {e}", cfg.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| RaftError::Server(format!("local address: {e}")))?;
        let advertise = if cfg.advertise.is_empty() {
            local_addr.to_string()
        } else {
            cfg.advertise.clone()
        };

        let raft_config = openraft::Config {
            cluster_name: "juris".to_string(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            install_snapshot_timeout: cfg.rpc_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_logs),
            max_in_snapshot_log_to_keep: cfg.logs_to_keep_after_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))?;

        let peers = Arc::new(Peers::new(
            cfg.node_id,
            &tls,
            Duration::from_millis(cfg.rpc_timeout_ms),
        ));
        let network = NetworkFactory {
            peers: peers.clone(),
            // Retry an unreachable peer about twice per election timeout.
            backoff: Duration::from_millis((cfg.election_timeout_min_ms / 2).max(cfg.heartbeat_ms)),
        };
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            sm_store,
        )
        .await
        .map_err(|e| RaftError::Stopped(format!("start raft core: {e}")))?;

        let (batch, batch_queue) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            id: cfg.node_id,
            cfg,
            raft,
            peers,
            committed,
            leader_contact: Mutex::new(None),
            last_stamp: AtomicU64::new(0),
            batch,
        });
        tokio::spawn(run_batcher(Arc::downgrade(&core), batch_queue));

        let service = RaftTransportServer::new(Service { core: core.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| RaftError::Tls(e.to_string()))?
            .add_service(service);
        let server_task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));

        Ok(Self {
            core,
            sm,
            applied,
            local_addr,
            advertise,
            db: db_weak,
            server_stop: Some(stop_tx),
            server_task: Some(server_task),
        })
    }

    /// The address the peer server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `host:port` peers should dial for this node.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// Forms a new group from `members` (id to peer `host:port`). Call on one
    /// node (or all: a node that is already initialized returns `Ok`).
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), RaftError> {
        let nodes: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, a)| (id, BasicNode::new(a)))
            .collect();
        match self.core.raft.initialize(nodes).await {
            Ok(()) | Err(OrRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(OrRaftError::APIError(e)) => Err(RaftError::Membership(e.to_string())),
            Err(OrRaftError::Fatal(f)) => Err(RaftError::Stopped(f.to_string())),
        }
    }

    /// Replicates `command` and returns what [`StateMachine::apply`] returned
    /// for it. On a follower the command is forwarded to the leader. Fails
    /// within `write_timeout_ms` with [`RaftError::NoLeader`] or
    /// [`RaftError::NoQuorum`] when the group cannot commit.
    ///
    /// Returns once this node's own state machine has applied the entry too
    /// (or the write deadline passed), so a read of local state right after
    /// a write sees it, even when the write went through the leader.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let deadline = self.core.write_deadline();
        let (response, index) = self.core.write(command).await?;
        let mut applied = self.applied.clone();
        let caught_up = applied.wait_for(|applied| *applied >= index);
        // Committed either way: a slow local apply only delays visibility.
        let _ = tokio::time::timeout_at(deadline.into(), caught_up).await;
        Ok(response)
    }

    /// The applied state, shared with the Raft state-machine task. Hold the
    /// read lock briefly: applies wait for it.
    pub fn state(&self) -> Arc<RwLock<S>> {
        self.sm.clone()
    }

    /// Runs `f` on the applied state under the read lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self
            .sm
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// This node's view of the group.
    pub fn status(&self) -> ClusterStatus {
        self.core.status()
    }

    /// How stale this node's view of a live leader is: on the leader, time
    /// since a quorum last acknowledged it; elsewhere, time since this node
    /// last accepted a message from a leader. `None` when there has been no
    /// such contact since start (treat as stale).
    pub fn leader_lease_age(&self) -> Option<Duration> {
        self.core.lease_age()
    }

    /// Adds `id` (reachable at `addr`) as a learner; returns once the
    /// membership change is committed (catch-up continues in the background,
    /// visible in [`ClusterStatus::replication`]). On a follower the change
    /// is forwarded to the leader.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), RaftError> {
        self.core
            .change_membership(MembershipChange::AddLearner { id, addr })
            .await
    }

    /// Makes `voters` the exact voter set (each must already be a member,
    /// e.g. a learner); removed voters leave the group. On a follower the
    /// change is forwarded to the leader.
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), RaftError> {
        self.core
            .change_membership(MembershipChange::SetVoters(voters))
            .await
    }

    /// The last applied log index; changes after every applied batch.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Stops serving peers, stops the Raft core, and waits until the store
    /// is closed (so the same directory can be reopened at once).
    pub async fn shutdown(mut self) -> Result<(), RaftError> {
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.server_task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        self.core
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Stopped(format!("raft core did not stop cleanly: {e}")))?;
        let db = std::mem::take(&mut self.db);
        drop(self);
        // The state-machine worker drops its store handle shortly after the
        // core exits; wait for the last reference so RocksDB's lock is free.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while db.strong_count() > 0 {
            if Instant::now() >= deadline {
                return Err(RaftError::Storage("store still open after shutdown".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl<S: StateMachine> Drop for RaftNode<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
    }
}
