//! Outbound peer transport: one lazily connected tonic channel per peer
//! address over mutual TLS, and openraft's `RaftNetwork` on top of it.
//!
//! Error mapping is what keeps elections healthy: a peer that cannot be
//! dialled (refused, TLS rejected, down) is `Unreachable`, so openraft backs
//! off instead of spinning; any other transport failure is a `Network` error
//! (retry at once); an error produced by the remote Raft core travels back
//! serialized and becomes a `RemoteError`, exactly as if it were local.
//! Every answered call also records "heard from peer X", which is how
//! [`crate::RaftNode`] knows how many voters are reachable.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use juris_proto::RaftTransportClient;
use juris_proto::v1::{RaftPayload, raft_reply};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OrRaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::PeerTls;
use crate::error::RaftError;
use crate::types::{NodeId, TypeConfig};

/// Largest gRPC message either side accepts: snapshot chunks are 1 MiB of
/// data, which JSON encoding inflates up to about 4x.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

type RpcErr<E> = RPCError<NodeId, BasicNode, OrRaftError<NodeId, E>>;

/// Reads the PEM files of [`PeerTls`] once at start.
pub(crate) struct TlsMaterial {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) ca: Vec<u8>,
}

impl TlsMaterial {
    pub(crate) fn load(tls: &PeerTls) -> Result<Self, RaftError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| RaftError::Tls(format!("read {}: {e}", p.display())))
        };
        Ok(Self {
            cert: read(&tls.cert_file)?,
            key: read(&tls.key_file)?,
            ca: read(&tls.ca_file)?,
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca)
    }

    pub(crate) fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(self.ca())
            .client_auth_optional(false)
    }

    fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca())
            .identity(self.identity())
    }
}

/// Channels to peers and when each peer last answered.
pub(crate) struct Peers {
    self_id: NodeId,
    tls: ClientTlsConfig,
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Peers {
    pub(crate) fn new(self_id: NodeId, tls: &TlsMaterial, connect_timeout: Duration) -> Self {
        Self {
            self_id,
            tls: tls.client_config(),
            connect_timeout,
            channels: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
        }
    }

    fn wrap(ch: Channel) -> RaftTransportClient<Channel> {
        RaftTransportClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client for `addr` (`host:port`), sharing one HTTP/2 connection per
    /// address. Connecting happens on first use.
    pub(crate) fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, String> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ch) = channels.get(addr) {
            return Ok(Self::wrap(ch.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .tls_config(self.tls.clone())
            .map_err(|e| format!("TLS config for {addr}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let ch = endpoint.connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(Self::wrap(ch))
    }

    /// Records that `id` answered (or sent us) a Raft message just now.
    pub(crate) fn heard_from(&self, id: NodeId) {
        if id != self.self_id {
            self.heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id, Instant::now());
        }
    }

    /// How many of `voters` were heard from within `window` (this node always
    /// counts if it is a voter).
    pub(crate) fn reachable(&self, voters: &[NodeId], window: Duration) -> usize {
        let heard = self
            .heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        voters
            .iter()
            .filter(|id| {
                **id == self.self_id || heard.get(id).is_some_and(|t| t.elapsed() <= window)
            })
            .count()
    }
}

/// Gives openraft one [`PeerClient`] per replication target.
pub(crate) struct NetworkFactory {
    pub(crate) peers: Arc<Peers>,
    pub(crate) backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
            backoff: self.backoff,
        }
    }
}

/// openraft's connection to one peer.
pub(crate) struct PeerClient {
    target: NodeId,
    node: BasicNode,
    peers: Arc<Peers>,
    backoff: Duration,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

fn status_to_rpc_error<E: StdError>(status: &tonic::Status) -> RpcErr<E> {
    match status.code() {
        // Refused, reset, TLS rejected, or nothing listening.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .client(&self.node.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&AnyError::error(e))))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        }
        .map_err(|s| status_to_rpc_error::<E>(&s))?
        .into_inner();
        self.peers.heard_from(self.target);
        match reply.result {
            Some(raft_reply::Result::Ok(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))
            }
            Some(raft_reply::Result::Err(bytes)) => {
                let err: OrRaftError<NodeId, E> = serde_json::from_slice(&bytes)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    err,
                )))
            }
            None => Err(RPCError::Network(NetworkError::new(&AnyError::error(
                "peer sent an empty reply",
            )))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}
