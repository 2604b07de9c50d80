//! Services and edges reaching a gateway stand-in by URL over real loopback sockets: TLS
//! (with and without client certificates), WebSocket and WebSocket over TLS, with
//! certificates made at test time (rcgen).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto_core::{Config, HandshakeAccept};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::{call_from_edge, call_from_service, gateway_call, spawn_echo, within};
use tether_tokio::endpoint::Endpoint;
use tether_tokio::tls::ClientTls;
use tether_tokio::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_tokio::tls::rustls::server::WebPkiClientVerifier;
use tether_tokio::tls::rustls::{self, RootCertStore, ServerConfig};
use tether_tokio::{
    ConnectExt, Connection, DriverConfig, Edge, Service, TokioTransport, endpoint_dialer, runtime,
    ws_transport,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A test CA with a server certificate (for `localhost` and `gateway.test`, not for any IP
/// address) and a client certificate.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Tether test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let names = vec![String::from("localhost"), String::from("gateway.test")];
        let mut server_params = CertificateParams::new(names).unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let mut client_params = CertificateParams::new(vec![String::from("edge-7")]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key_der: server_key.serialize_der(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// The gateway's TLS configuration, requiring a client certificate from this CA if
    /// `mtls`.
    fn server_config(&self, mtls: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mtls {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        Arc::new(
            builder
                .with_single_cert(self.server_chain.clone(), key)
                .unwrap(),
        )
    }

    /// A client configuration trusting this CA.
    fn client(&self) -> ClientTls {
        ClientTls::new().ca_pem(self.ca_pem.clone())
    }

    /// A client configuration trusting this CA and presenting the client certificate.
    fn client_with_cert(&self) -> ClientTls {
        self.client()
            .client_cert_pem(self.client_cert_pem.clone(), self.client_key_pem.clone())
    }
}

/// How the stand-in gateway wraps each accepted TCP connection.
#[derive(Clone)]
enum Wrap {
    Tls(Arc<ServerConfig>),
    Ws,
    Wss(Arc<ServerConfig>),
}

/// What the stand-in learned about one client: its session, the SNI it sent and the
/// WebSocket request path.
struct Accepted {
    conn: Connection,
    sni: Option<String>,
    ws_path: Option<String>,
}

/// A gateway stand-in on loopback behind TLS and/or WebSocket; failed TLS or WebSocket
/// handshakes are reported as errors.
struct TestGateway {
    addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Result<Accepted, String>>,
    task: JoinHandle<()>,
}

impl TestGateway {
    async fn start(wrap: Wrap) -> TestGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (tx, wrap) = (tx.clone(), wrap.clone());
                tokio::spawn(async move {
                    let _ = tx.send(serve(wrap, tcp, peer).await);
                });
            }
        });
        TestGateway {
            addr,
            sessions,
            task,
        }
    }

    /// The next client's outcome (panics after 20 s).
    async fn next(&mut self) -> Result<Accepted, String> {
        within("a client reaches the gateway", self.sessions.recv())
            .await
            .expect("the gateway stopped")
    }

    async fn session(&mut self) -> Accepted {
        self.next().await.unwrap_or_else(|e| panic!("{e}"))
    }

    fn url(&self, scheme: &str, host: &str, path: &str) -> String {
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Unwraps one connection as `wrap` says, then accepts its Tether handshake (edges get the
/// id they asked for, or 1).
async fn serve(
    wrap: Wrap,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<Accepted, String> {
    let ws_path = Arc::new(Mutex::new(None));
    // tungstenite's callback type fixes the (large) error type.
    #[allow(clippy::result_large_err)]
    let record_path = |path: Arc<Mutex<Option<String>>>| {
        move |req: &Request, resp: Response| {
            *path.lock().unwrap() = Some(req.uri().to_string());
            Ok(resp)
        }
    };
    let is_ws = matches!(wrap, Wrap::Wss(_));
    let (transport, sni) = match wrap {
        Wrap::Ws => {
            let ws = tokio_tungstenite::accept_hdr_async(tcp, record_path(Arc::clone(&ws_path)))
                .await
                .map_err(|e| format!("WebSocket accept: {e}"))?;
            (ws_transport(ws, Some(peer)), None)
        }
        Wrap::Tls(config) | Wrap::Wss(config) => {
            let tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|e| format!("TLS accept: {e}"))?;
            let sni = tls.get_ref().1.server_name().map(String::from);
            let transport = if is_ws {
                let ws =
                    tokio_tungstenite::accept_hdr_async(tls, record_path(Arc::clone(&ws_path)))
                        .await
                        .map_err(|e| format!("WebSocket accept: {e}"))?;
                ws_transport(ws, Some(peer))
            } else {
                Box::pin(TokioTransport::with_peer_addr(tls, peer))
            };
            (transport, sni)
        }
    };
    let hs = Connection::accept(
        runtime(),
        transport,
        Config::default(),
        DriverConfig::default(),
    )
    .await
    .map_err(|e| format!("Tether handshake: {e}"))?;
    let id = hs.hello().info.requested_id.unwrap_or(1);
    let conn = hs
        .accept(HandshakeAccept {
            assigned_id: id,
            ..Default::default()
        })
        .map_err(|e| format!("Tether accept: {e}"))?;
    let ws_path = ws_path.lock().unwrap().take();
    Ok(Accepted { conn, sni, ws_path })
}

/// An edge with an `echo` method, and the gateway's session with it: one call each way and
/// one publish.
async fn edge_round_trip(gw: &mut TestGateway, url: &str, tls: Option<ClientTls>) -> Accepted {
    let tls = tls.map(|t| t.build().unwrap());
    let edge = Edge::builder()
        .edge_id(7)
        .method("echo", |req| async move { Ok(req.body) })
        .connect_url(url, tls)
        .unwrap();
    let session = gw.session().await;
    assert_eq!(session.conn.assigned_id(), 7);

    let answer = gateway_call(
        &session.conn,
        call_from_service("svc", "echo", "ping".into()),
    );
    assert_eq!(answer.await.unwrap(), "ping");

    let echo = spawn_echo(session.conn.clone());
    let answer = within(
        "edge call",
        edge.call("anything", Bytes::from_static(b"pong")),
    )
    .await;
    assert_eq!(answer.unwrap(), "pong");
    echo.abort();

    let conn = session.conn.clone();
    let acknowledge = tokio::spawn(async move {
        let msg = conn.next_message().await.unwrap();
        assert_eq!((msg.topic(), &msg.body()[..]), ("telemetry", &b"21.5"[..]));
        msg.done();
    });
    within(
        "publish",
        edge.publish("telemetry", Bytes::from_static(b"21.5")),
    )
    .await
    .unwrap();
    acknowledge.await.unwrap();
    within("edge close", edge.close()).await;
    session
}

/// A service with a `whoami` method, and a call each way through the gateway's session.
async fn service_round_trip(
    gw: &mut TestGateway,
    dialer: tether_tokio::runtime::Dialer,
) -> Accepted {
    let service = Service::builder("billing")
        .method("whoami", |req| async move {
            Ok(Bytes::from(format!("edge {:?}", req.edge_id)))
        })
        .connect_with(dialer)
        .unwrap();
    let session = gw.session().await;
    let answer = gateway_call(&session.conn, call_from_edge(42, "whoami", Bytes::new()));
    assert_eq!(answer.await.unwrap(), "edge Some(42)");
    let echo = spawn_echo(session.conn.clone());
    let answer = within(
        "service call",
        service.call(42, "echo", Bytes::from_static(b"hi")),
    )
    .await;
    assert_eq!(answer.unwrap(), "hi");
    echo.abort();
    within("service close", service.close()).await;
    session
}

#[tokio::test]
async fn edge_over_tls() {
    let pki = Pki::new();
    let mut gw = TestGateway::start(Wrap::Tls(pki.server_config(false))).await;
    let url = gw.url("tls", "localhost", "");
    let session = edge_round_trip(&mut gw, &url, Some(pki.client())).await;
    assert_eq!(session.sni.as_deref(), Some("localhost"));
}

#[tokio::test]
async fn service_over_mutual_tls() {
    let pki = Pki::new();
    let mut gw = TestGateway::start(Wrap::Tls(pki.server_config(true))).await;
    let endpoint = Endpoint::parse(&gw.url("tls", "localhost", "")).unwrap();
    let dialer = endpoint_dialer(endpoint, Some(pki.client_with_cert().build().unwrap())).unwrap();
    service_round_trip(&mut gw, dialer).await;
}

// TLS 1.3 clients finish their handshake before the server checks their certificate: the
// refusal arrives as an alert on the first read.
#[tokio::test]
async fn mutual_tls_without_a_client_certificate_fails() {
    let pki = Pki::new();
    let mut gw = TestGateway::start(Wrap::Tls(pki.server_config(true))).await;
    let endpoint = Endpoint::parse(&gw.url("tls", "localhost", "")).unwrap();
    let dialer = endpoint_dialer(endpoint, Some(pki.client().build().unwrap())).unwrap();
    let mut transport = match within("dial", dialer()).await {
        Ok(transport) => transport,
        Err(e) => panic!("the handshake itself was expected to pass: {e}"),
    };
    let server = gw
        .next()
        .await
        .err()
        .expect("the gateway accepted no client certificate");
    assert!(server.contains("no certificates"), "{server}");
    let mut buf = [0u8; 16];
    let read = std::future::poll_fn(|cx| transport.as_mut().poll_read(cx, &mut buf));
    let e = within("read", read).await.expect_err("the gateway's alert");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
}

#[tokio::test]
async fn a_wrong_or_default_ca_refuses_the_gateway() {
    let (pki, other) = (Pki::new(), Pki::new());
    let gw = TestGateway::start(Wrap::Tls(pki.server_config(false))).await;
    let url = gw.url("tls", "localhost", "");
    for tls in [Some(other.client().build().unwrap()), None] {
        let dialer = endpoint_dialer(Endpoint::parse(&url).unwrap(), tls).unwrap();
        let e = within("dial", dialer())
            .await
            .err()
            .expect("an untrusted gateway");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("TLS handshake with {url} failed")),
            "{text}"
        );
        // The other CA has the same name: its signature, not its name, fails to match.
        assert!(text.contains("invalid peer certificate"), "{text}");
    }
}

#[tokio::test]
async fn the_server_name_override_is_checked_and_sent() {
    let pki = Pki::new();
    let mut gw = TestGateway::start(Wrap::Tls(pki.server_config(false))).await;
    // The certificate names no IP address: dialing 127.0.0.1 as such fails ...
    let by_ip = Endpoint::parse(&gw.url("tls", "127.0.0.1", "")).unwrap();
    let dialer = endpoint_dialer(by_ip.clone(), Some(pki.client().build().unwrap())).unwrap();
    let e = within("dial", dialer())
        .await
        .err()
        .expect("a name mismatch");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    let _ = gw.next().await;

    // ... and works with the name the certificate has, sent as SNI.
    let tls = pki.client().server_name("gateway.test");
    let endpoint = tls.apply_server_name(by_ip);
    assert_eq!(endpoint.tls_server_name(), Some("gateway.test"));
    let dialer = endpoint_dialer(endpoint, Some(tls.build().unwrap())).unwrap();
    let transport = within("dial", dialer()).await.unwrap();
    assert_eq!(transport.peer_addr(), Some(gw.addr));
    drop(transport);
    let _ = gw.next().await;
    let session = service_round_trip(&mut gw, dialer).await;
    assert_eq!(session.sni.as_deref(), Some("gateway.test"));
}

#[tokio::test]
async fn edge_over_websocket() {
    let mut gw = TestGateway::start(Wrap::Ws).await;
    let url = gw.url("ws", "127.0.0.1", "");
    let session = edge_round_trip(&mut gw, &url, None).await;
    assert_eq!(session.ws_path.as_deref(), Some("/tether"));
    assert!(session.conn.peer_addr().is_some());
}

#[tokio::test]
async fn edge_over_websocket_over_tls() {
    let pki = Pki::new();
    let mut gw = TestGateway::start(Wrap::Wss(pki.server_config(false))).await;
    let url = gw.url("wss", "localhost", "/edges?v=1");
    let session = edge_round_trip(&mut gw, &url, Some(pki.client())).await;
    assert_eq!(session.ws_path.as_deref(), Some("/edges?v=1"));
    assert_eq!(session.sni.as_deref(), Some("localhost"));
}

// Bodies larger than one WebSocket message (64 KiB per write) arrive whole, both ways.
#[tokio::test]
async fn large_bodies_cross_a_websocket() {
    let mut gw = TestGateway::start(Wrap::Ws).await;
    let edge = Edge::builder()
        .method("echo", |req| async move { Ok(req.body) })
        .connect_url(&gw.url("ws", "127.0.0.1", "/t"), None)
        .unwrap();
    let session = gw.session().await;
    let body: Bytes = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    let answer = gateway_call(
        &session.conn,
        call_from_service("svc", "echo", body.clone()),
    );
    assert!(answer.await.unwrap() == body);
    let echo = spawn_echo(session.conn.clone());
    let answer = within("edge call", edge.call("echo", body.clone())).await;
    assert!(answer.unwrap() == body);
    echo.abort();
}

// A WebSocket upgrade the server refuses is reported with its HTTP status.
#[tokio::test]
async fn a_refused_websocket_upgrade_names_the_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = tcp.read(&mut request).await.unwrap();
        let answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        tcp.write_all(answer).await.unwrap();
    });
    let endpoint = Endpoint::parse(&format!("ws://{addr}/nowhere")).unwrap();
    let dialer = endpoint_dialer(endpoint, None).unwrap();
    let e = within("dial", dialer())
        .await
        .err()
        .expect("a refused upgrade");
    let text = e.to_string();
    assert!(
        text.contains("WebSocket handshake with ws://127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("HTTP 404"), "{text}");
    server.await.unwrap();
}

#[tokio::test]
async fn bad_urls_and_tls_files_fail_at_start() {
    let e = Edge::builder()
        .connect_url("http://gw:80", None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("unknown scheme"), "{e}");
    let e = ClientTls::new()
        .ca_pem_file("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read the CA file /nonexistent/ca.pem"),
        "{e}"
    );
    let e = ClientTls::new().ca_pem("no pem here").build().unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let pki = Pki::new();
    let e = ClientTls::new()
        .client_cert_pem(pki.client_cert_pem.clone(), "not a key")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no usable private key"), "{e}");
    let e = pki.client().server_name("bad name!").build().unwrap_err();
    assert!(e.to_string().contains("server name"), "{e}");
}
