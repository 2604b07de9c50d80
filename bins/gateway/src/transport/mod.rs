//! From an accepted TCP connection to a transport the protocol runs on: the caps on
//! unauthenticated connections, TLS (with client certificates), and the choice between the
//! Tether protocol carried directly and carried in WebSocket binary messages.
//!
//! The accept loop only counts and spawns: every stage that waits on the peer (TLS, the
//! WebSocket upgrade, the protocol handshake) runs in the connection's own task, under a
//! deadline, so a stalled peer never delays the next accept.

pub mod admission;
pub mod identity;
mod rewind;
pub mod tls;
pub mod websocket;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_tokio::TokioTransport;
use tether_tokio::runtime::BoxTransport;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::PeerRole;
use admission::{Admission, Overload, Permit};
use identity::{CertificateNames, PeerInfo};
use rewind::Rewind;
use tls::ReloadableTls;
use websocket::WebSocketConfig;

/// How one listener turns TCP connections into transports.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    /// `service` or `edge` (logs and metrics).
    pub(crate) role: PeerRole,
    /// TLS, if the listener has it.
    pub(crate) tls: Option<Arc<ReloadableTls>>,
    /// Whether (and where) WebSocket upgrades are accepted.
    pub(crate) websocket: Option<Arc<WebSocketConfig>>,
    /// The unauthenticated-connection caps, shared by the listeners.
    pub(crate) admission: Arc<Admission>,
    /// The deadline of TLS and the WebSocket upgrade.
    pub(crate) transport_deadline: Duration,
}

/// A connection whose transport is up: the protocol handshake is next.
pub(crate) struct Established {
    /// The byte transport the protocol runs on.
    pub(crate) transport: BoxTransport,
    /// What the transport established about the peer.
    pub(crate) peer: PeerInfo,
    /// The connection's unauthenticated slot, to drop once the handshake is decided.
    pub(crate) permit: Permit,
}

/// Why a connection failed before the protocol handshake.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS handshake failed (bad certificate, wrong CA, not TLS, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The peer did not complete TLS or the WebSocket upgrade in time.
    #[error("transport handshake timed out")]
    Timeout,
    /// The WebSocket upgrade failed (wrong path, not a WebSocket request, ...).
    #[error("WebSocket upgrade failed: {0}")]
    WebSocket(String),
    /// The connection failed while reading its first bytes.
    #[error("{0}")]
    Io(io::Error),
}

/// Why a connection ended before its protocol handshake, as a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Refused at accept: the unauthenticated caps were reached.
    Overloaded,
    /// TLS failed.
    Tls,
    /// TLS or the upgrade did not complete in time.
    Timeout,
    /// The WebSocket upgrade failed.
    WebSocket,
    /// The connection failed or closed early.
    Io,
}

impl TransportError {
    /// The refusal this error counts as.
    pub fn refusal(&self) -> Refusal {
        match self {
            TransportError::Tls(_) => Refusal::Tls,
            TransportError::Timeout => Refusal::Timeout,
            TransportError::WebSocket(_) => Refusal::WebSocket,
            TransportError::Io(_) => Refusal::Io,
        }
    }
}

/// Called for each connection refused before its protocol handshake.
pub(crate) type OnRefused = Arc<dyn Fn(PeerRole, Refusal) + Send + Sync>;

impl Pipeline {
    /// Runs the stages before the protocol handshake, under the transport deadline.
    async fn establish(
        &self,
        socket: TcpStream,
        addr: SocketAddr,
        permit: Permit,
    ) -> Result<Established, TransportError> {
        let _ = socket.set_nodelay(true);
        let stages = async {
            match &self.tls {
                None => self.frame(socket, addr, None).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let stream = acceptor.accept(socket).await.map_err(TransportError::Tls)?;
                    let (_, session) = stream.get_ref();
                    let certificate = session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(identity::certificate_names);
                    self.frame(stream, addr, Some(certificate)).await
                }
            }
        };
        let (transport, peer) = tokio::time::timeout(self.transport_deadline, stages)
            .await
            .map_err(|_| TransportError::Timeout)??;
        Ok(Established {
            transport,
            peer,
            permit,
        })
    }

    /// Tells WebSocket from the bare protocol by the first bytes (when the listener takes
    /// WebSocket), and wraps the stream.
    /// `tls` is `Some` (with the client certificate's names, if any) on a TLS listener.
    async fn frame<S>(
        &self,
        mut io: S,
        addr: SocketAddr,
        tls: Option<Option<CertificateNames>>,
    ) -> Result<(BoxTransport, PeerInfo), TransportError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let secure = tls.is_some();
        let mut peer = PeerInfo {
            addr,
            transport: if secure { "tls" } else { "tcp" },
            certificate: tls.flatten(),
        };
        let head = match &self.websocket {
            Some(_) => sniff(&mut io).await?,
            None => Vec::new(),
        };
        let upgrade = self.websocket.as_ref().filter(|_| head == b"GET ");
        let io = Rewind::new(head, io);
        let Some(ws) = upgrade else {
            return Ok((Box::pin(TokioTransport::with_peer_addr(io, addr)), peer));
        };
        let (transport, forwarded) = ws.accept(io, addr).await?;
        peer.addr = forwarded.unwrap_or(addr);
        peer.transport = if secure { "wss" } else { "ws" };
        Ok((transport, peer))
    }
}

/// Reads the first bytes, up to 4, until they can no longer be `GET ` (the protocol's
/// preface starts with 0x89, a WebSocket upgrade with `GET `); they are to be read again.
async fn sniff<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, TransportError> {
    let mut head = Vec::with_capacity(4);
    while head.len() < 4 && b"GET ".starts_with(&head) {
        let mut bytes = [0u8; 4];
        let want = 4 - head.len();
        let n = io
            .read(&mut bytes[..want])
            .await
            .map_err(TransportError::Io)?;
        if n == 0 {
            return Err(TransportError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        head.extend_from_slice(&bytes[..n]);
    }
    Ok(head)
}

/// Accepts on `listener` until `stop` flips; each connection that gets an unauthenticated
/// slot is established and handed to `admit` in its own task (in `tasks`).
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pipeline: Pipeline,
    tasks: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
    on_refused: OnRefused,
    admit: F,
) where
    F: Fn(Established) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let pipeline = Arc::new(pipeline);
    let admit = Arc::new(admit);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stop.changed() => return,
        };
        let (socket, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: retrying at once would spin.
                tracing::warn!(listener = pipeline.role.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match pipeline.admission.try_enter(addr.ip()) {
            Ok(permit) => permit,
            Err(overload) => {
                let reason = match overload {
                    Overload::Total => "too many connections in their handshakes",
                    Overload::PerIp => "too many connections in their handshakes from this address",
                };
                tracing::debug!(listener = pipeline.role.as_str(), %addr, reason, "refused");
                on_refused(pipeline.role, Refusal::Overloaded);
                continue;
            }
        };
        let pipeline = Arc::clone(&pipeline);
        let admit = Arc::clone(&admit);
        let on_refused = Arc::clone(&on_refused);
        tasks.spawn(async move {
            match pipeline.establish(socket, addr, permit).await {
                Ok(established) => admit(established).await,
                Err(e) => {
                    tracing::debug!(listener = pipeline.role.as_str(), %addr, reason = %e, "refused");
                    on_refused(pipeline.role, e.refusal());
                }
            }
        });
    }
}
