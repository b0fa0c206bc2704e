//! Reading the applied state. The data plane calls [`StateMachine::active_grant`]
//! for every new session, so it is a few hash lookups and allocates
//! nothing; listings are for the control API and may scan.
//!
//! Every query takes the caller's `now` and evaluates it no earlier than
//! the last applied leader time: a node whose clock lags the leader never
//! sees a grant as active after the log has seen it expire.

use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::machine::StateMachine;
use crate::record::{
    AccessRequest, AccessRequestStatus, Approval, ApprovalStatus, Grant, GrantStatus,
};
use crate::time::UnixMillis;

/// Which access requests to list; `None` matches everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessRequestFilter<'a> {
    pub status: Option<AccessRequestStatus>,
    pub connection: Option<&'a str>,
    /// `(issuer, subject)` of the requester.
    pub requester: Option<(&'a str, &'a str)>,
}

/// Which grants to list; `None` matches everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrantFilter<'a> {
    /// `Some(GrantStatus::Active)` lists active grants only.
    pub status: Option<GrantStatus>,
    pub connection: Option<&'a str>,
    /// Subject of the holder.
    pub subject: Option<&'a str>,
}

/// Which approvals to list; `None` matches everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApprovalFilter<'a> {
    pub status: Option<ApprovalStatus>,
    pub connection: Option<&'a str>,
}

impl StateMachine {
    /// The time of the latest applied entry (never decreases).
    pub fn now(&self) -> UnixMillis {
        self.now
    }

    /// The time queries evaluate at: `now`, but never before the latest
    /// applied entry.
    pub fn effective_time(&self, now: UnixMillis) -> UnixMillis {
        now.max(self.now)
    }

    /// The grant that lets `issuer`/`subject` use `role` on `connection`
    /// at `now`, if any; of several, the one that lasts longest.
    pub fn active_grant(
        &self,
        issuer: &str,
        subject: &str,
        connection: &str,
        role: &str,
        now: UnixMillis,
    ) -> Option<&Grant> {
        let now = self.effective_time(now);
        self.grant_index
            .candidates(issuer, subject, connection)
            .iter()
            .filter_map(|id| self.grants.get(id))
            .filter(|grant| grant.role == role && grant.is_active(now))
            .max_by_key(|grant| grant.expires_at)
    }

    /// Whether grant `id` exists and is active at `now`.
    pub fn is_grant_active(&self, id: GrantId, now: UnixMillis) -> bool {
        let now = self.effective_time(now);
        self.grants
            .get(&id)
            .is_some_and(|grant| grant.is_active(now))
    }

    /// The earliest moment after `now` at which some grant starts or ends
    /// (revocations are events instead), so the node can wake up then and
    /// end sessions whose grant expired.
    pub fn next_grant_change_after(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.grant_index.next_change_after(self.effective_time(now))
    }

    pub fn grant(&self, id: GrantId) -> Option<&Grant> {
        self.grants.get(&id)
    }

    pub fn access_request(&self, id: AccessRequestId) -> Option<&AccessRequest> {
        self.access_requests.get(&id)
    }

    pub fn approval(&self, id: ApprovalId) -> Option<&Approval> {
        self.approvals.get(&id)
    }

    /// Access requests matching `filter`, oldest first, with their status
    /// at `now`.
    pub fn access_requests<'a>(
        &'a self,
        filter: AccessRequestFilter<'a>,
        now: UnixMillis,
    ) -> impl Iterator<Item = (&'a AccessRequest, AccessRequestStatus)> + 'a {
        let now = self.effective_time(now);
        self.access_requests
            .values()
            .filter(move |request| {
                filter.connection.is_none_or(|c| request.connection == c)
                    && filter
                        .requester
                        .is_none_or(|(issuer, subject)| request.requester.is(issuer, subject))
            })
            .map(move |request| (request, request.status(now)))
            .filter(move |(_, status)| filter.status.is_none_or(|wanted| *status == wanted))
    }

    /// Grants matching `filter`, oldest first, with their status at `now`.
    pub fn grants<'a>(
        &'a self,
        filter: GrantFilter<'a>,
        now: UnixMillis,
    ) -> impl Iterator<Item = (&'a Grant, GrantStatus)> + 'a {
        let now = self.effective_time(now);
        self.grants
            .values()
            .filter(move |grant| {
                filter.connection.is_none_or(|c| grant.connection == c)
                    && filter.subject.is_none_or(|s| grant.holder.subject == s)
            })
            .map(move |grant| (grant, grant.status(now)))
            .filter(move |(_, status)| filter.status.is_none_or(|wanted| *status == wanted))
    }

    /// Approvals matching `filter`, oldest first, with their status at `now`.
    pub fn approvals<'a>(
        &'a self,
        filter: ApprovalFilter<'a>,
        now: UnixMillis,
    ) -> impl Iterator<Item = (&'a Approval, ApprovalStatus)> + 'a {
        let now = self.effective_time(now);
        self.approvals
            .values()
            .filter(move |approval| filter.connection.is_none_or(|c| approval.connection == c))
            .map(move |approval| (approval, approval.status(now)))
            .filter(move |(_, status)| filter.status.is_none_or(|wanted| *status == wanted))
    }
}
