//! Loopback ports for processes started later (the demo's PostgreSQL and
//! nodes, and the test kit's).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

/// A free TCP port on 127.0.0.1 for a process started later to listen on.
///
/// Picked below the kernel's ephemeral range (32768–60999 by default), not
/// by binding port 0: that hands out a port from the very range outgoing
/// connections take their source ports from, and between this call and the
/// other process's bind a connection could take it ("Address already in
/// use"). A port is never handed out twice by one process, so callers
/// running side by side (parallel tests) cannot collide either.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1_000 {
        // `RandomState` is randomly seeded per instance: a random number
        // without another dependency.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = LOW + (random % u64::from(HIGH - LOW)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port between {LOW} and {HIGH} on 127.0.0.1"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_outside_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| (LOW..HIGH).contains(p)));
        std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    }
}
