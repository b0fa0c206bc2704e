//! juris-policy (work in progress).
