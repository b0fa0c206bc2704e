//! Shared helpers for the end-to-end suite live in `juris-testkit`; this crate only holds tests.
