//! A region's replicated state: [`juris_state::StateMachine`] adapted to the
//! byte interface of [`juris_raft::StateMachine`], and the [`Region`]
//! handle the node keeps (its Raft node plus typed access to the state).

use std::sync::Arc;
use std::time::Duration;

use juris_raft::RaftNode;
use juris_state::{Applied, Command, StateEvent, StateMachine, UnixMillis};

/// The state machine the Raft log drives.
#[derive(Default)]
pub struct RegionState {
    machine: StateMachine,
}

impl juris_raft::StateMachine for RegionState {
    fn apply(&mut self, command: &[u8], leader_time_ms: u64) -> Vec<u8> {
        self.machine
            .apply_bytes(command, UnixMillis(leader_time_ms))
            .encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.machine.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.machine = StateMachine::restore(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Called with the state changes of a command this node committed.
pub type EventHook = Arc<dyn Fn(&[StateEvent]) + Send + Sync>;

/// This node's handle on its region's control plane.
#[derive(Clone)]
pub struct Region {
    pub name: String,
    pub raft: Arc<RaftNode<RegionState>>,
    /// How long this node may go without a leader before it stops vouching
    /// for grants (new grant-dependent sessions, approvals).
    pub lease_bound: Duration,
    /// Told the state changes of every command this node commits (for the
    /// node's audit trail: each change is recorded once, by the node that
    /// took the call).
    pub on_events: Option<EventHook>,
}

/// Why a command did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Raft could not commit it (no leader, no quorum, timeout).
    #[error("{0}")]
    Raft(#[from] juris_raft::RaftError),
    /// Committed, but the answer could not be read (a bug, or a version skew).
    #[error("{0}")]
    Decode(String),
}

impl Region {
    /// Commit `command` through the region's log and return what it did.
    pub async fn write(&self, command: &Command) -> Result<Applied, WriteError> {
        let bytes = self.raft.write(command.encode()).await?;
        let applied = Applied::decode(&bytes).map_err(|e| WriteError::Decode(e.to_string()))?;
        if let Some(on_events) = &self.on_events
            && !applied.events.is_empty()
        {
            on_events(&applied.events);
        }
        Ok(applied)
    }

    /// Read the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        self.raft.with_state(|state| f(&state.machine))
    }

    /// `Err` with a sentence when this node has not heard from a leader
    /// within the lease bound, so its view of grants may be stale.
    pub fn lease_ok(&self) -> Result<(), String> {
        match self.raft.leader_lease_age() {
            Some(age) if age <= self.lease_bound => Ok(()),
            Some(age) => Err(format!(
                "this node has not heard from its region's leader for {} s (bound {} s); no quorum",
                age.as_secs(),
                self.lease_bound.as_secs()
            )),
            None => Err("this node's region has no leader (no quorum)".into()),
        }
    }
}

/// Milliseconds since the Unix epoch, by this node's clock.
pub fn now_ms() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}
