//! `juris demo` and the throwaway parts it shares with the test kit: a real
//! PostgreSQL in a temp dir ([`postgres`]), a demo-only OIDC issuer
//! ([`issuer`]), and a throwaway CA ([`certs`]).

pub mod certs;
mod demo;
pub mod issuer;
pub mod postgres;

pub use demo::{deployment, run};

/// Everything that can go wrong starting demo parts.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("demo issuer: {0}")]
    Issuer(String),
    #[error(transparent)]
    Config(#[from] juris_config::ConfigError),
    #[error(transparent)]
    Node(#[from] juris_node::NodeError),
}
