//! Inbound peer transport: the `RaftTransport` gRPC service.
//!
//! Raft messages are handed to the local openraft core unchanged (JSON in
//! the protobuf `bytes` fields, see `proto/juris/v1/raft.proto`); errors the
//! core returns are serialized back so the caller sees a `RemoteError`.
//! Forwarded client writes go to the leader-only write path, so a write is
//! never forwarded twice.

use std::sync::Arc;

use juris_proto::RaftTransport;
use juris_proto::v1::{
    ForwardReply, ForwardRequest, MembershipReply, MembershipRequest, NotLeader, RaftPayload,
    RaftReply, StatusReply, StatusRequest, forward_reply, membership_request, raft_reply,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::node::{Core, LocalWriteError, MembershipChange};
use crate::types::{NodeId, TypeConfig};

/// The service instance registered with tonic.
pub(crate) struct Service {
    pub(crate) core: Arc<Core>,
}

fn decode<T: serde::de::DeserializeOwned>(req: &RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&req.payload)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn reply<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let encoded = match result {
        Ok(v) => serde_json::to_vec(v).map(raft_reply::Result::Ok),
        Err(e) => serde_json::to_vec(e).map(raft_reply::Result::Err),
    }
    .map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(RaftReply {
        result: Some(encoded),
    }))
}

#[tonic::async_trait]
impl RaftTransport for Service {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftReply>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request.get_ref())?;
        let from: Option<NodeId> = req.vote.leader_id().voted_for();
        if let Some(id) = from {
            self.core.peers.heard_from(id);
        }
        let result = self.core.raft.append_entries(req).await;
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            // Accepted as coming from the current leader.
            self.core.touch_leader_contact();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftReply>, Status> {
        let req: VoteRequest<NodeId> = decode(request.get_ref())?;
        if let Some(id) = req.vote.leader_id().voted_for() {
            self.core.peers.heard_from(id);
        }
        reply(&self.core.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftReply>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref())?;
        if let Some(id) = req.vote.leader_id().voted_for() {
            self.core.peers.heard_from(id);
        }
        let result = self.core.raft.install_snapshot(req).await;
        if result.is_ok() {
            self.core.touch_leader_contact();
        }
        reply(&result)
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let command = request.into_inner().command;
        let mut log_index = 0;
        let result = match self
            .core
            .write_local(command, self.core.write_deadline())
            .await
        {
            Ok((response, index)) => {
                log_index = index;
                forward_reply::Result::Response(response)
            }
            Err(LocalWriteError::NotLeader {
                leader_id,
                leader_addr,
            }) => forward_reply::Result::NotLeader(NotLeader {
                leader_id: leader_id.unwrap_or(0),
                leader_addr: leader_addr.unwrap_or_default(),
            }),
            Err(LocalWriteError::Failed(e)) => forward_reply::Result::Error(e.to_string()),
        };
        Ok(Response::new(ForwardReply {
            result: Some(result),
            log_index,
        }))
    }

    async fn change_membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let change = match request.into_inner().change {
            Some(membership_request::Change::AddLearner(l)) => MembershipChange::AddLearner {
                id: l.id,
                addr: l.address,
            },
            Some(membership_request::Change::SetVoters(v)) => {
                MembershipChange::SetVoters(v.ids.into_iter().collect())
            }
            None => return Err(Status::invalid_argument("no membership change given")),
        };
        // Leader-local only: a change is never forwarded twice.
        let error = match self.core.change_membership_local(change).await {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        Ok(Response::new(MembershipReply { error }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let status_json = serde_json::to_vec(&self.core.status())
            .map_err(|e| Status::internal(format!("encode status: {e}")))?;
        Ok(Response::new(StatusReply { status_json }))
    }
}
