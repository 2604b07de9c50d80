//! The Tether SDK on tokio: services, edges, and the connection driver the gateway uses.
//!
//! Everything from `tether-sdk` is re-exported here; this crate adds the tokio runtime
//! ([`TokioRuntime`]), transports ([`tcp_transport`], [`transport`] for any tokio byte
//! stream such as TLS or `tokio::io::duplex`), a TCP [`tcp_dialer`], and [`ConnectExt`],
//! which starts a builder on the current runtime.
//!
//! # A service
//!
//! A service registers methods edges can call, calls methods on edges by id, and receives
//! what edges publish on its topics:
//!
//! ```
//! # use std::sync::Arc;
//! # use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport};
//! # use proto_core::{Config, HandshakeAccept};
//! # // A stand-in for the gateway (its own issue): accept one client, and play the
//! # // other side of the gateway with the test peer below.
//! # async fn gateway(listener: tokio::net::TcpListener) -> Connection {
//! #     let (socket, _) = listener.accept().await.unwrap();
//! #     let hs = Connection::accept(runtime(), tcp_transport(socket), Config::default(),
//! #         DriverConfig::default()).await.unwrap();
//! #     let id = hs.hello().info.requested_id.unwrap_or(1);
//! #     hs.accept(HandshakeAccept { assigned_id: id, ..Default::default() }).unwrap()
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tether_tokio::Error> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let gateway_addr = listener.local_addr().unwrap();
//! # let gw = tokio::spawn(gateway(listener));
//! use bytes::Bytes;
//! use tether_tokio::{ConnectExt, Error, Service};
//!
//! let service = Service::builder("thermostat")
//!     .method("set_point", |req| async move {
//!         println!("edge {:?} asks for {:?}", req.edge_id, req.body);
//!         Ok(Bytes::from_static(b"ok"))
//!     })
//!     .topic("telemetry")
//!     .edge_id_hook(|edge| async move {
//!         // Derive a stable id from the device's metadata, or refuse it.
//!         match edge.metadata.as_ref() {
//!             b"sn-0042" => Ok(42),
//!             _ => Err(Error::Unauthorized("unknown device".into())),
//!         }
//!     })
//!     .connect(gateway_addr)?;
//! # let gw = gw.await.unwrap();
//! # tokio::spawn(async move {
//! #     let req = gw.next_request().await.unwrap();
//! #     req.respond(Ok(Bytes::from_static(b"21.5")));
//! # });
//!
//! // Call a method on edge 42 (waits for the connection if it is not up yet).
//! let reading = service.call(42, "read_temperature", Bytes::new()).await?;
//! assert_eq!(reading, Bytes::from_static(b"21.5"));
//! service.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # An edge
//!
//! An edge calls methods services registered, publishes on topics, and serves methods of
//! its own; it reconnects forever and keeps the id it was given:
//!
//! ```
//! # use std::sync::Arc;
//! # use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport};
//! # use proto_core::{Config, HandshakeAccept};
//! # // A stand-in for the gateway (its own issue): accept one client, and play the
//! # // other side of the gateway with the test peer below.
//! # async fn gateway(listener: tokio::net::TcpListener) -> Connection {
//! #     let (socket, _) = listener.accept().await.unwrap();
//! #     let hs = Connection::accept(runtime(), tcp_transport(socket), Config::default(),
//! #         DriverConfig::default()).await.unwrap();
//! #     let id = hs.hello().info.requested_id.unwrap_or(1);
//! #     hs.accept(HandshakeAccept { assigned_id: id, ..Default::default() }).unwrap()
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tether_tokio::Error> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let gateway_addr = listener.local_addr().unwrap();
//! # let gw = tokio::spawn(gateway(listener));
//! use bytes::Bytes;
//! use tether_tokio::{ConnectExt, Edge};
//!
//! let edge = Edge::builder()
//!     .metadata("sn-0042")
//!     .method("read_temperature", |_req| async { Ok(Bytes::from_static(b"21.5")) })
//!     .connect(gateway_addr)?;
//! # let gw = gw.await.unwrap();
//! # tokio::spawn(async move {
//! #     let msg = gw.next_message().await.unwrap();
//! #     assert_eq!(msg.topic(), "telemetry");
//! #     msg.done();
//! # });
//!
//! // Resolves when a service (or an external MQ) acknowledges it.
//! edge.publish("telemetry", Bytes::from_static(b"{\"t\":21.5}")).await?;
//! edge.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Streams work the same way from both sides: `open_stream` (to an edge id, or to a
//! service name) and `accept_stream` give a [`Stream`] that implements
//! `tokio::io::AsyncRead + AsyncWrite`; `shutdown` sends FIN.
//!
//! # TLS and WebSocket
//!
//! With the `tls` feature, `endpoint_dialer` and `ConnectExt::connect_url` reach a
//! gateway by URL: `host:port` or `tcp://host:port` (plain TCP), `tls://host:port`
//! (tokio-rustls) and, with the `websocket` feature too, `ws://host[:port][/path]` and
//! `wss://host[:port][/path]` (tokio-tungstenite; binary messages carry the byte stream,
//! see `websocket`). `tls::ClientTls` builds the TLS configuration (a private CA, a
//! client certificate for mTLS):
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn example() -> Result<(), tether_tokio::Error> {
//! use tether_tokio::tls::ClientTls;
//! use tether_tokio::{ConnectExt, Edge};
//!
//! let tls = ClientTls::new()
//!     .ca_pem_file("ca.pem")
//!     .client_cert_pem_files("edge.pem", "edge.key")
//!     .build()?;
//! let edge = Edge::builder().connect_url("wss://gw.example.net/tether", Some(tls))?;
//! # edge.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};

pub use tether_sdk::*;

#[cfg(feature = "tls")]
mod dial;
#[cfg(feature = "tls")]
pub use dial::endpoint_dialer;

/// Spawning and timers on a tokio runtime.
#[derive(Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl fmt::Debug for TokioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokioRuntime")
    }
}

impl TokioRuntime {
    /// The runtime this is called from.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn current() -> TokioRuntime {
        TokioRuntime {
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// A runtime from an explicit handle.
    pub fn from_handle(handle: tokio::runtime::Handle) -> TokioRuntime {
        TokioRuntime { handle }
    }
}

impl runtime::Runtime for TokioRuntime {
    fn spawn(&self, future: runtime::BoxFuture<()>) {
        self.handle.spawn(future);
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn runtime::Timer>> {
        Box::pin(TokioTimer(Box::pin(tokio::time::sleep_until(
            deadline.into(),
        ))))
    }
}

/// The tokio runtime this is called from, as the SDK takes it.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn runtime() -> Arc<dyn runtime::Runtime> {
    Arc::new(TokioRuntime::current())
}

#[derive(Debug)]
struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl runtime::Timer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        if self.0.deadline() != deadline.into() {
            self.0.as_mut().reset(deadline.into());
        }
    }

    fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

use std::future::Future;

/// Any tokio byte stream (TCP, TLS, a `tokio::io::duplex` pipe) as a transport.
pub struct TokioTransport<T> {
    io: T,
    peer_addr: Option<SocketAddr>,
}

impl<T> TokioTransport<T> {
    /// Wraps `io`, which has no peer address.
    pub fn new(io: T) -> Self {
        TokioTransport {
            io,
            peer_addr: None,
        }
    }

    /// Wraps `io` with a known peer address.
    pub fn with_peer_addr(io: T, peer_addr: SocketAddr) -> Self {
        TokioTransport {
            io,
            peer_addr: Some(peer_addr),
        }
    }
}

impl<T> runtime::Transport for TokioTransport<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
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
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }
}

/// A TCP stream as a transport (with `TCP_NODELAY`: the core batches frames itself).
pub fn tcp_transport(stream: TcpStream) -> runtime::BoxTransport {
    let _ = stream.set_nodelay(true);
    match stream.peer_addr() {
        Ok(addr) => Box::pin(TokioTransport::with_peer_addr(stream, addr)),
        Err(_) => Box::pin(TokioTransport::new(stream)),
    }
}

/// Any tokio byte stream as a transport.
pub fn transport<T>(io: T) -> runtime::BoxTransport
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(TokioTransport::new(io))
}

/// A WebSocket message stream (a `tokio_tungstenite::WebSocketStream`, client or server
/// side) as a transport: see [`websocket::WsTransport`].
#[cfg(feature = "websocket")]
pub fn ws_transport<S>(ws: S, peer: Option<SocketAddr>) -> runtime::BoxTransport
where
    S: websocket::MessageStream,
{
    Box::pin(websocket::WsTransport::new(ws, peer))
}

/// A dialer that connects over TCP to `addr` (resolved again on every dial, so a DNS
/// change is picked up on reconnect).
pub fn tcp_dialer<A>(addr: A) -> runtime::Dialer
where
    A: ToSocketAddrs + Clone + Send + Sync + 'static,
{
    runtime::dialer(move || {
        let addr = addr.clone();
        async move { Ok(tcp_transport(TcpStream::connect(addr).await?)) }
    })
}

/// Starts a [`ServiceBuilder`] or [`EdgeBuilder`] on the current tokio runtime.
pub trait ConnectExt {
    /// What starting produces: a [`Service`] or an [`Edge`].
    type Client;

    /// Starts the client, connecting over TCP to `addr` (in the background, reconnecting
    /// as configured). Fails only on invalid names.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    fn connect<A>(self, addr: A) -> Result<Self::Client, Error>
    where
        A: ToSocketAddrs + Clone + Send + Sync + 'static;

    /// Starts the client with a custom dialer (TLS, WebSocket, a test pipe, ...).
    fn connect_with(self, dialer: runtime::Dialer) -> Result<Self::Client, Error>;

    /// Starts the client, connecting to the gateway URL `url` (`host:port`,
    /// `tcp://host:port`, `tls://host:port`, `ws://host[:port][/path]`,
    /// `wss://host[:port][/path]`) through [`endpoint_dialer`], with `tls` for the TLS
    /// schemes (the Mozilla roots if `None`). Fails on an invalid URL, an unusable TLS
    /// setup or invalid names; connection failures are retried in the background.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
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
        A: ToSocketAddrs + Clone + Send + Sync + 'static,
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
        A: ToSocketAddrs + Clone + Send + Sync + 'static,
    {
        self.start(runtime(), tcp_dialer(addr))
    }

    fn connect_with(self, dialer: runtime::Dialer) -> Result<Edge, Error> {
        self.start(runtime(), dialer)
    }
}
