//! juris-identity (work in progress).
