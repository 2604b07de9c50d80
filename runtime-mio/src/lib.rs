//! Drives `proto-core` on raw mio: a small single-threaded edge agent with no async runtime,
//! for the most constrained edge devices.
//!
//! [`run`] dials the gateway, introduces itself as an edge, and exposes local TCP services:
//! every stream the gateway opens names a service in its open metadata (UTF-8); the agent
//! connects to the local address [`AgentConfig::exposes`] maps it to and pipes bytes both
//! ways until both sides are done. It reconnects with backoff when the connection is lost,
//! and returns when `stop` is set.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use tether_mio::{AgentConfig, AgentEvent, run};
//!
//! let mut config = AgentConfig::new("192.0.2.10:7000".parse().unwrap());
//! config.requested_id = Some(42);
//! config.exposes.insert("ssh".into(), "127.0.0.1:22".parse().unwrap());
//! let stop = AtomicBool::new(false); // set it from a signal handler to stop
//! run(config, &stop, &mut |event| {
//!     if let AgentEvent::Connected { edge_id } = event {
//!         eprintln!("online as edge {edge_id}");
//!     }
//! })
//! .unwrap();
//! ```
//!
//! # The loop
//!
//! One thread, one [`mio::Poll`] per session. Token 0 is the gateway socket; each local
//! socket gets the next token of a counter. Each turn of the loop:
//!
//! 1. **Pump** until nothing moves (bounded, so a flood cannot starve the stop check): feed
//!    buffered gateway bytes to the core within `input_capacity`, read more from the
//!    gateway while it is readable, handle due timers, drain `poll_event` (incoming streams
//!    are checked against the exposed services; a local connect starts for each), move
//!    bytes through every pipe, then `poll_transmit` into a `TransmitBuf` and write it with
//!    vectored writes until the socket would block.
//! 2. **Interest**: the gateway socket is registered for writability only while output is
//!    pending (mio readiness is edge-triggered, so a registration that is always writable
//!    would wake us for nothing).
//! 3. **Wait** in `Poll::poll` until the core's next deadline (`poll_timeout`), capped at
//!    100 ms so `stop` is noticed promptly. Readiness is edge-triggered: each readiness
//!    event sets a flag that stays set until a read or write returns `WouldBlock`.
//!
//! Backpressure is end to end: a local socket is read only while its stream can take bytes
//! (`Stream::writable`); a stream is read from the core only once the previous chunk was
//! written to the local socket; gateway input is read only while the core has room. No
//! buffer grows with the peer's speed. Output the gateway does not take for 30 s closes the
//! connection with `WRITE_STALL`.
//!
//! Half-close maps one to one: local EOF sends FIN, FIN shuts the local socket's write side
//! down; a reset from the peer closes the local socket, a local socket error resets the
//! stream.
#![forbid(unsafe_code)]

mod agent;
mod backoff;
mod pipe;
mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use proto_core::{Config, ConfigError, ConnectionError};

/// What to expose and how to reach the gateway.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The edge id to ask for (after the first session, the agent asks for the id it was
    /// given).
    pub requested_id: Option<u64>,
    /// Opaque metadata sent in HELLO (the gateway hands it to its edge-id and auth hooks).
    pub metadata: Bytes,
    /// Opaque authentication token sent in HELLO.
    pub token: Bytes,
    /// Exposed services: the stream's open metadata (UTF-8 service name) → local address
    /// to connect to.
    pub exposes: BTreeMap<String, SocketAddr>,
    /// The protocol core's configuration.
    pub config: Config,
    /// First reconnect delay bound (default 200 ms); delays use full jitter.
    pub backoff_initial: Duration,
    /// Largest reconnect delay bound (default 30 s).
    pub backoff_max: Duration,
    /// Reconnect when a connection attempt fails or the connection is lost, including a
    /// refused handshake (default true); otherwise [`run`] returns the cause.
    pub reconnect: bool,
}

impl AgentConfig {
    /// A configuration for `gateway` with the defaults: no id requested, no metadata, no
    /// token, nothing exposed, the core's default configuration, reconnecting with a
    /// backoff from 200 ms to 30 s.
    pub fn new(gateway: SocketAddr) -> AgentConfig {
        AgentConfig {
            gateway,
            requested_id: None,
            metadata: Bytes::new(),
            token: Bytes::new(),
            exposes: BTreeMap::new(),
            config: Config::default(),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            reconnect: true,
        }
    }
}

/// What happens to the agent, reported to the callback of [`run`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// The handshake completed.
    Connected {
        /// The id the gateway assigned.
        edge_id: u64,
    },
    /// A connection attempt failed or a session ended (the agent reconnects if configured).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A stream for an exposed service was accepted and connected to its local address.
    StreamOpened {
        /// The service name.
        service: String,
        /// The local address connected to.
        local: SocketAddr,
    },
    /// A stream was refused: unknown service, or the local connect failed.
    StreamRefused {
        /// The service name asked for (lossily decoded).
        service: String,
        /// The reason sent to the opener.
        reason: String,
    },
    /// A stream opened earlier ended (both directions done, reset, or the session ended).
    StreamClosed {
        /// The service name.
        service: String,
    },
}

/// Why [`run`] returned an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The core refused the configuration or the HELLO (too large a token, say).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The poller failed (it is not a network error; the agent cannot go on).
    #[error("poller failed: {0}")]
    Poll(std::io::Error),
    /// Connecting to the gateway failed (only with `reconnect` off).
    #[error("cannot connect to the gateway at {addr}: {source}")]
    Connect {
        /// The gateway's address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection was lost (only with `reconnect` off).
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
}

/// Runs the agent until `stop` is set (checked at least every 100 ms) — then it closes the
/// connection with GOAWAY, waits briefly for it to flush, and returns `Ok` — or until the
/// connection is lost with `reconnect` off (returns the cause). `events` hears about
/// connections and streams; it runs on the agent's thread, so it should be quick.
pub fn run(
    config: AgentConfig,
    stop: &AtomicBool,
    events: &mut dyn FnMut(AgentEvent),
) -> Result<(), AgentError> {
    agent::run(config, stop, events)
}
