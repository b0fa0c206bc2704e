//! Test support for Juris: real PostgreSQL servers, PgBouncer, an OIDC
//! issuer, and real `juris node` processes on loopback.

pub mod gateway;
pub mod oidc;
pub mod pgbouncer;
pub mod postgres;
