//! Drives `proto-core` on smol / async-io: the same SDK on futures-io streams.
//!
//! This crate is an empty workspace member until its issue (#5) lands; it holds no code
//! yet so that nothing here pretends to work.
