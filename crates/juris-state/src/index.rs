//! Derived lookup structures, so that the per-connection grant check does
//! a few hash lookups instead of scanning every grant ever made.
//!
//! Nothing here is in a snapshot: it is a function of the records and the
//! machine's time, rebuilt on restore. It only ever holds grants that can
//! still become or stay active (not revoked, not yet expired at the
//! machine's time), so it does not grow with history.
//!
//! The hash maps use a fixed-key hasher: the state machine takes no
//! randomness, and nothing iterates these maps in a way that reaches
//! output, so their order never matters.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

use crate::ids::{ApprovalId, GrantId};
use crate::record::{Approval, Grant};
use crate::time::UnixMillis;

type FixedMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Issuer → subject → connection → grants.
type ByHolder = FixedMap<String, FixedMap<String, FixedMap<String, Vec<GrantId>>>>;

/// Live grants by (issuer, subject, connection), plus their future
/// start/end times.
#[derive(Debug, Default, Clone)]
pub(crate) struct GrantIndex {
    by_holder: ByHolder,
    /// `expires_at` of every indexed grant, to drop it once expired.
    expiries: BTreeSet<(UnixMillis, GrantId)>,
    /// Future `not_before` and `expires_at` of every indexed grant.
    changes: BTreeSet<(UnixMillis, GrantId)>,
}

impl GrantIndex {
    /// Indexes `grant` if it can still be active at or after `now`.
    pub(crate) fn insert(&mut self, grant: &Grant, now: UnixMillis) {
        if grant.revocation.is_some() || grant.expires_at <= now {
            return;
        }
        self.by_holder
            .entry(grant.holder.issuer.clone())
            .or_default()
            .entry(grant.holder.subject.clone())
            .or_default()
            .entry(grant.connection.clone())
            .or_default()
            .push(grant.id);
        self.expiries.insert((grant.expires_at, grant.id));
        if grant.not_before > now {
            self.changes.insert((grant.not_before, grant.id));
        }
        self.changes.insert((grant.expires_at, grant.id));
    }

    /// Forgets `grant` (it was revoked or has expired).
    pub(crate) fn remove(&mut self, grant: &Grant) {
        self.expiries.remove(&(grant.expires_at, grant.id));
        self.changes.remove(&(grant.not_before, grant.id));
        self.changes.remove(&(grant.expires_at, grant.id));
        let holder = &grant.holder;
        let Some(subjects) = self.by_holder.get_mut(&holder.issuer) else {
            return;
        };
        let Some(connections) = subjects.get_mut(&holder.subject) else {
            return;
        };
        if let Some(ids) = connections.get_mut(&grant.connection) {
            ids.retain(|id| *id != grant.id);
            if ids.is_empty() {
                connections.remove(&grant.connection);
            }
        }
        if connections.is_empty() {
            subjects.remove(&holder.subject);
        }
        if subjects.is_empty() {
            self.by_holder.remove(&holder.issuer);
        }
    }

    /// Drops what has happened by `now`: expired grants and past changes.
    pub(crate) fn advance(&mut self, now: UnixMillis, grants: &BTreeMap<GrantId, Grant>) {
        while self.expiries.first().is_some_and(|&(at, _)| at <= now) {
            if let Some((_, id)) = self.expiries.pop_first()
                && let Some(grant) = grants.get(&id)
            {
                self.remove(grant);
            }
        }
        while self.changes.first().is_some_and(|&(at, _)| at <= now) {
            self.changes.pop_first();
        }
    }

    /// Grants that may be active for this holder on this connection.
    pub(crate) fn candidates(&self, issuer: &str, subject: &str, connection: &str) -> &[GrantId] {
        self.by_holder
            .get(issuer)
            .and_then(|subjects| subjects.get(subject))
            .and_then(|connections| connections.get(connection))
            .map_or(&[], Vec::as_slice)
    }

    /// The earliest start or end of an indexed grant after `now`.
    pub(crate) fn next_change_after(&self, now: UnixMillis) -> Option<UnixMillis> {
        let after = UnixMillis(now.0.checked_add(1)?);
        self.changes
            .range((after, GrantId(0))..)
            .next()
            .map(|&(at, _)| at)
    }

    /// Number of indexed grants (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.expiries.len()
    }
}

/// Approved, unused approvals whose window is still open, soonest closing
/// first, so that consuming picks the one that would lapse first.
#[derive(Debug, Default, Clone)]
pub(crate) struct OpenApprovals {
    by_deadline: BTreeSet<(UnixMillis, ApprovalId)>,
}

impl OpenApprovals {
    /// Adds `approval` if it is approved, unused and usable after `now`.
    pub(crate) fn insert(&mut self, approval: &Approval, now: UnixMillis) {
        if approval.consumed_at.is_some() || approval.approved_at().is_none() {
            return;
        }
        if let Some(until) = approval.usable_until.filter(|until| *until > now) {
            self.by_deadline.insert((until, approval.id));
        }
    }

    pub(crate) fn remove(&mut self, approval: &Approval) {
        if let Some(until) = approval.usable_until {
            self.by_deadline.remove(&(until, approval.id));
        }
    }

    /// Drops approvals whose window has closed by `now`.
    pub(crate) fn advance(&mut self, now: UnixMillis) {
        while self
            .by_deadline
            .first()
            .is_some_and(|&(until, _)| until <= now)
        {
            self.by_deadline.pop_first();
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = ApprovalId> + '_ {
        self.by_deadline.iter().map(|&(_, id)| id)
    }
}
