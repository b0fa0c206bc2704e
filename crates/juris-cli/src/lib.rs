//! The library behind the `juris` command. `main.rs` only parses arguments
//! and calls into here (or into `juris-node` / `juris-demo`).

pub mod audit_cmd;
pub mod connect;
pub mod control_cmd;
pub mod mask_test;
pub mod recordings_cmd;
pub mod tokens;
