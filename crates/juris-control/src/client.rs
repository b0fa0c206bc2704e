//! The CLI's side of the control API: a TLS channel to one node, with the
//! caller's token on every call, and errors turned into plain sentences.

use std::path::Path;

pub use juris_proto::v1 as pb;
use juris_proto::v1::control_client::ControlClient as Grpc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ControlError;

/// A connection to one node's control API.
pub struct ControlClient {
    grpc: Grpc<Channel>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl ControlClient {
    /// `endpoint` is `host:port`; `ca` verifies the node's certificate
    /// (the system roots when absent); `server_name` overrides the host for
    /// certificate verification.
    pub async fn connect(
        endpoint: &str,
        ca: Option<&Path>,
        server_name: Option<&str>,
        token: &str,
    ) -> Result<ControlClient, ControlError> {
        let fail = |reason: String| ControlError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| ControlError::Tls(format!("cannot read {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        } else {
            tls = tls.with_enabled_roots();
        }
        let host = server_name.map(str::to_string).unwrap_or_else(|| {
            endpoint
                .rsplit_once(':')
                .map_or(endpoint, |(h, _)| h)
                .to_string()
        });
        tls = tls.domain_name(host);
        let channel = Endpoint::from_shared(format!("https://{endpoint}"))
            .map_err(|e| fail(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| ControlError::Tls(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| fail(source_chain(&e)))?;
        let authorization = format!("Bearer {token}").parse().map_err(|_| {
            ControlError::Tls("the access token is not a valid header value".into())
        })?;
        Ok(ControlClient {
            grpc: Grpc::new(channel),
            authorization,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    pub async fn request_access(
        &mut self,
        m: pb::RequestAccessRequest,
    ) -> Result<pb::AccessRequest, CallError> {
        let r = self.request(m);
        let reply = self.grpc.request_access(r).await?.into_inner();
        reply.request.ok_or(CallError::Empty)
    }

    pub async fn list_access_requests(
        &mut self,
        m: pb::ListAccessRequestsRequest,
    ) -> Result<Vec<pb::AccessRequest>, CallError> {
        let r = self.request(m);
        Ok(self
            .grpc
            .list_access_requests(r)
            .await?
            .into_inner()
            .requests)
    }

    pub async fn review_access(
        &mut self,
        m: pb::ReviewRequest,
    ) -> Result<pb::AccessRequest, CallError> {
        let r = self.request(m);
        self.grpc
            .review_access(r)
            .await?
            .into_inner()
            .request
            .ok_or(CallError::Empty)
    }

    pub async fn cancel_access(&mut self, id: String) -> Result<pb::AccessRequest, CallError> {
        let r = self.request(pb::CancelRequest { id });
        self.grpc
            .cancel_access(r)
            .await?
            .into_inner()
            .request
            .ok_or(CallError::Empty)
    }

    pub async fn list_grants(
        &mut self,
        m: pb::ListGrantsRequest,
    ) -> Result<Vec<pb::Grant>, CallError> {
        let r = self.request(m);
        Ok(self.grpc.list_grants(r).await?.into_inner().grants)
    }

    pub async fn revoke_grant(
        &mut self,
        m: pb::RevokeGrantRequest,
    ) -> Result<pb::Grant, CallError> {
        let r = self.request(m);
        self.grpc
            .revoke_grant(r)
            .await?
            .into_inner()
            .grant
            .ok_or(CallError::Empty)
    }

    pub async fn list_sessions(
        &mut self,
        m: pb::ListSessionsRequest,
    ) -> Result<Vec<pb::Session>, CallError> {
        let r = self.request(m);
        Ok(self.grpc.list_sessions(r).await?.into_inner().sessions)
    }

    pub async fn list_approvals(
        &mut self,
        m: pb::ListApprovalsRequest,
    ) -> Result<Vec<pb::Approval>, CallError> {
        let r = self.request(m);
        Ok(self.grpc.list_approvals(r).await?.into_inner().approvals)
    }

    pub async fn review_approval(
        &mut self,
        m: pb::ReviewRequest,
    ) -> Result<pb::Approval, CallError> {
        let r = self.request(m);
        self.grpc
            .review_approval(r)
            .await?
            .into_inner()
            .approval
            .ok_or(CallError::Empty)
    }

    pub async fn cluster_status(&mut self) -> Result<pb::ClusterStatusReply, CallError> {
        let r = self.request(pb::ClusterStatusRequest {});
        Ok(self.grpc.cluster_status(r).await?.into_inner())
    }

    pub async fn add_learner(
        &mut self,
        id: u64,
        address: String,
    ) -> Result<pb::ClusterStatusReply, CallError> {
        let r = self.request(pb::AddLearnerRequest { id, address });
        Ok(self.grpc.add_learner(r).await?.into_inner())
    }

    pub async fn change_membership(
        &mut self,
        voters: Vec<u64>,
    ) -> Result<pb::ClusterStatusReply, CallError> {
        let r = self.request(pb::ChangeMembershipRequest { voters });
        Ok(self.grpc.change_membership(r).await?.into_inner())
    }
}

/// A call that failed, in words for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}", describe(.0))]
    Status(#[from] tonic::Status),
    #[error("the node answered without a result")]
    Empty,
}

fn describe(status: &tonic::Status) -> String {
    use tonic::Code;
    let kind = match status.code() {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid request",
        Code::FailedPrecondition => "refused",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    format!("{kind}: {}", status.message())
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
