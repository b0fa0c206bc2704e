//! juris-node (work in progress).
