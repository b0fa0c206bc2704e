//! Generated protobuf and gRPC code for Juris's services: the Raft
//! transport between a region's nodes and the control API.
//!
//! Generated code lives here and only here, so other crates depend on a
//! stable module path (`juris_proto::v1`) rather than on build scripts, and a
//! protoc/tonic upgrade touches one crate. The schema is in
//! `proto/juris/v1/` at the repository root.

/// `juris.v1`: the Raft transport between the nodes of one region, and the
/// control API the CLI uses.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("juris.v1");
}

pub use v1::raft_transport_client::RaftTransportClient;
pub use v1::raft_transport_server::{RaftTransport, RaftTransportServer};
