//! juris-state records and juris-raft status as protobuf messages.

use juris_proto::v1 as pb;
use juris_raft::ClusterStatus;
use juris_state::{
    AccessRequest, AccessRequestStatus, Approval, ApprovalStatus, Grant, GrantStatus, Review,
};

pub const ACCESS_STATUSES: [AccessRequestStatus; 5] = [
    AccessRequestStatus::Pending,
    AccessRequestStatus::Granted,
    AccessRequestStatus::Denied,
    AccessRequestStatus::Expired,
    AccessRequestStatus::Cancelled,
];
pub const GRANT_STATUSES: [GrantStatus; 4] = [
    GrantStatus::Active,
    GrantStatus::Scheduled,
    GrantStatus::Expired,
    GrantStatus::Revoked,
];
pub const APPROVAL_STATUSES: [ApprovalStatus; 6] = [
    ApprovalStatus::Pending,
    ApprovalStatus::Approved,
    ApprovalStatus::Consumed,
    ApprovalStatus::Lapsed,
    ApprovalStatus::Denied,
    ApprovalStatus::Cancelled,
];

fn review(r: &Review) -> pb::Review {
    pb::Review {
        reviewer: r.reviewer.name.clone(),
        approve: r.approve,
        reason: r.reason.clone().unwrap_or_default(),
        at_ms: r.at.0,
    }
}

pub fn access_request(r: &AccessRequest, status: AccessRequestStatus) -> pb::AccessRequest {
    pb::AccessRequest {
        id: r.id.to_string(),
        requester: r.requester.name.clone(),
        requester_subject: r.requester.subject.clone(),
        connection: r.connection.clone(),
        role: r.role.clone(),
        level: r.level.to_string(),
        duration_ms: r.duration_ms,
        reason: r.reason.clone(),
        status: status.as_str().into(),
        created_ms: r.created_at.0,
        approvals_needed: r.rule.threshold,
        reviews: r.reviews.iter().map(review).collect(),
        grant_id: r.grant.map(|g| g.to_string()).unwrap_or_default(),
    }
}

pub fn grant(g: &Grant, status: GrantStatus) -> pb::Grant {
    pb::Grant {
        id: g.id.to_string(),
        request_id: g.request.to_string(),
        holder: g.holder.name.clone(),
        holder_subject: g.holder.subject.clone(),
        connection: g.connection.clone(),
        role: g.role.clone(),
        level: g.level.to_string(),
        not_before_ms: g.not_before.0,
        expires_at_ms: g.expires_at.0,
        status: status.as_str().into(),
        revoked_by: g
            .revocation
            .as_ref()
            .map(|r| r.by.name.clone())
            .unwrap_or_default(),
        revoke_reason: g
            .revocation
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }
}

pub fn approval(a: &Approval, status: ApprovalStatus) -> pb::Approval {
    pb::Approval {
        id: a.id.to_string(),
        requester: a.requester.name.clone(),
        connection: a.connection.clone(),
        session: a.session.to_string(),
        statement: a.statement.clone(),
        fingerprint: a.fingerprint.clone(),
        class: a.class.to_string(),
        status: status.as_str().into(),
        created_ms: a.created_at.0,
        reviews: a.reviews.iter().map(review).collect(),
        usable_until_ms: a.usable_until.map(|t| t.0).unwrap_or_default(),
    }
}

pub fn cluster_status(region: &str, s: &ClusterStatus) -> pb::ClusterStatusReply {
    let mut members: Vec<pb::Member> = s
        .voters
        .iter()
        .map(|(id, addr)| (id, addr, true))
        .chain(s.learners.iter().map(|(id, addr)| (id, addr, false)))
        .map(|(id, addr, voter)| {
            let replica = s.replication.get(id);
            pb::Member {
                id: *id,
                address: addr.clone(),
                voter,
                matched_index: replica.and_then(|r| r.matched_index).unwrap_or_default(),
                lag: replica.map(|r| r.lag).unwrap_or_default(),
            }
        })
        .collect();
    members.sort_by_key(|m| m.id);
    pb::ClusterStatusReply {
        node_id: s.id,
        region: region.into(),
        leader_id: s.leader_id.unwrap_or_default(),
        leader_address: s.leader_addr.clone().unwrap_or_default(),
        term: s.term,
        last_log_index: s.last_log_index.unwrap_or_default(),
        committed_index: s.committed_index.unwrap_or_default(),
        applied_index: s.last_applied_index.unwrap_or_default(),
        snapshot_index: s.snapshot_index.unwrap_or_default(),
        members,
        leader_contact_age_ms: s
            .millis_since_quorum_ack
            .or(s.millis_since_leader_contact)
            .unwrap_or(u64::MAX),
        state: format!("{:?}", s.role).to_lowercase(),
    }
}
