//! Real PostgreSQL servers for tests (the demo's throwaway server).

pub use juris_demo::postgres::{
    ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth, seed_customers,
};
