//! The HTTP ingress: an HTTP/1.1 server whose requests go to a service an edge exposes.
//!
//! A request names its target with the headers `X-Tether-Edge: <id>` and
//! `X-Tether-Service: <name>` (its path goes unchanged), or with the path
//! `/edge/<id>/<service>/<rest>` (forwarded as `/<rest>`, query kept). Each request opens a
//! stream to the edge (open metadata = the service name) and runs one HTTP/1.1 client
//! exchange over it; bodies stream both ways without being buffered whole. An upgrade
//! (`Connection: upgrade`, e.g. WebSocket) that the service answers with 101 becomes a raw
//! byte relay. `POST /rpc/...` without `X-Tether-Edge` goes to the RPC relay (`relay`).
//!
//! Errors are JSON, `{"error": "...", "code": "EDGE_NOT_ONLINE"}`, with a status from the
//! code ([`status_of`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use proto_core::ErrorCode;
use tether_tokio::Error;
use tokio::net::{TcpListener, TcpStream};

use super::{Ctx, HTTP_SOURCE, open_to_edge, relay};

/// The body of every response: one passed through from the edge, or one the gateway made.
pub(super) type Body = Either<Incoming, Full<Bytes>>;

const EDGE_HEADER: &str = "x-tether-edge";
const SERVICE_HEADER: &str = "x-tether-service";

/// A client must send a request's headers within this time (hyper's slow-client guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts HTTP connections until the task is aborted.
pub(super) async fn accept_loop(listener: TcpListener, ctx: Ctx) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => ctx.spawn(serve(ctx.clone(), socket, peer)),
            Err(e) => {
                tracing::warn!(error = %e, "http ingress accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one client connection (keep-alive: any number of requests in turn). On shutdown
/// the request in flight finishes, then the connection closes.
async fn serve(ctx: Ctx, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let service_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |request| {
        let ctx = service_ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, peer, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let stopping = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http ingress connection ended");
            }
            false
        }
        () = ctx.stopping() => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Where a request goes.
enum Target {
    /// To the exposed service `service` of edge `edge`, with this path and query.
    Forward {
        edge: u64,
        service: String,
        path: String,
    },
    /// To the RPC relay.
    Rpc,
}

async fn handle(ctx: Ctx, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    match target(&request) {
        Ok(Target::Forward {
            edge,
            service,
            path,
        }) => forward(ctx, peer, request, edge, &service, &path).await,
        Ok(Target::Rpc) => relay::handle(&ctx, peer, request).await,
        Err(problem) => error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &problem),
    }
}

/// Reads the addressing of `request`: headers, then the `/edge/...` path, then `/rpc/...`.
fn target(request: &Request<Incoming>) -> Result<Target, String> {
    let headers = request.headers();
    if let Some(edge) = headers.get(EDGE_HEADER) {
        let edge = edge
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&id| id != 0)
            .ok_or("X-Tether-Edge must be an edge id (a positive integer)")?;
        let service = headers
            .get(SERVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or("X-Tether-Edge needs X-Tether-Service (the exposed service's name)")?;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let service = service.to_owned();
        return Ok(Target::Forward {
            edge,
            service,
            path,
        });
    }
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/edge/") {
        let mut parts = rest.splitn(3, '/');
        let edge = parts
            .next()
            .and_then(|id| id.parse::<u64>().ok())
            .filter(|&id| id != 0)
            .ok_or("/edge/<id>/<service>/...: the id must be a positive integer")?;
        let service = parts
            .next()
            .and_then(percent_decode)
            .filter(|s| !s.is_empty())
            .ok_or("/edge/<id>/<service>/...: the service name is missing or not UTF-8")?;
        let mut path = format!("/{}", parts.next().unwrap_or(""));
        if let Some(query) = request.uri().query() {
            path.push('?');
            path.push_str(query);
        }
        return Ok(Target::Forward {
            edge,
            service,
            path,
        });
    }
    if path.starts_with("/rpc/") {
        return Ok(Target::Rpc);
    }
    Err(String::from(
        "no target: send X-Tether-Edge and X-Tether-Service headers, or use a path \
         /edge/<id>/<service>/... or POST /rpc/edges/<id>/<method> or /rpc/services/<method>",
    ))
}

/// Forwards `request` to `service` on `edge` with `path`, and its response back.
async fn forward(
    ctx: Ctx,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    edge: u64,
    service: &str,
    path: &str,
) -> Response<Body> {
    let upgrade = upgrade_protocol(request.headers());
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let Ok(uri) = path.parse::<hyper::Uri>() else {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid path");
    };
    let stream = match open_to_edge(&ctx.hub, edge, service, HTTP_SOURCE).await {
        Ok(stream) => stream,
        Err(e) => return from_error(&e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return bad_gateway(&e),
    };
    ctx.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "http ingress: connection to the edge's service failed");
        }
    });

    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    parts.version = hyper::Version::HTTP_11;
    parts.extensions = hyper::http::Extensions::new();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(EDGE_HEADER);
    headers.remove(SERVICE_HEADER);
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    append_forwarded_for(headers, peer);

    let mut response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => return bad_gateway(&e),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = client_side else {
            let text = "the edge's service switched protocols without being asked to";
            return error(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", text);
        };
        let edge_side = hyper::upgrade::on(&mut response);
        ctx.spawn(relay_upgraded(client_side, edge_side));
        let protocol = response.headers().get(header::UPGRADE).cloned();
        strip_hop_by_hop(response.headers_mut());
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            headers.insert(header::UPGRADE, protocol);
        }
    } else {
        strip_hop_by_hop(response.headers_mut());
    }
    response.map(Either::Left)
}

/// Relays the raw bytes of an upgraded connection between the client and the edge.
async fn relay_upgraded(client: hyper::upgrade::OnUpgrade, edge: hyper::upgrade::OnUpgrade) {
    let (client, edge) = match tokio::try_join!(client, edge) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "http ingress: upgrade failed");
            return;
        }
    };
    let (mut client, mut edge) = (TokioIo::new(client), TokioIo::new(edge));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut edge).await {
        tracing::debug!(error = %e, "http ingress: upgraded relay ended with an error");
    }
}

/// The `Upgrade` value when the request asks for an upgrade (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes the headers that describe one hop (RFC 9110, 7.6.1), including those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Adds the client's address to `X-Forwarded-For`.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// Decodes `%XX` escapes of a path segment; `None` if the result is not UTF-8.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The HTTP status for a Tether error code.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::EDGE_NOT_ONLINE | ErrorCode::SERVICE_NOT_ONLINE | ErrorCode::GOING_AWAY => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::METHOD_NOT_FOUND | ErrorCode::NOT_FOUND => StatusCode::NOT_FOUND,
        ErrorCode::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::APPLICATION_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::BUSY => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::UNAUTHORIZED => StatusCode::FORBIDDEN,
        ErrorCode::TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BAD_REQUEST => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The JSON error response for a Tether error.
pub(super) fn from_error(e: &Error) -> Response<Body> {
    let code = e.code();
    let name = code.name().map_or_else(|| format!("{code}"), str::to_owned);
    let text = match e.text() {
        text if text.is_empty() => code.description().to_owned(),
        text => text,
    };
    error(status_of(code), &name, &text)
}

/// The JSON error response for a failed HTTP exchange with the edge's service.
fn bad_gateway(e: &hyper::Error) -> Response<Body> {
    let text = format!("the edge's service did not answer: {e}");
    error(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", &text)
}

/// A JSON error response: `{"error": text, "code": code}`.
pub(super) fn error(status: StatusCode, code: &str, text: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": text, "code": code }).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("web").as_deref(), Some("web"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("example"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::HOST));
    }

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(status_of(ErrorCode::EDGE_NOT_ONLINE), 503);
        assert_eq!(status_of(ErrorCode::NOT_FOUND), 404);
        assert_eq!(status_of(ErrorCode::TIMEOUT), 504);
        assert_eq!(status_of(ErrorCode::APPLICATION_ERROR), 500);
        assert_eq!(status_of(ErrorCode::REFUSED), 502);
    }
}
