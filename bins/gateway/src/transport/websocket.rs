//! The protocol carried in WebSocket binary messages (docs/PROTOCOL.md#websocket-binding),
//! so the gateway can sit behind nginx or any HTTP load balancer: the upgrade on the
//! listener side, and the client address a trusted proxy forwards.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tether_tokio::runtime::BoxTransport;
use tether_tokio::websocket::WsTransport;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig as WsLimits;

use super::TransportError;

/// The `websocket` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Whether the edge listener also accepts WebSocket upgrades. Default `true`.
    pub edge: bool,
    /// Whether the service listener also accepts them. Default `false`.
    pub service: bool,
    /// The request path of the upgrade; other paths get 404. Default `/tether`.
    pub path: String,
    /// Proxies (by IP address) whose `X-Forwarded-For` header names the real client; its
    /// last entry becomes the peer's address (for logs, `hashby: srcip` and the per-address
    /// caps). Default none: the header is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest WebSocket message accepted, in bytes. Default 1048576.
    pub max_message_size: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            edge: true,
            service: false,
            path: String::from("/tether"),
            trusted_proxies: Vec::new(),
            max_message_size: 1 << 20,
        }
    }
}

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

impl WebSocketConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(String::from("websocket.path: must start with /"));
        }
        if self.max_message_size < 1024 {
            return Err(String::from(
                "websocket.max_message_size: must be at least 1024",
            ));
        }
        Ok(())
    }

    /// The client address `X-Forwarded-For` names, when `proxy` is trusted.
    fn forwarded(&self, proxy: IpAddr, request: &Request, port: u16) -> Option<SocketAddr> {
        if !self.trusted_proxies.contains(&proxy) {
            return None;
        }
        let header = request.headers().get("x-forwarded-for")?.to_str().ok()?;
        // The last entry is the one the trusted proxy added itself.
        let ip: IpAddr = header.rsplit(',').next()?.trim().parse().ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// Runs the server side of the upgrade on `io` (whose first bytes were `GET `), and
    /// returns the transport and, from a trusted proxy, the forwarded client address.
    pub(super) async fn accept<S>(
        &self,
        io: S,
        addr: SocketAddr,
    ) -> Result<(BoxTransport, Option<SocketAddr>), TransportError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let forwarded = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&forwarded);
        // The callback's error type is tungstenite's, large or not.
        #[allow(clippy::result_large_err)]
        let check = move |request: &Request, response: Response| {
            if request.uri().path() != self.path {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    "no Tether endpoint at this path",
                ));
            }
            let client = self.forwarded(addr.ip(), request, addr.port());
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = client;
            Ok(response)
        };
        let limits = WsLimits::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        let ws = tokio_tungstenite::accept_hdr_async_with_config(io, check, Some(limits))
            .await
            .map_err(|e| TransportError::WebSocket(e.to_string()))?;
        let client = *forwarded.lock().unwrap_or_else(|e| e.into_inner());
        let transport: BoxTransport = Box::pin(WsTransport::new(ws, Some(client.unwrap_or(addr))));
        Ok((transport, client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/tether");
        if let Some(value) = forwarded {
            builder = builder.header("X-Forwarded-For", value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_and_only_its_own_entry_counts() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let config = WebSocketConfig {
            trusted_proxies: vec![proxy],
            ..WebSocketConfig::default()
        };
        let spoofed = request(Some("6.6.6.6, 10.1.2.3"));
        let client = config.forwarded(proxy, &spoofed, 4000);
        assert_eq!(client, Some("10.1.2.3:4000".parse().unwrap()));
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(config.forwarded(stranger, &spoofed, 4000), None);
        assert_eq!(config.forwarded(proxy, &request(None), 1), None);
        assert_eq!(config.forwarded(proxy, &request(Some("junk")), 1), None);
        let default = WebSocketConfig::default();
        assert_eq!(default.forwarded(proxy, &spoofed, 1), None);
    }
}
