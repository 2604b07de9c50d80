//! Hostile peers before and around the handshake, and frames that are invalid from their
//! header alone: silence, slowloris, HTTP and garbage, version mismatch, frames out of
//! phase, unknown types, bad flags and ids, oversized lengths. Each test plays the attacker
//! with raw bytes against a real server [`Connection`] and checks the documented outcome
//! (error, GOAWAY or REFUSE code) and that memory stayed bounded.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proto_core::codec::{DecodeError, Frame, FrameType, MAGIC, ServerPreface, flags};
use proto_core::testing::Pair;
use proto_core::*;
use support::*;

const SECOND: Duration = Duration::from_secs(1);

fn hello_bytes(settings: Settings, info: ClientInfo) -> Vec<u8> {
    encode(&Frame::Hello(Box::new(Hello { info, settings })))
}

#[test]
fn silence_is_closed_at_the_handshake_deadline_without_a_byte_sent() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    let deadline = START.saturating_add(Duration::from_secs(10));
    assert_eq!(
        v.conn.poll_timeout(),
        Some((deadline, TimerKind::Handshake))
    );
    v.advance(Duration::from_millis(9_999));
    assert!(!v.conn.is_closed(), "closed before the deadline");
    v.advance(Duration::from_millis(1));
    assert_eq!(
        v.conn.error(),
        Some(&ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
    // The peer may not even speak Tether: nothing at all is sent to it.
    assert!(v.read_wire().is_empty());
    assert!(v.conn.is_finished());
}

#[test]
fn half_a_preface_dribbled_does_not_extend_the_deadline() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    // One byte per second: a slowloris on the magic.
    for byte in &MAGIC[..5] {
        assert_eq!(v.feed(&[*byte]), 1);
        v.advance(SECOND);
    }
    assert_eq!(v.conn.buffered_input(), 5, "only what arrived is buffered");
    assert_eq!(
        v.conn.input_capacity(),
        Config::default().max_input_buffer as usize - 5
    );
    assert!(v.read_wire().is_empty(), "no preface before the client's");
    v.advance(Duration::from_secs(5));
    assert_eq!(
        v.conn.error(),
        Some(&ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
    assert!(v.read_wire().is_empty());
    assert_eq!(v.conn.buffered_input(), 0);
}

#[test]
fn slowloris_hello_is_closed_at_the_deadline_with_goaway_handshake_timeout() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    let mut bytes = client_preface(&[1]);
    let info = ClientInfo {
        metadata: Bytes::from(vec![1; 1000]),
        ..ClientInfo::new(Role::Edge)
    };
    let hello = hello_bytes(Settings::DEFAULT, info);
    bytes.extend_from_slice(&hello[..hello.len() / 2]);
    // 100 ms per byte: the whole preface and half a HELLO take far longer than 10 s.
    let mut fed = 0;
    while !v.conn.is_closed() {
        assert_eq!(v.feed(&bytes[fed..fed + 1]), 1);
        fed += 1;
        v.advance(Duration::from_millis(100));
        assert!(v.conn.buffered_input() <= hello.len() / 2);
    }
    assert!(
        fed < bytes.len(),
        "the deadline did not wait for the dribble"
    );
    assert_eq!(
        v.conn.error(),
        Some(&ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
    assert_eq!(v.now, START.saturating_add(Duration::from_secs(10)));
    // The preface was answered, so the client speaks Tether: it is told why.
    v.assert_final_goaway(ErrorCode::HANDSHAKE_TIMEOUT);
    println!(
        "slowloris: {fed} of {} bytes taken before the deadline",
        bytes.len()
    );
}

#[test]
fn a_hello_header_claiming_64k_allocates_nothing_while_waiting() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    v.feed_all(&client_preface(&[1]));
    let before = total_allocated();
    v.feed_all(&header(MAX_HANDSHAKE, FrameType::Hello as u8, 0, 0));
    v.feed_all(&[2; 100]);
    let allocated = total_allocated() - before;
    assert_eq!(v.conn.buffered_input(), 113);
    assert!(
        allocated < 16 * 1024,
        "{allocated} bytes allocated for a 64 KiB claim"
    );
    println!("64 KiB HELLO claim: {allocated} bytes allocated while waiting");
    v.advance(Duration::from_secs(10));
    v.assert_final_goaway(ErrorCode::HANDSHAKE_TIMEOUT);
}

const MAX_HANDSHAKE: u32 = proto_core::codec::MAX_HANDSHAKE_PAYLOAD;

#[test]
fn an_oversized_hello_is_a_frame_size_error_from_its_header() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    v.feed_all(&client_preface(&[1]));
    v.feed_all(&header(MAX_HANDSHAKE + 1, FrameType::Hello as u8, 0, 0));
    v.assert_closed_with(ProtocolViolation::Decode(DecodeError::FrameTooLarge {
        ty: FrameType::Hello,
        len: MAX_HANDSHAKE + 1,
        max: MAX_HANDSHAKE,
    }));
}

#[test]
fn a_server_that_never_decides_refuses_with_handshake_timeout() {
    let _serial = serial();
    // The server's deadline comes first, so the client hears why instead of timing out.
    let server = Config {
        handshake_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut pair = Pair::new(Config::default(), server, ClientInfo::new(Role::Edge));
    pair.auto_accept = None;
    pair.drive();
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::HandshakeRequest(_)))
            .is_some()
    );
    pair.run_for(Duration::from_secs(6));
    assert!(matches!(
        pair.client.conn.error(),
        Some(ConnectionError::Refused {
            code: ErrorCode::HANDSHAKE_TIMEOUT,
            ..
        })
    ));
    assert_eq!(
        pair.server.conn.error(),
        Some(&ConnectionError::TimedOut(TimeoutKind::Handshake))
    );
}

#[test]
fn an_http_request_gets_a_400_and_the_connection_closes() {
    let _serial = serial();
    for request in [
        &b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST /api HTTP/1.1\r\n",
    ] {
        let mut v = Victim::server(Config::default());
        // A prefix that could still become a request line waits.
        assert_eq!(v.feed(&request[..2]), 2);
        assert!(!v.conn.is_closed());
        v.feed(&request[2..]);
        assert_eq!(
            v.conn.error(),
            Some(&ConnectionError::Incompatible(Incompatible::NotTether {
                looks_like_http: true
            }))
        );
        let answer = String::from_utf8(v.read_wire()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Connection: close"));
        assert!(v.conn.is_finished());
        assert_eq!(v.conn.buffered_input(), 0);
    }
}

#[test]
fn a_client_talking_to_an_http_server_gives_up_silently() {
    let _serial = serial();
    let mut conn =
        Connection::client(Config::default(), ClientInfo::new(Role::Edge), START).unwrap();
    let mut out = TransmitBuf::new();
    assert!(
        conn.poll_transmit(START, &mut out) > 0,
        "preface and HELLO go out"
    );
    conn.handle_input(
        START,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        conn.error(),
        Some(&ConnectionError::Incompatible(Incompatible::NotTether {
            looks_like_http: true
        }))
    );
    let mut fresh = TransmitBuf::new();
    assert_eq!(
        conn.poll_transmit(START, &mut fresh),
        0,
        "nothing more is sent"
    );
    assert!(conn.is_finished());
}

#[test]
fn garbage_is_not_tether_and_gets_no_answer() {
    let _serial = serial();
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
        &[0x16, 0x03, 0x01, 0x02, 0x00][..], // a TLS ClientHello on the plain port
        &[0x00][..],
        &MAGIC[..7].iter().chain(b"X").copied().collect::<Vec<u8>>()[..],
    ] {
        let mut v = Victim::server(Config::default());
        v.feed(garbage);
        assert_eq!(
            v.conn.error(),
            Some(&ConnectionError::Incompatible(Incompatible::NotTether {
                looks_like_http: false
            })),
            "{garbage:?}"
        );
        assert!(v.read_wire().is_empty());
        assert!(v.conn.is_finished());
    }
}

#[test]
fn malformed_version_lists_are_bad_prefaces() {
    let _serial = serial();
    let none = [&MAGIC[..], &[0]].concat();
    let too_many = [&MAGIC[..], &[17]].concat();
    for (bytes, expected) in [
        (none, codec::PrefaceError::NoVersions),
        (too_many, codec::PrefaceError::TooManyVersions(17)),
    ] {
        let mut v = Victim::server(Config::default());
        v.feed(&bytes);
        assert_eq!(
            v.conn.error(),
            Some(&ConnectionError::Incompatible(Incompatible::BadPreface(
                expected
            )))
        );
        assert!(v.read_wire().is_empty());
    }
}

#[test]
fn a_client_offering_only_version_7_gets_selected_0_and_both_sides_say_no_common_version() {
    let _serial = serial();
    let mut v = Victim::server(Config::default());
    v.feed(&client_preface(&[7]));
    assert_eq!(
        v.conn.error(),
        Some(&ConnectionError::Incompatible(
            Incompatible::NoCommonVersion {
                ours: vec![1],
                theirs: vec![7],
            }
        ))
    );
    let wire = v.read_wire();
    let (preface, used) = ServerPreface::decode(&wire).unwrap().unwrap();
    assert_eq!(preface.selected, 0, "0 says: no version in common");
    assert_eq!(preface.supported, vec![1]);
    assert_eq!(used, wire.len(), "nothing follows the preface");
    assert!(v.conn.is_finished());

    // A real client reading that preface reports the same cause.
    let mut client =
        Connection::client(Config::default(), ClientInfo::new(Role::Edge), START).unwrap();
    client.handle_input(START, &wire);
    assert_eq!(
        client.error(),
        Some(&ConnectionError::Incompatible(
            Incompatible::NoCommonVersion {
                ours: vec![1],
                theirs: vec![1],
            }
        ))
    );
}

#[test]
fn hello_problems_are_refused_with_a_reason() {
    let _serial = serial();
    let config = Config::default();
    let fat = |n: usize| Bytes::from(vec![0u8; n]);
    let regs: Vec<Registration> = (0..5)
        .map(|i| Registration {
            kind: RegistrationKind::Method,
            name: Name::new(&format!("m{i}")).unwrap(),
        })
        .collect();
    let bad_settings = Settings {
        max_frame_size: 100,
        ..Settings::DEFAULT
    };
    let small = Config {
        settings: Settings {
            max_registrations: 4,
            ..Settings::DEFAULT
        },
        ..Config::default()
    };
    let cases = [
        (
            config.clone(),
            Settings::DEFAULT,
            ClientInfo {
                metadata: fat(config.max_metadata_size as usize + 1),
                ..ClientInfo::new(Role::Edge)
            },
            ErrorCode::TOO_LARGE,
        ),
        (
            config.clone(),
            Settings::DEFAULT,
            ClientInfo {
                token: fat(config.max_token_size as usize + 1),
                ..ClientInfo::new(Role::Edge)
            },
            ErrorCode::TOO_LARGE,
        ),
        (
            small,
            Settings::DEFAULT,
            ClientInfo {
                registrations: regs,
                ..ClientInfo::new(Role::Service)
            },
            ErrorCode::LIMIT_EXCEEDED,
        ),
        (
            config.clone(),
            bad_settings,
            ClientInfo::new(Role::Edge),
            ErrorCode::INCOMPATIBLE,
        ),
    ];
    for (config, settings, info, code) in cases {
        let mut v = Victim::server(config);
        v.feed_all(&client_preface(&[1]));
        v.feed_all(&hello_bytes(settings, info));
        assert!(
            v.take_event(|e| matches!(e, Event::HandshakeRequest(_)))
                .is_none(),
            "the application never sees a HELLO that breaks a limit"
        );
        assert!(matches!(
            v.conn.error(),
            Some(ConnectionError::LocallyClosed { code: c, .. }) if *c == code
        ));
        let frames = v.read_frames();
        assert!(
            matches!(frames.as_slice(), [Frame::Refuse { code: c, .. }] if *c == code),
            "{frames:?}"
        );
        assert!(v.conn.is_finished());
    }
}

#[test]
fn frames_before_hello_and_before_welcome_are_protocol_errors() {
    let _serial = serial();
    for frame in [
        Frame::Ping {
            ack: false,
            opaque: 1,
        },
        data(1, false, 10),
    ] {
        let mut v = Victim::server(Config::default());
        v.feed_all(&client_preface(&[1]));
        let ty = frame.frame_type();
        v.send(&frame);
        v.assert_closed_with(ProtocolViolation::UnexpectedFrame {
            ty,
            during: "before HELLO",
        });
    }
    // HELLO sent, the application is still deciding: nothing else may arrive yet.
    let mut v = Victim::server(Config::default());
    v.feed_all(&client_preface(&[1]));
    v.feed_all(&hello_bytes(Settings::DEFAULT, ClientInfo::new(Role::Edge)));
    v.send(&Frame::Ping {
        ack: false,
        opaque: 1,
    });
    v.assert_closed_with(ProtocolViolation::UnexpectedFrame {
        ty: FrameType::Ping,
        during: "before WELCOME",
    });
}

#[test]
fn a_second_hello_or_a_welcome_from_the_client_is_a_protocol_error() {
    let _serial = serial();
    let hello = Frame::Hello(Box::new(Hello {
        info: ClientInfo::new(Role::Edge),
        settings: Settings::DEFAULT,
    }));
    let welcome = Frame::Welcome(codec::Welcome {
        assigned_id: 1,
        settings: Settings::DEFAULT,
        metadata: Bytes::new(),
    });
    for frame in [hello, welcome] {
        let mut v = Victim::connected(Config::default());
        let ty = frame.frame_type();
        v.send(&frame);
        v.assert_closed_with(ProtocolViolation::UnexpectedFrame {
            ty,
            during: "after the handshake",
        });
    }
}

/// Headers that are invalid by themselves. Each declares a payload that never arrives: the
/// victim must judge from the 13 header bytes alone and allocate nothing for the payload.
#[test]
fn headers_invalid_on_their_own_close_without_waiting_for_the_payload() {
    let _serial = serial();
    let max = Settings::DEFAULT.max_frame_size;
    let data_ty = FrameType::Data as u8;
    let cases = [
        (header(100, 0x7f, 0, 1), DecodeError::UnknownFrameType(0x7f)),
        (
            header(4, FrameType::Window as u8, 0x80, 0),
            DecodeError::InvalidFlags {
                ty: FrameType::Window,
                flags: 0x80,
            },
        ),
        (
            header(100, data_ty, flags::FIN | 0x02, 1),
            DecodeError::InvalidFlags {
                ty: FrameType::Data,
                flags: 0x03,
            },
        ),
        (
            header(8, FrameType::MaxStreams as u8, 0, 5),
            DecodeError::InvalidId {
                ty: FrameType::MaxStreams,
                id: 5,
            },
        ),
        (
            header(100, data_ty, 0, 0),
            DecodeError::InvalidId {
                ty: FrameType::Data,
                id: 0,
            },
        ),
        (
            header(2, FrameType::Cancel as u8, 0, 0),
            DecodeError::InvalidId {
                ty: FrameType::Cancel,
                id: 0,
            },
        ),
        (
            header(max + 1, data_ty, 0, 1),
            DecodeError::FrameTooLarge {
                ty: FrameType::Data,
                len: max + 1,
                max,
            },
        ),
        (
            header((1 << 24) - 1, data_ty, 0, 1),
            DecodeError::FrameTooLarge {
                ty: FrameType::Data,
                len: (1 << 24) - 1,
                max,
            },
        ),
    ];
    for (bytes, expected) in cases {
        let mut v = Victim::connected(Config::default());
        v.feed_all(&encode(&open(1)));
        let before = total_allocated();
        assert_eq!(v.feed(&bytes), 13);
        let allocated = total_allocated() - before;
        assert!(
            allocated < 16 * 1024,
            "{expected:?}: {allocated} bytes allocated"
        );
        println!("{expected:?}: closed after 13 bytes, {allocated} B allocated meanwhile");
        v.assert_closed_with(ProtocolViolation::Decode(expected));
        // More bytes after the close are swallowed unread.
        assert_eq!(v.conn.handle_input(v.now, &[0; 64]), 64);
        assert_eq!(v.conn.buffered_input(), 0);
    }
}

#[test]
fn a_frame_of_exactly_the_maximum_size_waits_for_its_payload_without_allocating_it() {
    let _serial = serial();
    let max = Settings::DEFAULT.max_frame_size;
    let mut v = Victim::connected(Config::default());
    v.feed_all(&encode(&open(1)));
    let full = encode(&data(1, false, max as usize));
    let before = total_allocated();
    v.feed_all(&full[..13]);
    assert!(total_allocated() - before < 16 * 1024);
    assert_eq!(v.conn.buffered_input(), 13);
    v.feed_all(&full[13..]);
    assert!(!v.conn.is_closed());
    assert_eq!(v.conn.stream(sid(1)).unwrap().readable(), max as usize);
    assert_eq!(v.conn.buffered_input(), 0);
}

#[test]
fn malformed_payloads_are_protocol_errors() {
    let _serial = serial();
    let truncated = [header(1, FrameType::Reset as u8, 0, 1), vec![0]].concat();
    let trailing = [header(1, FrameType::Ping as u8, 0, 9), vec![0]].concat();
    let zero_conn = encode(&window(None, 0));
    let zero_stream = encode(&window(Some(1), 0));
    let zero_msg = encode(&Frame::MessageWindow { increment: 0 });
    let empty_cont = encode(&Frame::Request {
        id: RequestId::from_raw(1),
        more: false,
        head: None,
        body: Bytes::new(),
    });
    let zero_increment = |ty| DecodeError::InvalidValue {
        ty,
        what: "zero window increment",
    };
    let cases = [
        (
            truncated,
            DecodeError::Truncated {
                ty: FrameType::Reset,
            },
        ),
        (
            trailing,
            DecodeError::TrailingBytes {
                ty: FrameType::Ping,
            },
        ),
        (zero_conn, zero_increment(FrameType::Window)),
        (zero_stream, zero_increment(FrameType::Window)),
        (zero_msg, zero_increment(FrameType::MessageWindow)),
        (
            empty_cont,
            DecodeError::InvalidValue {
                ty: FrameType::Request,
                what: "empty continuation fragment",
            },
        ),
    ];
    for (bytes, expected) in cases {
        let mut v = Victim::connected(Config::default());
        v.feed_all(&encode(&open(1)));
        v.feed_all(&bytes);
        v.assert_closed_with(ProtocolViolation::Decode(expected));
    }
}
