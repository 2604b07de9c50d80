//! Messages through the gateway stand-in: services and edges publishing (acknowledged and
//! fire-and-forget), receiving and acknowledging, topics, and what an unacknowledged or
//! oversized message gives the publisher.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Config, ErrorCode, Publish, RegistrationKind};
use support::*;
use tether_tokio::{ConnectExt, Connection, Edge, Error, Message, Service};

/// Takes the next message on the gateway side (panics if the session ends first).
async fn next_message(conn: &Connection) -> Message {
    within("next message", conn.next_message())
        .await
        .expect("the session ended")
}

/// A message as the gateway forwards it: from `source`, on `topic`.
fn publish_from(source: Address, topic: &str, body: &'static [u8], ack: bool) -> Publish {
    let mut publish = Publish::new(wire_name(topic), Bytes::from_static(body));
    publish.address = source;
    publish.ack = ack;
    publish
}

fn edge_address(id: u64) -> Address {
    Address {
        peer_id: id,
        peer_name: Name::EMPTY,
    }
}

// service.publish(edge, ..) is addressed to the edge and resolves with the edge's
// acknowledgement: done → Ok, error → that error, dropped unacknowledged → INTERNAL.
#[tokio::test]
async fn service_publish_resolves_with_the_acknowledgement() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let conn = session.conn.clone();
    tokio::spawn(async move {
        loop {
            let msg = next_message(&conn).await;
            assert_eq!(msg.address().peer_id, 77);
            assert!(msg.ack_wanted());
            match &msg.body()[..] {
                b"ok" => msg.done(),
                b"bad" => msg.error(Error::application("bad")),
                b"who" => msg.error(Error::Unauthorized("no".into())),
                b"drop" => drop(msg),
                other => panic!("unexpected body {other:?}"),
            }
        }
    });
    let publish = |body: &'static [u8]| service.publish(77, Bytes::from_static(body));
    assert_eq!(within("done", publish(b"ok")).await, Ok(()));
    assert_eq!(
        within("error", publish(b"bad")).await,
        Err(Error::Application("bad".into()))
    );
    assert_eq!(
        within("unauthorized", publish(b"who")).await,
        Err(Error::Unauthorized("no".into()))
    );
    let dropped = within("dropped", publish(b"drop")).await.unwrap_err();
    assert_eq!(dropped.code(), ErrorCode::INTERNAL, "{dropped:?}");
}

// publish_topic carries its topic; plain publish carries none.
#[tokio::test]
async fn service_publish_topic_carries_the_topic() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let (plain, topical) = within("both acked", async {
        let acker = async {
            let mut topics = Vec::new();
            for _ in 0..2 {
                let msg = next_message(&session.conn).await;
                topics.push((msg.topic().to_owned(), msg.address().peer_id));
                msg.done();
            }
            topics
        };
        let publishes = async {
            let plain = service.publish(3, Bytes::from_static(b"a")).await;
            let topical = service
                .publish_topic(4, "alerts", Bytes::from_static(b"b"))
                .await;
            (plain, topical)
        };
        let (topics, results) = tokio::join!(acker, publishes);
        assert_eq!(topics, [(String::new(), 3), ("alerts".to_owned(), 4)]);
        results
    })
    .await;
    assert_eq!((plain, topical), (Ok(()), Ok(())));
}

// Fire-and-forget publishes resolve without any acknowledgement and arrive with
// `ack_wanted() == false`, from a service and from an edge.
#[tokio::test]
async fn fire_and_forget_resolves_without_an_acknowledgement() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let (a, b) = (gw.session().await, gw.session().await);
    let (from_service, from_edge) = if a.hello.info.name.as_str() == "s" {
        (a, b)
    } else {
        (b, a)
    };
    // Nobody on the gateway side reads until both have resolved.
    let body = Bytes::from_static(b"fire");
    within("service", service.publish_fire_and_forget(12, body.clone()))
        .await
        .unwrap();
    within("edge", edge.publish_fire_and_forget("events", body.clone()))
        .await
        .unwrap();

    let msg = next_message(&from_service.conn).await;
    assert_eq!((msg.address().peer_id, msg.body()), (12, &body));
    assert!(!msg.ack_wanted());
    let msg = next_message(&from_edge.conn).await;
    assert_eq!((msg.topic(), msg.body()), ("events", &body));
    assert!(!msg.ack_wanted());
}

// edge.publish(topic, ..) carries the topic (and no target address) and resolves with the
// acknowledgement.
#[tokio::test]
async fn edge_publish_carries_the_topic_and_gets_the_acknowledgement() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let session = gw.session().await;
    let conn = session.conn.clone();
    tokio::spawn(async move {
        loop {
            let msg = next_message(&conn).await;
            assert_eq!(*msg.address(), Address::default());
            assert!(msg.ack_wanted());
            match msg.topic() {
                "telemetry" => msg.done(),
                "forbidden" => msg.error(Error::Unauthorized("not yours".into())),
                topic => {
                    let topic = topic.to_owned();
                    msg.error(Error::TopicNotFound(topic))
                }
            }
        }
    });
    let ok = within(
        "telemetry",
        edge.publish("telemetry", Bytes::from_static(b"t=21")),
    );
    assert_eq!(ok.await, Ok(()));
    let denied = within("forbidden", edge.publish("forbidden", Bytes::new())).await;
    assert_eq!(denied, Err(Error::Unauthorized("not yours".into())));
    let missing = within("unknown topic", edge.publish("nowhere", Bytes::new())).await;
    assert_eq!(missing, Err(Error::TopicNotFound("nowhere".into())));
    assert!(missing.unwrap_err().is_safe_to_retry());
}

// service.receive() gets what edges publish through the gateway; done, error and a drop
// without acknowledgement reach the gateway-side publisher.
#[tokio::test]
async fn service_receives_and_acknowledges() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").topic("t").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let receiver = tokio::spawn({
        let service = service.clone();
        async move {
            for _ in 0..4 {
                let msg = service.receive().await.expect("the service closed");
                assert_eq!((msg.topic(), msg.address().peer_id), ("t", 5));
                match &msg.body()[..] {
                    b"ok" => msg.done(),
                    b"bad" => msg.error(Error::application("nope")),
                    b"drop" => drop(msg),
                    b"fire" => assert!(!msg.ack_wanted()),
                    other => panic!("unexpected body {other:?}"),
                }
            }
        }
    });
    let send = |body, ack| {
        session
            .conn
            .publish(publish_from(edge_address(5), "t", body, ack))
    };
    assert_eq!(within("done", send(b"ok", true)).await, Ok(()));
    let err = within("error", send(b"bad", true)).await;
    assert_eq!(err, Err(Error::Application("nope".into())));
    let dropped = within("dropped", send(b"drop", true)).await.unwrap_err();
    assert_eq!(dropped.code(), ErrorCode::INTERNAL, "{dropped:?}");
    assert_eq!(within("fire", send(b"fire", false)).await, Ok(()));
    within("receiver", receiver).await.unwrap();
}

// edge.receive() gets what a service sends it through the gateway (source: the service's
// name), and its acknowledgement reaches the gateway-side publisher.
#[tokio::test]
async fn edge_receives_and_acknowledges() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let session = gw.session().await;
    let source = Address {
        peer_id: 0,
        peer_name: wire_name("billing"),
    };
    let receiver = tokio::spawn({
        let edge = edge.clone();
        async move {
            let msg = edge.receive().await.expect("the edge closed");
            assert_eq!(msg.address().peer_name.as_str(), "billing");
            assert_eq!((msg.topic(), &msg.body()[..]), ("cmd", &b"reboot"[..]));
            msg.done();
            let msg = edge.receive().await.expect("the edge closed");
            drop(msg);
        }
    });
    let send = |body| {
        session
            .conn
            .publish(publish_from(source.clone(), "cmd", body, true))
    };
    assert_eq!(within("done", send(b"reboot")).await, Ok(()));
    let dropped = within("dropped", send(b"again")).await.unwrap_err();
    assert_eq!(dropped.code(), ErrorCode::INTERNAL, "{dropped:?}");
    within("receiver", receiver).await.unwrap();
}

// Topics declared with `.topic(..)` are in the HELLO's registrations, as topics.
#[tokio::test]
async fn declared_topics_are_in_the_hello() {
    let mut gw = MockGateway::start().await;
    let _service = Service::builder("s")
        .topic("telemetry")
        .topic("alerts")
        .method("m", |r| async move { Ok(r.body) })
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;
    let regs = &session.hello.info.registrations;
    let has = |kind, name: &str| {
        regs.iter()
            .any(|r| r.kind == kind && r.name.as_str() == name)
    };
    assert!(has(RegistrationKind::Topic, "telemetry"), "{regs:?}");
    assert!(has(RegistrationKind::Topic, "alerts"), "{regs:?}");
    assert!(has(RegistrationKind::Method, "m"), "{regs:?}");
    assert!(!has(RegistrationKind::Method, "telemetry"), "{regs:?}");
    assert_eq!(regs.len(), 3, "{regs:?}");
}

// An acknowledged publish nobody acknowledges fails with Timeout after the default timeout.
#[tokio::test]
async fn an_unacknowledged_publish_times_out() {
    let mut gw = MockGateway::start().await;
    let short = |o: &mut tether_tokio::Options| o.default_timeout = Duration::from_millis(200);
    let service = Service::builder("s")
        .configure(short)
        .connect(gw.addr)
        .unwrap();
    let edge = Edge::builder().configure(short).connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    let (held, service_result, edge_result) = within("timeouts", async {
        let hold = async {
            let mut held = Vec::new();
            for session in &sessions {
                held.push(next_message(&session.conn).await);
            }
            held
        };
        tokio::join!(
            hold,
            service.publish(1, Bytes::from_static(b"x")),
            edge.publish("t", Bytes::from_static(b"x"))
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
    // Acknowledging late is harmless.
    for msg in held {
        msg.done();
    }
    within("still up", service.publish_fire_and_forget(1, Bytes::new()))
        .await
        .unwrap();
}

// A message over the gateway's 1 MiB limit fails with TooLarge; the session carries on.
#[tokio::test]
async fn an_over_limit_message_fails_with_too_large() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("s").connect(gw.addr).unwrap();
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let sessions = [gw.session().await, gw.session().await];
    for session in &sessions {
        let conn = session.conn.clone();
        tokio::spawn(async move {
            while let Some(msg) = conn.next_message().await {
                msg.done();
            }
        });
    }
    let huge = Bytes::from(vec![1u8; 1024 * 1024 + 1]);
    let err = within("service", service.publish(1, huge.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    let err = within("edge", edge.publish_fire_and_forget("t", huge))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    let big = Bytes::from(vec![2u8; 1024 * 1024]);
    assert_eq!(
        within("at the limit", service.publish(1, big)).await,
        Ok(())
    );
    assert_eq!(
        within("edge again", edge.publish("t", Bytes::new())).await,
        Ok(())
    );
    assert_eq!(gw.hellos().len(), 2, "no reconnect happened");
}

// Many tasks publishing against a gateway that lets 2 messages await acknowledgement at
// once: publishers wait for room, and every message is acknowledged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_wait_for_room_under_the_inflight_limit() {
    let mut config = Config::default();
    config.settings.max_inflight_messages = 2;
    let mut gw = MockGateway::with_policy(config, accept_all()).await;
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let session = gw.session().await;
    let received = Arc::new(AtomicUsize::new(0));
    let (conn, count) = (session.conn.clone(), received.clone());
    tokio::spawn(async move {
        while let Some(msg) = conn.next_message().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                msg.done();
            });
        }
    });
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let edge = edge.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let body = Bytes::from(format!("{task}-{i}"));
                    edge.publish("t", body).await.unwrap();
                }
            })
        })
        .collect();
    within("160 publishes", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    assert_eq!(received.load(Ordering::SeqCst), 160);
}
