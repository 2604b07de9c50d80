//! The Tether SDK, written once for every async runtime.
//!
//! Applications use it through a runtime crate (`tether-tokio`, later `tether-smol`), which
//! re-exports everything here and adds spawning, timers and transports. This crate holds
//! what does not depend on the runtime:
//!
//! - the **driver** that moves one [`proto_core::Connection`]'s bytes between a
//!   [`Transport`](runtime::Transport) and the core, arms its one timer, bounds its work per
//!   wake-up and detects a peer that stopped reading (`WRITE_STALL`);
//! - [`Connection`]: a live connection, client or server side (the gateway uses it for every
//!   peer): calls, publishes, streams, and the requests, messages and streams the peer sends;
//! - [`Service`] and [`Edge`]: the application SDK, which keeps a session to the gateway up
//!   (reconnecting with exponential backoff and jitter), re-registers methods, topics and
//!   hooks on each session, and serves registered handlers;
//! - [`Stream`] (tokio or futures-io `AsyncRead + AsyncWrite` behind the `tokio` and
//!   `futures-io` features), [`Message`] and [`Request`], which must be answered and answer
//!   with an error if dropped unanswered;
//! - one [`Error`] type that mirrors the wire taxonomy;
//! - the transports' runtime-neutral halves: [`endpoint::Endpoint`] parses gateway URLs
//!   (`host:port`, `tcp://`, `tls://`, `ws://`, `wss://`), `tls::ClientTls` (feature
//!   `tls`) builds rustls client configurations, and `websocket::WsTransport` (feature
//!   `websocket`) carries the byte stream in binary WebSocket messages for both runtimes
//!   and the gateway. The runtime crates' `endpoint_dialer` puts them together.
//!
//! # Why a separate crate
//!
//! The design rule is that driver logic is not written twice. The runtime crates implement
//! the three traits of [`runtime`] ([`Runtime`](runtime::Runtime): spawn and timers;
//! [`Timer`](runtime::Timer); [`Transport`](runtime::Transport)), the way quinn's runtime
//! modules do, and nothing else.
//!
//! # Concurrency model
//!
//! Each connection's core sits behind one mutex shared by a spawned driver task and the
//! handles. A handle locks, issues a command, wakes the driver and unlocks; the driver
//! locks, feeds input, turns events into completed results and woken tasks, and writes the
//! output outside the lock. A future registers its waker under the same lock in which it
//! found nothing to do, so no event is lost between the check and the sleep. Every future
//! is cancel-safe: dropping a call withdraws it on the peer, dropping a stream finishes and
//! stops it, dropping a message or request answers it with an error.

mod client;
mod connection;
mod driver;
pub mod endpoint;
mod error;
mod exchange;
pub mod runtime;
mod state;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "websocket")]
pub mod websocket;

pub use client::edge::{Edge, EdgeBuilder};
pub use client::handler::{CallRequest, Handler, handler};
pub use client::options::{Backoff, Options};
pub use client::presence::EdgeInfo;
pub use connection::{Connection, Handshake};
pub use driver::DriverConfig;
pub use error::Error;
pub use exchange::{Message, Request};
pub use stream::{IncomingStream, Stream};

/// The gateway hooks' names and body encodings (`docs/PROTOCOL.md#gateway-hooks`), for
/// gateways and test peers that invoke them.
pub mod hooks {
    pub use crate::client::presence::{
        EDGE_ID_HOOK, EDGE_OFFLINE_HOOK, EDGE_ONLINE_HOOK, EdgeInfo, decode_edge_id, encode_edge_id,
    };
}
pub use client::service::{Service, ServiceBuilder};
