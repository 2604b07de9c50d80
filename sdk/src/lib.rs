//! The Tether SDK, written once for every async runtime.
//!
//! Placeholder crate docs; replaced below.

mod client;
mod connection;
mod driver;
mod error;
mod exchange;
pub mod runtime;
mod state;
mod stream;

pub use connection::{Connection, Handshake};
pub use driver::DriverConfig;
pub use error::Error;
pub use exchange::{Message, Request};
pub use stream::{IncomingStream, Stream};
pub use client::edge::{Edge, EdgeBuilder};
pub use client::handler::{CallRequest, Handler, handler};
pub use client::options::{Backoff, Options};
pub use client::presence::EdgeInfo;

/// The gateway hooks' names and body encodings (`docs/PROTOCOL.md#gateway-hooks`), for
/// gateways and test peers that invoke them.
pub mod hooks {
    pub use crate::client::presence::{
        EDGE_ID_HOOK, EDGE_OFFLINE_HOOK, EDGE_ONLINE_HOOK, EdgeInfo, decode_edge_id,
        encode_edge_id,
    };
}
pub use client::service::{Service, ServiceBuilder};
