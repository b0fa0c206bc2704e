//! Test support for Juris: real PostgreSQL servers, PgBouncer, an S3 server, an OIDC
//! issuer, and real `juris node` processes on loopback.

pub mod gateway;
pub mod oidc;
pub mod pgbench;
pub mod pgbouncer;
pub mod postgres;
pub mod regions;
pub mod relay_bench;
pub mod s3;
