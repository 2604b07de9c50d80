//! Edges on smol reaching a smol gateway stand-in by URL over TLS and over WebSocket, on
//! loopback, with certificates made at test time (rcgen).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Call, Config, HandshakeAccept};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use smol::net::{TcpListener, TcpStream};
use tether_smol::tls::ClientTls;
use tether_smol::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_smol::tls::rustls::{self, ServerConfig};
use tether_smol::{
    ConnectExt, Connection, DriverConfig, Edge, SmolTransport, runtime, ws_transport,
};

/// Bounds a step: smol has no built-in timeout, so race it against a timer.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    let timeout = async {
        smol::Timer::after(Duration::from_secs(20)).await;
        panic!("{what}: no outcome within 20 s")
    };
    smol::future::or(future, timeout).await
}

/// A CA's PEM and a server configuration with a `localhost` certificate it signed.
fn tls_setup() -> (String, Arc<ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![String::from("localhost")])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

/// Accepts the Tether handshake on `transport`, giving the edge the id it asked for.
async fn accept(transport: tether_smol::runtime::BoxTransport) -> Connection {
    let hs = Connection::accept(
        runtime(),
        transport,
        Config::default(),
        DriverConfig::default(),
    )
    .await
    .unwrap();
    let id = hs.hello().info.requested_id.unwrap_or(9);
    hs.accept(HandshakeAccept {
        assigned_id: id,
        ..Default::default()
    })
    .unwrap()
}

/// Starts an edge with an `echo` method on `url`; the gateway calls it, then takes one
/// publish from it.
async fn edge_round_trip(
    url: &str,
    tls: Option<ClientTls>,
    gateway: impl std::future::Future<Output = Connection>,
) {
    let edge = Edge::builder()
        .edge_id(5)
        .method("echo", |req| async move { Ok(req.body) })
        .connect_url(url, tls.map(|t| t.build().unwrap()))
        .unwrap();
    let gw = within("the gateway accepts", gateway).await;
    within("connected", edge.wait_connected()).await.unwrap();

    let mut call = Call::new(Name::new("echo").unwrap(), Bytes::from_static(b"ping"));
    call.address = Address {
        peer_id: 0,
        peer_name: Name::new("svc").unwrap(),
    };
    assert_eq!(within("call", gw.call(call)).await.unwrap(), "ping");

    let acknowledge = smol::spawn(async move {
        let msg = gw.next_message().await.unwrap();
        assert_eq!(&msg.body()[..], b"21.5");
        msg.done();
        gw
    });
    within(
        "publish",
        edge.publish("telemetry", Bytes::from_static(b"21.5")),
    )
    .await
    .unwrap();
    let _gw = acknowledge.await;
    within("close", edge.close()).await;
}

#[test]
fn an_edge_on_smol_over_tls() {
    smol::block_on(async {
        let (ca_pem, server_config) = tls_setup();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("tls://localhost:{}", listener.local_addr().unwrap().port());
        let gateway = async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let tls = futures_rustls::TlsAcceptor::from(server_config)
                .accept(tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.server_name(), Some("localhost"));
            accept(Box::pin(SmolTransport::with_peer_addr(tls, peer))).await
        };
        edge_round_trip(&url, Some(ClientTls::new().ca_pem(ca_pem)), gateway).await;
    });
}

#[test]
fn an_edge_on_smol_over_websocket() {
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://127.0.0.1:{}/ws",
            listener.local_addr().unwrap().port()
        );
        let gateway = async move {
            let (tcp, peer): (TcpStream, _) = listener.accept().await.unwrap();
            let ws = async_tungstenite::accept_async(tcp).await.unwrap();
            accept(ws_transport(ws, Some(peer))).await
        };
        edge_round_trip(&url, None, gateway).await;
    });
}
