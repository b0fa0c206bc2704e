//! The node's part in its region's control plane: starting the Raft member,
//! serving the control API, answering the data plane's grant checks from
//! the applied state, and holding statements for command review.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use juris_config::{ClusterConfig, Deployment};
use juris_control::region::now_ms;
use juris_control::{CallerAuth, ControlService, Region, RegionState, SessionDirectory};
use juris_proxy_pg::{
    ActiveGrant, AuditSink, Authenticator, CommandReview, GrantAuthority, GrantLookup,
    HeldStatement, HoldOutcome, LiveSessions,
};
use juris_raft::{PeerTls, RaftConfig, RaftNode};
use juris_state::{
    Actor, Applied, ApprovalId, ApprovalRule, ApprovalStatus, Command, GrantId, Identity, Outcome,
    UnixMillis,
};
use juris_types::Principal;
use tracing::{info, warn};

use crate::NodeError;

/// Start this node's Raft member, and initialize the group when this node
/// is the lowest-numbered initial member.
pub async fn start_region(
    deployment: &Deployment,
    cluster: &ClusterConfig,
    audit: Arc<dyn AuditSink>,
) -> Result<Region, NodeError> {
    let data_dir = deployment.node.data_dir.clone().ok_or_else(|| {
        NodeError::Cluster("node.data_dir is required with [node.cluster]".into())
    })?;
    let listen = cluster.listen.parse().map_err(|_| {
        NodeError::Cluster(format!(
            "node.cluster.listen: `{}` is not an address",
            cluster.listen
        ))
    })?;
    let mut config = RaftConfig::new(
        cluster.raft_id,
        listen,
        data_dir.join("raft"),
        PeerTls {
            cert_file: cluster.tls.cert_file.clone(),
            key_file: cluster.tls.key_file.clone(),
            ca_file: cluster.tls.ca_file.clone(),
        },
    );
    config.advertise = cluster
        .advertise
        .clone()
        .unwrap_or_else(|| cluster.listen.clone());
    config.snapshot_every_logs = cluster.snapshot_every;
    config.logs_to_keep_after_snapshot = cluster.snapshot_every / 10;
    let raft = RaftNode::start(config, RegionState::default())
        .await
        .map_err(|e| NodeError::Cluster(e.to_string()))?;
    let members: BTreeMap<u64, String> = cluster
        .members
        .iter()
        .map(|m| (m.id, m.address.clone()))
        .collect();
    if members.keys().next() == Some(&cluster.raft_id) {
        raft.initialize(members).await.map_err(|e| {
            NodeError::Cluster(format!("cannot initialize the region's Raft group: {e}"))
        })?;
    }
    info!(raft_id = cluster.raft_id, listen = %cluster.listen, "region control plane started");
    Ok(Region {
        name: deployment.node.region.clone(),
        raft: Arc::new(raft),
        lease_bound: cluster.lease_bound,
        on_events: Some(control_audit(audit)),
    })
}

/// Each state change this node commits becomes a `control` record in its
/// audit trail.
fn control_audit(audit: Arc<dyn AuditSink>) -> juris_control::region::EventHook {
    Arc::new(move |events| {
        for event in events {
            // Externally tagged: `{"grant_created": {...}}`.
            let (action, detail) = match serde_json::to_value(event) {
                Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
                    match map.into_iter().next() {
                        Some(pair) => pair,
                        None => continue,
                    }
                }
                Ok(serde_json::Value::String(action)) => (action, serde_json::Value::Null),
                other => {
                    warn!(
                        ?other,
                        "a control-plane event has an unexpected shape; recording it whole"
                    );
                    ("unknown".into(), other.unwrap_or(serde_json::Value::Null))
                }
            };
            audit.record(juris_audit::AuditEvent::Control(
                juris_audit::event::Control { action, detail },
            ));
        }
    })
}

/// Serve the control API until `shutdown` resolves.
pub async fn serve_control(
    deployment: Arc<Deployment>,
    region: Region,
    auth: Arc<dyn Authenticator>,
    live: Arc<LiveSessions>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), NodeError> {
    let cert = std::fs::read(&deployment.node.tls.cert_file)
        .map_err(|e| NodeError::Cluster(format!("node.tls.cert_file: {e}")))?;
    let key = std::fs::read(&deployment.node.tls.key_file)
        .map_err(|e| NodeError::Cluster(format!("node.tls.key_file: {e}")))?;
    let service = ControlService::new(
        region,
        deployment,
        Arc::new(CallerAuthAdapter(auth)),
        Arc::new(LiveSessionsAdapter(live)),
    );
    juris_control::service::serve(service, listener, &cert, &key, async move {
        shutdown.cancelled().await
    })
    .await
    .map_err(|e| NodeError::Cluster(e.to_string()))
}

struct LiveSessionsAdapter(Arc<LiveSessions>);

impl SessionDirectory for LiveSessionsAdapter {
    fn live(&self) -> Vec<juris_types::LiveSession> {
        self.0.snapshot()
    }
}

struct CallerAuthAdapter(Arc<dyn Authenticator>);

impl CallerAuth for CallerAuthAdapter {
    fn principal<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, String>> + Send + 'a>> {
        self.0.authenticate(token)
    }
}

/// Grant checks for the data plane, from this node's applied state.
pub struct RegionGrants {
    pub region: Region,
}

impl GrantAuthority for RegionGrants {
    fn lookup(&self, principal: &Principal, connection: &str, role: &str) -> GrantLookup {
        if let Err(reason) = self.region.lease_ok() {
            return GrantLookup::Unavailable(reason);
        }
        let now = now_ms();
        self.region.read(|state| {
            match state.active_grant(&principal.issuer, &principal.subject, connection, role, now) {
                Some(grant) => GrantLookup::Active(ActiveGrant {
                    id: grant.id.to_string(),
                    expires_at_ms: grant.expires_at.0,
                }),
                None => GrantLookup::NoGrant,
            }
        })
    }

    fn ended(&self, grant: &ActiveGrant) -> Pin<Box<dyn Future<Output = String> + Send>> {
        let region = self.region.clone();
        let id = grant.id.parse::<GrantId>();
        Box::pin(async move {
            let Ok(id) = id else {
                return "the session's grant cannot be identified; ending it".to_string();
            };
            let mut applied = region.raft.applied_watch();
            loop {
                let now = now_ms();
                let (active, expires_at, ending) = region.read(|state| match state.grant(id) {
                    Some(grant) => (
                        state.is_grant_active(id, now),
                        grant.expires_at,
                        match &grant.revocation {
                            Some(r) => format!(
                                "terminating connection: grant {id} was revoked by {} ({})",
                                r.by.name, r.reason
                            ),
                            None => format!(
                                "terminating connection: grant {id} expired at {}",
                                grant.expires_at
                            ),
                        },
                    ),
                    None => (
                        false,
                        UnixMillis(0),
                        format!("terminating connection: grant {id} no longer exists"),
                    ),
                });
                if !active {
                    return ending;
                }
                let wait = Duration::from_millis(expires_at.0.saturating_sub(now.0).max(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = applied.changed() => {
                        if changed.is_err() {
                            warn!(%id, "the region's state stopped updating; ending the grant's session");
                            return format!("terminating connection: this node left its region's control plane (grant {id})");
                        }
                    }
                }
            }
        })
    }
}

/// Command review for the data plane: held statements become approval
/// requests in the region's log; the hold ends when the applied state says
/// the request was decided, or when the connection's hold time passes.
pub struct RegionReview {
    pub region: Region,
    pub deployment: Arc<Deployment>,
}

fn unavailable(reason: impl std::fmt::Display) -> HoldOutcome {
    HoldOutcome::Refused {
        sqlstate: "57P03",
        message: format!("the statement needs review, but it cannot be filed now: {reason}"),
    }
}

impl CommandReview for RegionReview {
    fn hold(
        &self,
        held: HeldStatement,
        notify: Box<dyn FnOnce(String) + Send>,
    ) -> Pin<Box<dyn Future<Output = HoldOutcome> + Send>> {
        let region = self.region.clone();
        let rule = self
            .deployment
            .connections
            .iter()
            .find(|c| c.name == held.connection)
            .and_then(|c| c.approvals.clone());
        Box::pin(async move {
            let Some(rule) = rule else {
                return unavailable(format!(
                    "connection \"{}\" has no review rule on this node",
                    held.connection
                ));
            };
            if let Err(reason) = region.lease_ok() {
                return unavailable(reason);
            }
            // An approval given after an earlier hold ended is used once.
            match consume(&region, &held).await {
                Ok(Some(id)) => {
                    return HoldOutcome::Run {
                        approval: id.to_string(),
                    };
                }
                Ok(None) => {}
                Err(outcome) => return outcome,
            }
            let hold = rule.hold;
            let window = rule.window;
            let reviewers = rule.reviewers.join(", ");
            let request = Command::RequestApproval {
                requester: Actor::from(&held.principal),
                connection: held.connection.clone(),
                session: held.session,
                statement: held.statement.clone(),
                fingerprint: held.fingerprint.clone(),
                class: held.class,
                rule: ApprovalRule {
                    reviewer_groups: rule.reviewers,
                    threshold: rule.approvals,
                    hold_ttl_ms: Some(millis(hold)),
                    window_ms: millis(window),
                },
            };
            let id = match region.write(&request).await {
                Ok(Applied {
                    result: Ok(Outcome::ApprovalRequested { id }),
                    ..
                }) => id,
                Ok(Applied {
                    result: Err(rejection),
                    ..
                }) => {
                    return HoldOutcome::Refused {
                        sqlstate: "42501",
                        message: format!("the statement cannot be filed for review: {rejection}"),
                    };
                }
                Ok(other) => return unavailable(format!("unexpected answer {other:?}")),
                Err(e) => return unavailable(e),
            };
            info!(approval = %id, session = %held.session, "statement held for review");
            notify(format!(
                "statement held for review as {id}; waiting up to {} for a member of {reviewers} to run `juris approvals approve {id}`",
                humantime::format_duration(hold)
            ));
            let deadline = tokio::time::Instant::now() + hold;
            let mut applied = region.raft.applied_watch();
            loop {
                let now = now_ms();
                let state = region.read(|s| {
                    s.approval(id).map(|a| {
                        let last = a.reviews.last().map(|r| {
                            let reason = r.reason.as_deref().unwrap_or("no reason given");
                            format!("{} ({reason})", r.reviewer.name)
                        });
                        (a.status(now), last)
                    })
                });
                match state {
                    Some((ApprovalStatus::Pending, _)) => {}
                    Some((ApprovalStatus::Approved, _)) => {
                        return match consume(&region, &held).await {
                            Ok(Some(_)) => HoldOutcome::Run {
                                approval: id.to_string(),
                            },
                            Ok(None) => HoldOutcome::Refused {
                                sqlstate: "42501",
                                message: format!(
                                    "statement not run: approval {id} was already used"
                                ),
                            },
                            Err(outcome) => outcome,
                        };
                    }
                    Some((ApprovalStatus::Denied, by)) => {
                        return HoldOutcome::Refused {
                            sqlstate: "42501",
                            message: format!(
                                "permission denied: approval request {id} was denied by {}",
                                by.unwrap_or_else(|| "a reviewer".into())
                            ),
                        };
                    }
                    Some((status, _)) => {
                        return HoldOutcome::Refused {
                            sqlstate: "42501",
                            message: format!(
                                "statement not run: approval request {id} is {status}"
                            ),
                        };
                    }
                    None => {
                        return unavailable(format!(
                            "approval request {id} is not in the applied state"
                        ));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        return HoldOutcome::Refused {
                            sqlstate: "57014",
                            message: format!(
                                "statement not run: approval request {id} was not decided within {}; once it is approved, run the identical statement again within {}",
                                humantime::format_duration(hold),
                                humantime::format_duration(window)
                            ),
                        };
                    }
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return unavailable("this node left its region's control plane");
                        }
                    }
                }
            }
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Use an approved, unused approval of this statement; `Ok(None)` when
/// there is none.
async fn consume(region: &Region, held: &HeldStatement) -> Result<Option<ApprovalId>, HoldOutcome> {
    let command = Command::ConsumeApproval {
        requester: Identity::from(&held.principal),
        connection: held.connection.clone(),
        fingerprint: held.fingerprint.clone(),
    };
    match region.write(&command).await {
        Ok(Applied {
            result: Ok(Outcome::ApprovalConsumed { id }),
            ..
        }) => Ok(Some(id)),
        Ok(_) => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

/// Leave the Raft group cleanly once nothing else holds the region.
pub async fn stop_region(region: Region) {
    match Arc::try_unwrap(region.raft) {
        Ok(raft) => {
            if let Err(e) = raft.shutdown().await {
                warn!("stopping the region's Raft member: {e}");
            }
        }
        Err(_) => warn!("the region's Raft member is still in use; leaving it to process exit"),
    }
}
