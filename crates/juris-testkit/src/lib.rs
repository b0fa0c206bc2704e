//! juris-testkit (work in progress).
