//! `juris demo` and the throwaway parts it shares with the test kit: a real
//! PostgreSQL in a temp dir ([`postgres`]), a demo-only OIDC issuer
//! ([`issuer`]), and a throwaway CA ([`certs`]).

pub mod certs;
mod demo;
mod error;
pub mod issuer;
pub mod ports;
pub mod postgres;
pub mod regions;

pub use demo::{deployment, run};
pub use error::DemoError;
