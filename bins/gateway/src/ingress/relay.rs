//! The HTTP → RPC relay, on the HTTP ingress listener:
//!
//! - `POST /rpc/edges/<id>/<method>` calls `method` on edge `id`;
//! - `POST /rpc/services/<method>` calls a service that registered `method` (only services
//!   called `X-Tether-Service`, if that header is given), chosen by the client's IP address
//!   (at random with `hashby: random`).
//!
//! The request body is the call's body, the response body the answer's (200). The call's
//! timeout is `X-Tether-Timeout-Ms` (default 30000). The target sees `$http` as the source.
//! Errors are JSON with the error code's name and a status from it (`http::status_of`).
//! Headers are not passed to the handler: an RPC carries only a body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use proto_core::name::Name;
use proto_core::{Address, Call, RegistrationKind};
use tether_tokio::{Connection, Error};

use super::http::{Body, error, from_error, percent_decode};
use super::{Ctx, HTTP_SOURCE};
use crate::config::HashBy;
use crate::routing::RouteKey;

const TIMEOUT_HEADER: &str = "x-tether-timeout-ms";
const SERVICE_HEADER: &str = "x-tether-service";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);

/// What a relay path names.
enum Target {
    Edge { id: u64, method: String },
    Service { method: String },
}

/// A request the relay turns down before calling: its status, code name and text.
struct Reject(StatusCode, &'static str, String);

impl Reject {
    fn response(&self) -> Response<Body> {
        error(self.0, self.1, &self.2)
    }
}

fn bad_request(text: &str) -> Reject {
    Reject(StatusCode::BAD_REQUEST, "BAD_REQUEST", text.to_owned())
}

/// Answers a request whose path starts with `/rpc/`.
pub(super) async fn handle(
    ctx: &Ctx,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let target = match parse(request.uri().path()) {
        Ok(target) => target,
        Err(reject) => return reject.response(),
    };
    if request.method() != Method::POST {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_REQUEST",
            "the RPC relay takes POST",
        );
        let allow = HeaderValue::from_static("POST");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    let timeout = match timeout_of(&request) {
        Ok(timeout) => timeout,
        Err(reject) => return reject.response(),
    };
    let wanted = match request.headers().get(SERVICE_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(name)) if !name.trim().is_empty() => Some(name.trim().to_owned()),
        Some(_) => return bad_request("X-Tether-Service must be a service name").response(),
    };
    let body = match read_body(ctx, request).await {
        Ok(body) => body,
        Err(reject) => return reject.response(),
    };
    let result = match target {
        Target::Edge { id, method } => call_edge(ctx, id, &method, body, timeout).await,
        Target::Service { method } => {
            call_service(ctx, peer, wanted.as_deref(), &method, body, timeout).await
        }
    };
    match result {
        Ok(answer) => {
            let mut response = Response::new(Either::Right(Full::new(answer)));
            let octets = HeaderValue::from_static("application/octet-stream");
            response.headers_mut().insert(header::CONTENT_TYPE, octets);
            response
        }
        Err(e) => from_error(&e),
    }
}

fn parse(path: &str) -> Result<Target, Reject> {
    let method_of = |raw: &str| match percent_decode(raw) {
        Some(method) if !method.is_empty() => Ok(method),
        _ => Err(bad_request("the method name is missing or not UTF-8")),
    };
    if let Some(rest) = path.strip_prefix("/rpc/edges/") {
        let (id, method) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id.parse::<u64>().ok().filter(|&id| id != 0);
        let Some(id) = id else {
            return Err(bad_request(
                "/rpc/edges/<id>/<method>: the id must be a positive integer",
            ));
        };
        return Ok(Target::Edge {
            id,
            method: method_of(method)?,
        });
    }
    if let Some(method) = path.strip_prefix("/rpc/services/") {
        return Ok(Target::Service {
            method: method_of(method)?,
        });
    }
    Err(Reject(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        String::from(
            "the RPC relay serves POST /rpc/edges/<id>/<method> and POST /rpc/services/<method>",
        ),
    ))
}

fn timeout_of(request: &Request<Incoming>) -> Result<Duration, Reject> {
    let Some(value) = request.headers().get(TIMEOUT_HEADER) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match ms.filter(|&ms| ms > 0) {
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(bad_request(
            "X-Tether-Timeout-Ms must be a positive number of milliseconds",
        )),
    }
}

/// How much of a too large body the relay reads and discards before answering 413, so
/// that the client (still sending) sees the answer and the connection stays usable. Past
/// it the answer goes out at once and the connection closes.
const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// The whole body, up to the protocol's `max_message_size` (413 beyond).
async fn read_body(ctx: &Ctx, request: Request<Incoming>) -> Result<Bytes, Reject> {
    let max = u64::from(ctx.hub.config.protocol.max_message_size);
    let too_large = || {
        let text = format!("the body is larger than max_message_size ({max} bytes)");
        Reject(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", text)
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DISCARD_LIMIT) {
        return Err(too_large());
    }
    let mut body = request.into_body();
    let mut kept = BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_request(&format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len() as u64);
        if seen > DISCARD_LIMIT {
            return Err(too_large());
        }
        if seen <= max {
            kept.extend_from_slice(&data);
        }
    }
    if seen > max {
        return Err(too_large());
    }
    Ok(kept.freeze())
}

fn call_of(method: &str, body: Bytes, timeout: Duration) -> Result<Call, Error> {
    let method = Name::new(method).map_err(|_| Error::InvalidArgument(String::from("method")))?;
    Ok(Call {
        address: Address {
            peer_id: 0,
            peer_name: Name::from_static(HTTP_SOURCE).unwrap_or(Name::EMPTY),
        },
        method,
        body,
        timeout: Some(timeout),
    })
}

/// Calls on `target`, giving up a little after `timeout` should the answer never come;
/// a lost target is `gone`.
async fn call_on(
    target: &Connection,
    call: Call,
    timeout: Duration,
    gone: impl FnOnce() -> Error,
) -> Result<Bytes, Error> {
    let outcome = tokio::time::timeout(timeout + Duration::from_secs(1), target.call(call)).await;
    match outcome {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(
            Error::ConnectionLost(_)
            | Error::TransportFailed(_)
            | Error::Closed
            | Error::NotConnected(_),
        )) => Err(gone()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout(String::from("no answer within the timeout"))),
    }
}

async fn call_edge(
    ctx: &Ctx,
    id: u64,
    method: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let Some(edge) = ctx.hub.edge(id) else {
        return Err(Error::EdgeNotOnline(format!("edge {id} is not online")));
    };
    let call = call_of(method, body, timeout)?;
    let gone = || Error::EdgeNotOnline(format!("edge {id} disconnected"));
    call_on(&edge.conn, call, timeout, gone).await
}

async fn call_service(
    ctx: &Ctx,
    peer: SocketAddr,
    wanted: Option<&str>,
    method: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let hub = &ctx.hub;
    let mut candidates = hub.services_with(RegistrationKind::Method, method);
    if let Some(name) = wanted {
        candidates.retain(|s| s.name == name);
    }
    let key = match hub.config.hashby {
        HashBy::Random => RouteKey::Random,
        HashBy::EdgeId | HashBy::SrcIp => RouteKey::for_edge(HashBy::SrcIp, 0, Some(peer.ip())),
    };
    let Some(service) = hub.pick(&candidates, key) else {
        return Err(match wanted {
            Some(name) if hub.services_named(name).is_empty() => {
                Error::ServiceNotOnline(format!("no service {name:?} is connected"))
            }
            _ => Error::MethodNotFound(format!("no service registered {method:?}")),
        });
    };
    let call = call_of(method, body, timeout)?;
    let gone = || Error::ServiceNotOnline(String::from("the service disconnected"));
    call_on(&service.conn, call, timeout, gone).await
}
