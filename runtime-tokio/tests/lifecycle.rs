//! A client's life against the gateway stand-in: closing, dropping, refused handshakes,
//! an absent or silent gateway, reconnecting (keeping an edge's id, re-serving handlers and
//! receivers) and moving to a new session when the gateway says GOAWAY.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proto_core::{Address, Config, ConnectionError, ErrorCode, Publish};
use support::*;
use tether_tokio::{ConnectExt, Edge, Error, Options, Service};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Options for clients that must reconnect quickly.
fn quick(options: &mut Options) {
    options.backoff = quick_backoff();
}

/// A gateway that refuses every client with `UNAUTHORIZED` until `admit` is set.
async fn strict_gateway(admit: Arc<AtomicBool>) -> MockGateway {
    let policy = move |_: &proto_core::Hello| {
        if admit.load(Ordering::SeqCst) {
            Decision::Accept(1)
        } else {
            Decision::Reject(ErrorCode::UNAUTHORIZED, "bad token")
        }
    };
    MockGateway::with_policy(Config::default(), Arc::new(policy)).await
}

/// `service.call(1, "m", body)` on its own task.
fn spawn_call(service: &Service, body: &'static [u8]) -> JoinHandle<Result<Bytes, Error>> {
    let service = service.clone();
    tokio::spawn(async move { service.call(1, "m", Bytes::from_static(body)).await })
}

/// `edge.call("m", empty)` on its own task.
fn spawn_edge_call(edge: &Edge) -> JoinHandle<Result<Bytes, Error>> {
    let edge = edge.clone();
    tokio::spawn(async move { edge.call("m", Bytes::new()).await })
}

/// A message as if edge 5 published it on topic `t`.
fn from_edge_5(body: &'static [u8], ack: bool) -> Publish {
    let mut publish = Publish::new(wire_name("t"), Bytes::from_static(body));
    publish.address = Address {
        peer_id: 5,
        ..Default::default()
    };
    publish.ack = ack;
    publish
}

// close(): pending receive()/accept_stream() return None, later operations fail with
// Closed, and the gateway sees a graceful close.
#[tokio::test]
async fn close_ends_pending_and_later_operations() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    let (s, e) = (service.clone(), edge.clone());
    let pending = tokio::spawn(async move {
        let (a, b, c, d) = tokio::join!(
            s.receive(),
            s.accept_stream(),
            e.receive(),
            e.accept_stream()
        );
        [a.is_none(), b.is_none(), c.is_none(), d.is_none()]
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    within("service close", service.close()).await;
    within("edge close", edge.close()).await;
    assert_eq!(
        within("pending receivers", pending).await.unwrap(),
        [true; 4]
    );
    let later = [
        within("call", service.call(1, "m", Bytes::new()))
            .await
            .map(drop),
        within("publish", service.publish(1, Bytes::new())).await,
        within("fire", service.publish_fire_and_forget(1, Bytes::new())).await,
        within("open", service.open_stream(1, Bytes::new()))
            .await
            .map(drop),
        within("wait", service.wait_connected()).await,
        within("edge call", edge.call("m", Bytes::new()))
            .await
            .map(drop),
        within("edge publish", edge.publish("t", Bytes::new())).await,
        within("edge open", edge.open_stream("s", Bytes::new()))
            .await
            .map(drop),
        within("edge wait", edge.wait_connected()).await,
    ];
    assert_eq!(later, [(); 9].map(|()| Err(Error::Closed)));
    assert!(service.connection().is_none() && edge.connection().is_none());
    for session in &sessions {
        let why = within("gateway sees the close", session.conn.closed()).await;
        assert_eq!(why.code(), ErrorCode::OK, "{why:?}");
    }
    assert_eq!(gw.hellos().len(), 2, "a closed client does not reconnect");
}

// close() while disconnected fails the calls waiting for a connection with Closed.
#[tokio::test]
async fn close_fails_calls_waiting_for_a_connection() {
    let service = Service::builder("s")
        .configure(quick)
        .connect(unused_addr().await);
    let service = service.unwrap();
    let edge = Edge::builder()
        .configure(quick)
        .connect(unused_addr().await)
        .unwrap();
    let waiting = [spawn_call(&service, b""), spawn_edge_call(&edge)];
    let failed_once = || service.last_error().is_some() && edge.last_error().is_some();
    eventually("a failed attempt", failed_once).await;
    assert!(!waiting[0].is_finished() && !waiting[1].is_finished());
    within("close", async {
        tokio::join!(service.close(), edge.close())
    })
    .await;
    for call in waiting {
        assert_eq!(
            within("waiting call", call).await.unwrap(),
            Err(Error::Closed)
        );
    }
}

// close() drains: a call in flight when closing still gets its answer, then the session
// ends.
#[tokio::test]
async fn close_lets_calls_in_flight_finish() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let call = spawn_call(&service, b"");
    let req = within("request", session.conn.next_request())
        .await
        .unwrap();
    let closing = tokio::spawn({
        let s = service.clone();
        async move { s.close().await }
    });
    within("GOAWAY", session.conn.going_away_or_closed()).await;
    assert!(session.conn.is_going_away() && !session.conn.is_closed());
    req.respond(Ok(Bytes::from_static(b"last")));
    assert_eq!(
        within("call", call).await.unwrap(),
        Ok(Bytes::from_static(b"last"))
    );
    within("close", closing).await.unwrap();
    // How the gateway side reports the end is checked by the drain test below.
    within("closed", session.conn.closed()).await;
}

// A drain that completes when the gateway's last response goes out is a graceful end, and
// the gateway-side connection must say so: PeerClosed(OK) when the client closed,
// LocallyClosed(GOING_AWAY) after its own GOAWAY (not TransportClosed).
#[tokio::test]
async fn a_drain_that_ends_with_the_last_response_is_reported_as_graceful() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let (to_service, to_edge) = service_and_edge_sessions(&mut gw, "s").await;

    // The service closes with a call in flight; the gateway answers it last.
    let call = spawn_call(&service, b"");
    let req = within("request", to_service.conn.next_request())
        .await
        .unwrap();
    let closing = tokio::spawn(async move { service.close().await });
    within("GOAWAY", to_service.conn.going_away_or_closed()).await;
    req.respond(Ok(Bytes::new()));
    assert_eq!(within("call", call).await.unwrap(), Ok(Bytes::new()));
    within("close", closing).await.unwrap();
    let why = within("closed", to_service.conn.closed()).await;
    let graceful = matches!(&why, ConnectionError::PeerClosed { code, .. } if code.is_ok());
    assert!(graceful, "{why:?}");

    // The gateway sends GOAWAY with an edge's call in flight, then answers it last.
    let call = spawn_edge_call(&edge);
    let req = within("request", to_edge.conn.next_request())
        .await
        .unwrap();
    to_edge.conn.go_away(ErrorCode::GOING_AWAY, "restart");
    req.respond(Ok(Bytes::new()));
    assert_eq!(within("call", call).await.unwrap(), Ok(Bytes::new()));
    let why = within("closed", to_edge.conn.closed()).await;
    let graceful = matches!(&why, ConnectionError::LocallyClosed { code, .. }
        if *code == ErrorCode::GOING_AWAY);
    assert!(graceful, "{why:?}");
}

// Dropping one clone keeps the session; dropping the last Service/Edge handle closes it.
#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").method("m", |r| async move { Ok(r.body) });
    let service = service.connect(gw.addr).unwrap();
    let edge = Edge::builder().method("m", |r| async move { Ok(r.body) });
    let edge = edge.connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    let (service2, edge2) = (service.clone(), edge.clone());
    drop((service, edge));
    for session in &sessions {
        let answer = gateway_call(&session.conn, call_from_edge(1, "m", "x".into())).await;
        assert_eq!(answer.unwrap(), "x", "the session ended with a clone left");
    }
    drop((service2, edge2));
    for session in &sessions {
        let why = within("closed after the last drop", session.conn.closed()).await;
        assert_eq!(why.code(), ErrorCode::OK, "{why:?}");
    }
}

// Without reconnection, a refused handshake is final: wait_connected and operations fail
// with the gateway's code, and no second attempt is made.
#[tokio::test]
async fn a_refused_client_without_reconnect_gives_up() {
    let gw = strict_gateway(Arc::new(AtomicBool::new(false))).await;
    let service = Service::builder("s").token(&b"wrong"[..]).reconnect(false);
    let service = service.connect(gw.addr).unwrap();
    let edge = Edge::builder().reconnect(false).connect(gw.addr).unwrap();
    let refused = Error::Unauthorized("bad token".into());
    assert_eq!(
        within("service", service.wait_connected()).await,
        Err(refused.clone())
    );
    assert_eq!(
        within("edge", edge.wait_connected()).await,
        Err(refused.clone())
    );
    assert_eq!(service.last_error(), Some(refused.clone()));
    let call = within("call", service.call(1, "m", Bytes::new())).await;
    assert_eq!(call, Err(refused.clone()));
    let publish = within("publish", edge.publish("t", Bytes::new())).await;
    assert_eq!(publish, Err(refused));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.hellos().len(), 2, "one attempt each");
}

// With reconnection, a refusing gateway is retried (several HELLOs) without resolving
// wait_connected, until it admits the client.
#[tokio::test]
async fn a_refused_client_with_reconnect_keeps_trying() {
    let admit = Arc::new(AtomicBool::new(false));
    let mut gw = strict_gateway(admit.clone()).await;
    let edge = Edge::builder().configure(quick).connect(gw.addr).unwrap();
    eventually("three attempts", || gw.hellos().len() >= 3).await;
    assert_eq!(
        edge.last_error(),
        Some(Error::Unauthorized("bad token".into()))
    );
    let early = tokio::time::timeout(Duration::from_millis(50), edge.wait_connected()).await;
    assert!(
        early.is_err(),
        "wait_connected resolved while refused: {early:?}"
    );
    admit.store(true, Ordering::SeqCst);
    within("admitted", edge.wait_connected()).await.unwrap();
    let _session = gw.session().await;
    assert_eq!(edge.edge_id(), Some(1));
    assert!(gw.hellos().iter().all(|h| h.info.requested_id.is_none()));
}

// With no gateway listening, calls, publishes and stream opens fail with NotConnected once
// their timeout passes; that error is safe to retry.
#[tokio::test]
async fn operations_fail_with_not_connected_when_no_gateway_listens() {
    let addr = unused_addr().await;
    let short = |o: &mut Options| {
        quick(o);
        o.default_timeout = Duration::from_millis(300);
    };
    let service = Service::builder("s")
        .configure(short)
        .connect(addr)
        .unwrap();
    let edge = Edge::builder().configure(short).connect(addr).unwrap();
    let timeout = Some(Duration::from_millis(300));
    let results = [
        within(
            "call",
            service.call_with_timeout(1, "m", Bytes::new(), timeout),
        )
        .await
        .err(),
        within("publish", service.publish(1, Bytes::new()))
            .await
            .err(),
        within(
            "edge call",
            edge.call_service(None, "m", Bytes::new(), timeout),
        )
        .await
        .err(),
        within("edge publish", edge.publish("t", Bytes::new()))
            .await
            .err(),
        within("edge open", edge.open_stream("s", Bytes::new()))
            .await
            .err(),
    ];
    for err in results {
        let err = err.expect("succeeded without a gateway");
        assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
        assert!(err.is_safe_to_retry());
    }
    assert!(matches!(service.last_error(), Some(Error::NotConnected(_))));
    assert!(service.connection().is_none());
}

// A gateway that accepts TCP but never answers the HELLO: each attempt is abandoned after
// the connect timeout (NotConnected) and the client tries again.
#[tokio::test]
async fn a_silent_gateway_is_abandoned_after_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let short = |o: &mut Options| {
        quick(o);
        o.connect_timeout = Duration::from_millis(200);
    };
    let service = Service::builder("s")
        .configure(short)
        .connect(addr)
        .unwrap();
    eventually("two attempts", || accepted.load(Ordering::SeqCst) >= 2).await;
    let err = service.last_error().expect("no error recorded");
    assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
    let call = service.call_with_timeout(1, "m", Bytes::new(), Some(Duration::from_millis(300)));
    let err = within("call", call).await.unwrap_err();
    assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
    holder.abort();
}

// A call started while the gateway is down waits for it and succeeds once it comes up on
// the same address.
#[tokio::test]
async fn a_call_made_before_the_gateway_comes_up_succeeds() {
    let addr = unused_addr().await;
    let service = Service::builder("s")
        .configure(quick)
        .connect(addr)
        .unwrap();
    let call = spawn_call(&service, b"early");
    eventually("a failed attempt", || service.last_error().is_some()).await;
    assert!(!call.is_finished());
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut gw = MockGateway::on_listener(listener, Config::default(), accept_all());
    let session = gw.session().await;
    spawn_echo(session.conn.clone());
    let answer = within("early call", call).await.unwrap();
    assert_eq!(answer, Ok(Bytes::from_static(b"early")));
}

// An edge that loses its session asks for the id it was given when it reconnects.
#[tokio::test]
async fn a_reconnecting_edge_asks_for_its_id() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder().configure(quick).connect(gw.addr).unwrap();
    let first = gw.session().await;
    assert_eq!(first.hello.info.requested_id, None);
    within("up", edge.wait_connected()).await.unwrap();
    let id = edge.edge_id().unwrap();
    first.conn.close(ErrorCode::KICKED, "bye");
    let second = gw.session().await;
    assert_eq!(second.hello.info.requested_id, Some(id));
    assert_eq!(second.conn.assigned_id(), id);
    assert_eq!(edge.edge_id(), Some(id));
}

// When the gateway closes the session, a call in flight fails with ConnectionLost (its
// outcome is unknown), and the client reconnects: its methods and calls work again.
#[tokio::test]
async fn the_client_reconnects_after_the_gateway_closes_the_session() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder()
        .configure(quick)
        .method("m", |r| async move { Ok(r.body) });
    let edge = edge.connect(gw.addr).unwrap();
    let first = gw.session().await;
    let call = spawn_edge_call(&edge);
    let _req = within("request", first.conn.next_request()).await.unwrap();
    first.conn.close(ErrorCode::INTERNAL, "boom");
    let lost = within("lost call", call).await.unwrap().unwrap_err();
    assert!(matches!(lost, Error::ConnectionLost(_)), "{lost:?}");
    assert!(!lost.is_safe_to_retry());

    let second = gw.session().await;
    assert!(
        second
            .hello
            .info
            .registrations
            .iter()
            .any(|r| r.name.as_str() == "m")
    );
    spawn_echo(second.conn.clone());
    let answer = within("call again", edge.call("again", Bytes::from_static(b"2"))).await;
    assert_eq!(answer.unwrap(), "2");
    let served = gateway_call(&second.conn, call_from_service("s", "m", "y".into())).await;
    assert_eq!(served.unwrap(), "y");
}

// Without reconnection, losing the session ends the client: operations fail at once with
// the loss instead of waiting, and no second HELLO comes.
#[tokio::test]
async fn without_reconnect_a_lost_session_ends_the_client() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s")
        .reconnect(false)
        .connect(gw.addr)
        .unwrap();
    let first = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    first.conn.close(ErrorCode::KICKED, "operator");
    eventually("the client notices", || service.last_error().is_some()).await;
    let err = within("wait", service.wait_connected()).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::KICKED);
    let call = within("call", service.call(1, "m", Bytes::new())).await;
    assert!(matches!(call, Err(Error::ConnectionLost(_))), "{call:?}");
    assert!(within("receive", service.receive()).await.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.hellos().len(), 1);
}

// GOAWAY from the gateway: the client opens a new session at once, a call in flight on
// the old one still gets its answer, and new calls go to the new session.
#[tokio::test]
async fn goaway_moves_the_client_to_a_new_session() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let old = gw.session().await;
    let call = spawn_call(&service, b"old");
    let req = within("request", old.conn.next_request()).await.unwrap();
    old.conn.go_away(ErrorCode::GOING_AWAY, "restart");
    let new = gw.session().await;
    spawn_echo(new.conn.clone());
    let answer = within(
        "call on the new session",
        service.call(2, "m", "new".into()),
    )
    .await;
    assert_eq!(answer.unwrap(), "new");

    req.respond(Ok(Bytes::from_static(b"drained")));
    assert_eq!(
        within("old call", call).await.unwrap(),
        Ok(Bytes::from_static(b"drained"))
    );
    // How the old session's end is reported is checked by the drain test above.
    within("old session ends", old.conn.closed()).await;
    assert_eq!(gw.hellos().len(), 2);
}

// receive() keeps working across a reconnect: a receiver waiting when the session is lost
// gets the next message on the new session.
#[tokio::test]
async fn receive_continues_on_the_next_session() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s")
        .topic("t")
        .configure(quick)
        .connect(gw.addr)
        .unwrap();
    let first = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    let receiver = tokio::spawn({
        let s = service.clone();
        async move {
            let msg = s.receive().await.expect("closed");
            let body = msg.body().clone();
            msg.done();
            body
        }
    });
    tokio::task::yield_now().await;
    first.conn.close(ErrorCode::KICKED, "bye");
    let second = gw.session().await;
    assert_eq!(
        within("acked", second.conn.publish(from_edge_5(b"after", true))).await,
        Ok(())
    );
    assert_eq!(within("receiver", receiver).await.unwrap(), "after");
}

// After a GOAWAY, the old session may drain for a long time (here: a call the gateway
// keeps unanswered). A receiver that was waiting when the GOAWAY came must still get what
// arrives on the new session, and promptly, not once the old session has finished.
#[tokio::test]
async fn a_waiting_receiver_moves_to_the_new_session_after_goaway() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").topic("t").connect(gw.addr).unwrap();
    let old = gw.session().await;
    within("up", service.wait_connected()).await.unwrap();
    let receiver = tokio::spawn({
        let s = service.clone();
        async move { s.receive().await.map(|msg| msg.body().clone()) }
    });
    // Keep the old session draining: a call from the service that nobody answers yet.
    let call = spawn_call(&service, b"");
    let held = within("request", old.conn.next_request()).await.unwrap();
    old.conn.go_away(ErrorCode::GOING_AWAY, "restart");
    let new = gw.session().await;
    let publish = from_edge_5(b"on the new session", false);
    within("published", new.conn.publish(publish))
        .await
        .unwrap();
    // The old session drains for up to 30 s (drain_timeout): longer than `within` waits.
    let got = within("the receiver (parked on the draining session?)", receiver).await;
    assert_eq!(
        got.unwrap(),
        Some(Bytes::from_static(b"on the new session"))
    );
    held.respond(Ok(Bytes::new()));
    assert!(within("old call", call).await.unwrap().is_ok());
}
