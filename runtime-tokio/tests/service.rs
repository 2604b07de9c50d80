//! The service SDK against a gateway stand-in.

mod support;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Call, ErrorCode};
use support::*;
use tether_tokio::{ConnectExt, Error, Service};

#[tokio::test]
async fn calls_an_edge_and_serves_calls_from_edges() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("billing")
        .method("echo", |req| async move {
            assert_eq!(req.edge_id, Some(42));
            Ok(req.body)
        })
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;
    assert_eq!(session.hello.info.name.as_str(), "billing");

    // The "edge" answers the service's call.
    let conn = session.conn.clone();
    tokio::spawn(async move {
        let req = conn.next_request().await.unwrap();
        assert_eq!(req.address().peer_id, 7);
        assert_eq!(req.method(), "ping");
        req.respond(Ok(Bytes::from_static(b"pong")));
    });
    let answer = within("call", service.call(7, "ping", Bytes::from_static(b"?"))).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"pong"));

    // An "edge" calls the service's method through the gateway.
    let mut call = Call::new(Name::new("echo").unwrap(), Bytes::from_static(b"hello"));
    call.address = Address {
        peer_id: 42,
        peer_name: Name::EMPTY,
    };
    let echoed = within("echo", session.conn.call(call)).await.unwrap();
    assert_eq!(echoed, Bytes::from_static(b"hello"));

    let missing = Call::new(Name::new("nope").unwrap(), Bytes::new());
    let err = within("missing", session.conn.call(missing))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MethodNotFound(_)), "{err:?}");

    service.close().await;
    assert_eq!(
        within("after close", service.call(7, "ping", Bytes::new())).await,
        Err(Error::Closed)
    );
    assert!(service.receive().await.is_none());
    let why = session.conn.closed().await;
    assert_eq!(why.code(), ErrorCode::OK);
}

#[tokio::test]
async fn reconnects_and_registers_again() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let first = gw.session().await;
    service
        .register("late", |_| async { Ok(Bytes::from_static(b"late")) })
        .unwrap();
    first.conn.close(ErrorCode::INTERNAL, "boom");
    let second = gw.session().await;
    assert!(
        second
            .hello
            .info
            .registrations
            .iter()
            .any(|r| r.name.as_str() == "late")
    );
    let answer = within("call after reconnect", async {
        let conn = second.conn.clone();
        tokio::spawn(async move {
            let req = conn.next_request().await.unwrap();
            req.respond(Ok(Bytes::from_static(b"ok")));
        });
        service.call(1, "m", Bytes::new()).await
    })
    .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"ok"));
}
