//! The SDK on smol: an edge and a service against a gateway stand-in that also runs on smol
//! (the server-side `Connection`), over loopback TCP.

use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Call, Config, ErrorCode, HandshakeAccept, OpenStream};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpListener;
use tether_smol::{
    ConnectExt, Connection, DriverConfig, Edge, Error, Service, runtime, tcp_transport,
};

/// Accepts clients on `listener`, giving each the id it asked for (or 9).
async fn accept(listener: &TcpListener) -> Connection {
    let (socket, _) = listener.accept().await.unwrap();
    let hs = Connection::accept(
        runtime(),
        tcp_transport(socket),
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

/// Bounds a step: smol has no built-in timeout, so race it against a timer.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    let timeout = async {
        smol::Timer::after(Duration::from_secs(20)).await;
        panic!("{what}: no outcome within 20 s")
    };
    smol::future::or(future, timeout).await
}

#[test]
fn an_edge_on_smol_calls_serves_publishes_and_streams() {
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let edge = Edge::builder()
            .edge_id(5)
            .method("double", |req| async move {
                Ok(Bytes::from([req.body.as_ref(), req.body.as_ref()].concat()))
            })
            .connect(addr)
            .unwrap();
        let gw = within("handshake", accept(&listener)).await;
        within("connected", edge.wait_connected()).await.unwrap();
        assert_eq!(edge.edge_id(), Some(5));

        // The gateway side calls the edge's method.
        let mut call = Call::new(Name::new("double").unwrap(), Bytes::from_static(b"ab"));
        call.address = Address {
            peer_id: 0,
            peer_name: Name::new("svc").unwrap(),
        };
        let answer = within("call edge", gw.call(call)).await.unwrap();
        assert_eq!(answer, Bytes::from_static(b"abab"));

        // The edge calls through the gateway side, which answers with an error.
        let answering = gw.clone();
        smol::spawn(async move {
            let req = answering.next_request().await.unwrap();
            req.respond(Err(Error::application("no such thing")));
        })
        .detach();
        let failed = within("call", edge.call("lookup", Bytes::new())).await;
        assert_eq!(failed, Err(Error::Application("no such thing".into())));

        // A publish resolves on the gateway side's ack.
        let acking = gw.clone();
        smol::spawn(async move {
            let msg = acking.next_message().await.unwrap();
            assert_eq!(msg.topic(), "telemetry");
            msg.done();
        })
        .detach();
        within(
            "publish",
            edge.publish("telemetry", Bytes::from_static(b"21.5")),
        )
        .await
        .unwrap();

        // A stream the gateway side opens is echoed by the edge through futures-io.
        let echoing = edge.clone();
        smol::spawn(async move {
            let mut stream = echoing.accept_stream().await.unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await.unwrap();
            stream.write_all(&all).await.unwrap();
            stream.close().await.unwrap();
        })
        .detach();
        let (mut stream, _) = within("open", gw.open_stream(OpenStream::default(), None))
            .await
            .unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let back = within("echo", async {
            stream.write_all(&data).await.unwrap();
            stream.close().await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            back
        })
        .await;
        assert!(back == data, "{} bytes came back", back.len());

        edge.close().await;
        assert_eq!(within("closed", gw.closed()).await.code(), ErrorCode::OK);
    });
}

#[test]
fn a_service_on_smol_reconnects_after_losing_the_gateway() {
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Service::builder("svc")
            .configure(|o| {
                o.backoff.initial = Duration::from_millis(20);
                o.backoff.max = Duration::from_millis(100);
            })
            .connect(addr)
            .unwrap();
        let first = within("first session", accept(&listener)).await;
        first.close(ErrorCode::INTERNAL, "gone");
        let second = within("second session", accept(&listener)).await;
        let answering = second.clone();
        smol::spawn(async move {
            let req = answering.next_request().await.unwrap();
            assert_eq!(req.address().peer_id, 3);
            req.respond(Ok(Bytes::from_static(b"pong")));
        })
        .detach();
        let answer = within("call", service.call(3, "ping", Bytes::new())).await;
        assert_eq!(answer.unwrap(), Bytes::from_static(b"pong"));
        service.close().await;
    });
}
