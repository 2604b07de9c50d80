//! Before a peer is admitted: stalled TLS, WebSocket and protocol handshakes are cut at
//! their deadlines while new connections are still served, and the caps on
//! unauthenticated connections refuse floods at accept time.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use tether_testkit::pki::{Ca, TempDir, Validity, yaml_path};
use tether_tokio::tls::ClientTls;
use tether_tokio::{ConnectExt, Edge, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of the handshake counter for `role` and `result` in `/metrics`.
async fn handshakes(gw: &GatewayProcess, role: &str, result: &str) -> f64 {
    let answer = control(gw.control_addr, "GET", "/metrics", None).await;
    let series = format!("tether_handshakes_total{{role=\"{role}\",result=\"{result}\"}} ");
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{}", answer.body))
        .parse()
        .unwrap()
}

/// A connection that sends `bytes` and then nothing.
async fn stall(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, Instant) {
    stall_from("127.0.0.1", addr, bytes).await
}

/// A connection from the loopback address `source` that sends `bytes` and then nothing.
async fn stall_from(source: &str, addr: SocketAddr, bytes: &[u8]) -> (TcpStream, Instant) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut socket = socket.connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    (socket, Instant::now())
}

/// Waits for the gateway to close `socket` (EOF or reset, after any bytes it sends), and
/// returns how long after `since` that was.
async fn closed_after(socket: &mut TcpStream, since: Instant) -> Duration {
    let mut sink = [0u8; 1024];
    let read_all = async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the gateway did not close a stalled connection within 10 s")
}

/// Whether the gateway still holds `socket` open (nothing to read, no EOF).
async fn still_open(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(100), socket.read(&mut byte))
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_cut_at_their_deadlines_while_new_connections_are_served() {
    let dir = TempDir::new("deadlines");
    let ca = Ca::new("server CA");
    let server = ca.server(&dir, "server", &["localhost"], Validity::Current);
    let ca_file = ca.write(&dir, "ca.pem");
    let yaml = format!(
        "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\nhook_timeout_ms: 500\n\
         edge_tls:\n  certs: [{{cert: {}, key: {}}}]\n\
         admission: {{transport_handshake_timeout_ms: 700}}\n\
         protocol: {{handshake_timeout_ms: 900}}\n",
        yaml_path(&server.cert),
        yaml_path(&server.key)
    );
    let config = dir.write("gateway.yaml", &yaml);
    let gw = GatewayProcess::start_with(&["--config", &config.display().to_string()], &[]).await;

    // TLS listener: silence, and half a ClientHello. Plain service listener: silence, and
    // half the preface (the protocol handshake's own deadline).
    let mut stalled = vec![
        ("TLS, silent", stall(gw.edge_addr, b"").await, 700),
        (
            "TLS, partial",
            stall(gw.edge_addr, &[0x16, 0x03, 0x01]).await,
            700,
        ),
        ("protocol, silent", stall(gw.service_addr, b"").await, 900),
        (
            "protocol, partial",
            stall(gw.service_addr, &[0x89, b'T']).await,
            900,
        ),
    ];

    // While those hang, new peers are admitted and work.
    let service = Service::builder("echo")
        .method("echo", |req| async move { Ok(req.body) })
        .connect(gw.service_addr)
        .unwrap();
    let tls = ClientTls::new().ca_pem_file(&ca_file).build().unwrap();
    let url = format!("tls://localhost:{}", gw.edge_addr.port());
    let edge = Edge::builder().connect_url(&url, Some(tls)).unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    let answer = within("rpc", edge.call("echo", Bytes::from_static(b"hi"))).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"hi"));

    for (what, (socket, since), deadline_ms) in &mut stalled {
        let after = closed_after(socket, *since).await;
        // Never before the deadline (the gateway cannot know sooner that it stalled).
        assert!(
            after >= Duration::from_millis(*deadline_ms * 8 / 10),
            "{what}: cut after {after:?}, before its {deadline_ms} ms deadline"
        );
    }
    // The admitted peers are unaffected by the cuts.
    let answer = within("rpc", edge.call("echo", Bytes::from_static(b"on"))).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"on"));
    // Each cut is counted as a timeout, on its listener.
    assert_eq!(handshakes(&gw, "edge", "timeout").await, 2.0);
    assert_eq!(handshakes(&gw, "service", "timeout").await, 2.0);
    assert_eq!(handshakes(&gw, "edge", "accepted").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_unauthenticated_connections_are_refused_at_accept() {
    let dir = TempDir::new("caps");
    let yaml = "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
                admission: {max_unauthenticated: 6, max_unauthenticated_per_ip: 3, \
                transport_handshake_timeout_ms: 30000}\nhook_timeout_ms: 5000\n\
                protocol: {handshake_timeout_ms: 30000}\n";
    let config = dir.write("gateway.yaml", yaml);
    let gw = GatewayProcess::start_with(&["--config", &config.display().to_string()], &[]).await;

    // Completed handshakes give their slot back: more peers than the cap connect in turn.
    let mut edges = Vec::new();
    for _ in 0..5 {
        let edge = Edge::builder().connect(gw.edge_addr).unwrap();
        within("edge up", edge.wait_connected()).await.unwrap();
        edges.push(edge);
    }

    // Three stalled connections from 127.0.0.1 fill its share; the fourth is refused at
    // once while the three stay open.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stall(gw.edge_addr, b"").await);
    }
    let (mut fourth, since) = stall(gw.edge_addr, b"").await;
    closed_after(&mut fourth, since).await;
    for (socket, _) in &mut stalled {
        assert!(
            still_open(socket).await,
            "a stalled connection was cut early"
        );
    }
    // The same address still cannot get a new peer in...
    let blocked = Edge::builder()
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    assert!(within("blocked", blocked.wait_connected()).await.is_err());
    // ...until its stalled connections go away.
    stalled.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let edge = Edge::builder()
            .reconnect(false)
            .connect(gw.edge_addr)
            .unwrap();
        if within("edge after", edge.wait_connected()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Over all addresses: 3 + 3 stalled fill the global cap of 6, so a seventh from a
    // third address is refused although that address has no connection yet.
    for source in [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.2",
    ] {
        stalled.push(stall_from(source, gw.edge_addr, b"").await);
    }
    let (mut seventh, since) = stall_from("127.0.0.3", gw.edge_addr, b"").await;
    closed_after(&mut seventh, since).await;
    for (socket, _) in &mut stalled {
        assert!(
            still_open(socket).await,
            "a stalled connection was cut early"
        );
    }
    // Refusals at accept are counted (the fourth, the blocked edge's attempts, the seventh).
    assert!(handshakes(&gw, "edge", "overloaded").await >= 3.0);
    // The established peers never noticed.
    for edge in &edges {
        assert!(edge.connection().is_some());
    }
}
