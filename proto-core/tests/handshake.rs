//! Handshake scenarios: what a server sees in HELLO, deferred accept and reject, the
//! decision deadline, limits checked before the application decides, registrations.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proto_core::testing::Pair;
use proto_core::*;

fn service_info() -> ClientInfo {
    ClientInfo {
        role: Role::Service,
        requested_id: Some(77),
        name: name("billing"),
        version: name("2.1.0"),
        token: Bytes::from_static(b"s3cret"),
        metadata: Bytes::from_static(b"{\"zone\":\"eu\"}"),
        registrations: vec![
            Registration {
                kind: RegistrationKind::Method,
                name: name("charge"),
            },
            Registration {
                kind: RegistrationKind::Topic,
                name: name("usage"),
            },
            Registration {
                kind: RegistrationKind::Hook,
                name: name("edge_id"),
            },
        ],
    }
}

fn manual(info: ClientInfo) -> Pair {
    let mut pair = Pair::new(Config::default(), Config::default(), info);
    pair.auto_accept = None;
    pair
}

#[test]
fn the_server_sees_everything_the_client_announced() {
    let mut pair = manual(service_info());
    pair.drive();
    let Some(Event::HandshakeRequest(hello)) = pair
        .server
        .take_event(|e| matches!(e, Event::HandshakeRequest(_)))
    else {
        panic!("no handshake request: {:?}", pair.server.events);
    };
    assert_eq!(hello.info, service_info());
    assert_eq!(hello.settings, Settings::DEFAULT);
    assert_eq!(
        pair.server.conn.peer_hello().map(|h| &h.info),
        Some(&service_info())
    );
    let now = pair.now;
    pair.server
        .conn
        .accept_handshake(
            now,
            HandshakeAccept {
                assigned_id: 77,
                metadata: Bytes::from_static(b"gw-1"),
            },
        )
        .unwrap();
    pair.drive();
    assert!(pair.client.conn.is_connected());
    assert_eq!(pair.client.conn.assigned_id(), 77);
    assert_eq!(pair.client.conn.version(), 1);
    assert!(
        pair.client
            .take_event(|e| *e
                == Event::Connected(Connected {
                    assigned_id: 77,
                    version: 1
                }))
            .is_some()
    );
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::Connected(_)))
            .is_some()
    );
    assert_eq!(pair.server.conn.peer_registrations().count(), 3);
}

#[test]
fn a_rejection_reaches_the_client_with_its_code_and_reason() {
    let mut pair = manual(service_info());
    pair.drive();
    let now = pair.now;
    pair.server
        .conn
        .reject_handshake(now, ErrorCode::UNAUTHORIZED, "unknown token")
        .unwrap();
    pair.drive();
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::Refused {
            code: ErrorCode::UNAUTHORIZED,
            reason: "unknown token".into()
        })
    );
    assert!(pair.client.conn.is_finished());
    assert!(pair.server.conn.is_finished(), "the REFUSE was flushed");
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::LocallyClosed {
            code: ErrorCode::UNAUTHORIZED,
            reason: "unknown token".into()
        })
    );
}

#[test]
fn the_decision_may_take_time_within_the_deadline() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    pair.drive();
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::HandshakeRequest(_)))
            .is_some()
    );
    // The gateway asks a service for the edge id; it takes 8 of the 10 seconds.
    pair.run_for(Duration::from_secs(8));
    assert!(!pair.client.conn.is_closed());
    let now = pair.now;
    pair.server
        .conn
        .accept_handshake(
            now,
            HandshakeAccept {
                assigned_id: 5,
                ..Default::default()
            },
        )
        .unwrap();
    pair.drive();
    assert!(pair.client.conn.is_connected());
    // The connection then lives on: the handshake deadline no longer applies.
    pair.run_for(Duration::from_secs(60));
    assert!(pair.client.conn.is_connected());
    assert_no_violation(&pair);
}

#[test]
fn an_undecided_handshake_is_refused_at_the_deadline() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    pair.run_for(Duration::from_secs(11));
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::Refused {
            code: ErrorCode::HANDSHAKE_TIMEOUT,
            reason: "the handshake was not decided in time".into()
        })
    );
    assert_eq!(
        lost(&pair.server),
        Some(ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
    let now = pair.now;
    assert_eq!(
        pair.server
            .conn
            .accept_handshake(now, HandshakeAccept::default()),
        Err(ApiMisuse::NoHandshakePending)
    );
}

#[test]
fn oversized_metadata_is_refused_before_the_application_decides() {
    let mut info = ClientInfo::new(Role::Edge);
    info.metadata = Bytes::from(vec![b'm'; 16 * 1024 + 1]);
    let mut pair = manual(info);
    pair.drive();
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::HandshakeRequest(_)))
            .is_none()
    );
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::Refused {
            code: ErrorCode::TOO_LARGE,
            reason: "metadata of 16385 bytes exceeds the limit of 16384".into()
        })
    );
}

#[test]
fn commands_before_the_handshake_are_refused_locally() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    let now = pair.now;
    assert_eq!(
        pair.client.conn.open_stream(OpenStream::default()),
        Err(OpenError::NotConnected)
    );
    assert_eq!(
        pair.client
            .conn
            .rpc()
            .call(now, Call::new(name("m"), Bytes::new())),
        Err(SendError::NotConnected)
    );
    assert_eq!(pair.client.conn.ping(now), Err(ApiMisuse::NotConnected));
    assert_eq!(
        pair.client.conn.register(vec![]),
        Err(ApiMisuse::NotConnected)
    );
    assert_eq!(
        pair.client
            .conn
            .accept_handshake(now, HandshakeAccept::default()),
        Err(ApiMisuse::NotServer)
    );
}

#[test]
fn registrations_change_after_the_handshake() {
    let mut pair = Pair::connected_with(Config::default(), Config::default(), service_info());
    let refund = Registration {
        kind: RegistrationKind::Method,
        name: name("refund"),
    };
    let charge = Registration {
        kind: RegistrationKind::Method,
        name: name("charge"),
    };
    pair.client
        .conn
        .register(vec![refund.clone(), charge.clone()])
        .unwrap();
    pair.client.conn.unregister(vec![charge.clone()]).unwrap();
    pair.drive();
    let events: Vec<Event> = pair
        .server
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::PeerRegistration { .. }))
        .collect();
    assert_eq!(
        events,
        vec![
            Event::PeerRegistration {
                remove: false,
                entries: vec![refund.clone()]
            },
            Event::PeerRegistration {
                remove: true,
                entries: vec![charge.clone()]
            },
        ]
    );
    let names: Vec<&str> = pair
        .server
        .conn
        .peer_registrations()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.contains(&"refund") && !names.contains(&"charge"));
    assert_no_violation(&pair);
}

#[test]
fn a_client_cannot_register_more_than_the_server_accepts() {
    let mut server = Config::default();
    server.settings.max_registrations = 4;
    let mut pair = Pair::connected_with(Config::default(), server, service_info());
    let extra: Vec<Registration> = (0..2)
        .map(|i| Registration {
            kind: RegistrationKind::Topic,
            name: name(&format!("t{i}")),
        })
        .collect();
    assert_eq!(
        pair.client.conn.register(extra),
        Err(ApiMisuse::TooManyRegistrations { max: 4 })
    );
}

#[test]
fn a_client_gives_up_on_a_silent_server() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    // A black hole: nothing reaches the server, nothing (not even EOF) comes back.
    pair.server.stalled = true;
    pair.client.stalled = true;
    pair.run_for(Duration::from_secs(14));
    assert!(!pair.client.conn.is_closed());
    pair.run_for(Duration::from_secs(2));
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
    assert!(pair.client.conn.is_finished());
}

#[test]
fn a_client_closing_mid_handshake_just_drops_the_transport() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    pair.drive();
    let now = pair.now;
    pair.client
        .conn
        .close(now, ErrorCode::CANCELLED, "user quit");
    pair.drive();
    assert!(pair.client.conn.is_finished());
    assert_eq!(lost(&pair.server), Some(ConnectionError::TransportClosed));
}

#[test]
fn a_server_closing_while_deciding_refuses() {
    let mut pair = manual(ClientInfo::new(Role::Edge));
    pair.drive();
    let now = pair.now;
    pair.server
        .conn
        .close(now, ErrorCode::GOING_AWAY, "shutting down");
    pair.drive();
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::Refused {
            code: ErrorCode::GOING_AWAY,
            reason: "shutting down".into()
        })
    );
}

#[test]
fn a_hello_over_64_kib_is_refused_locally() {
    let mut info = ClientInfo::new(Role::Edge);
    info.token = Bytes::from(vec![b't'; 70_000]);
    assert!(matches!(
        Connection::client(Config::default(), info, Timestamp::ZERO),
        Err(ConfigError::HelloTooLarge { max: 65536, .. })
    ));
}

#[test]
fn goaway_with_an_error_code_is_a_close() {
    let mut pair = Pair::connected();
    let now = pair.now;
    pair.server.conn.go_away(now, ErrorCode::KICKED, "kicked");
    pair.drive();
    assert_eq!(
        lost(&pair.client),
        Some(ConnectionError::PeerClosed {
            code: ErrorCode::KICKED,
            reason: "kicked".into()
        })
    );
    assert!(pair.server.conn.is_finished());
}
