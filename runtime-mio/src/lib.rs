//! Drives `proto-core` on raw mio: a single-threaded driver with no async runtime, for the most constrained edge agents.
//!
//! This crate is an empty workspace member until its issue (#5) lands; it holds no code
//! yet so that nothing here pretends to work.
