//! Dialing a gateway by URL: plain TCP, TLS (tokio-rustls), WebSocket and WebSocket over
//! TLS (tokio-tungstenite's client handshake over our own TCP or TLS stream).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tether_sdk::endpoint::{Endpoint, Scheme};
use tether_sdk::tls::rustls::{self, pki_types::ServerName};
use tether_sdk::tls::{self, ClientTls};
use tether_sdk::{Error, runtime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{TokioTransport, tcp_transport};

/// What a TLS dial needs: the connector and the name to check.
#[derive(Clone)]
struct TlsSetup {
    connector: TlsConnector,
    name: ServerName<'static>,
}

/// A dialer for `endpoint`: `tcp://` (or a bare `host:port`), `tls://`, `ws://` and
/// `wss://`, resolving the host again on every dial.
///
/// `tls` is used by `tls://` and `wss://` (ignored otherwise); without it they trust the
/// Mozilla roots (`ClientTls::new()`). The certificate is checked against the endpoint's
/// host, or its [`tls_server_name`](Endpoint::tls_server_name) override. Sockets get
/// `TCP_NODELAY`, and the transport's peer address is the TCP peer's.
///
/// WebSocket dials send an upgrade request for `ws(s)://host:port/path` and accept frames
/// and messages up to 1 MiB. A `ws://` or `wss://` endpoint without the `websocket`
/// feature is an [`Error::InvalidArgument`], as are an invalid server name and a default
/// TLS configuration that cannot be built.
pub fn endpoint_dialer(
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<runtime::Dialer, Error> {
    if endpoint.is_websocket() && !cfg!(feature = "websocket") {
        return Err(Error::InvalidArgument(format!(
            "{endpoint}: WebSocket gateways need tether-tokio's `websocket` feature"
        )));
    }
    let setup = match endpoint.uses_tls() {
        false => None,
        true => {
            let config = match tls {
                Some(config) => config,
                None => ClientTls::new().build()?,
            };
            Some(TlsSetup {
                connector: TlsConnector::from(config),
                name: tls::server_name(&endpoint, None)?,
            })
        }
    };
    let endpoint = Arc::new(endpoint);
    Ok(runtime::dialer(move || {
        let (endpoint, setup) = (Arc::clone(&endpoint), setup.clone());
        async move { dial(&endpoint, setup.as_ref()).await }
    }))
}

async fn dial(endpoint: &Endpoint, setup: Option<&TlsSetup>) -> io::Result<runtime::BoxTransport> {
    let tcp = TcpStream::connect((endpoint.host(), endpoint.port()))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{endpoint}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    match (endpoint.scheme(), setup) {
        (Scheme::Tcp, _) => Ok(tcp_transport(tcp)),
        (Scheme::Tls, Some(setup)) => {
            let stream = tls_handshake(endpoint, setup, tcp).await?;
            Ok(Box::pin(TokioTransport {
                io: stream,
                peer_addr: peer,
            }))
        }
        (Scheme::Ws, _) => ws_handshake(endpoint, tcp, peer).await,
        (Scheme::Wss, Some(setup)) => {
            let stream = tls_handshake(endpoint, setup, tcp).await?;
            ws_handshake(endpoint, stream, peer).await
        }
        // `endpoint_dialer` makes a setup for every TLS scheme.
        (Scheme::Tls | Scheme::Wss, None) => Err(io::Error::other("no TLS configuration")),
    }
}

async fn tls_handshake(
    endpoint: &Endpoint,
    setup: &TlsSetup,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    setup
        .connector
        .connect(setup.name.clone(), tcp)
        .await
        .map_err(|e| tls::handshake_error(endpoint, e))
}

#[cfg(feature = "websocket")]
async fn ws_handshake<S>(
    endpoint: &Endpoint,
    io: S,
    peer: Option<SocketAddr>,
) -> io::Result<runtime::BoxTransport>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tether_sdk::websocket::{client_config, handshake_error};
    // tungstenite checks the answer: status 101, the upgrade headers and the accept key.
    let url = endpoint.to_string();
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(client_config()))
            .await
            .map_err(|e| handshake_error(endpoint, e))?;
    Ok(crate::ws_transport(ws, peer))
}

#[cfg(not(feature = "websocket"))]
async fn ws_handshake<S>(
    endpoint: &Endpoint,
    _io: S,
    _peer: Option<SocketAddr>,
) -> io::Result<runtime::BoxTransport> {
    // `endpoint_dialer` refuses WebSocket endpoints without the feature.
    Err(io::Error::other(format!(
        "{endpoint}: WebSocket gateways need tether-tokio's `websocket` feature"
    )))
}
