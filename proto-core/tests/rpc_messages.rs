//! RPC and message scenarios: replies, error kinds, fragmentation, relative timeouts after
//! clock jumps, cancellation, in-flight limits, and done/error acknowledgements.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proto_core::testing::{Chunking, Pair};
use proto_core::*;

fn call(pair: &mut Pair, method: &str, body: Bytes, timeout: Option<Duration>) -> RequestId {
    let now = pair.now;
    let mut c = Call::new(name(method), body);
    c.timeout = timeout;
    pair.client.conn.rpc().call(now, c).unwrap()
}

fn response(pair: &mut Pair, id: RequestId) -> Option<(ErrorCode, Bytes)> {
    pair.client
        .take_event(|e| matches!(e, Event::Rpc(RpcEvent::Response { id: got, .. }) if *got == id))
        .map(|e| match e {
            Event::Rpc(RpcEvent::Response { status, body, .. }) => (status, body),
            _ => unreachable!(),
        })
}

#[test]
fn error_statuses_and_texts_survive() {
    let mut pair = Pair::connected();
    let id = call(&mut pair, "missing", Bytes::new(), None);
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    pair.server
        .conn
        .rpc()
        .respond(
            req.id,
            ErrorCode::METHOD_NOT_FOUND,
            Bytes::from_static(b"no such method: missing"),
        )
        .unwrap();
    pair.drive();
    assert_eq!(
        response(&mut pair, id),
        Some((
            ErrorCode::METHOD_NOT_FOUND,
            Bytes::from_static(b"no such method: missing")
        ))
    );
    // A second answer to the same request is refused locally.
    assert_eq!(
        pair.server
            .conn
            .rpc()
            .respond(req.id, ErrorCode::OK, Bytes::new()),
        Err(ReplyError::Unknown)
    );
}

#[test]
fn a_megabyte_body_is_fragmented_and_reassembled_both_ways() {
    let mut pair = Pair::connected();
    pair.chunking = Chunking::Random { max: 20_000 };
    let body = pattern_bytes(7, 0, 1 << 20);
    let id = call(&mut pair, "upload", body.clone(), None);
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    assert_eq!(req.body, body);
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, body.clone())
        .unwrap();
    pair.drive();
    assert_eq!(response(&mut pair, id), Some((ErrorCode::OK, body)));
    assert_no_violation(&pair);
}

#[test]
fn a_small_call_is_not_stuck_behind_a_large_one() {
    let mut pair = Pair::connected();
    let big = call(&mut pair, "upload", Bytes::from(vec![1u8; 1 << 20]), None);
    let small = call(&mut pair, "ping", Bytes::from_static(b"!"), None);
    // Deliver only a little: the small request must already be complete at the server.
    for _ in 0..3 {
        pair.step();
    }
    let first = pair
        .server
        .conn
        .rpc()
        .next_request()
        .expect("the small request arrived first");
    assert_eq!(first.id, small);
    pair.drive();
    assert_eq!(pair.server.conn.rpc().next_request().unwrap().id, big);
}

/// Keepalive and idle timeouts longer than the jumps below, so only RPC deadlines fire.
fn patient() -> Config {
    let mut c = Config {
        keepalive_interval: Duration::from_secs(120),
        ..Config::default()
    };
    c.settings.idle_timeout_ms = 600_000;
    c
}

#[test]
fn the_timeout_fires_after_a_clock_jump_and_cancels_the_callee() {
    let mut pair = Pair::connected_with(patient(), patient(), ClientInfo::new(Role::Edge));
    let id = call(
        &mut pair,
        "slow",
        Bytes::from_static(b"x"),
        Some(Duration::from_secs(30)),
    );
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    assert!(req.deadline.is_some());
    // Thirty seconds pass in one jump.
    pair.advance(Duration::from_secs(30));
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::Rpc(RpcEvent::Failed { .. }))),
        Some(Event::Rpc(RpcEvent::Failed {
            id,
            code: ErrorCode::TIMEOUT
        }))
    );
    // The callee hears about it (the caller's CANCEL, or its own deadline).
    let cancelled = pair
        .server
        .take_event(|e| matches!(e, Event::Rpc(RpcEvent::Cancelled { .. })))
        .expect("the callee is told to stop");
    assert!(matches!(cancelled, Event::Rpc(RpcEvent::Cancelled { id: got, .. }) if got == req.id));
    // A late response is refused locally and the slot is free.
    assert_eq!(
        pair.server
            .conn
            .rpc()
            .respond(req.id, ErrorCode::OK, Bytes::new()),
        Err(ReplyError::Unknown)
    );
    assert_eq!(pair.server.conn.rpc().requests_pending(), 0);
    assert_eq!(pair.client.conn.rpc().calls_in_flight(), 0);
    assert_no_violation(&pair);
}

#[test]
fn a_jump_past_the_keepalive_fails_the_call_with_timeout_before_the_connection() {
    let mut pair = Pair::connected();
    let id = call(
        &mut pair,
        "slow",
        Bytes::from_static(b"x"),
        Some(Duration::from_secs(30)),
    );
    pair.drive();
    pair.advance(Duration::from_secs(30));
    let events = pair.client.take_events();
    assert_eq!(
        events,
        vec![
            Event::Rpc(RpcEvent::Failed {
                id,
                code: ErrorCode::TIMEOUT
            }),
            Event::ConnectionLost(ConnectionError::TimedOut(TimeoutKind::Keepalive)),
        ]
    );
}

#[test]
fn a_request_cancelled_before_it_was_taken_is_never_seen() {
    let mut pair = Pair::connected();
    let id = call(&mut pair, "work", Bytes::from_static(b"x"), None);
    pair.drive();
    assert!(pair.client.conn.rpc().cancel(id));
    pair.drive();
    assert_eq!(pair.server.conn.rpc().next_request(), None);
    assert_eq!(pair.server.conn.rpc().requests_pending(), 0);
    // No event for an explicitly cancelled call.
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Rpc(_)))
            .is_none()
    );
    assert_no_violation(&pair);
}

#[test]
fn cancelling_a_taken_request_tells_the_handler() {
    let mut pair = Pair::connected();
    let id = call(&mut pair, "work", Bytes::from_static(b"x"), None);
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    pair.client.conn.rpc().cancel(id);
    pair.drive();
    assert_eq!(
        pair.server
            .take_event(|e| matches!(e, Event::Rpc(RpcEvent::Cancelled { .. }))),
        Some(Event::Rpc(RpcEvent::Cancelled {
            id: req.id,
            code: ErrorCode::CANCELLED
        }))
    );
}

#[test]
fn calls_beyond_the_peer_limit_are_busy_at_once_and_unblock() {
    let mut server = Config::default();
    server.settings.max_inflight_requests = 2;
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Service));
    call(&mut pair, "a", Bytes::new(), None);
    call(&mut pair, "b", Bytes::new(), None);
    let now = pair.now;
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("c"), Bytes::new())),
        Err(SendError::Busy { limit: 2 })
    );
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::new())
        .unwrap();
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Unblocked))
            .is_some()
    );
    call(&mut pair, "c", Bytes::new(), None);
    assert_no_violation(&pair);
}

#[test]
fn a_body_larger_than_the_peer_accepts_is_refused_locally() {
    let mut server = Config::default();
    server.settings.max_message_size = 1000;
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Edge));
    let now = pair.now;
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("m"), Bytes::from(vec![0u8; 1001]))),
        Err(SendError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
}

#[test]
fn the_send_queue_is_bounded() {
    let client = Config {
        exchange_send_buffer: 10_000,
        ..Config::default()
    };
    let mut pair = Pair::connected_with(client, Config::default(), ClientInfo::new(Role::Edge));
    call(&mut pair, "a", Bytes::from(vec![0u8; 8000]), None);
    let now = pair.now;
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("b"), Bytes::from(vec![0u8; 8000]))),
        Err(SendError::Blocked)
    );
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Unblocked))
            .is_some()
    );
    call(&mut pair, "b", Bytes::from(vec![0u8; 8000]), None);
}

#[test]
fn addresses_travel_with_requests() {
    let mut pair = Pair::connected_with(
        Config::default(),
        Config::default(),
        ClientInfo::new(Role::Service),
    );
    let now = pair.now;
    let mut c = Call::new(name("reboot"), Bytes::new());
    c.address = Address {
        peer_id: 4242,
        peer_name: Name::EMPTY,
    };
    pair.client.conn.rpc().call(now, c).unwrap();
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    assert_eq!(req.address.peer_id, 4242);
    assert_eq!(req.method, "reboot");
}

#[test]
fn messages_are_acknowledged_with_done_or_error() {
    let mut pair = Pair::connected();
    let now = pair.now;
    let done = pair
        .client
        .conn
        .messages()
        .publish(
            now,
            Publish::new(name("telemetry"), Bytes::from_static(b"t=21")),
        )
        .unwrap();
    let failed = pair
        .client
        .conn
        .messages()
        .publish(
            now,
            Publish::new(name("telemetry"), Bytes::from_static(b"t=??")),
        )
        .unwrap();
    pair.drive();
    let m1 = pair.server.conn.messages().next_message().unwrap();
    let m2 = pair.server.conn.messages().next_message().unwrap();
    assert!(m1.ack_wanted && m2.ack_wanted);
    assert_eq!(m1.topic, "telemetry");
    pair.server
        .conn
        .messages()
        .ack(m1.id, ErrorCode::OK, "")
        .unwrap();
    pair.server
        .conn
        .messages()
        .ack(m2.id, ErrorCode::APPLICATION_ERROR, "unparseable")
        .unwrap();
    pair.drive();
    let acks: Vec<Event> = pair.client.take_events();
    assert!(acks.contains(&Event::Message(MessageEvent::Acked {
        id: done,
        code: ErrorCode::OK,
        text: String::new()
    })));
    assert!(acks.contains(&Event::Message(MessageEvent::Acked {
        id: failed,
        code: ErrorCode::APPLICATION_ERROR,
        text: "unparseable".into()
    })));
    assert_no_violation(&pair);
}

#[test]
fn fire_and_forget_messages_need_no_acknowledgement() {
    let mut pair = Pair::connected();
    let now = pair.now;
    for i in 0..100u8 {
        let mut p = Publish::new(name("log"), Bytes::from(vec![i]));
        p.ack = false;
        pair.client.conn.messages().publish(now, p).unwrap();
    }
    pair.drive();
    for i in 0..100u8 {
        let m = pair.server.conn.messages().next_message().unwrap();
        assert!(!m.ack_wanted);
        assert_eq!(&m.body[..], &[i]);
        assert_eq!(
            pair.server.conn.messages().ack(m.id, ErrorCode::OK, ""),
            Err(ReplyError::Unknown)
        );
    }
    assert_eq!(pair.server.conn.messages().pending(), 0);
    assert_eq!(pair.client.conn.messages().awaiting_ack(), 0);
}

#[test]
fn an_unacknowledged_message_times_out() {
    let mut pair = Pair::connected();
    let now = pair.now;
    let mut p = Publish::new(name("cmd"), Bytes::from_static(b"x"));
    p.timeout = Some(Duration::from_secs(5));
    let id = pair.client.conn.messages().publish(now, p).unwrap();
    pair.drive();
    let m = pair.server.conn.messages().next_message().unwrap();
    pair.run_for(Duration::from_secs(6));
    assert!(
        pair.client
            .take_event(|e| *e
                == Event::Message(MessageEvent::Failed {
                    id,
                    code: ErrorCode::TIMEOUT
                }))
            .is_some()
    );
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::Message(MessageEvent::Cancelled { .. })))
            .is_some()
    );
    assert_eq!(
        pair.server.conn.messages().ack(m.id, ErrorCode::OK, ""),
        Err(ReplyError::Unknown)
    );
    assert_no_violation(&pair);
}

#[test]
fn a_slow_consumer_slows_the_publisher_instead_of_growing_memory() {
    let mut pair = Pair::connected();
    let now = pair.now;
    let window = Settings::DEFAULT.message_window as u64;
    // Publish far more than one window without the server taking anything.
    let mut published = 0u64;
    for _ in 0..64 {
        let mut p = Publish::new(name("bulk"), Bytes::from(vec![0u8; 256 * 1024]));
        p.ack = false;
        match pair.client.conn.messages().publish(now, p) {
            Ok(_) => published += 1,
            Err(SendError::Blocked) => {
                pair.drive();
            }
            Err(e) => panic!("{e}"),
        }
    }
    pair.drive();
    let mut taken = 0u64;
    let mut bytes = 0u64;
    while let Some(m) = pair.server.conn.messages().next_message() {
        taken += 1;
        bytes += m.body.len() as u64;
        if taken == 1 {
            // Everything received so far fit the window.
            assert!(bytes <= window);
        }
    }
    assert!(
        taken * (256 * 1024 + HEAD_CREDIT) <= window + 256 * 1024,
        "more than a window arrived unread"
    );
    pair.drive();
    while pair.server.conn.messages().next_message().is_some() {
        taken += 1;
        pair.drive();
    }
    assert_eq!(taken, published);
    assert_no_violation(&pair);
}

#[test]
fn the_server_can_call_the_client_too() {
    let mut pair = Pair::connected();
    let now = pair.now;
    let id = pair
        .server
        .conn
        .rpc()
        .call(now, Call::new(name("status"), Bytes::new()))
        .unwrap();
    pair.drive();
    let req = pair.client.conn.rpc().next_request().unwrap();
    pair.client
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::from_static(b"fine"))
        .unwrap();
    pair.drive();
    assert!(
        pair.server
            .take_event(
                |e| matches!(e, Event::Rpc(RpcEvent::Response { id: got, .. }) if *got == id)
            )
            .is_some()
    );
}

#[test]
fn many_calls_in_flight_complete_out_of_order() {
    let mut pair = Pair::connected();
    pair.chunking = Chunking::Random { max: 100 };
    let ids: Vec<RequestId> = (0..200)
        .map(|i| call(&mut pair, "m", pattern_bytes(i, 0, i as usize * 10), None))
        .collect();
    pair.drive();
    let mut reqs = Vec::new();
    while let Some(r) = pair.server.conn.rpc().next_request() {
        reqs.push(r);
    }
    assert_eq!(reqs.len(), 200);
    reqs.reverse();
    for r in reqs {
        pair.server
            .conn
            .rpc()
            .respond(r.id, ErrorCode::OK, r.body)
            .unwrap();
    }
    pair.drive();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            response(&mut pair, *id),
            Some((ErrorCode::OK, pattern_bytes(i as u64, 0, i * 10)))
        );
    }
    assert_no_violation(&pair);
}

/// A window that holds exactly one megabyte call: any credit that leaks blocks the next.
fn one_call_window() -> Config {
    let mut c = patient();
    c.settings.message_window = (1 << 20) + HEAD_CREDIT as u32;
    c
}

#[test]
fn cancelling_a_half_sent_call_gives_its_credit_back() {
    let mut pair = Pair::connected_with(
        one_call_window(),
        one_call_window(),
        ClientInfo::new(Role::Edge),
    );
    for round in 0..3 {
        let id = call(
            &mut pair,
            "upload",
            Bytes::from(vec![round as u8; 1 << 20]),
            None,
        );
        // Let a few fragments out, then give up.
        for _ in 0..2 {
            pair.step();
        }
        assert!(pair.client.conn.rpc().cancel(id));
        pair.drive();
        assert_eq!(pair.server.conn.rpc().next_request(), None);
    }
    // With every abandoned call's credit back, a full-size call still goes through.
    let id = call(&mut pair, "upload", Bytes::from(vec![9u8; 1 << 20]), None);
    pair.drive();
    let req = pair
        .server
        .conn
        .rpc()
        .next_request()
        .expect("the last call was blocked by leaked credit");
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::new())
        .unwrap();
    pair.drive();
    assert!(response(&mut pair, id).is_some());
    assert_no_violation(&pair);
}

#[test]
fn a_call_timing_out_mid_response_gives_the_response_credit_back() {
    let mut pair = Pair::connected_with(
        one_call_window(),
        one_call_window(),
        ClientInfo::new(Role::Edge),
    );
    let id = call(
        &mut pair,
        "download",
        Bytes::new(),
        Some(Duration::from_secs(5)),
    );
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::from(vec![1u8; 1 << 20]))
        .unwrap();
    // Part of the response arrives, then the caller's deadline passes.
    for _ in 0..2 {
        pair.step();
    }
    pair.advance(Duration::from_secs(5));
    assert!(
        pair.client
            .take_event(|e| *e
                == Event::Rpc(RpcEvent::Failed {
                    id,
                    code: ErrorCode::TIMEOUT
                }))
            .is_some()
    );
    // A second full-size response must still fit the client's window.
    let id = call(&mut pair, "download", Bytes::new(), None);
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::from(vec![2u8; 1 << 20]))
        .unwrap();
    pair.drive();
    assert_eq!(
        response(&mut pair, id).map(|(s, b)| (s, b.len())),
        Some((ErrorCode::OK, 1 << 20))
    );
    assert_no_violation(&pair);
}

#[test]
fn ids_skipped_by_calls_cancelled_before_they_were_sent_are_fine() {
    let mut pair = Pair::connected();
    let skipped = call(&mut pair, "never-sent", Bytes::new(), None);
    assert!(pair.client.conn.rpc().cancel(skipped));
    let now = pair.now;
    let mut p = Publish::new(name("t"), Bytes::new());
    let dropped = pair.client.conn.messages().publish(now, p.clone()).unwrap();
    assert!(pair.client.conn.messages().cancel(dropped));
    let id = call(&mut pair, "sent", Bytes::from_static(b"x"), None);
    p.ack = false;
    pair.client.conn.messages().publish(now, p).unwrap();
    pair.drive();
    let req = pair
        .server
        .conn
        .rpc()
        .next_request()
        .expect("the next id, after a gap, is accepted");
    assert_eq!(req.method, "sent");
    assert!(pair.server.conn.messages().next_message().is_some());
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::new())
        .unwrap();
    pair.drive();
    assert!(response(&mut pair, id).is_some());
    assert_no_violation(&pair);
}
