//! A TCP dialer whose connection a test can cut without a GOAWAY, the way a crashed or
//! unplugged peer disappears (used by `forwarding.rs` and `streams.rs`).
#![allow(dead_code)]

use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};

use tether_tokio::runtime::{Dialer, dialer};
use tether_tokio::tcp_transport;

/// Cuts the last connection its dialer made.
#[derive(Clone, Default)]
pub(crate) struct Plug(Arc<Mutex<Option<std::net::TcpStream>>>);

impl Plug {
    /// A dialer to `addr` whose connections this plug can pull.
    pub(crate) fn dialer(&self, addr: SocketAddr) -> Dialer {
        let slot = Arc::clone(&self.0);
        dialer(move || {
            let slot = Arc::clone(&slot);
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?.into_std()?;
                *slot.lock().unwrap() = Some(tcp.try_clone()?);
                Ok(tcp_transport(tokio::net::TcpStream::from_std(tcp)?))
            }
        })
    }

    /// Shuts the socket down in both directions: the gateway sees the transport end with
    /// no GOAWAY, as when the peer's process dies.
    pub(crate) fn pull(&self) {
        let socket = self.0.lock().unwrap().take().expect("a connection to pull");
        let _ = socket.shutdown(Shutdown::Both);
    }
}
