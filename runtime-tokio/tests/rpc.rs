//! RPC through the gateway stand-in, from both ends: services calling edges by id, edges
//! calling methods (optionally on a named service), registered handlers, error codes,
//! timeouts, cancellation, in-flight limits and body size limits.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proto_core::{Config, ErrorCode, Registration, RegistrationKind};
use support::*;
use tether_tokio::{CallRequest, ConnectExt, Connection, Edge, Error, Request, Service};
use tokio::sync::mpsc;

/// Sends on its channel when dropped: tells the test a handler's future went away.
struct DropGuard(mpsc::UnboundedSender<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A handler that never finishes; reports its start (with the deadline) and its drop.
fn never_finishes(
    started: mpsc::UnboundedSender<Option<std::time::Instant>>,
    dropped: mpsc::UnboundedSender<()>,
) -> impl Fn(CallRequest) -> std::pin::Pin<Box<dyn Future<Output = Result<Bytes, Error>> + Send>>
+ Send
+ Sync
+ 'static {
    move |req: CallRequest| {
        let guard = DropGuard(dropped.clone());
        let _ = started.send(req.deadline);
        Box::pin(async move {
            let _guard = guard;
            std::future::pending().await
        })
    }
}

/// Takes the next request on the gateway side (panics if the session ends first).
async fn next_request(conn: &Connection) -> Request {
    let req = within("next request", conn.next_request()).await;
    req.expect("the session ended")
}

/// Errors of several kinds, as a handler returns them and a caller must see them.
fn sample_errors() -> Vec<Error> {
    let status = |code, text: &str| Error::Status {
        code,
        text: text.into(),
    };
    vec![
        Error::application("x"),
        status(ErrorCode::NOT_FOUND, "no such thing"),
        Error::Unauthorized("who are you".into()),
        Error::Busy("later".into()),
        status(ErrorCode::BAD_REQUEST, "bad"),
    ]
}

/// The error of `sample_errors()` whose index is the body.
fn sample_error(body: &[u8]) -> Error {
    let index: usize = std::str::from_utf8(body).unwrap().parse().unwrap();
    sample_errors().swap_remove(index)
}

fn has(regs: &[Registration], kind: RegistrationKind, name: &str) -> bool {
    regs.iter()
        .any(|r| r.kind == kind && r.name.as_str() == name)
}

// service.call(edge_id, ..) carries the edge id and returns the edge's answer.
#[tokio::test]
async fn service_calls_reach_the_addressed_edge() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("billing").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let conn = session.conn.clone();
    tokio::spawn(async move {
        while let Some(req) = conn.next_request().await {
            assert!(req.address().peer_name.is_empty());
            let (peer, body) = (req.address().peer_id, String::from_utf8_lossy(req.body()));
            let answer = format!("{}:{peer}:{body}", req.method());
            req.respond(Ok(answer.into()));
        }
    });
    for edge_id in [1, 42, 1 << 40] {
        let answer = within("call", service.call(edge_id, "ping", "?".into())).await;
        assert_eq!(answer.unwrap(), format!("ping:{edge_id}:?"));
    }
}

// edge.call(..) carries no service name; edge.call_service(Some(name), ..) carries it.
#[tokio::test]
async fn edge_calls_carry_the_service_name_when_given() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let session = gw.session().await;
    let conn = session.conn.clone();
    tokio::spawn(async move {
        while let Some(req) = conn.next_request().await {
            assert_eq!(req.address().peer_id, 0);
            let body = format!("{}@{}", req.method(), req.address().peer_name.as_str());
            req.respond(Ok(Bytes::from(body)));
        }
    });
    let answer = within("call", edge.call("lookup", Bytes::new())).await;
    assert_eq!(answer.unwrap(), "lookup@");
    let named = edge.call_service(Some("billing"), "charge", Bytes::new(), None);
    assert_eq!(
        within("call_service", named).await.unwrap(),
        "charge@billing"
    );
}

// Handlers see who called: the edge id on a service, the service name on an edge, and the
// caller's deadline when it set a timeout.
#[tokio::test]
async fn handlers_see_the_caller() {
    let mut gw = MockGateway::start().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<CallRequest>();
    let tx = seen_tx.clone();
    let _service = Service::builder("billing")
        .method("whoami", move |req: CallRequest| {
            let _ = tx.send(req.clone());
            async move { Ok(Bytes::from(format!("edge {:?}", req.edge_id))) }
        })
        .connect(gw.addr)
        .unwrap();
    let _edge = Edge::builder()
        .method("whoami", move |req: CallRequest| {
            let _ = seen_tx.send(req.clone());
            async move { Ok(Bytes::from(format!("service {:?}", req.service))) }
        })
        .connect(gw.addr)
        .unwrap();
    let (to_service, to_edge) = service_and_edge_sessions(&mut gw, "billing").await;

    let answer = gateway_call(&to_service.conn, call_from_edge(42, "whoami", "hi".into())).await;
    assert_eq!(answer.unwrap(), "edge Some(42)");
    let req = seen.recv().await.unwrap();
    assert_eq!((req.method.as_str(), &req.body[..]), ("whoami", &b"hi"[..]));
    assert_eq!((req.edge_id, req.service), (Some(42), None));
    assert!(req.deadline.is_none(), "no timeout was set");

    let mut call = call_from_service("billing", "whoami", Bytes::new());
    call.timeout = Some(Duration::from_secs(5));
    let answer = gateway_call(&to_edge.conn, call).await;
    assert_eq!(answer.unwrap(), "service Some(\"billing\")");
    let req = seen.recv().await.unwrap();
    assert_eq!(
        (req.edge_id, req.service.as_deref()),
        (None, Some("billing"))
    );
    assert!(
        req.deadline.is_some(),
        "the caller's timeout is the handler's deadline"
    );
}

// A handler's error reaches the gateway with its code and text, on both kinds of client.
#[tokio::test]
async fn handler_errors_reach_the_caller_with_their_code() {
    let mut gw = MockGateway::start().await;
    let failing = |req: CallRequest| async move { Err(sample_error(&req.body)) };
    let _service = Service::builder("s")
        .method("fail", failing)
        .connect(gw.addr);
    let _edge = Edge::builder().method("fail", failing).connect(gw.addr);
    for session in [gw.session().await, gw.session().await] {
        for (index, expected) in sample_errors().into_iter().enumerate() {
            let call = call_from_edge(9, "fail", index.to_string().into());
            assert_eq!(gateway_call(&session.conn, call).await, Err(expected));
        }
    }
}

// The gateway side answering with an error: the calling service or edge gets it as is.
#[tokio::test]
async fn error_answers_reach_service_and_edge_callers() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    for session in &sessions {
        let conn = session.conn.clone();
        tokio::spawn(async move {
            while let Some(req) = conn.next_request().await {
                let error = sample_error(req.body());
                req.respond(Err(error));
            }
        });
    }
    for (index, expected) in sample_errors().into_iter().enumerate() {
        let body = Bytes::from(index.to_string());
        let err = within("service call", service.call(1, "m", body.clone())).await;
        assert_eq!(err.as_ref().map_err(Error::code), Err(expected.code()));
        assert_eq!(err, Err(expected.clone()));
        assert_eq!(
            within("edge call", edge.call("m", body)).await,
            Err(expected)
        );
    }
}

// Calling a method nobody registered gets METHOD_NOT_FOUND from the service and the edge.
#[tokio::test]
async fn unknown_methods_get_method_not_found() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").method("known", |r| async move { Ok(r.body) });
    let _service = service.connect(gw.addr).unwrap();
    let _edge = Edge::builder().connect(gw.addr).unwrap();
    for session in [gw.session().await, gw.session().await] {
        let call = call_from_edge(1, "unknown", Bytes::new());
        let err = gateway_call(&session.conn, call).await.unwrap_err();
        assert!(matches!(err, Error::MethodNotFound(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::METHOD_NOT_FOUND);
        assert!(err.is_safe_to_retry());
    }
}

// `register` after connecting sends REGISTER (the gateway sees it and can call the method);
// `unregister` removes it (and calls then get METHOD_NOT_FOUND).
#[tokio::test]
async fn register_and_unregister_after_connecting() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let (to_service, to_edge) = service_and_edge_sessions(&mut gw, "s").await;
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    for (conn, on_service) in [(&to_service.conn, true), (&to_edge.conn, false)] {
        let has_late = || has(&conn.peer_registrations(), RegistrationKind::Method, "late");
        assert!(!has_late());
        let late = |r: CallRequest| async move { Ok(Bytes::from(format!("late {:?}", r.body))) };
        let added = if on_service {
            service.register("late", late)
        } else {
            edge.register("late", late)
        };
        added.unwrap();
        eventually("REGISTER reaches the gateway", has_late).await;
        let answer = gateway_call(conn, call_from_edge(3, "late", "x".into())).await;
        assert_eq!(answer.unwrap(), "late b\"x\"");

        let removed = if on_service {
            service.unregister("late")
        } else {
            edge.unregister("late")
        };
        removed.unwrap();
        eventually("the removal reaches the gateway", || !has_late()).await;
        let err = gateway_call(conn, call_from_edge(3, "late", Bytes::new())).await;
        assert!(matches!(err, Err(Error::MethodNotFound(_))), "{err:?}");
    }
}

// A call the gateway never answers fails with Timeout after its own timeout, and the
// gateway side learns that the caller gave up (by its own deadline, or the caller's
// CANCEL, whichever comes first).
#[tokio::test]
async fn unanswered_calls_time_out() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    let timeout = Some(Duration::from_millis(200));
    let (service_result, edge_result, requests) = within("timeouts", async {
        let taken = async {
            let mut requests = Vec::new();
            for session in &sessions {
                requests.push(next_request(&session.conn).await);
            }
            requests
        };
        tokio::join!(
            service.call_with_timeout(5, "slow", Bytes::new(), timeout),
            edge.call_service(Some("other"), "slow", Bytes::new(), timeout),
            taken
        )
    })
    .await;
    assert!(
        matches!(service_result, Err(Error::Timeout(_))),
        "{service_result:?}"
    );
    assert!(
        matches!(edge_result, Err(Error::Timeout(_))),
        "{edge_result:?}"
    );
    for req in &requests {
        assert!(req.deadline().is_some());
        let code = within("gateway side gives up", req.cancelled()).await;
        assert!(
            matches!(code, ErrorCode::TIMEOUT | ErrorCode::CANCELLED),
            "{code:?}"
        );
    }
}

// Dropping a call's future cancels the call: the gateway side's `cancelled()` resolves.
#[tokio::test]
async fn dropping_a_call_cancels_it_at_the_gateway() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    for session in [gw.session().await, gw.session().await] {
        let mut call: std::pin::Pin<Box<dyn Future<Output = _>>> =
            if session.hello.info.name.as_str() == "s" {
                Box::pin(service.call(8, "slow", Bytes::new()))
            } else {
                Box::pin(edge.call("slow", Bytes::new()))
            };
        let req = tokio::select! {
            result = call.as_mut() => panic!("the call ended unanswered: {result:?}"),
            req = next_request(&session.conn) => req,
        };
        // Not cancelled while the caller still waits.
        tokio::select! {
            biased;
            code = req.cancelled() => panic!("cancelled too early: {code:?}"),
            () = tokio::task::yield_now() => {}
        }
        drop(call);
        assert_eq!(
            within("CANCEL arrives", req.cancelled()).await,
            ErrorCode::CANCELLED
        );
    }
}

// The gateway calls a slow handler with a 100 ms timeout: it gets Timeout, and the
// handler's future is dropped rather than left running.
#[tokio::test]
async fn slow_handlers_are_dropped_at_the_callers_deadline() {
    let mut gw = MockGateway::start().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let slow = never_finishes(started_tx, dropped_tx);
    let _service = Service::builder("s").method("slow", slow).connect(gw.addr);
    let session = gw.session().await;
    let mut call = call_from_edge(1, "slow", Bytes::new());
    call.timeout = Some(Duration::from_millis(100));
    let result = gateway_call(&session.conn, call).await;
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    let deadline = started.recv().await.unwrap();
    assert!(deadline.is_some(), "the handler saw the deadline");
    within("handler dropped", dropped.recv()).await.unwrap();
}

// The gateway drops its call future while an edge's handler runs: the handler is dropped.
#[tokio::test]
async fn slow_handlers_are_dropped_when_the_caller_cancels() {
    let mut gw = MockGateway::start().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let slow = never_finishes(started_tx, dropped_tx);
    let _edge = Edge::builder().method("slow", slow).connect(gw.addr);
    let session = gw.session().await;
    let call = session
        .conn
        .call(call_from_service("s", "slow", Bytes::new()));
    within("handler starts", async {
        tokio::select! {
            result = call => panic!("the slow call ended: {result:?}"),
            deadline = started.recv() => assert_eq!(deadline, Some(None)),
        }
    })
    .await;
    within("handler dropped", dropped.recv()).await.unwrap();
}

// 32 tasks × 20 calls against a gateway that takes 4 requests at a time: callers wait for
// room instead of failing, never exceed the limit, and every answer matches its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_wait_for_room_under_the_inflight_limit() {
    let mut config = Config::default();
    config.settings.max_inflight_requests = 4;
    let mut gw = MockGateway::with_policy(config, accept_all()).await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let (inflight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (conn, gw_inflight, gw_peak) = (session.conn.clone(), inflight.clone(), peak.clone());
    tokio::spawn(async move {
        while let Some(req) = conn.next_request().await {
            gw_peak.fetch_max(
                gw_inflight.fetch_add(1, Ordering::SeqCst) + 1,
                Ordering::SeqCst,
            );
            let inflight = gw_inflight.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let (peer, body) = (req.address().peer_id, String::from_utf8_lossy(req.body()));
                let answer = Bytes::from(format!("{peer}:{body}"));
                inflight.fetch_sub(1, Ordering::SeqCst);
                req.respond(Ok(answer));
            });
        }
    });
    let tasks = (1..=32u64).map(|task| {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let body = format!("{task}-{i}");
                let answer = service.call(task, "m", body.clone().into()).await;
                assert_eq!(answer.unwrap(), format!("{task}:{body}"));
            }
        })
    });
    join_all("640 calls", tasks.collect()).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "the gateway saw {peak} requests at once");
    assert_eq!(
        peak, 4,
        "the limit was never reached, so nobody had to wait"
    );
    assert_eq!(gw.hellos().len(), 1, "the session survived");
}

// The gateway side sends 32 × 10 calls at once to a service that takes 4 requests at a
// time: the service's handlers never run more than 4 at once, and every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_serve_many_callers_under_the_services_own_limit() {
    let mut gw = MockGateway::start().await;
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler_peak = peak.clone();
    let _service = Service::builder("s")
        .configure(|o| o.config.settings.max_inflight_requests = 4)
        .method("echo", move |req: CallRequest| {
            let (running, peak) = (running.clone(), handler_peak.clone());
            async move {
                peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(req.body)
            }
        })
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;
    let tasks = (1..=32u64).map(|edge_id| {
        let conn = session.conn.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let body = Bytes::from(format!("{edge_id}/{i}"));
                let answer = conn
                    .call(call_from_edge(edge_id, "echo", body.clone()))
                    .await;
                assert_eq!(answer.unwrap(), body);
            }
        })
    });
    join_all("320 calls", tasks.collect()).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "{peak} handlers ran at once");
}

// A handler that panics answers INTERNAL (the caller is not left hanging) and the client
// keeps serving.
#[tokio::test]
async fn a_panicking_handler_answers_internal() {
    let mut gw = MockGateway::start().await;
    let _service = Service::builder("s")
        .method("panic", |_req: CallRequest| async move {
            panic!("handler bug (expected by the test)");
        })
        .method("echo", |req: CallRequest| async move { Ok(req.body) })
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;
    let err = gateway_call(&session.conn, call_from_edge(1, "panic", Bytes::new())).await;
    assert_eq!(err.unwrap_err().code(), ErrorCode::INTERNAL);
    let answer = gateway_call(&session.conn, call_from_edge(1, "echo", "ok".into())).await;
    assert_eq!(answer.unwrap(), "ok");
}

// A 512 KiB body makes it intact through calls in both directions.
#[tokio::test]
async fn large_bodies_round_trip() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").method("echo", |r| async move { Ok(r.body) });
    let service = service.connect(gw.addr).unwrap();
    let session = gw.session().await;
    let body: Vec<u8> = (0..512 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let body = Bytes::from(body);
    let (gw_conn, probe) = (session.conn.clone(), body.clone());
    tokio::spawn(async move {
        let req = gw_conn.next_request().await.unwrap();
        assert_eq!(req.body(), &probe);
        let back = req.body().clone();
        req.respond(Ok(back));
    });
    let answer = within("service → edge", service.call(1, "echo", body.clone())).await;
    assert_eq!(answer.unwrap(), body);
    let answer = gateway_call(&session.conn, call_from_edge(1, "echo", body.clone())).await;
    assert_eq!(answer.unwrap(), body);
}

// A body over the gateway's 1 MiB limit fails with TooLarge before anything is sent, and
// the session carries on; an over-limit response reaches the caller as TOO_LARGE.
#[tokio::test]
async fn over_limit_bodies_fail_with_too_large_and_the_session_survives() {
    let mut gw = MockGateway::start().await;
    let huge = Bytes::from(vec![7u8; 1024 * 1024 + 1]);
    let reply = huge.clone();
    let service = Service::builder("s")
        .method("huge", move |_| std::future::ready(Ok(reply.clone())))
        .connect(gw.addr)
        .unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let (to_service, to_edge) = service_and_edge_sessions(&mut gw, "s").await;
    spawn_echo(to_service.conn.clone());
    spawn_echo(to_edge.conn.clone());
    let err = within("service call", service.call(1, "echo", huge.clone())).await;
    assert!(matches!(err, Err(Error::TooLarge(_))), "{err:?}");
    let err = within("edge call", edge.call("echo", huge.clone())).await;
    assert!(matches!(err, Err(Error::TooLarge(_))), "{err:?}");

    let small = Bytes::from_static(b"still here");
    assert_eq!(
        within("service", service.call(1, "echo", small.clone())).await,
        Ok(small.clone())
    );
    assert_eq!(
        within("edge", edge.call("echo", small.clone())).await,
        Ok(small)
    );
    assert_eq!(gw.hellos().len(), 2, "no reconnect happened");

    let err = gateway_call(&to_service.conn, call_from_edge(1, "huge", Bytes::new())).await;
    assert!(matches!(err, Err(Error::TooLarge(_))), "{err:?}");
}

// A method registered while the client's HELLO is on its way (sent without it, session not
// yet installed) must still reach the gateway, in a REGISTER once the session is up.
#[tokio::test]
async fn a_method_registered_during_the_handshake_reaches_the_gateway() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = Service::builder("s")
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let hs = next_handshake(&listener).await;
    assert!(hs.hello().info.registrations.is_empty());
    service
        .register("late", |_| async { Ok(Bytes::new()) })
        .unwrap();
    let accept = proto_core::HandshakeAccept {
        assigned_id: 1,
        ..Default::default()
    };
    let conn = hs.accept(accept).unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    let registered = || has(&conn.peer_registrations(), RegistrationKind::Method, "late");
    eventually("REGISTER reaches the gateway", registered).await;
}

// Registering while the current session has just ended (before the client moved on to a
// new one) keeps the method for the next session, so it must not report an error.
#[tokio::test]
async fn registering_while_the_session_ends_is_not_an_error() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").configure(|o| o.backoff = quick_backoff());
    let service = service.connect(gw.addr).unwrap();
    let _first = gw.session().await;
    within("service up", service.wait_connected())
        .await
        .unwrap();
    // End the session from the client side; the supervisor has not run yet.
    service
        .connection()
        .unwrap()
        .close(ErrorCode::INTERNAL, "lost");
    let registered = service.register("late", |_| async { Ok(Bytes::new()) });
    assert_eq!(registered, Ok(()));
    let second = gw.session().await;
    assert!(has(
        &second.hello.info.registrations,
        RegistrationKind::Method,
        "late"
    ));
}
