//! The state machine as bytes, for Raft snapshots. Only records and
//! counters are stored; the lookup indexes are rebuilt on restore, so a
//! snapshot cannot carry an index that disagrees with its records.
//!
//! A snapshot is trusted less than memory: restore checks the version and
//! that ids are unique and below the counters that allocate new ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::StateError;
use crate::ids::{AccessRequestId, ApprovalId, GrantId};
use crate::index::{GrantIndex, OpenApprovals};
use crate::machine::StateMachine;
use crate::record::{AccessRequest, Approval, Grant};
use crate::time::UnixMillis;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    now: UnixMillis,
    next_access_request: u64,
    next_grant: u64,
    next_approval: u64,
    #[serde(serialize_with = "values")]
    access_requests: &'a BTreeMap<AccessRequestId, AccessRequest>,
    #[serde(serialize_with = "values")]
    grants: &'a BTreeMap<GrantId, Grant>,
    #[serde(serialize_with = "values")]
    approvals: &'a BTreeMap<ApprovalId, Approval>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    now: UnixMillis,
    next_access_request: u64,
    next_grant: u64,
    next_approval: u64,
    access_requests: Vec<AccessRequest>,
    grants: Vec<Grant>,
    approvals: Vec<Approval>,
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

fn values<K, V: Serialize, S: Serializer>(
    map: &&BTreeMap<K, V>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.values())
}

impl StateMachine {
    /// The whole state, deterministic bytes: two machines that applied the
    /// same log produce identical snapshots.
    pub fn snapshot(&self) -> Vec<u8> {
        let out = SnapshotOut {
            format: SNAPSHOT_FORMAT,
            now: self.now,
            next_access_request: self.next_access_request,
            next_grant: self.next_grant,
            next_approval: self.next_approval,
            access_requests: &self.access_requests,
            grants: &self.grants,
            approvals: &self.approvals,
        };
        // Records are plain data with string keys: this cannot fail.
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Rebuilds a machine from [`StateMachine::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<StateMachine, StateError> {
        let decode_error = |err: serde_json::Error| StateError::Decode {
            what: "snapshot",
            reason: err.to_string(),
        };
        let FormatOnly { format } = serde_json::from_slice(bytes).map_err(decode_error)?;
        if format != SNAPSHOT_FORMAT {
            return Err(StateError::UnsupportedSnapshot {
                found: format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        let stored: SnapshotIn = serde_json::from_slice(bytes).map_err(decode_error)?;

        let access_requests = keyed(
            stored.access_requests,
            stored.next_access_request,
            |r| r.id.0,
            "access request",
        )?;
        let grants = keyed(stored.grants, stored.next_grant, |g| g.id.0, "grant")?;
        let approvals = keyed(
            stored.approvals,
            stored.next_approval,
            |a| a.id.0,
            "approval",
        )?;
        for grant in grants.values() {
            let granted_by = access_requests.get(&grant.request.0);
            if granted_by.and_then(|request| request.grant) != Some(grant.id) {
                return Err(StateError::CorruptSnapshot(format!(
                    "grant {} does not belong to access request {}",
                    grant.id, grant.request
                )));
            }
        }

        let now = stored.now;
        let mut grant_index = GrantIndex::default();
        for grant in grants.values() {
            grant_index.insert(grant, now);
        }
        let mut open_approvals = OpenApprovals::default();
        for approval in approvals.values() {
            open_approvals.insert(approval, now);
        }
        Ok(StateMachine {
            now,
            next_access_request: stored.next_access_request,
            next_grant: stored.next_grant,
            next_approval: stored.next_approval,
            access_requests: access_requests
                .into_iter()
                .map(|(id, record)| (AccessRequestId(id), record))
                .collect(),
            grants: grants
                .into_iter()
                .map(|(id, record)| (GrantId(id), record))
                .collect(),
            approvals: approvals
                .into_iter()
                .map(|(id, record)| (ApprovalId(id), record))
                .collect(),
            grant_index,
            open_approvals,
        })
    }
}

/// Highest id counter a snapshot may hold: far beyond any real log, and
/// small enough that counting up from it can never overflow (and that ids
/// stay exact in JSON readers that use doubles).
const MAX_NEXT_ID: u64 = 1 << 53;

/// Records by id, refusing duplicates and ids the counter would hand out
/// again.
fn keyed<T>(
    records: Vec<T>,
    next_id: u64,
    id_of: impl Fn(&T) -> u64,
    what: &str,
) -> Result<BTreeMap<u64, T>, StateError> {
    if next_id > MAX_NEXT_ID {
        return Err(StateError::CorruptSnapshot(format!(
            "the next {what} id {next_id} is beyond {MAX_NEXT_ID}"
        )));
    }
    let mut by_id = BTreeMap::new();
    for record in records {
        let id = id_of(&record);
        if id == 0 || id >= next_id {
            return Err(StateError::CorruptSnapshot(format!(
                "{what} id {id} is outside 1..{next_id}"
            )));
        }
        if by_id.insert(id, record).is_some() {
            return Err(StateError::CorruptSnapshot(format!(
                "{what} id {id} appears twice"
            )));
        }
    }
    Ok(by_id)
}
