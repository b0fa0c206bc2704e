//! The gRPC `Control` service (proto/juris/v1/control.proto).
//!
//! Who may do what is decided here, before anything reaches the log:
//! requesting a role needs eligibility (one of the role's groups), revoking
//! needs to be the holder, a reviewer of the role or an admin, membership
//! changes need an admin group. Review rules themselves (reviewer groups,
//! never one's own request, threshold) are the state machine's, so every
//! node enforces them identically. Listings show a caller their own
//! requests and grants; reviewers and admins see the region's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use juris_config::{Deployment, RoleAccess};
use juris_proto::v1 as pb;
use juris_state::{
    AccessRequestFilter, AccessRequestId, AccessRule, Actor, ApprovalFilter, ApprovalId, Command,
    GrantFilter, GrantId, Outcome, RejectionKind, UnixMillis,
};
use juris_types::Principal;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::convert;
use crate::region::{Region, WriteError, now_ms};

/// Validates the bearer token of a call (the node's OIDC validator).
pub trait CallerAuth: Send + Sync {
    /// `Err` carries a reason safe to return to the caller (never the token).
    fn principal<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, String>> + Send + 'a>>;
}

/// The control API of one node.
pub struct ControlService {
    region: Region,
    sessions: Arc<dyn SessionDirectory>,
    deployment: Arc<Deployment>,
    auth: Arc<dyn CallerAuth>,
    /// Groups allowed to manage membership and see everything.
    admin_groups: Vec<String>,
    /// Control endpoints of the initial members, to point callers at the leader.
    member_controls: std::collections::BTreeMap<u64, String>,
}

impl ControlService {
    pub fn new(
        region: Region,
        deployment: Arc<Deployment>,
        auth: Arc<dyn CallerAuth>,
        sessions: Arc<dyn SessionDirectory>,
    ) -> ControlService {
        let cluster = deployment.node.cluster.as_ref();
        ControlService {
            admin_groups: cluster.map(|c| c.admin_groups.clone()).unwrap_or_default(),
            member_controls: cluster
                .map(|c| {
                    c.members
                        .iter()
                        .filter_map(|m| m.control.clone().map(|addr| (m.id, addr)))
                        .collect()
                })
                .unwrap_or_default(),
            region,
            deployment,
            auth,
            sessions,
        }
    }

    /// The tonic server wrapper for this service.
    pub fn into_server(self) -> pb::control_server::ControlServer<ControlService> {
        pb::control_server::ControlServer::new(self)
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no access token: send `authorization: Bearer <token>` (juris login)",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        self.auth
            .principal(token)
            .await
            .map_err(|reason| Status::unauthenticated(format!("authentication failed: {reason}")))
    }

    fn is_admin(&self, principal: &Principal) -> bool {
        principal
            .groups
            .iter()
            .any(|g| self.admin_groups.contains(g))
    }

    /// Reviewers of any jit role, or admins: they see the whole region.
    fn sees_everything(&self, principal: &Principal) -> bool {
        self.is_admin(principal)
            || self.deployment.roles.iter().any(|r| {
                r.review
                    .as_ref()
                    .is_some_and(|rv| rv.reviewers.iter().any(|g| principal.groups.contains(g)))
            })
    }

    async fn commit(&self, command: Command) -> Result<Outcome, Status> {
        match self.region.write(&command).await {
            Ok(applied) => applied.result.map_err(|rejection| {
                let message = rejection.message;
                match rejection.kind {
                    RejectionKind::Invalid => Status::invalid_argument(message),
                    RejectionKind::NotFound => Status::not_found(message),
                    RejectionKind::NotAllowed => Status::permission_denied(message),
                    RejectionKind::Conflict => Status::failed_precondition(message),
                }
            }),
            Err(WriteError::Raft(e)) => Err(Status::unavailable(e.to_string())),
            Err(WriteError::Decode(e)) => Err(Status::internal(e)),
        }
    }

    fn access_reply(
        &self,
        id: AccessRequestId,
    ) -> Result<Response<pb::AccessRequestReply>, Status> {
        let now = now_ms();
        self.region.read(|state| {
            let request = state
                .access_request(id)
                .ok_or_else(|| Status::not_found(format!("no access request {id}")))?;
            Ok(Response::new(pb::AccessRequestReply {
                request: Some(convert::access_request(
                    request,
                    request.status(state.effective_time(now)),
                )),
            }))
        })
    }

    fn leader_hint(&self) -> String {
        let status = self.region.raft.status();
        match status.leader_id {
            Some(leader) => match self.member_controls.get(&leader) {
                Some(control) => {
                    format!("node {leader} is the leader; its control API is {control}")
                }
                None => format!("node {leader} is the leader"),
            },
            None => "no leader is known (no quorum)".into(),
        }
    }
}

fn parse_id<T: std::str::FromStr>(id: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    id.parse::<T>()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn optional(text: String) -> Option<String> {
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn parse_status<T: Copy>(
    text: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Option<T>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    all.iter()
        .copied()
        .find(|s| name(*s) == text)
        .map(Some)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|s| name(*s)).collect();
            Status::invalid_argument(format!(
                "unknown status `{text}`; one of {}",
                names.join(", ")
            ))
        })
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn request_access(
        &self,
        request: Request<pb::RequestAccessRequest>,
    ) -> Result<Response<pb::AccessRequestReply>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let connection = self.deployment.connection(&req.connection).ok_or_else(|| {
            Status::not_found(format!("connection \"{}\" does not exist", req.connection))
        })?;
        if connection.region != self.region.name {
            return Err(Status::failed_precondition(format!(
                "connection \"{}\" belongs to region {}; ask that region's nodes (grants never leave their region)",
                connection.name, connection.region
            )));
        }
        let role = self
            .deployment
            .role(&req.role)
            .ok_or_else(|| Status::not_found(format!("role \"{}\" does not exist", req.role)))?;
        let review = match (&role.access, &role.review) {
            (RoleAccess::Jit, Some(review)) => review,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "role \"{}\" is not requested: it is a standing role",
                    role.name
                )));
            }
        };
        if !role.applies_to(&principal.groups, &connection.name) {
            return Err(Status::permission_denied(format!(
                "\"{}\" may not request role \"{}\" on connection \"{}\" (not in one of its groups: {})",
                principal.name(),
                role.name,
                connection.name,
                role.groups.join(", ")
            )));
        }
        let command = Command::RequestAccess {
            requester: Actor::from(&principal),
            connection: connection.name.clone(),
            role: role.name.clone(),
            level: role.level,
            duration_ms: req.duration_ms,
            not_before: (req.not_before_ms > 0).then_some(UnixMillis(req.not_before_ms)),
            reason: req.reason,
            rule: AccessRule {
                reviewer_groups: review.reviewers.clone(),
                threshold: review.approvals,
                max_duration_ms: review.max_duration.as_millis() as u64,
                request_ttl_ms: review.request_ttl.as_millis() as u64,
            },
        };
        let Outcome::AccessRequested { id, .. } = self.commit(command).await? else {
            return Err(Status::internal("unexpected outcome of an access request"));
        };
        info!(principal = principal.name(), %id, connection = %connection.name, role = %role.name, "access requested");
        self.access_reply(id)
    }

    async fn list_access_requests(
        &self,
        request: Request<pb::ListAccessRequestsRequest>,
    ) -> Result<Response<pb::AccessRequestList>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let status = parse_status(&req.status, &convert::ACCESS_STATUSES, |s| s.as_str())?;
        let everything = self.sees_everything(&principal);
        let now = now_ms();
        let requests = self.region.read(|state| {
            state
                .access_requests(
                    AccessRequestFilter {
                        status,
                        connection: (!req.connection.is_empty()).then_some(req.connection.as_str()),
                        requester: (!everything)
                            .then_some((principal.issuer.as_str(), principal.subject.as_str())),
                    },
                    now,
                )
                .map(|(r, s)| convert::access_request(r, s))
                .collect()
        });
        Ok(Response::new(pb::AccessRequestList { requests }))
    }

    async fn review_access(
        &self,
        request: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::AccessRequestReply>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let id: AccessRequestId = parse_id(&req.id)?;
        self.commit(Command::ReviewAccess {
            id,
            reviewer: Actor::from(&principal),
            approve: req.approve,
            reason: optional(req.reason),
        })
        .await?;
        info!(reviewer = principal.name(), %id, approve = req.approve, "access request reviewed");
        self.access_reply(id)
    }

    async fn cancel_access(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::AccessRequestReply>, Status> {
        let principal = self.caller(&request).await?;
        let id: AccessRequestId = parse_id(&request.get_ref().id)?;
        self.commit(Command::CancelAccess {
            id,
            actor: Actor::from(&principal),
        })
        .await?;
        self.access_reply(id)
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::GrantList>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let status = parse_status(&req.status, &convert::GRANT_STATUSES, |s| s.as_str())?;
        let everything = self.sees_everything(&principal);
        let now = now_ms();
        let grants = self.region.read(|state| {
            state
                .grants(
                    GrantFilter {
                        status,
                        connection: (!req.connection.is_empty()).then_some(req.connection.as_str()),
                        subject: (!everything).then_some(principal.subject.as_str()),
                    },
                    now,
                )
                .filter(|(g, _)| everything || g.holder.issuer == principal.issuer)
                .map(|(g, s)| convert::grant(g, s))
                .collect()
        });
        Ok(Response::new(pb::GrantList { grants }))
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::GrantReply>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let id: GrantId = parse_id(&req.id)?;
        let (holder, role) = self
            .region
            .read(|state| state.grant(id).map(|g| (g.holder.clone(), g.role.clone())))
            .ok_or_else(|| Status::not_found(format!("no grant {id}")))?;
        let reviewer = self
            .deployment
            .role(&role)
            .and_then(|r| r.review.as_ref())
            .is_some_and(|rv| rv.reviewers.iter().any(|g| principal.groups.contains(g)));
        let holder_self = holder.is(&principal.issuer, &principal.subject);
        if !(holder_self || reviewer || self.is_admin(&principal)) {
            return Err(Status::permission_denied(format!(
                "\"{}\" may not revoke {id}: only its holder, a reviewer of role \"{role}\" or an admin may",
                principal.name()
            )));
        }
        let Outcome::GrantRevoked { grant } = self
            .commit(Command::RevokeGrant {
                id,
                actor: Actor::from(&principal),
                reason: if req.reason.trim().is_empty() {
                    "revoked".into()
                } else {
                    req.reason
                },
            })
            .await?
        else {
            return Err(Status::internal("unexpected outcome of a revocation"));
        };
        info!(by = principal.name(), %id, "grant revoked");
        let status =
            grant.status(now_ms().max(grant.revocation.as_ref().map_or(UnixMillis(0), |r| r.at)));
        Ok(Response::new(pb::GrantReply {
            grant: Some(convert::grant(&grant, status)),
        }))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ApprovalList>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let status = parse_status(&req.status, &convert::APPROVAL_STATUSES, |s| s.as_str())?;
        let everything = self.sees_everything(&principal);
        let now = now_ms();
        let approvals = self.region.read(|state| {
            state
                .approvals(
                    ApprovalFilter {
                        status,
                        connection: (!req.connection.is_empty()).then_some(req.connection.as_str()),
                    },
                    now,
                )
                .filter(|(a, _)| {
                    everything || a.requester.is(&principal.issuer, &principal.subject)
                })
                .map(|(a, s)| convert::approval(a, s))
                .collect()
        });
        Ok(Response::new(pb::ApprovalList { approvals }))
    }

    async fn review_approval(
        &self,
        request: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::ApprovalReply>, Status> {
        let principal = self.caller(&request).await?;
        let req = request.into_inner();
        let id: ApprovalId = parse_id(&req.id)?;
        self.commit(Command::ReviewApproval {
            id,
            reviewer: Actor::from(&principal),
            approve: req.approve,
            reason: optional(req.reason),
        })
        .await?;
        let now = now_ms();
        self.region.read(|state| {
            let approval = state
                .approval(id)
                .ok_or_else(|| Status::not_found(format!("no approval {id}")))?;
            Ok(Response::new(pb::ApprovalReply {
                approval: Some(convert::approval(
                    approval,
                    approval.status(state.effective_time(now)),
                )),
            }))
        })
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        self.caller(&request).await?;
        Ok(Response::new(convert::cluster_status(
            &self.region.name,
            &self.region.raft.status(),
        )))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::SessionList>, Status> {
        let principal = self.caller(&request).await?;
        let connection = request.into_inner().connection;
        let admin = self.is_admin(&principal);
        let node = self.region.raft.id();
        let sessions = self
            .sessions
            .live()
            .into_iter()
            .filter(|s| admin || (s.issuer == principal.issuer && s.subject == principal.subject))
            .filter(|s| connection.is_empty() || s.connection == connection)
            .map(|s| pb::Session {
                id: s.session.to_string(),
                principal: s.principal,
                subject: s.subject,
                connection: s.connection,
                role: s.role,
                grant: s.grant.unwrap_or_default(),
                client: s.client,
                started_ms: s.started_ms,
                node,
            })
            .collect();
        Ok(Response::new(pb::SessionList { sessions }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let principal = self.caller(&request).await?;
        self.require_admin(&principal)?;
        let req = request.into_inner();
        self.region
            .raft
            .add_learner(req.id, req.address)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e} ({})", self.leader_hint())))?;
        Ok(Response::new(convert::cluster_status(
            &self.region.name,
            &self.region.raft.status(),
        )))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let principal = self.caller(&request).await?;
        self.require_admin(&principal)?;
        let voters = request.into_inner().voters.into_iter().collect();
        self.region
            .raft
            .change_membership(voters)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e} ({})", self.leader_hint())))?;
        Ok(Response::new(convert::cluster_status(
            &self.region.name,
            &self.region.raft.status(),
        )))
    }
}

impl ControlService {
    fn require_admin(&self, principal: &Principal) -> Result<(), Status> {
        if self.is_admin(principal) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "\"{}\" may not change the region's membership (admin groups: {})",
                principal.name(),
                if self.admin_groups.is_empty() {
                    "none configured".to_string()
                } else {
                    self.admin_groups.join(", ")
                }
            )))
        }
    }
}

/// The node's live sessions, as the data plane registers them.
pub trait SessionDirectory: Send + Sync {
    fn live(&self) -> Vec<juris_types::LiveSession>;
}

/// Serve `service` on `listener` with TLS (`cert_pem`/`key_pem`: the
/// node's server certificate) until `shutdown` resolves.
pub async fn serve(
    service: ControlService,
    listener: tokio::net::TcpListener,
    cert_pem: &[u8],
    key_pem: &[u8],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), crate::ControlError> {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    Server::builder()
        .tls_config(tls)
        .map_err(|e| crate::ControlError::Tls(e.to_string()))?
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| crate::ControlError::Serve(e.to_string()))
}
