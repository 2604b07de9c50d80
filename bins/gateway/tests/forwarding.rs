//! Forwarding through the real gateway process: every routing row of calls and messages in
//! both directions, the routing errors, error codes, deadlines and cancellation across the
//! hop, service choice by `hashby`, concurrency and large bodies.

mod plug;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plug::Plug;
use proto_core::ErrorCode;
use support::*;
use tether_tokio::{ConnectExt, Edge, Error, Service};
use tokio::sync::{Barrier, mpsc};

/// Sends on drop: proves that a handler's future was dropped.
struct DropGuard(mpsc::UnboundedSender<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Waits until every client is connected.
async fn up(services: &[&Service], edges: &[&Edge]) {
    for service in services {
        within("service connects", service.wait_connected())
            .await
            .unwrap();
    }
    for edge in edges {
        within("edge connects", edge.wait_connected())
            .await
            .unwrap();
    }
}

/// A body of `len` bytes that is not a repetition of a short pattern.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The handler's view of a call: `service=<name> edge=<id> body=<body>`.
fn describe(req: &tether_tokio::CallRequest) -> Bytes {
    Bytes::from(format!(
        "service={} edge={} body={}",
        req.service.as_deref().unwrap_or("-"),
        req.edge_id.unwrap_or(0),
        String::from_utf8_lossy(&req.body)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_routes_both_ways_with_the_source_address() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("inventory")
        .method("lookup", |req| async move { Ok(describe(&req)) })
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(42)
        .method("status", |req| async move { Ok(describe(&req)) })
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    // service → edge, by edge id: the edge sees the calling service's name, no edge id.
    let answer = within(
        "service → edge",
        service.call(42, "status", Bytes::from_static(b"s2e")),
    )
    .await
    .unwrap();
    assert_eq!(answer, "service=inventory edge=0 body=s2e");

    // edge → service, by method: the service sees the calling edge's id, no service name.
    let answer = within(
        "edge → service",
        edge.call("lookup", Bytes::from_static(b"e2s")),
    )
    .await
    .unwrap();
    assert_eq!(answer, "service=- edge=42 body=e2s");

    // Naming the service explicitly reaches the same handler.
    let answer = within(
        "edge → named service",
        edge.call_service(Some("inventory"), "lookup", Bytes::from_static(b"x"), None),
    )
    .await
    .unwrap();
    assert_eq!(answer, "service=- edge=42 body=x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_service_picks_the_named_service() {
    let gw = GatewayProcess::start(&[]).await;
    let named = |name: &'static str| {
        Service::builder(name).method("who", move |_| async move {
            Ok(Bytes::from_static(name.as_bytes()))
        })
    };
    let alpha = named("alpha").connect(gw.service_addr).unwrap();
    let beta = named("beta")
        .method("only-beta", |_| async { Ok(Bytes::from_static(b"beta!")) })
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder().edge_id(9).connect(gw.edge_addr).unwrap();
    up(&[&alpha, &beta], &[&edge]).await;

    for name in ["alpha", "beta", "alpha", "beta", "beta", "alpha"] {
        let answer = within(
            "named call",
            edge.call_service(Some(name), "who", Bytes::new(), None),
        )
        .await
        .unwrap();
        assert_eq!(answer, name.as_bytes());
    }
    // Unnamed, the method alone routes: only beta has it.
    let answer = within("by method", edge.call("only-beta", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(answer, "beta!");
    // Named, a service that is online but lacks the method: method not found.
    let missing = within(
        "alpha lacks the method",
        edge.call_service(Some("alpha"), "only-beta", Bytes::new(), None),
    )
    .await;
    assert!(
        matches!(missing, Err(Error::MethodNotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_route_both_ways_and_acks_come_back() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("collector")
        .topic("telemetry")
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder().edge_id(77).connect(gw.edge_addr).unwrap();
    up(&[&service], &[&edge]).await;

    // service → edge by id; the edge acknowledges done.
    let (published, ()) = within("service → edge, done", async {
        tokio::join!(service.publish(77, Bytes::from_static(b"cfg-1")), async {
            let message = edge.receive().await.expect("a message");
            assert_eq!(message.body(), &Bytes::from_static(b"cfg-1"));
            assert_eq!(message.address().peer_name.as_str(), "collector");
            assert_eq!(message.address().peer_id, 0);
            assert!(message.ack_wanted());
            message.done();
        })
    })
    .await;
    published.unwrap();

    // With a topic, which the edge sees; the edge acknowledges with an error.
    let (published, ()) = within("service → edge, error", async {
        tokio::join!(
            service.publish_topic(77, "config", Bytes::from_static(b"cfg-2")),
            async {
                let message = edge.receive().await.expect("a message");
                assert_eq!(message.topic(), "config");
                assert_eq!(message.body(), &Bytes::from_static(b"cfg-2"));
                message.error(Error::Unauthorized(String::from("not for me")));
            }
        )
    })
    .await;
    assert_eq!(
        published,
        Err(Error::Unauthorized(String::from("not for me")))
    );

    // edge → service by topic; the service sees the edge id and the topic.
    let (published, ()) = within("edge → service, done", async {
        tokio::join!(
            edge.publish("telemetry", Bytes::from_static(b"t=21")),
            async {
                let message = service.receive().await.expect("a message");
                assert_eq!(message.topic(), "telemetry");
                assert_eq!(message.body(), &Bytes::from_static(b"t=21"));
                assert_eq!(message.address().peer_id, 77);
                assert!(message.address().peer_name.is_empty());
                assert!(message.ack_wanted());
                message.done();
            }
        )
    })
    .await;
    published.unwrap();

    let (published, ()) = within("edge → service, error", async {
        tokio::join!(
            edge.publish("telemetry", Bytes::from_static(b"t=?")),
            async {
                let message = service.receive().await.expect("a message");
                message.error(Error::Status {
                    code: ErrorCode::NOT_FOUND,
                    text: String::from("no such sensor"),
                });
            }
        )
    })
    .await;
    assert_eq!(
        published,
        Err(Error::Status {
            code: ErrorCode::NOT_FOUND,
            text: String::from("no such sensor"),
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_messages_route_both_ways() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("collector")
        .topic("telemetry")
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder().edge_id(78).connect(gw.edge_addr).unwrap();
    up(&[&service], &[&edge]).await;

    for i in 0..3u8 {
        within(
            "service → edge queued",
            service.publish_fire_and_forget(78, Bytes::from(vec![i])),
        )
        .await
        .unwrap();
        within(
            "edge → service queued",
            edge.publish_fire_and_forget("telemetry", Bytes::from(vec![i + 100])),
        )
        .await
        .unwrap();
    }
    // Each message is forwarded on its own task (docs/GATEWAY.md): no order across them.
    let (mut at_edge, mut at_service) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let message = within("edge receives", edge.receive())
            .await
            .expect("a message");
        assert!(!message.ack_wanted());
        assert_eq!(message.address().peer_name.as_str(), "collector");
        at_edge.push(message.body()[0]);
        let message = within("service receives", service.receive())
            .await
            .expect("a message");
        assert!(!message.ack_wanted());
        assert_eq!(message.address().peer_id, 78);
        at_service.push(message.body()[0]);
    }
    at_edge.sort_unstable();
    at_service.sort_unstable();
    assert_eq!((at_edge, at_service), (vec![0, 1, 2], vec![100, 101, 102]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_reach_the_caller() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("present")
        .method("here", |_| async { Ok(Bytes::new()) })
        .topic("present-topic")
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(5)
        .method("edge-here", |_| async { Ok(Bytes::new()) })
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    let r = within(
        "call unknown edge",
        service.call(999, "edge-here", Bytes::new()),
    )
    .await;
    assert!(matches!(r, Err(Error::EdgeNotOnline(_))), "{r:?}");
    let r = within("publish unknown edge", service.publish(999, Bytes::new())).await;
    assert!(matches!(r, Err(Error::EdgeNotOnline(_))), "{r:?}");
    let r = within(
        "stream to unknown edge",
        service.open_stream(999, Bytes::new()),
    )
    .await;
    assert!(matches!(r, Err(Error::EdgeNotOnline(_))), "{r:?}");

    let r = within(
        "edge lacks the method",
        service.call(5, "nope", Bytes::new()),
    )
    .await;
    assert!(matches!(r, Err(Error::MethodNotFound(_))), "{r:?}");
    let r = within("nobody has the method", edge.call("nope", Bytes::new())).await;
    assert!(matches!(r, Err(Error::MethodNotFound(_))), "{r:?}");
    let r = within("nobody takes the topic", edge.publish("nope", Bytes::new())).await;
    assert!(matches!(r, Err(Error::TopicNotFound(_))), "{r:?}");

    let r = within(
        "call to an unknown service",
        edge.call_service(Some("ghost"), "here", Bytes::new(), None),
    )
    .await;
    assert!(matches!(r, Err(Error::ServiceNotOnline(_))), "{r:?}");
    let r = within(
        "stream to an unknown service",
        edge.open_stream("ghost", Bytes::new()),
    )
    .await;
    assert!(matches!(r, Err(Error::ServiceNotOnline(_))), "{r:?}");

    // None of these broke the connections: routed traffic still flows.
    within("still routes", edge.call("here", Bytes::new()))
        .await
        .unwrap();
    within("still routes", service.call(5, "edge-here", Bytes::new()))
        .await
        .unwrap();
}

/// A handler that fails with the error its body names.
async fn failing(req: tether_tokio::CallRequest) -> Result<Bytes, Error> {
    Err(match req.body.as_ref() {
        b"application" => Error::application("the widget jammed"),
        b"unauthorized" => Error::Unauthorized(String::from("badge expired")),
        b"not-found" => Error::Status {
            code: ErrorCode::NOT_FOUND,
            text: String::from("no such widget"),
        },
        other => panic!("unexpected body {other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_codes_keep_their_kind_across_the_gateway() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("errors")
        .method("fail", failing)
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(6)
        .method("fail", failing)
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    let expected = [
        (
            "application",
            Error::Application(String::from("the widget jammed")),
        ),
        (
            "unauthorized",
            Error::Unauthorized(String::from("badge expired")),
        ),
        (
            "not-found",
            Error::Status {
                code: ErrorCode::NOT_FOUND,
                text: String::from("no such widget"),
            },
        ),
    ];
    for (body, error) in expected {
        let body = Bytes::from_static(body.as_bytes());
        let r = within(
            "service → edge error",
            service.call(6, "fail", body.clone()),
        )
        .await;
        assert_eq!(r, Err(error.clone()));
        let r = within("edge → service error", edge.call("fail", body)).await;
        assert_eq!(r, Err(error));
    }
}

/// The time left until the handler's deadline, in milliseconds (`none` without one).
async fn time_left(req: tether_tokio::CallRequest) -> Result<Bytes, Error> {
    Ok(Bytes::from(match req.deadline {
        Some(at) => at
            .saturating_duration_since(Instant::now())
            .as_millis()
            .to_string(),
        None => String::from("none"),
    }))
}

fn millis(answer: &Bytes) -> u128 {
    std::str::from_utf8(answer)
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("the handler saw no deadline: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_propagate_and_slow_handlers_time_out() {
    let gw = GatewayProcess::start(&[]).await;
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let service = Service::builder("clock")
        .method("left", time_left)
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(11)
        .method("left", time_left)
        .method("slow", move |_| {
            let guard = DropGuard(dropped_tx.clone());
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(120)).await;
                Ok(Bytes::from_static(b"too late"))
            }
        })
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    // The caller's timeout reaches the handler across the gateway as a deadline, minus
    // what the hops took (generously: debug builds on a loaded machine).
    let timeout = Duration::from_secs(20);
    let answer = within(
        "service → edge deadline",
        service.call_with_timeout(11, "left", Bytes::new(), Some(timeout)),
    )
    .await
    .unwrap();
    let left = millis(&answer);
    assert!(
        (10_000..=20_000).contains(&left),
        "edge handler: {left} ms left"
    );
    let answer = within(
        "edge → service deadline",
        edge.call_service(None, "left", Bytes::new(), Some(timeout)),
    )
    .await
    .unwrap();
    let left = millis(&answer);
    assert!(
        (10_000..=20_000).contains(&left),
        "service handler: {left} ms left"
    );

    // A handler slower than the caller's timeout: the caller gets Timeout, and the handler
    // is dropped at its deadline rather than left running.
    let r = within(
        "slow handler",
        service.call_with_timeout(11, "slow", Bytes::new(), Some(Duration::from_millis(300))),
    )
    .await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    within("the slow handler is dropped", dropped.recv())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_drops_the_handler_across_the_gateway() {
    let gw = GatewayProcess::start(&[]).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<&'static str>();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let hang = |side: &'static str| {
        let (started_tx, dropped_tx) = (started_tx.clone(), dropped_tx.clone());
        move |_: tether_tokio::CallRequest| {
            let guard = DropGuard(dropped_tx.clone());
            let _ = started_tx.send(side);
            async move {
                let _guard = guard;
                std::future::pending::<Result<Bytes, Error>>().await
            }
        }
    };
    let service = Service::builder("hanger")
        .method("hang", hang("service"))
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(12)
        .method("hang", hang("edge"))
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    // Service → edge: the call (with a long timeout) is dropped once the handler runs.
    let long = Some(Duration::from_secs(60));
    let call = service.call_with_timeout(12, "hang", Bytes::new(), long);
    tokio::select! {
        r = call => panic!("the hanging call returned {r:?}"),
        side = within("edge handler starts", started.recv()) => assert_eq!(side, Some("edge")),
    }
    within("edge handler dropped", dropped.recv())
        .await
        .unwrap();

    // Edge → service, the same.
    let call = edge.call_service(None, "hang", Bytes::new(), long);
    tokio::select! {
        r = call => panic!("the hanging call returned {r:?}"),
        side = within("service handler starts", started.recv()) => {
            assert_eq!(side, Some("service"))
        }
    }
    within("service handler dropped", dropped.recv())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_lost_mid_call_answers_not_online_at_once() {
    let gw = GatewayProcess::start(&[]).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let hang = move |_: tether_tokio::CallRequest| {
        let _ = started_tx.send(());
        std::future::pending::<Result<Bytes, Error>>()
    };
    let (service_plug, edge_plug) = (Plug::default(), Plug::default());
    let service = Service::builder("fragile")
        .method("hang", hang.clone())
        .topic("held")
        .reconnect(false)
        .connect_with(service_plug.dialer(gw.service_addr))
        .unwrap();
    let edge = Edge::builder()
        .edge_id(13)
        .method("hang", hang)
        .reconnect(false)
        .connect_with(edge_plug.dialer(gw.edge_addr))
        .unwrap();
    // The far sides that stay up.
    let other_service = Service::builder("steady").connect(gw.service_addr).unwrap();
    let other_edge = Edge::builder().edge_id(14).connect(gw.edge_addr).unwrap();
    up(&[&service, &other_service], &[&edge, &other_edge]).await;
    let long = Some(Duration::from_secs(60));

    // Edge 13 dies with a call to it in flight and a message to it unacknowledged: both
    // fail with EDGE_NOT_ONLINE at once, long before their 60 s timeouts.
    let call = other_service.call_with_timeout(13, "hang", Bytes::new(), long);
    let publish = other_service.publish(13, Bytes::from_static(b"hold me"));
    let (called, published, _held) = within("edge lost mid-call", async {
        tokio::join!(call, publish, async {
            started.recv().await.unwrap();
            let held = edge.receive().await.expect("the message arrives");
            edge_plug.pull();
            held
        })
    })
    .await;
    assert!(matches!(called, Err(Error::EdgeNotOnline(_))), "{called:?}");
    assert!(
        matches!(published, Err(Error::EdgeNotOnline(_))),
        "{published:?}"
    );

    // The service dies with an edge's call and message in flight: SERVICE_NOT_ONLINE.
    let call = other_edge.call_service(None, "hang", Bytes::new(), long);
    let publish = other_edge.publish("held", Bytes::from_static(b"hold me"));
    let (called, published, _held) = within("service lost mid-call", async {
        tokio::join!(call, publish, async {
            started.recv().await.unwrap();
            let held = service.receive().await.expect("the message arrives");
            service_plug.pull();
            held
        })
    })
    .await;
    assert!(
        matches!(called, Err(Error::ServiceNotOnline(_))),
        "{called:?}"
    );
    assert!(
        matches!(published, Err(Error::ServiceNotOnline(_))),
        "{published:?}"
    );
}

/// Two instances of one service registering the same method; each answers its own tag.
fn pool(gw: &GatewayProcess) -> (Service, Service) {
    let instance = |tag: &'static str| {
        Service::builder("pool")
            .method("which", move |_| async move {
                Ok(Bytes::from_static(tag.as_bytes()))
            })
            .connect(gw.service_addr)
            .unwrap()
    };
    (instance("A"), instance("B"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashby_edgeid_keeps_an_edge_on_one_service_and_spreads_edges() {
    let gw = GatewayProcess::start(&[]).await;
    let (a, b) = pool(&gw);
    let edges: Vec<Edge> = (1..=20u64)
        .map(|i| {
            Edge::builder()
                .edge_id(1000 + i)
                .connect(gw.edge_addr)
                .unwrap()
        })
        .collect();
    up(&[&a, &b], &edges.iter().collect::<Vec<_>>()).await;

    // One edge: the same service every time.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let answer = within("sticky call", edges[0].call("which", Bytes::new()))
            .await
            .unwrap();
        seen.push(answer);
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");

    // Twenty edges: both services get some, and each edge stays where it landed.
    let mut per_service: BTreeMap<Bytes, usize> = BTreeMap::new();
    for edge in &edges {
        let first = within("call", edge.call("which", Bytes::new()))
            .await
            .unwrap();
        let again = within("call again", edge.call("which", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(first, again, "edge {:?} moved", edge.edge_id());
        *per_service.entry(first).or_default() += 1;
    }
    assert_eq!(per_service.len(), 2, "{per_service:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashby_random_spreads_one_edges_calls() {
    let gw = GatewayProcess::start(&["--hashby", "random"]).await;
    let (a, b) = pool(&gw);
    let edge = Edge::builder().edge_id(3).connect(gw.edge_addr).unwrap();
    up(&[&a, &b], &[&edge]).await;

    let mut per_service: BTreeMap<Bytes, usize> = BTreeMap::new();
    for _ in 0..50 {
        let answer = within("random call", edge.call("which", Bytes::new()))
            .await
            .unwrap();
        *per_service.entry(answer).or_default() += 1;
    }
    // Both get calls (all 50 on one side has probability 2^-49).
    assert_eq!(per_service.len(), 2, "{per_service:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_calls_each_way() {
    const N: usize = 64;
    let gw = GatewayProcess::start(&[]).await;
    // Every handler waits until all N calls of its direction are inside a handler: the
    // gateway must forward them concurrently, not one after another.
    let echo_when_all_arrived = |barrier: Arc<Barrier>, seen: Arc<AtomicUsize>| {
        move |req: tether_tokio::CallRequest| {
            let (barrier, seen) = (Arc::clone(&barrier), Arc::clone(&seen));
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                barrier.wait().await;
                Ok(describe(&req))
            }
        }
    };
    let (to_edge, to_service) = (Arc::new(Barrier::new(N)), Arc::new(Barrier::new(N)));
    let (edge_seen, service_seen) = (Arc::default(), Arc::default());
    let service = Service::builder("many")
        .method(
            "echo",
            echo_when_all_arrived(to_service, Arc::clone(&service_seen)),
        )
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(64)
        .method(
            "echo",
            echo_when_all_arrived(to_edge, Arc::clone(&edge_seen)),
        )
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let service = service.clone();
        tasks.spawn(async move {
            let body = Bytes::from(format!("s{i}"));
            let answer = service.call(64, "echo", body).await.unwrap();
            assert_eq!(answer, format!("service=many edge=0 body=s{i}"));
        });
        let edge = edge.clone();
        tasks.spawn(async move {
            let body = Bytes::from(format!("e{i}"));
            let answer = edge.call("echo", body).await.unwrap();
            assert_eq!(answer, format!("service=- edge=64 body=e{i}"));
        });
    }
    within("128 calls", async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
    assert_eq!(edge_seen.load(Ordering::SeqCst), N);
    assert_eq!(service_seen.load(Ordering::SeqCst), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_cross_both_ways() {
    const LEN: usize = 512 * 1024;
    let gw = GatewayProcess::start(&[]).await;
    // The handler answers a different large body, so both directions of each hop carry
    // 512 KiB: the reversed request.
    let reverse = |req: tether_tokio::CallRequest| async move {
        let mut body = req.body.to_vec();
        body.reverse();
        Ok(Bytes::from(body))
    };
    let service = Service::builder("bulk")
        .method("reverse", reverse)
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(21)
        .method("reverse", reverse)
        .connect(gw.edge_addr)
        .unwrap();
    up(&[&service], &[&edge]).await;

    let body = pattern(LEN, 0x5eed);
    let mut reversed = body.to_vec();
    reversed.reverse();
    let answer = within(
        "512 KiB service → edge",
        service.call(21, "reverse", body.clone()),
    )
    .await
    .unwrap();
    assert_eq!(answer.len(), LEN);
    assert!(answer == reversed, "the edge's answer differs");
    let answer = within("512 KiB edge → service", edge.call("reverse", body))
        .await
        .unwrap();
    assert_eq!(answer.len(), LEN);
    assert!(answer == reversed, "the service's answer differs");
}
