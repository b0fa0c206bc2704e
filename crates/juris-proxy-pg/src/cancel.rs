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
//!
//! Behind a load balancer or geo-DNS the cancel's new connection may reach
//! any node, usually not the one serving the session. So each key says
//! which node issued it ([`KeyOrigin`]: the issuing node's region and its
//! place in that region's `relay` list, in the top bits of the process
//! id), and a node that does not know a key passes the request once, over
//! a cancel link, to the node that issued it. A request that came over a
//! link is never passed on again, and only a bounded number are being
//! passed on at any moment, so forged keys cost little.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use juris_config::Deployment;

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

/// Bits of a process id below the origin: random.
const RANDOM_BITS: u32 = 21;
/// Bits for the node's place in its region's relay list (1..=63).
const NODE_BITS: u32 = 6;
/// Regions are numbered 1..=15 in the order of their names.
const MAX_REGION_SLOT: usize = 15;
const MAX_NODE_SLOT: usize = (1 << NODE_BITS) - 1;
/// Cancel requests being passed on to other nodes at once; more are
/// dropped (cancelling is best effort in PostgreSQL too).
const MAX_FORWARDING: usize = 32;

/// The node that issued a client key: its region's slot (the position of
/// its name among the deployment's region names, sorted, from 1) and its
/// own slot (the position of its `node.relay.advertise`, or else its
/// `node.relay.listen`, in its region's `relay` list, from 1). Every node reads the same deployment file, so
/// every node can find the issuer. A node without a place in that list
/// (no relay listener, or more than 15 regions or 63 nodes) issues keys
/// without an origin, which only it can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyOrigin {
    region_slot: u8,
    node_slot: u8,
}

impl KeyOrigin {
    /// This node's origin in `deployment`.
    pub fn of_node(deployment: &Deployment) -> KeyOrigin {
        let names = sorted_region_names(deployment);
        let own = &deployment.node.region;
        let region_slot = names.iter().position(|n| n == own).map(|i| i + 1);
        let node_slot = deployment.node.relay.as_ref().and_then(|relay| {
            let listed_as = relay.advertise.as_ref().unwrap_or(&relay.listen);
            deployment
                .region(own)?
                .relay
                .iter()
                .position(|endpoint| endpoint == listed_as)
                .map(|i| i + 1)
        });
        match (region_slot, node_slot) {
            (Some(region), Some(node)) if region <= MAX_REGION_SLOT && node <= MAX_NODE_SLOT => {
                KeyOrigin {
                    region_slot: region as u8,
                    node_slot: node as u8,
                }
            }
            _ => KeyOrigin::default(),
        }
    }

    /// The origin a client key claims, if any.
    pub fn of_key(process_id: i32) -> Option<KeyOrigin> {
        let bits = (process_id as u32) >> RANDOM_BITS;
        let origin = KeyOrigin {
            region_slot: (bits >> NODE_BITS) as u8 & 0x0f,
            node_slot: bits as u8 & MAX_NODE_SLOT as u8,
        };
        (origin.region_slot != 0 && origin.node_slot != 0).then_some(origin)
    }

    fn bits(self) -> i32 {
        if self == KeyOrigin::default() {
            return 0;
        }
        ((i32::from(self.region_slot) << NODE_BITS) | i32::from(self.node_slot)) << RANDOM_BITS
    }

    /// The issuing node's region and relay endpoint in `deployment`.
    pub fn locate(self, deployment: &Deployment) -> Option<(String, String)> {
        let names = sorted_region_names(deployment);
        let name = names.get(usize::from(self.region_slot).checked_sub(1)?)?;
        let endpoint = deployment
            .region(name)?
            .relay
            .get(usize::from(self.node_slot).checked_sub(1)?)?;
        Some((name.clone(), endpoint.clone()))
    }
}

fn sorted_region_names(deployment: &Deployment) -> Vec<String> {
    let mut names: Vec<String> = deployment.regions.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

/// Live sessions' cancel keys, shared by all sessions of a node.
#[derive(Debug, Clone)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<ClientKey, CancelTarget>>>,
    origin: KeyOrigin,
    forwarding: Arc<tokio::sync::Semaphore>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry::issuing_as(KeyOrigin::default())
    }
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
    /// A registry whose keys say they were issued by `origin`.
    pub fn issuing_as(origin: KeyOrigin) -> CancelRegistry {
        CancelRegistry {
            inner: Arc::default(),
            origin,
            forwarding: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDING)),
        }
    }

    /// The node that issued `process_id`'s key, when that is another node
    /// this one can reach: where to pass its cancel request on.
    pub fn issuer_elsewhere(
        &self,
        process_id: i32,
        deployment: &Deployment,
    ) -> Option<(String, String)> {
        let origin = KeyOrigin::of_key(process_id)?;
        if origin == self.origin {
            return None;
        }
        origin.locate(deployment)
    }

    /// A permit to pass one cancel request on; `None` when too many are
    /// under way.
    pub fn forwarding_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.forwarding.clone().try_acquire_owned().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, CancelTarget>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so recovering from poison is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issue a fresh random client key for a session still being opened.
    pub fn reserve(&self) -> CancelRegistration {
        let mut map = self.lock();
        let key = loop {
            let random = if self.origin == KeyOrigin::default() {
                rand::random::<i32>() & i32::MAX
            } else {
                rand::random::<i32>() & ((1 << RANDOM_BITS) - 1)
            };
            let key = ClientKey {
                process_id: self.origin.bits() | random,
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

    /// Node `listen` (relay) of region `region` in a two-region deployment
    /// whose regions are listed out of name order.
    fn deployment(region: &str, relay_listen: &str, advertise: Option<&str>) -> Deployment {
        let advertise = advertise
            .map(|a| format!(", advertise = \"{a}\""))
            .unwrap_or_default();
        let text = format!(
            r#"
[node]
id = "n"
region = "{region}"
listen = "127.0.0.1:0"
tls = {{ cert_file = "s.pem", key_file = "s.key" }}
relay = {{ listen = "{relay_listen}"{advertise}, tls = {{ cert_file = "r.pem", key_file = "r.key", ca_file = "ca.pem" }} }}

[identity]
issuer = "https://idp.example.test/"
audience = "urn:juris:gateway"

[[region]]
name = "us-east"
relay = ["10.1.0.1:7601", "10.1.0.2:7601"]

[[region]]
name = "eu-west"
relay = ["10.0.0.1:7601", "10.0.0.2:7601", "10.0.0.3:7601"]
"#
        );
        Deployment::from_toml("t.toml", &text).unwrap()
    }

    #[test]
    fn keys_name_the_node_that_issued_them() {
        let eu3 = deployment("eu-west", "10.0.0.3:7601", None);
        let us1 = deployment("us-east", "0.0.0.0:7601", Some("10.1.0.1:7601"));
        let registry = CancelRegistry::issuing_as(KeyOrigin::of_node(&eu3));
        let keys: Vec<ClientKey> = (0..200).map(|_| registry.reserve().key).collect();
        for key in keys {
            assert!(key.process_id > 0, "{key:?}");
            let origin = KeyOrigin::of_key(key.process_id).unwrap();
            // Any node of the deployment finds the issuer ...
            assert_eq!(
                origin.locate(&us1),
                Some(("eu-west".into(), "10.0.0.3:7601".into()))
            );
            let elsewhere = CancelRegistry::issuing_as(KeyOrigin::of_node(&us1));
            assert_eq!(
                elsewhere.issuer_elsewhere(key.process_id, &us1),
                Some(("eu-west".into(), "10.0.0.3:7601".into()))
            );
            // ... and the issuer does not pass its own keys on.
            assert_eq!(registry.issuer_elsewhere(key.process_id, &eu3), None);
        }
        // `advertise` is how a node listening on 0.0.0.0 is found.
        assert_ne!(KeyOrigin::of_node(&us1), KeyOrigin::default());
        // A node missing from its region's list issues keys without origin.
        let unlisted = deployment("eu-west", "10.0.0.9:7601", None);
        assert_eq!(KeyOrigin::of_node(&unlisted), KeyOrigin::default());
        let plain = CancelRegistry::issuing_as(KeyOrigin::of_node(&unlisted));
        for _ in 0..50 {
            let key = plain.reserve().key;
            assert!(key.process_id >= 0);
            if let Some(origin) = KeyOrigin::of_key(key.process_id) {
                // Random bits may look like an origin; it then names a
                // node only if one has that slot.
                let _ = origin.locate(&unlisted);
            }
        }
        // Slots past the lists name nobody.
        let stray = ((15 << NODE_BITS) | 63) << RANDOM_BITS;
        assert_eq!(KeyOrigin::of_key(stray).unwrap().locate(&eu3), None);
    }

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
