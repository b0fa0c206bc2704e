//! juris-cli (work in progress).
