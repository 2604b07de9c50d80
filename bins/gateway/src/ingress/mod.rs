//! Ingress: traffic that enters the gateway from outside Tether and goes to edges.
//!
//! - `http`: an HTTP/1.1 listener (`http_ingress`) forwarding requests to the services
//!   edges expose, each over a stream opened to the edge (open metadata = the service name);
//! - `relay`: on the same listener, `POST /rpc/...` relayed to an RPC of an edge or service;
//! - `tcp`: port mappings (`tcp_mappings`), each relaying its TCP connections over streams.
//!
//! All of it is off unless configured. On shutdown the listeners close at once; HTTP
//! connections finish their requests in flight and close, and relays (TCP mappings,
//! upgraded HTTP connections) go on until they end or `drain_timeout_ms` passes.

mod http;
mod relay;
mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto_core::name::Name;
use proto_core::{Address, OpenStream};
use tether_tokio::{Error, Stream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{GatewayConfig, TcpMapping};
use crate::forward::OPEN_TIMEOUT;
use crate::hub::Hub;

/// The source address an edge sees on streams and calls from the HTTP ingress.
const HTTP_SOURCE: &str = "$http";
/// The source address an edge sees on streams from TCP port mappings.
const TCP_SOURCE: &str = "$tcp";

/// The bound ingress listeners.
#[derive(Debug)]
pub(crate) struct Ingress {
    http: Option<TcpListener>,
    tcp: Vec<(TcpListener, TcpMapping)>,
}

impl Ingress {
    /// Binds the listeners `config` asks for (none by default).
    pub(crate) async fn bind(config: &GatewayConfig) -> std::io::Result<Ingress> {
        let http = match config.http_ingress {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let mut tcp = Vec::with_capacity(config.tcp_mappings.len());
        for mapping in &config.tcp_mappings {
            tcp.push((TcpListener::bind(mapping.listen).await?, mapping.clone()));
        }
        Ok(Ingress { http, tcp })
    }

    /// The bound HTTP ingress address, if there is one.
    pub(crate) fn http_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.http.as_ref().map(TcpListener::local_addr)
    }

    /// The bound address of each TCP mapping, with the mapping.
    pub(crate) fn tcp_addrs(&self) -> Vec<(std::io::Result<SocketAddr>, &TcpMapping)> {
        self.tcp.iter().map(|(l, m)| (l.local_addr(), m)).collect()
    }

    /// Serves until `stop` turns true (or its sender is dropped), then closes the
    /// listeners and waits, up to the drain timeout, for the connections to end.
    pub(crate) async fn run(self, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
        let drain = Duration::from_millis(hub.config.drain_timeout_ms);
        let (tracker, mut all_done) = mpsc::channel::<()>(1);
        let ctx = Ctx {
            hub,
            stop: stop.clone(),
            tracker,
            drain,
        };
        let mut listeners = JoinSet::new();
        if let Some(listener) = self.http {
            listeners.spawn(http::accept_loop(listener, ctx.clone()));
        }
        for (listener, mapping) in self.tcp {
            listeners.spawn(tcp::accept_loop(listener, mapping, ctx.clone()));
        }
        drop(ctx);
        if listeners.is_empty() {
            return;
        }
        let _ = stop.wait_for(|stopped| *stopped).await;
        // Closes the listeners (the accept loops own them).
        listeners.shutdown().await;
        // Every connection task holds a tracker clone: `recv` ends when the last is gone.
        let wait = tokio::time::timeout(drain + Duration::from_secs(1), all_done.recv());
        if wait.await.is_err() {
            tracing::warn!("some ingress connections did not finish draining in time");
        }
    }
}

/// What every ingress task needs.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) hub: Arc<Hub>,
    /// Turns true when the gateway shuts down.
    stop: watch::Receiver<bool>,
    /// Held by every connection task; shutdown waits until all clones are dropped.
    tracker: mpsc::Sender<()>,
    drain: Duration,
}

impl Ctx {
    /// Resolves `drain` after shutdown starts: the end of the grace period of relays.
    pub(crate) fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        let drain = self.drain;
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(drain).await;
        }
    }

    /// Resolves when shutdown starts.
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }

    /// Spawns `task`, tracked for shutdown and ended at the end of the grace period.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let held = self.tracker.clone();
        let drained = self.drained();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = drained => {}
            }
            drop(held);
        });
    }
}

/// Opens a stream to the exposed service `service` of edge `edge`, as `source`.
///
/// Fails with `EDGE_NOT_ONLINE` if the edge is not connected (or goes while the stream
/// opens), or with the edge's refusal (`NOT_FOUND` for an unknown service, `REFUSED` when
/// the local connect failed).
pub(crate) async fn open_to_edge(
    hub: &Hub,
    edge: u64,
    service: &str,
    source: &'static str,
) -> Result<Stream, Error> {
    let Some(session) = hub.edge(edge) else {
        return Err(Error::EdgeNotOnline(format!("edge {edge} is not online")));
    };
    let open = OpenStream {
        address: Address {
            peer_id: 0,
            peer_name: Name::from_static(source).unwrap_or(Name::EMPTY),
        },
        metadata: bytes::Bytes::copy_from_slice(service.as_bytes()),
    };
    match session.conn.open_stream(open, Some(OPEN_TIMEOUT)).await {
        Ok((stream, _)) => Ok(stream),
        Err(
            Error::ConnectionLost(_)
            | Error::TransportFailed(_)
            | Error::Closed
            | Error::NotConnected(_),
        ) => Err(Error::EdgeNotOnline(format!("edge {edge} disconnected"))),
        Err(e) => Err(e),
    }
}
