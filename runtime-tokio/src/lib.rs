//! Drives `proto-core` on tokio: the async service and edge SDK and the connection driver the gateway uses.
//!
//! This crate is an empty workspace member until its issue (#3) lands; it holds no code
//! yet so that nothing here pretends to work.
