//! The one error type of this crate.

/// Everything that can go wrong starting or running demo parts.
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
