//! Arbitrary bytes as a Raft log entry of the control plane: decoding and
//! applying must give a result or a rejection, never a panic, and a
//! snapshot of whatever state results must restore.
#![no_main]

use juris_state::{StateMachine, UnixMillis};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut machine = StateMachine::new();
    let applied = machine.apply_bytes(data, UnixMillis(1_700_000_000_000));
    let _ = juris_state::Applied::decode(&applied.encode());
    let snapshot = machine.snapshot();
    assert!(StateMachine::restore(&snapshot).is_ok());
    let _ = StateMachine::restore(data);
});
