//! The Tether SDK on smol / async-io.
//!
//! Everything from `tether-sdk` is re-exported here; this crate adds only what depends on
//! the runtime: spawning on a smol executor, `async-io` timers, transports for any
//! `futures-io` byte stream ([`transport`], [`tcp_transport`]), a TCP [`tcp_dialer`], and
//! [`ConnectExt`]. Streams implement `futures_io::AsyncRead + AsyncWrite` (`close` sends
//! FIN), so `futures-lite`'s and smol's I/O helpers work on them.
//!
//! With the `tls` feature, `endpoint_dialer` and `ConnectExt::connect_url` reach a
//! gateway by URL: `host:port` or `tcp://host:port`, `tls://host:port` (futures-rustls)
//! and, with the `websocket` feature too, `ws://host[:port][/path]` and
//! `wss://host[:port][/path]` (async-tungstenite; see `websocket`). `tls::ClientTls`
//! builds the TLS configuration.
//!
//! ```
//! use bytes::Bytes;
//! use tether_smol::{ConnectExt, Edge};
//!
//! smol::block_on(async {
//!     // Reconnects in the background until the gateway is reachable.
//!     let edge = Edge::builder()
//!         .metadata("sn-0042")
//!         .method("ping", |req| async move { Ok(req.body) })
//!         .connect("127.0.0.1:30012")
//!         .unwrap();
//!     # edge.close().await;
//! });
//! ```

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use smol::future::Future;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::{AsyncToSocketAddrs, TcpStream};

pub use tether_sdk::*;

#[cfg(feature = "tls")]
mod dial;
#[cfg(feature = "tls")]
pub use dial::endpoint_dialer;

/// Spawning on a smol executor and timers from `async-io`.
#[derive(Clone, Default)]
pub struct SmolRuntime {
    executor: Option<Arc<smol::Executor<'static>>>,
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmolRuntime")
    }
}

impl SmolRuntime {
    /// Spawns on smol's global executor (`smol::spawn`).
    pub fn global() -> SmolRuntime {
        SmolRuntime { executor: None }
    }

    /// Spawns on `executor`, which the application runs.
    pub fn with_executor(executor: Arc<smol::Executor<'static>>) -> SmolRuntime {
        SmolRuntime {
            executor: Some(executor),
        }
    }
}

impl runtime::Runtime for SmolRuntime {
    fn spawn(&self, future: runtime::BoxFuture<()>) {
        match &self.executor {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn runtime::Timer>> {
        Box::pin(SmolTimer(async_io::Timer::at(deadline)))
    }
}

/// smol's global executor, as the SDK takes it.
pub fn runtime() -> Arc<dyn runtime::Runtime> {
    Arc::new(SmolRuntime::global())
}

#[derive(Debug)]
struct SmolTimer(async_io::Timer);

impl runtime::Timer for SmolTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0.set_at(deadline);
    }

    fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// Any `futures-io` byte stream as a transport.
pub struct SmolTransport<T> {
    io: T,
    peer_addr: Option<SocketAddr>,
}

impl<T> SmolTransport<T> {
    /// Wraps `io`, which has no peer address.
    pub fn new(io: T) -> Self {
        SmolTransport {
            io,
            peer_addr: None,
        }
    }

    /// Wraps `io` with a known peer address.
    pub fn with_peer_addr(io: T, peer_addr: SocketAddr) -> Self {
        SmolTransport {
            io,
            peer_addr: Some(peer_addr),
        }
    }
}

impl<T> runtime::Transport for SmolTransport<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }
}

/// Any `futures-io` byte stream as a transport.
pub fn transport<T>(io: T) -> runtime::BoxTransport
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(SmolTransport::new(io))
}

/// A TCP stream as a transport (with `TCP_NODELAY`: the core batches frames itself).
pub fn tcp_transport(stream: TcpStream) -> runtime::BoxTransport {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().ok();
    Box::pin(SmolTransport {
        io: stream,
        peer_addr,
    })
}

/// A WebSocket message stream (an `async_tungstenite::WebSocketStream`) as a transport:
/// see [`websocket::WsTransport`].
#[cfg(feature = "websocket")]
pub fn ws_transport<S>(ws: S, peer: Option<SocketAddr>) -> runtime::BoxTransport
where
    S: websocket::MessageStream,
{
    Box::pin(websocket::WsTransport::new(ws, peer))
}

/// A dialer that connects over TCP to `addr`, resolved again on every dial.
pub fn tcp_dialer<A>(addr: A) -> runtime::Dialer
where
    A: AsyncToSocketAddrs + Clone + Send + Sync + 'static,
    A::Iter: Send,
{
    runtime::dialer(move || {
        let addr = addr.clone();
        async move { Ok(tcp_transport(TcpStream::connect(addr).await?)) }
    })
}

/// Starts a [`ServiceBuilder`] or [`EdgeBuilder`] on smol's global executor.
pub trait ConnectExt {
    /// What starting produces: a [`Service`] or an [`Edge`].
    type Client;

    /// Starts the client, connecting over TCP to `addr` in the background (reconnecting as
    /// configured). Fails only on invalid names.
    fn connect<A>(self, addr: A) -> Result<Self::Client, Error>
    where
        A: AsyncToSocketAddrs + Clone + Send + Sync + 'static,
        A::Iter: Send;

    /// Starts the client with a custom dialer.
    fn connect_with(self, dialer: runtime::Dialer) -> Result<Self::Client, Error>;

    /// Starts the client, connecting to the gateway URL `url` (`host:port`,
    /// `tcp://host:port`, `tls://host:port`, `ws://host[:port][/path]`,
    /// `wss://host[:port][/path]`) through [`endpoint_dialer`], with `tls` for the TLS
    /// schemes (the Mozilla roots if `None`). Fails on an invalid URL, an unusable TLS
    /// setup or invalid names; connection failures are retried in the background.
    #[cfg(feature = "tls")]
    fn connect_url(
        self,
        url: &str,
        tls: Option<Arc<tls::rustls::ClientConfig>>,
    ) -> Result<Self::Client, Error>
    where
        Self: Sized,
    {
        let endpoint = endpoint::Endpoint::parse(url)?;
        self.connect_with(endpoint_dialer(endpoint, tls)?)
    }

    /// Like [`connect_url`](Self::connect_url), with the TLS settings of `tls`, including
    /// its [`server_name`](tls::ClientTls::server_name) override (which a built rustls
    /// configuration cannot carry). Fails on an invalid URL or unusable TLS files.
    #[cfg(feature = "tls")]
    fn connect_tls(self, url: &str, tls: &tls::ClientTls) -> Result<Self::Client, Error>
    where
        Self: Sized,
    {
        let endpoint = tls.apply_server_name(endpoint::Endpoint::parse(url)?);
        self.connect_with(endpoint_dialer(endpoint, Some(tls.build()?))?)
    }
}

impl ConnectExt for ServiceBuilder {
    type Client = Service;

    fn connect<A>(self, addr: A) -> Result<Service, Error>
    where
        A: AsyncToSocketAddrs + Clone + Send + Sync + 'static,
        A::Iter: Send,
    {
        self.start(runtime(), tcp_dialer(addr))
    }

    fn connect_with(self, dialer: runtime::Dialer) -> Result<Service, Error> {
        self.start(runtime(), dialer)
    }
}

impl ConnectExt for EdgeBuilder {
    type Client = Edge;

    fn connect<A>(self, addr: A) -> Result<Edge, Error>
    where
        A: AsyncToSocketAddrs + Clone + Send + Sync + 'static,
        A::Iter: Send,
    {
        self.start(runtime(), tcp_dialer(addr))
    }

    fn connect_with(self, dialer: runtime::Dialer) -> Result<Edge, Error> {
        self.start(runtime(), dialer)
    }
}
