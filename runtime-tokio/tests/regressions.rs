//! Regression tests for driver and client bugs found in review: pending flushes, draining
//! sessions, expired deadlines.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proto_core::{Address, ClientInfo, Config, ErrorCode, HandshakeAccept, Publish, Role};
use support::*;
use tether_tokio::{
    ConnectExt, Connection, DriverConfig, Error, Options, Service, runtime, transport,
};

// A transport whose `poll_flush` returns `Pending` (a TLS or WebSocket stream whose socket
// is full, here a `BufWriter` over a small pipe) must be flushed again once it can make
// progress: the bytes it holds are otherwise stuck until the next write.
#[tokio::test]
async fn a_flush_that_returned_pending_is_retried() {
    // 64 bytes of pipe: the client's preface and HELLO do not fit in one go.
    let (near, far) = tokio::io::duplex(64);
    let server = tokio::spawn(async move {
        let hs = Connection::accept(
            runtime(),
            transport(far),
            Config::default(),
            DriverConfig::default(),
        )
        .await
        .unwrap();
        hs.accept(HandshakeAccept {
            assigned_id: 7,
            ..Default::default()
        })
        .unwrap()
    });
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(
            runtime(),
            transport(tokio::io::BufWriter::new(near)),
            Config::default(),
            ClientInfo::new(Role::Edge),
            DriverConfig::default(),
        ),
    )
    .await
    .expect("the HELLO stayed in the transport's buffer: its flush was never retried")
    .unwrap();
    assert_eq!(client.assigned_id(), 7);
    let _server = within("server", server).await.unwrap();
}

// A message the gateway delivered before its GOAWAY must still be received while the
// client has no new session yet (the gateway is going down and refuses connections):
// the draining session is the only one that has it.
#[tokio::test]
async fn a_draining_session_is_served_while_there_is_no_new_session() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s")
        .topic("t")
        .configure(|o: &mut Options| o.backoff = quick_backoff())
        .connect(gw.addr)
        .unwrap();
    let old = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    let frames_before = service.connection().unwrap().stats().frames_in;
    // The gateway stops accepting, sends one message, and starts shutting down.
    gw.stop_listening();
    let mut publish = Publish::new(wire_name("t"), Bytes::from_static(b"before goaway"));
    publish.address = Address {
        peer_id: 5,
        ..Default::default()
    };
    let acked = tokio::spawn({
        let conn = old.conn.clone();
        async move { conn.publish(publish).await }
    });
    eventually("the message reached the client", || {
        service
            .connection()
            .is_some_and(|c| c.stats().frames_in > frames_before)
    })
    .await;
    old.conn.go_away(ErrorCode::GOING_AWAY, "shutting down");
    // The client sees the GOAWAY and drops the session as its current one.
    eventually("the session was uninstalled", || {
        service.connection().is_none()
    })
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(3), service.receive())
        .await
        .expect("receive() waits for a new session instead of the draining one")
        .expect("closed");
    assert_eq!(msg.body(), &Bytes::from_static(b"before goaway"));
    msg.done();
    assert_eq!(within("acked", acked).await.unwrap(), Ok(()));
}

// A call whose deadline has (just) passed when it is queued must time out, not lose its
// timeout: the core reads a zero timeout as "none", and the call then waits forever.
#[tokio::test]
async fn a_call_queued_at_its_deadline_times_out() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    // The gateway takes the request and never answers it.
    let _held = tokio::spawn(async move {
        let req = session.conn.next_request().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop((req, session));
    });
    let result = tokio::time::timeout(
        Duration::from_secs(3),
        service.call_with_timeout(1, "m", Bytes::new(), Some(Duration::from_nanos(1))),
    )
    .await
    .expect("the call lost its timeout and waits forever");
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
}

// Same through `Connection::publish` with an acknowledgement.
#[tokio::test]
async fn a_publish_queued_at_its_deadline_times_out() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    let conn = service.connection().unwrap();
    let _held = tokio::spawn(async move {
        let msg = session.conn.next_message().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop((msg, session));
    });
    let mut publish = Publish::new(wire_name("t"), Bytes::new());
    publish.timeout = Some(Duration::from_nanos(1));
    let result = tokio::time::timeout(Duration::from_secs(3), conn.publish(publish))
        .await
        .expect("the publish lost its timeout and waits forever");
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
}
