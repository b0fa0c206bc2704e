//! Cancel keys: the gateway hands each client its own backend key data and
//! remembers which upstream backend it stands for.
//!
//! A CancelRequest is forwarded only when its key matches a live session
//! exactly; a forged or stale key cancels nothing, and the client learns
//! nothing either way (PostgreSQL never answers a cancel request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::upstream::UpstreamTarget;

/// The key a client sees in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub process_id: i32,
    pub secret: [u8; 4],
}

/// Where a cancel for a client key must go.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    pub target: Arc<UpstreamTarget>,
    pub process_id: i32,
    pub secret: Bytes,
}

/// Live sessions' cancel keys, shared by all sessions of a node.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<ClientKey, UpstreamKey>>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub struct CancelRegistration {
    registry: CancelRegistry,
    pub key: ClientKey,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, UpstreamKey>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so recovering from poison is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issue a fresh random client key for `upstream`.
    pub fn register(&self, upstream: UpstreamKey) -> CancelRegistration {
        let mut map = self.lock();
        let key = loop {
            let key = ClientKey {
                process_id: rand::random::<i32>() & i32::MAX,
                secret: rand::random(),
            };
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, upstream);
        CancelRegistration {
            registry: self.clone(),
            key,
        }
    }

    /// The upstream key for a client key, if a live session owns it.
    pub fn lookup(&self, process_id: i32, secret: &[u8]) -> Option<UpstreamKey> {
        let secret: [u8; 4] = secret.try_into().ok()?;
        self.lock().get(&ClientKey { process_id, secret }).cloned()
    }

    /// Number of live keys (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
