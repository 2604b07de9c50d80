//! The control listener: binding (loopback only without a token), the accept loop, and
//! [`serve_connection`], which serves one accepted connection over any byte stream (a TCP
//! socket, or a TLS stream with `control_tls`).
//!
//! Limits: request heads up to 16 KiB and 64 headers, read within 10 s; bodies up to
//! 16 KiB (no route takes one); 10 s per request.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::auth::Token;
use super::{ApiError, ControlState, openapi};
use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::transport::tls::ReloadableTls;

/// The address of the HTTP client of a request (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Longest time one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to receive a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head, in bytes (hyper's read buffer).
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;
/// Largest request body, in bytes.
const MAX_BODY: usize = 16 * 1024;

/// The bound control listener.
#[derive(Debug)]
pub(crate) struct ControlPlane {
    listener: TcpListener,
    token: Option<Token>,
    /// `control_listen` as configured (the bound address may be loopback instead).
    configured: SocketAddr,
    /// TLS (`control_tls`), if configured.
    tls: Option<Arc<ReloadableTls>>,
}

/// Where to bind: `configured`, except that without a token a non-loopback address
/// becomes 127.0.0.1 with the same port (an unauthenticated control plane must not be
/// reachable from the network).
fn bind_addr(configured: SocketAddr, has_token: bool) -> SocketAddr {
    if has_token || configured.ip().is_loopback() {
        configured
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), configured.port())
    }
}

impl ControlPlane {
    /// Binds `control_listen` (loopback only without `control_token`).
    pub(crate) async fn bind(
        config: &GatewayConfig,
        tls: Option<Arc<ReloadableTls>>,
    ) -> io::Result<ControlPlane> {
        let token = config.control_token.as_ref().map(|t| t.0.as_bytes());
        let addr = bind_addr(config.control_listen, token.is_some());
        Ok(ControlPlane {
            listener: TcpListener::bind(addr).await?,
            token: token.map(|t| Token(Arc::from(t))),
            configured: config.control_listen,
            tls,
        })
    }

    /// Its TLS configuration, to reload with the others.
    pub(crate) fn tls(&self) -> Option<Arc<ReloadableTls>> {
        self.tls.clone()
    }

    /// Logs whether a token is required, and warns when the configured address was
    /// replaced by loopback (after the `listening` lines).
    fn log_start(&self) {
        let bound = self.local_addr().map(|a| a.ip());
        if bound.is_ok_and(|ip| ip != self.configured.ip()) {
            tracing::warn!(
                configured = %self.configured,
                "the control plane has no token, so it listens on loopback only; set \
                 control_token (or TETHER_CONTROL_TOKEN) to listen on another address"
            );
        }
        match self.token {
            Some(_) => tracing::info!("the control plane requires a bearer token"),
            None => tracing::info!(
                "the control plane requires no token (set control_token or \
                 TETHER_CONTROL_TOKEN to require one)"
            ),
        }
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `stop` turns true, then drops those still open.
    pub(crate) async fn run(self, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
        self.log_start();
        let state = ControlState {
            hub,
            openapi: Arc::from(openapi::to_json()),
        };
        let router = openapi::router(state, self.token).layer(DefaultBodyLimit::max(MAX_BODY));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let router = router.clone();
                        match &self.tls {
                            None => connections.spawn(serve_connection(router, socket, peer)),
                            Some(tls) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                                connections.spawn(async move {
                                    // The TLS handshake shares the request head's deadline.
                                    let accept = acceptor.accept(socket);
                                    match tokio::time::timeout(HEAD_TIMEOUT, accept).await {
                                        Ok(Ok(stream)) => {
                                            serve_connection(router, stream, peer).await;
                                        }
                                        Ok(Err(e)) => {
                                            tracing::debug!(%peer, reason = %e, "control TLS failed");
                                        }
                                        Err(_) => tracing::debug!(%peer, "control TLS timed out"),
                                    }
                                })
                            }
                        };
                    }
                    Err(e) => tracing::debug!(reason = %e, "control accept failed"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
    }
}

/// Serves HTTP/1.1 on one accepted connection `io` from `peer` with `router`, until the
/// client closes it or breaks a limit.
pub(crate) async fn serve_connection<IO>(router: Router, io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let router = router.clone();
        async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, router.oneshot(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok(ApiError::timeout().into_response()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, reason = %e, "control connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback() {
        let any: SocketAddr = "0.0.0.0:30010".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:30010".parse().unwrap();
        let v6: SocketAddr = "[::1]:30010".parse().unwrap();
        assert_eq!(bind_addr(any, false), local);
        assert_eq!(bind_addr(any, true), any);
        assert_eq!(bind_addr(v6, false), v6);
    }
}
