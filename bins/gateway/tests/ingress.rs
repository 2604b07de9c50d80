//! Ingress through the real gateway process: HTTP forwarding to a service an edge exposes
//! (both addressing forms, keep-alive, errors as JSON, 100 MiB each way streamed and
//! verified, an upgrade relayed as raw bytes), TCP port mappings with half-close, and the
//! HTTP → RPC relay with its error statuses.
//!
//! The edge here plays the edge agent: a stream whose open metadata names an exposed
//! service is accepted and piped to that service's local address; an unknown name is
//! refused with `NOT_FOUND`, a failed local connect with `REFUSED`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use proto_core::ErrorCode;
use support::*;
use tether_testkit::net::echo_server;
use tether_tokio::{ConnectExt as _, Edge, Error, Service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;
type ReqBody = BoxBody<Bytes, Infallible>;

// ---------- test data: a pseudo-random block, served as zero-copy slices ----------

/// Odd, so chunks never line up with the period.
const PERIOD: usize = 1024 * 1024 + 13;

/// The pattern stored twice, so any window of up to `PERIOD` bytes is one slice.
fn block() -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    data.extend_from_within(..);
    data.into()
}

/// A body of `left` bytes of the pattern, in 64 KiB frames; `exact` announces its length
/// (Content-Length), otherwise it goes chunked.
struct Pattern {
    block: Bytes,
    at: u64,
    left: u64,
    exact: bool,
}

impl Pattern {
    fn new(len: u64, exact: bool) -> Pattern {
        Pattern {
            block: block(),
            at: 0,
            left: len,
            exact,
        }
    }
}

impl hyper::body::Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(64 * 1024) as usize;
        let start = (this.at % PERIOD as u64) as usize;
        this.at += n as u64;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.block.slice(start..start + n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.exact {
            hyper::body::SizeHint::with_exact(self.left)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// Checks received bytes against the pattern as they arrive.
struct Check {
    block: Bytes,
    len: u64,
    intact: bool,
}

impl Check {
    fn new() -> Check {
        Check {
            block: block(),
            len: 0,
            intact: true,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let start = (self.len % PERIOD as u64) as usize;
            let n = data.len().min(PERIOD);
            self.intact &= data[..n] == self.block[start..start + n];
            self.len += n as u64;
            data = &data[n..];
        }
    }

    /// Reads `body` to its end, checking every frame.
    async fn body(mut self, mut body: Incoming) -> Result<Check, hyper::Error> {
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                self.update(data);
            }
        }
        Ok(self)
    }
}

// ---------- the local services the edge exposes ----------

fn text(status: StatusCode, body: String) -> Response<ReqBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response
}

/// A local web app: `/download?size=N` streams N bytes of the pattern, `/upload` checks
/// the pattern it receives, `/ws` answers an upgrade with 101 and echoes raw bytes, and
/// anything else describes the request it got.
async fn web(mut request: Request<Incoming>) -> Result<Response<ReqBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let response = match path.as_str() {
        "/download" => {
            let size = query
                .strip_prefix("size=")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Response::new(Pattern::new(size, true).boxed())
        }
        "/upload" => match Check::new().body(request.into_body()).await {
            Ok(check) => text(
                StatusCode::OK,
                format!("len={} intact={}", check.len, check.intact),
            ),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        },
        "/ws" if request.headers().contains_key("upgrade") => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
            let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
            let headers = response.headers_mut();
            headers.insert("upgrade", "echo".parse().unwrap());
            headers.insert("connection", "upgrade".parse().unwrap());
            response
        }
        _ => {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map_or("-", |v| v.to_str().unwrap_or("?"))
                    .to_owned()
            };
            text(
                StatusCode::OK,
                format!(
                    "{} {} edge-header={} fwd={}",
                    request.method(),
                    request.uri(),
                    header("x-tether-edge"),
                    header("x-forwarded-for")
                ),
            )
        }
    };
    Ok(response)
}

/// Serves [`web`] on a loopback port.
async fn web_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(web);
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    });
    addr
}

/// A loopback address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Connects edge `id` and plays the edge agent for `exposed` (name → local address).
async fn agent(gw: &mut GatewayProcess, id: u64, exposed: Vec<(&'static str, SocketAddr)>) {
    let edge = Edge::builder().edge_id(id).connect(gw.edge_addr).unwrap();
    within("the edge connects", edge.wait_connected())
        .await
        .unwrap();
    gw.edge_joined(id).await;
    tokio::spawn(async move {
        while let Some(incoming) = edge.incoming_stream().await {
            let name = String::from_utf8_lossy(incoming.metadata()).into_owned();
            let local = exposed.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
            tokio::spawn(async move {
                let Some(local) = local else {
                    return incoming.refuse(ErrorCode::NOT_FOUND, "no such exposed service");
                };
                let mut socket = match TcpStream::connect(local).await {
                    Ok(socket) => socket,
                    Err(e) => return incoming.refuse(ErrorCode::REFUSED, &e.to_string()),
                };
                if let Ok(mut stream) = incoming.accept(Bytes::new()) {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
                }
            });
        }
    });
}

// ---------- HTTP client helpers ----------

async fn client(addr: SocketAddr) -> SendRequest<ReqBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: ReqBody) -> Request<ReqBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "ingress.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<ReqBody> {
    request("GET", uri, headers, Full::new(Bytes::new()).boxed())
}

fn post(uri: &str, headers: &[(&str, &str)], body: &'static [u8]) -> Request<ReqBody> {
    let body = Full::new(Bytes::from_static(body)).boxed();
    request("POST", uri, headers, body)
}

/// Sends `request` on `sender` (keep-alive) and reads the whole answer.
async fn send(sender: &mut SendRequest<ReqBody>, request: Request<ReqBody>) -> (StatusCode, Bytes) {
    let what = format!("{} {}", request.method(), request.uri());
    within(&what, async {
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    })
    .await
}

/// Asserts a JSON error answer: its status, `code`, and a part of `error`.
fn assert_error(answer: &(StatusCode, Bytes), status: u16, code: &str, part: &str) {
    let (got, body) = answer;
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(body)));
    assert_eq!(got.as_u16(), status, "{json}");
    assert_eq!(json["code"], code, "{json}");
    let error = json["error"].as_str().expect("an error text");
    assert!(error.contains(part), "{error:?} lacks {part:?}");
}

fn utf8(body: &Bytes) -> &str {
    std::str::from_utf8(body).unwrap()
}

async fn http_gateway() -> (GatewayProcess, SocketAddr) {
    let mut gw = GatewayProcess::start(&["--http-ingress", "127.0.0.1:0"]).await;
    let ingress = gw.listening_addr("http-ingress").await;
    (gw, ingress)
}

// ---------- HTTP forwarding ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_forwarding_addresses_by_headers_or_path_and_maps_errors() {
    let (mut gw, ingress) = http_gateway().await;
    let exposed = vec![("web", web_server().await), ("dead", closed_port().await)];
    agent(&mut gw, 7, exposed).await;
    // Every request on one client connection: keep-alive holds, also after errors.
    let mut http = client(ingress).await;

    let headers = [("x-tether-edge", "7"), ("x-tether-service", "web")];
    let answer = send(&mut http, get("/hello?x=1", &headers)).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(
        utf8(&answer.1),
        "GET /hello?x=1 edge-header=- fwd=127.0.0.1"
    );

    let answer = send(&mut http, get("/edge/7/web/greet/there?y=2&z", &[])).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(
        utf8(&answer.1),
        "GET /greet/there?y=2&z edge-header=- fwd=127.0.0.1"
    );
    let answer = send(&mut http, post("/edge/7/web", &[], b"x")).await;
    assert_eq!(utf8(&answer.1), "POST / edge-header=- fwd=127.0.0.1");

    let offline = [("x-tether-edge", "99"), ("x-tether-service", "web")];
    let answer = send(&mut http, get("/", &offline)).await;
    assert_error(&answer, 503, "EDGE_NOT_ONLINE", "edge 99");
    let answer = send(&mut http, get("/edge/99/web/", &[])).await;
    assert_error(&answer, 503, "EDGE_NOT_ONLINE", "edge 99");

    let answer = send(&mut http, get("/edge/7/nope/x", &[])).await;
    assert_error(&answer, 404, "NOT_FOUND", "no such exposed service");
    let answer = send(&mut http, get("/edge/7/dead/x", &[])).await;
    assert_error(&answer, 502, "REFUSED", "");

    for (uri, headers) in [
        ("/", &[][..]),
        ("/edge/x/web/", &[]),
        ("/edge/7", &[]),
        ("/", &[("x-tether-edge", "7")]),
        (
            "/",
            &[("x-tether-edge", "seven"), ("x-tether-service", "web")],
        ),
    ] {
        let answer = send(&mut http, get(uri, headers)).await;
        assert_error(&answer, 400, "BAD_REQUEST", "");
    }
    // Still the same connection, still working.
    let answer = send(&mut http, get("/edge/7/web/again", &[])).await;
    assert_eq!(utf8(&answer.1), "GET /again edge-header=- fwd=127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_of_100_mib_stream_both_ways() {
    const SIZE: u64 = 100 * MIB;
    let (mut gw, ingress) = http_gateway().await;
    agent(&mut gw, 7, vec![("web", web_server().await)]).await;
    let mut http = client(ingress).await;
    let limit = Duration::from_secs(240);

    let started = Instant::now();
    let download = async {
        let uri = format!("/edge/7/web/download?size={SIZE}");
        let response = http.send_request(get(&uri, &[])).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let length = response.headers().get("content-length").cloned();
        assert_eq!(length.unwrap(), SIZE.to_string().as_str());
        Check::new().body(response.into_body()).await.unwrap()
    };
    let check = tokio::time::timeout(limit, download)
        .await
        .expect("download in time");
    assert_eq!(check.len, SIZE);
    assert!(check.intact, "the downloaded bytes differ from the pattern");
    eprintln!("download: 100 MiB in {:?}", started.elapsed());

    // Upload, chunked (no Content-Length): the body streams in as it is sent.
    let started = Instant::now();
    let headers = [("x-tether-edge", "7"), ("x-tether-service", "web")];
    let upload = request(
        "POST",
        "/upload",
        &headers,
        Pattern::new(SIZE, false).boxed(),
    );
    let upload = async {
        http.ready().await.unwrap();
        let response = http.send_request(upload).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    };
    let (status, body) = tokio::time::timeout(limit, upload)
        .await
        .expect("upload in time");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(utf8(&body), format!("len={SIZE} intact=true"));
    eprintln!("upload: 100 MiB in {:?}", started.elapsed());
}

/// Reads from `socket` until the end of the response head.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = socket.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the connection ended in the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upgrade_becomes_a_raw_relay() {
    let (mut gw, ingress) = http_gateway().await;
    agent(&mut gw, 7, vec![("web", web_server().await)]).await;
    let mut socket = TcpStream::connect(ingress).await.unwrap();
    let head = "GET /ws HTTP/1.1\r\nHost: ingress.test\r\nConnection: Upgrade\r\n\
                Upgrade: echo\r\nX-Tether-Edge: 7\r\nX-Tether-Service: web\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let answer = within("the 101", read_head(&mut socket)).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("upgrade: echo"),
        "{answer}"
    );

    for round in 0..3 {
        let message = format!("raw frame {round} \u{1F600} not HTTP\r\n\r\n");
        socket.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        within("the echo", socket.read_exact(&mut echoed))
            .await
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    // Half-close crosses: our FIN makes the echo server close, which closes us.
    socket.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("the end", socket.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
}

// ---------- TCP port mappings ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mappings_relay_with_half_close_and_close_when_unreachable() {
    let yaml = "tcp_mappings:\n  - listen: 127.0.0.1:0\n    edge: 7\n    service: echo\n  \
                - {listen: 127.0.0.1:0, edge: 8, service: echo}\n  \
                - {listen: 127.0.0.1:0, edge: 7, service: nope}\n";
    let file = YamlFile::new(yaml);
    let mut gw = GatewayProcess::start(&["--config", file.arg()]).await;
    let echo = gw.listening_addr("tcp-mapping").await;
    let offline = gw.listening_addr("tcp-mapping").await;
    let unknown = gw.listening_addr("tcp-mapping").await;
    agent(&mut gw, 7, vec![("echo", echo_server().await)]).await;

    // Several connections at once, each a full round trip with half-close.
    let mut relays = Vec::new();
    for i in 0..4u8 {
        relays.push(tokio::spawn(async move {
            let data: Vec<u8> = (0..(1 << 20)).map(|n: u32| (n as u8) ^ i).collect();
            let socket = TcpStream::connect(echo).await.unwrap();
            let (mut r, mut w) = socket.into_split();
            let writer = tokio::spawn({
                let data = data.clone();
                async move {
                    w.write_all(&data).await.unwrap();
                    w.shutdown().await.unwrap();
                    w
                }
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            drop(writer.await.unwrap());
            assert!(back == data, "connection {i}: the echo differs");
        }));
    }
    for relay in relays {
        within("an echo through the mapping", relay).await.unwrap();
    }

    // An offline edge, an unknown service: the connection is closed, the reason logged.
    for (addr, logged) in [
        (offline, "code=\"EDGE_NOT_ONLINE\""),
        (unknown, "code=\"NOT_FOUND\""),
    ] {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = within("the close", socket.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let line = gw.log_line("cannot reach the edge's service").await;
        assert!(line.contains(logged), "{line}");
    }
}

// ---------- the HTTP → RPC relay ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_relay_calls_edges_and_services_and_maps_errors() {
    let (mut gw, ingress) = http_gateway().await;
    let service = Service::builder("svc")
        .method("echo", |req| async move {
            let source = req.service.unwrap_or_default();
            Ok(Bytes::from(format!("{source}:{}", utf8(&req.body))))
        })
        .method("slow", |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Bytes::new())
        })
        .method("fail", |_| async {
            Err(Error::application("boom: it broke"))
        })
        .method("busy", |_| async {
            Err(Error::Busy(String::from("later")))
        })
        .connect(gw.service_addr)
        .unwrap();
    within("the service connects", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["svc"]).await;
    let edge = Edge::builder()
        .edge_id(7)
        .method("status", |req| async move {
            let source = req.service.unwrap_or_default();
            Ok(Bytes::from(format!(
                "edge 7 ok for {source}: {}",
                utf8(&req.body)
            )))
        })
        .connect(gw.edge_addr)
        .unwrap();
    within("the edge connects", edge.wait_connected())
        .await
        .unwrap();
    gw.edge_joined(7).await;
    let mut http = client(ingress).await;

    let answer = send(&mut http, post("/rpc/edges/7/status", &[], b"ping")).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(utf8(&answer.1), "edge 7 ok for $http: ping");
    let answer = send(&mut http, post("/rpc/services/echo", &[], b"hi")).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(utf8(&answer.1), "$http:hi");
    let named = [("x-tether-service", "svc")];
    let answer = send(&mut http, post("/rpc/services/echo", &named, b"again")).await;
    assert_eq!(utf8(&answer.1), "$http:again");

    let answer = send(&mut http, post("/rpc/edges/99/status", &[], b"")).await;
    assert_error(&answer, 503, "EDGE_NOT_ONLINE", "edge 99");
    let other = [("x-tether-service", "other")];
    let answer = send(&mut http, post("/rpc/services/echo", &other, b"")).await;
    assert_error(&answer, 503, "SERVICE_NOT_ONLINE", "other");
    let answer = send(&mut http, post("/rpc/services/nope", &[], b"")).await;
    assert_error(&answer, 404, "METHOD_NOT_FOUND", "nope");
    let answer = send(&mut http, post("/rpc/edges/7/nope", &[], b"")).await;
    assert_error(&answer, 404, "METHOD_NOT_FOUND", "");

    let started = Instant::now();
    let short = [("x-tether-timeout-ms", "300")];
    let answer = send(&mut http, post("/rpc/services/slow", &short, b"")).await;
    assert_error(&answer, 504, "TIMEOUT", "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let answer = send(&mut http, post("/rpc/services/fail", &[], b"")).await;
    assert_error(&answer, 500, "APPLICATION_ERROR", "boom: it broke");
    let answer = send(&mut http, post("/rpc/services/busy", &[], b"")).await;
    assert_error(&answer, 429, "BUSY", "later");

    // Over max_message_size (1 MiB by default): 413, before any call.
    let big: &'static [u8] = Vec::leak(vec![7u8; 2 * MIB as usize]);
    // The gateway reads and discards the rest (up to 16 MiB), so the client sees the
    // answer and the connection stays usable.
    let answer = send(&mut http, post("/rpc/services/echo", &[], big)).await;
    assert_error(&answer, 413, "TOO_LARGE", "max_message_size");
    let chunked = request(
        "POST",
        "/rpc/services/echo",
        &[],
        Pattern::new(2 * MIB, false).boxed(),
    );
    let answer = send(&mut http, chunked).await;
    assert_error(&answer, 413, "TOO_LARGE", "max_message_size");

    let answer = send(&mut http, get("/rpc/services/echo", &[])).await;
    assert_error(&answer, 405, "BAD_REQUEST", "POST");
    let bad_timeout = [("x-tether-timeout-ms", "soon")];
    let answer = send(&mut http, post("/rpc/services/echo", &bad_timeout, b"")).await;
    assert_error(&answer, 400, "BAD_REQUEST", "X-Tether-Timeout-Ms");
    let answer = send(&mut http, post("/rpc/elsewhere", &[], b"")).await;
    assert_error(&answer, 404, "NOT_FOUND", "/rpc/services");
    drop(edge);
}

// ---------- shutdown ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_stops_with_the_gateway() {
    let (mut gw, ingress) = http_gateway().await;
    agent(&mut gw, 7, vec![("web", web_server().await)]).await;
    let mut http = client(ingress).await;
    let answer = send(&mut http, get("/edge/7/web/x", &[])).await;
    assert_eq!(answer.0, StatusCode::OK);
    gw.terminate();
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));
    assert!(TcpStream::connect(ingress).await.is_err());
}
