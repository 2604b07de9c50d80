//! Liveness and shutdown: keepalive, idle timeout, dead peers, GOAWAY and drain, close,
//! end of input.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proto_core::testing::Pair;
use proto_core::*;

fn no_keepalive(idle_ms: u32) -> Config {
    let mut c = Config {
        keepalive_interval: Duration::ZERO,
        ..Config::default()
    };
    c.settings.idle_timeout_ms = idle_ms;
    c
}

#[test]
fn keepalive_holds_an_idle_connection_open_for_hours() {
    let mut pair = Pair::connected();
    let before = pair.client.conn.stats().frames_out;
    pair.run_for(Duration::from_secs(3 * 3600));
    assert!(pair.client.conn.is_connected() && pair.server.conn.is_connected());
    // About one ping every 15 s from each side, never more than one outstanding.
    let pings = pair.client.conn.stats().frames_out - before;
    assert!(
        (600..=1500).contains(&pings),
        "client sent {pings} frames in 3 h"
    );
    assert!(lost(&pair.client).is_none() && lost(&pair.server).is_none());
}

#[test]
fn a_blackholed_peer_is_detected_within_interval_plus_timeout() {
    let mut pair = Pair::connected();
    let start = pair.now;
    // The client vanishes: nothing reaches the server any more, and its replies vanish too.
    pair.server.stalled = true;
    pair.client.stalled = true;
    while !pair.server.conn.is_closed() {
        let next = pair
            .next_timeout()
            .expect("an open connection always has a timer");
        pair.run_until(next);
    }
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::TimedOut(TimeoutKind::Keepalive))
    );
    // Keepalive interval (15 s) + keepalive timeout (10 s) after the last byte received.
    let detected_after = pair.now.saturating_duration_since(start);
    assert!(
        detected_after <= Duration::from_secs(25),
        "took {detected_after:?}"
    );
    assert!(
        detected_after >= Duration::from_secs(15),
        "took {detected_after:?}"
    );
    assert!(
        pair.server.conn.is_finished(),
        "a dead peer is closed hard, nothing to flush"
    );
}

#[test]
fn the_idle_timeout_closes_a_quiet_connection_when_keepalive_is_off() {
    let mut pair = Pair::connected_with(
        no_keepalive(60_000),
        no_keepalive(30_000),
        ClientInfo::new(Role::Edge),
    );
    pair.run_for(Duration::from_secs(29));
    assert!(pair.client.conn.is_connected());
    pair.run_for(Duration::from_secs(2));
    // The smaller of the two idle timeouts (30 s) applies to both sides.
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::TimedOut(TimeoutKind::Idle))
    );
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::TimedOut(TimeoutKind::Idle))
    );
}

#[test]
fn traffic_resets_the_idle_timer() {
    let mut pair = Pair::connected_with(
        no_keepalive(10_000),
        no_keepalive(10_000),
        ClientInfo::new(Role::Edge),
    );
    for _ in 0..10 {
        pair.run_for(Duration::from_secs(6));
        let now = pair.now;
        pair.client.conn.ping(now).unwrap();
        pair.drive();
        assert!(
            pair.client
                .take_event(|e| matches!(e, Event::PingAcked { .. }))
                .is_some()
        );
    }
    assert!(pair.client.conn.is_connected());
}

#[test]
fn goaway_drains_in_flight_work_and_refuses_new_work() {
    let mut pair = Pair::connected();
    let now = pair.now;
    let call = pair
        .client
        .conn
        .rpc()
        .call(now, Call::new(name("slow"), Bytes::from_static(b"1")))
        .unwrap();
    let sid = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.client
        .conn
        .stream(sid)
        .unwrap()
        .write(b"upload")
        .unwrap();
    pair.drive();
    let req = pair.server.conn.rpc().next_request().unwrap();
    accept_all(&mut pair.server);
    pair.server
        .conn
        .go_away(now, ErrorCode::GOING_AWAY, "restarting");
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::GoAway { .. })),
        Some(Event::GoAway {
            code: ErrorCode::GOING_AWAY,
            reason: "restarting".into()
        })
    );
    assert!(pair.client.conn.is_going_away());
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("new"), Bytes::new())),
        Err(SendError::GoingAway)
    );
    assert_eq!(
        pair.client.conn.open_stream(OpenStream::default()),
        Err(OpenError::GoingAway)
    );
    // In-flight work completes.
    pair.server
        .conn
        .rpc()
        .respond(req.id, ErrorCode::OK, Bytes::from_static(b"done"))
        .unwrap();
    pair.client.conn.stream(sid).unwrap().finish().unwrap();
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Rpc(RpcEvent::Response { id, .. }) if *id == call))
            .is_some()
    );
    assert_eq!(
        &pair
            .server
            .conn
            .stream(sid)
            .unwrap()
            .read(100)
            .unwrap()
            .unwrap()[..],
        b"upload"
    );
    assert_eq!(
        pair.server.conn.stream(sid).unwrap().read(100).unwrap(),
        None
    );
    pair.server.conn.stream(sid).unwrap().finish().unwrap();
    pair.drive();
    assert_eq!(
        pair.client.conn.stream(sid).unwrap().read(100).unwrap(),
        None
    );
    pair.drive();
    // Nothing left in flight: both sides close cleanly.
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::LocallyClosed {
            code: ErrorCode::GOING_AWAY,
            reason: String::new()
        })
    );
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::PeerClosed {
            code: ErrorCode::GOING_AWAY,
            reason: "restarting".into()
        })
    );
    assert!(pair.server.conn.is_finished() && pair.client.conn.is_finished());
    assert_no_violation(&pair);
}

#[test]
fn work_crossing_the_goaway_fails_definitely() {
    let mut pair = Pair::connected();
    let now = pair.now;
    // The client calls while the server's GOAWAY is already on its way.
    pair.server.conn.go_away(now, ErrorCode::OK, "");
    let call = pair
        .client
        .conn
        .rpc()
        .call(now, Call::new(name("late"), Bytes::new()))
        .unwrap();
    let mut publish = Publish::new(name("t"), Bytes::from_static(b"x"));
    publish.ack = true;
    let msg = pair.client.conn.messages().publish(now, publish).unwrap();
    pair.drive();
    let events = pair.client.take_events();
    assert!(events.contains(&Event::Rpc(RpcEvent::Failed {
        id: call,
        code: ErrorCode::GOING_AWAY
    })));
    assert!(events.contains(&Event::Message(MessageEvent::Failed {
        id: msg,
        code: ErrorCode::GOING_AWAY
    })));
    // The server never handed the late work to its application.
    assert_eq!(pair.server.conn.rpc().next_request(), None);
    assert_eq!(pair.server.conn.messages().next_message(), None);
    assert!(pair.client.conn.is_finished() && pair.server.conn.is_finished());
    assert_no_violation(&pair);
}

#[test]
fn a_drain_that_does_not_finish_is_cut_at_its_deadline() {
    let mut pair = Pair::connected();
    let now = pair.now;
    pair.client
        .conn
        .rpc()
        .call(now, Call::new(name("never"), Bytes::new()))
        .unwrap();
    pair.drive();
    let _ignored = pair.server.conn.rpc().next_request().unwrap();
    pair.server.conn.go_away(now, ErrorCode::GOING_AWAY, "bye");
    pair.run_for(Duration::from_secs(29));
    assert!(!pair.server.conn.is_closed());
    pair.run_for(Duration::from_secs(2));
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::TimedOut(TimeoutKind::Drain))
    );
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::PeerClosed {
            code: ErrorCode::DRAIN_TIMEOUT,
            reason: "graceful shutdown did not finish in time".into()
        })
    );
}

#[test]
fn close_fails_everything_at_once_and_tells_the_peer_why() {
    let mut pair = Pair::connected();
    let now = pair.now;
    pair.client
        .conn
        .rpc()
        .call(now, Call::new(name("x"), Bytes::new()))
        .unwrap();
    pair.drive();
    pair.server
        .conn
        .close(now, ErrorCode::KICKED, "kicked by operator");
    pair.drive();
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::PeerClosed {
            code: ErrorCode::KICKED,
            reason: "kicked by operator".into()
        })
    );
    assert_eq!(
        pair.server.conn.error().map(|e| e.code()),
        Some(ErrorCode::KICKED)
    );
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("x"), Bytes::new())),
        Err(SendError::Closed)
    );
    assert!(
        pair.server.conn.poll_event().is_none(),
        "ConnectionLost comes once and last"
    );
}

#[test]
fn end_of_input_without_goaway_is_a_transport_loss() {
    let mut pair = Pair::connected();
    let now = pair.now;
    pair.client.conn.handle_eof(now);
    assert!(pair.client.conn.is_finished());
    assert_eq!(
        pair.client.conn.error(),
        Some(&ConnectionError::TransportClosed)
    );
    let events: Vec<Event> = std::iter::from_fn(|| pair.client.conn.poll_event()).collect();
    assert_eq!(
        events,
        vec![Event::ConnectionLost(ConnectionError::TransportClosed)]
    );
}

#[test]
fn a_ping_reports_the_round_trip() {
    let mut pair = Pair::connected();
    let now = pair.now;
    pair.client.conn.ping(now).unwrap();
    // Deliver the ping, let 40 ms pass, then deliver the answer.
    pair.step();
    pair.now = pair.now.saturating_add(Duration::from_millis(40));
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::PingAcked { .. })),
        Some(Event::PingAcked {
            rtt: Duration::from_millis(40)
        })
    );
    assert_eq!(pair.client.conn.rtt(), Some(Duration::from_millis(40)));
}

#[test]
fn poll_timeout_names_its_timer_and_never_busy_loops() {
    let mut pair = Pair::connected();
    for _ in 0..200 {
        let Some((at, kind)) = pair.client.conn.poll_timeout() else {
            panic!("no timer on an open connection")
        };
        assert!(
            matches!(
                kind,
                TimerKind::KeepAlive | TimerKind::KeepAliveTimeout | TimerKind::Idle
            ),
            "{kind:?}"
        );
        pair.now = pair.now.max(at);
        pair.client.conn.handle_timeout(pair.now);
        pair.server.conn.handle_timeout(pair.now);
        pair.drive();
        if let Some((next, _)) = pair.client.conn.poll_timeout() {
            assert!(
                next > pair.now,
                "the timer did not move after handle_timeout"
            );
        }
    }
    assert!(pair.client.conn.is_connected());
}

#[test]
fn bytes_received_before_the_end_stay_readable() {
    let mut pair = Pair::connected();
    let finished = pair.server.conn.open_stream(OpenStream::default()).unwrap();
    let cut = pair.server.conn.open_stream(OpenStream::default()).unwrap();
    pair.server
        .conn
        .stream(finished)
        .unwrap()
        .write(b"complete")
        .unwrap();
    pair.server.conn.stream(finished).unwrap().finish().unwrap();
    pair.server
        .conn
        .stream(cut)
        .unwrap()
        .write(b"partial")
        .unwrap();
    pair.drive();
    accept_all(&mut pair.client);
    // The transport dies before the client application read anything.
    let now = pair.now;
    pair.client.conn.handle_eof(now);
    assert_eq!(
        pair.client.conn.error(),
        Some(&ConnectionError::TransportClosed)
    );
    let mut s = pair.client.conn.stream(finished).unwrap();
    assert_eq!(&s.read(100).unwrap().unwrap()[..], b"complete");
    assert_eq!(s.read(100).unwrap(), None);
    let mut s = pair.client.conn.stream(cut).unwrap();
    assert_eq!(&s.read(100).unwrap().unwrap()[..], b"partial");
    assert_eq!(
        s.read(100),
        Err(ReadError::Closed),
        "no FIN came: the stream was cut"
    );
    assert_eq!(s.write(b"x"), Err(WriteError::Closed));
    assert_eq!(
        pair.client.conn.stream(finished).err(),
        Some(StreamError::Closed)
    );
}

#[test]
fn work_arriving_after_our_goaway_is_dropped_without_replies() {
    let mut pair = Pair::connected();
    let now = pair.now;
    // The server keeps one call of its own in flight, so the drain lasts.
    pair.server
        .conn
        .rpc()
        .call(now, Call::new(name("keep"), Bytes::new()))
        .unwrap();
    pair.drive();
    let held = pair.client.conn.rpc().next_request().unwrap();
    pair.server
        .conn
        .go_away(now, ErrorCode::GOING_AWAY, "draining");
    // The client has not seen the GOAWAY yet (nothing reaches it) and sends new work.
    pair.client.stalled = true;
    pair.drive();
    let frames_before = pair.server.conn.stats().frames_out;
    let mut late = Vec::new();
    for _ in 0..200 {
        late.push(
            pair.client
                .conn
                .rpc()
                .call(now, Call::new(name("late"), Bytes::new()))
                .unwrap(),
        );
    }
    pair.drive();
    // No reply per late call (at most a credit update or two): the GOAWAY, already on its
    // way, tells the client they were not processed.
    let sent = pair.server.conn.stats().frames_out - frames_before;
    assert!(sent <= 2, "{sent} frames answered 200 late calls");
    assert_eq!(pair.server.conn.rpc().next_request(), None);
    pair.client.stalled = false;
    pair.drive();
    let failed = pair
        .client
        .take_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Rpc(RpcEvent::Failed {
                    code: ErrorCode::GOING_AWAY,
                    ..
                })
            )
        })
        .count();
    assert_eq!(failed, late.len());
    pair.client
        .conn
        .rpc()
        .respond(held.id, ErrorCode::OK, Bytes::new())
        .unwrap();
    pair.drive();
    assert!(pair.server.conn.is_finished() && pair.client.conn.is_finished());
    assert_no_violation(&pair);
}
