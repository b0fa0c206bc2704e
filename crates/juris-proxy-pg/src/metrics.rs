//! Counters of the data plane, rendered in the Prometheus text format by
//! the node's metrics listener. Counters only: they are what the residency
//! tests read to prove a node relayed a session without decrypting it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The data plane's counters (monotonic since the node started).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Client TLS handshakes this node completed (it decrypted the session).
    pub client_tls_handshakes: AtomicU64,
    /// Sessions for another region's connection handed to a node there.
    pub handovers_out: AtomicU64,
    /// Sessions for another region's connection refused because no node of
    /// the owning region could be reached.
    pub handovers_unreachable: AtomicU64,
    /// Handed-over streams cut because a byte was not part of a TLS record.
    pub handovers_cut: AtomicU64,
    /// TLS records forwarded from clients to the owning region.
    pub handover_records_to_region: AtomicU64,
    /// TLS records forwarded from the owning region to clients.
    pub handover_records_to_client: AtomicU64,
    /// Bytes forwarded from clients to the owning region.
    pub handover_bytes_to_region: AtomicU64,
    /// Bytes forwarded from the owning region to clients.
    pub handover_bytes_to_client: AtomicU64,
    /// Sessions of this region's connections received from nodes of other
    /// regions.
    pub handovers_in: AtomicU64,
}

/// Append one counter in the Prometheus text format.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
}

/// Append one gauge in the Prometheus text format.
pub fn write_gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
}

impl ProxyMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Append every counter in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, counter) in [
            (
                "juris_client_tls_handshakes_total",
                "Client TLS sessions this node terminated.",
                &self.client_tls_handshakes,
            ),
            (
                "juris_handovers_out_total",
                "Sessions of another region's connections handed, still encrypted, to a node of that region.",
                &self.handovers_out,
            ),
            (
                "juris_handovers_unreachable_total",
                "Sessions of another region's connections refused because no node of that region answered.",
                &self.handovers_unreachable,
            ),
            (
                "juris_handovers_cut_total",
                "Handed-over streams cut because they stopped being TLS records.",
                &self.handovers_cut,
            ),
            (
                "juris_handover_records_to_region_total",
                "TLS records forwarded from clients to the owning region.",
                &self.handover_records_to_region,
            ),
            (
                "juris_handover_records_to_client_total",
                "TLS records forwarded from the owning region to clients.",
                &self.handover_records_to_client,
            ),
            (
                "juris_handover_bytes_to_region_total",
                "Bytes forwarded from clients to the owning region.",
                &self.handover_bytes_to_region,
            ),
            (
                "juris_handover_bytes_to_client_total",
                "Bytes forwarded from the owning region to clients.",
                &self.handover_bytes_to_client,
            ),
            (
                "juris_handovers_in_total",
                "Sessions of this region's connections received from nodes of other regions.",
                &self.handovers_in,
            ),
        ] {
            write_counter(out, name, help, get(counter));
        }
    }
}
