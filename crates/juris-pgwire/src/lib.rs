//! juris-pgwire (work in progress).
