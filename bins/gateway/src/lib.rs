//! The Tether gateway as a library: configuration, routing and the connection handling
//! the `tether-gateway` binary runs. End-to-end tests start the binary itself.
//!
//! - [`config`]: the YAML configuration, flags and environment overrides;
//! - `routing`: the choice among candidate services (rendezvous hashing), pure;
//! - `hub`: who is connected;
//! - `admit`: handshakes, edge ids, stale-session replacement, presence hooks;
//! - `links` and `forward`: routing and forwarding of calls, messages and streams;
//! - `splice`: stream relaying with end-to-end backpressure;
//! - `ingress`: HTTP ingress, the HTTP → RPC relay and TCP port mappings;
//! - [`transport`]: TLS, WebSocket, the caps and deadlines before the protocol handshake;
//! - [`auth`]: static tokens;
//! - [`control`]: the REST control plane, with `metrics` (Prometheus);
//! - [`ctl`]: the `tether-gateway ctl` client of the control plane;
//! - [`Gateway`]: the listeners and graceful shutdown.

mod admit;
pub mod auth;
pub mod config;
pub mod control;
pub mod ctl;
mod forward;
mod hub;
mod ingress;
mod links;
mod metrics;
pub mod routing;
mod server;
mod splice;
pub mod transport;

pub use server::Gateway;
