//! Cancel keys: the gateway hands each client its own backend key data and
//! remembers which upstream backend it stands for.
//!
//! A CancelRequest is forwarded only when its key matches a live session
//! exactly; a forged or stale key cancels nothing, and the client learns
//! nothing either way (PostgreSQL never answers a cancel request).
//!
//! A client sends its CancelRequest, in plaintext, to the address it
//! connected to. For a session handed over to another region that is the
//! relaying node, which never saw the key (it was inside the client's
//! TLS). So the owning node reserves the key when it accepts the link and
//! tells the relaying node, which keeps it as a [`CancelTarget::Relayed`]
//! entry for as long as it forwards the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::upstream::UpstreamTarget;

/// The key a client sees in BackendKeyData.
pub type ClientKey = juris_pgwire::handover::LinkCancelKey;

/// Where a cancel for a client key must go.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    pub target: Arc<UpstreamTarget>,
    pub process_id: i32,
    pub secret: Bytes,
}

/// What a live client key stands for.
#[derive(Debug, Clone)]
pub enum CancelTarget {
    /// Issued for a session that has no upstream backend yet.
    Reserved,
    /// A backend of this node's upstream.
    Upstream(UpstreamKey),
    /// A session this node hands over to a node of another region, reached
    /// at this relay endpoint.
    Relayed { region: String, endpoint: String },
}

/// Live sessions' cancel keys, shared by all sessions of a node.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<ClientKey, CancelTarget>>>,
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

impl CancelRegistration {
    /// Point the key at the session's upstream backend.
    pub fn bind(&self, upstream: UpstreamKey) {
        self.registry
            .lock()
            .insert(self.key, CancelTarget::Upstream(upstream));
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, CancelTarget>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so recovering from poison is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issue a fresh random client key for a session still being opened.
    pub fn reserve(&self) -> CancelRegistration {
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
        map.insert(key, CancelTarget::Reserved);
        CancelRegistration {
            registry: self.clone(),
            key,
        }
    }

    /// Issue a fresh random client key for `upstream`.
    pub fn register(&self, upstream: UpstreamKey) -> CancelRegistration {
        let registration = self.reserve();
        registration.bind(upstream);
        registration
    }

    /// Remember `key`, issued by a node of `region` reached at `endpoint`,
    /// for a session this node hands over. `None` if the key is already
    /// in use here (the client's cancels then reach nobody: 2^-62 odds).
    pub fn relay(
        &self,
        key: ClientKey,
        region: &str,
        endpoint: &str,
    ) -> Option<CancelRegistration> {
        let mut map = self.lock();
        if map.contains_key(&key) {
            return None;
        }
        map.insert(
            key,
            CancelTarget::Relayed {
                region: region.into(),
                endpoint: endpoint.into(),
            },
        );
        Some(CancelRegistration {
            registry: self.clone(),
            key,
        })
    }

    /// What a client key stands for, if a live session owns it.
    pub fn lookup(&self, process_id: i32, secret: &[u8]) -> Option<CancelTarget> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_as_long_as_their_registration() {
        let registry = CancelRegistry::default();
        let reserved = registry.reserve();
        let key = reserved.key;
        assert!(matches!(
            registry.lookup(key.process_id, &key.secret),
            Some(CancelTarget::Reserved)
        ));
        let relayed_key = ClientKey {
            process_id: 7,
            secret: [1, 2, 3, 4],
        };
        let relayed = registry
            .relay(relayed_key, "eu-west", "10.0.0.1:7443")
            .unwrap();
        // The same key cannot be taken twice.
        assert!(
            registry
                .relay(relayed_key, "eu-west", "10.0.0.2:7443")
                .is_none()
        );
        assert!(registry.relay(key, "eu-west", "10.0.0.2:7443").is_none());
        match registry.lookup(7, &[1, 2, 3, 4]) {
            Some(CancelTarget::Relayed { region, endpoint }) => {
                assert_eq!(
                    (region.as_str(), endpoint.as_str()),
                    ("eu-west", "10.0.0.1:7443")
                );
            }
            other => panic!("{other:?}"),
        }
        // A key with the wrong secret, or of the wrong length, is unknown.
        assert!(registry.lookup(7, &[1, 2, 3, 5]).is_none());
        assert!(registry.lookup(7, &[1, 2, 3]).is_none());
        drop(relayed);
        drop(reserved);
        assert!(registry.is_empty());
    }
}
