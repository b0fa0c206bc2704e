//! Counters of the data plane, rendered in the Prometheus text format by
//! the node's metrics listener. Counters only: they are what the residency
//! tests read to prove a node relayed a session without decrypting it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Label of handshakes whose server name names no connection.
const NO_CONNECTION: &str = "";

/// The data plane's counters (monotonic since the node started).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Client TLS handshakes this node completed (it decrypted the
    /// session), by the connection the TLS server name named; the label
    /// set is fixed at start (the deployment's connections, and `""`), so
    /// clients cannot grow it.
    client_tls_handshakes: BTreeMap<String, AtomicU64>,
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
    /// Clients' cancel requests for handed-over sessions passed on to the
    /// node serving the session.
    pub handover_cancels_out: AtomicU64,
    /// Cancel requests received from nodes that relay sessions served here.
    pub handover_cancels_in: AtomicU64,
}

/// Append one counter in the Prometheus text format.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    );
}

/// Append one gauge in the Prometheus text format.
pub fn write_gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    );
}

impl ProxyMetrics {
    /// Counters for a deployment with these connections.
    pub fn new<'a>(connections: impl IntoIterator<Item = &'a str>) -> Self {
        let mut client_tls_handshakes: BTreeMap<String, AtomicU64> = connections
            .into_iter()
            .map(|c| (c.to_string(), AtomicU64::new(0)))
            .collect();
        client_tls_handshakes.insert(NO_CONNECTION.into(), AtomicU64::new(0));
        ProxyMetrics {
            client_tls_handshakes,
            ..ProxyMetrics::default()
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a client TLS session terminated here for `connection` (from
    /// the TLS server name; `None` when it named none).
    pub(crate) fn tls_terminated(&self, connection: Option<&str>) {
        let counter = connection
            .and_then(|c| self.client_tls_handshakes.get(c))
            .or_else(|| self.client_tls_handshakes.get(NO_CONNECTION));
        if let Some(counter) = counter {
            Self::add(counter, 1);
        }
    }

    /// Append every counter in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let name = "juris_client_tls_handshakes_total";
        let _ = write!(
            out,
            "# HELP {name} Client TLS sessions this node terminated, by the connection their TLS server name named (\"\" for none).\n# TYPE {name} counter\n"
        );
        for (connection, counter) in &self.client_tls_handshakes {
            let _ = writeln!(
                out,
                "{name}{{connection=\"{connection}\"}} {}",
                get(counter)
            );
        }
        for (name, help, counter) in [
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
                "juris_handover_cancels_out_total",
                "Cancel requests for handed-over sessions passed on to the node serving them.",
                &self.handover_cancels_out,
            ),
            (
                "juris_handover_cancels_in_total",
                "Cancel requests received from nodes relaying sessions served here.",
                &self.handover_cancels_in,
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
