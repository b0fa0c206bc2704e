//! Test support for Juris: real PostgreSQL servers, a real OIDC provider
//! process, and real `juris node` processes on loopback.

pub mod gateway;
