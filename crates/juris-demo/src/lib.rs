//! juris-demo (work in progress).
