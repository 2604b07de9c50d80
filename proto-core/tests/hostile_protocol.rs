//! Hostile peers after the handshake: credit overflow, data and bodies beyond their windows,
//! oversized bodies, stream ids out of order or beyond the stream credit, frames for streams
//! and requests that never existed, duplicate ACCEPTs, in-flight and registration limits.
//! Every frame is hand-encoded with the real codec and written into a real server
//! [`Connection`]; each test checks the documented [`ProtocolViolation`], the wire code of
//! our GOAWAY, and that what we buffered never exceeded the limit in force.

mod support;

use bytes::Bytes;
use proto_core::codec::{Frame, FrameType, MAX_WINDOW};
use proto_core::*;
use support::*;

/// Connects with `config`, sends `setup` (the connection must stay open), then `attack`,
/// and asserts the documented violation and GOAWAY code.
fn expect(config: Config, setup: &[Frame], attack: Frame, expected: ProtocolViolation) -> Victim {
    let mut v = Victim::connected(config);
    v.feed_all(&encode_all(setup));
    assert_eq!(v.conn.error(), None, "the setup frames were valid");
    v.feed_all(&encode(&attack));
    v.assert_closed_with(expected);
    v
}

const KIB: u32 = 1024;

fn small_windows(stream: u32, connection: u32) -> Config {
    Config {
        settings: Settings {
            initial_stream_window: stream,
            connection_window: connection,
            ..Settings::DEFAULT
        },
        // Equal to the initial window: auto-tuning off, so the window is exactly `stream`.
        max_stream_window: stream,
        ..Config::default()
    }
}

fn small_messages(max_message_size: u32, message_window: u32) -> Config {
    Config {
        settings: Settings {
            max_message_size,
            message_window,
            ..Settings::DEFAULT
        },
        ..Config::default()
    }
}

fn overflow(what: &'static str, attempted: u64) -> ProtocolViolation {
    ProtocolViolation::FlowControl {
        what,
        limit: MAX_WINDOW,
        attempted,
    }
}

#[test]
fn stream_credit_past_2_31_minus_1_is_a_flow_control_error() {
    let _serial = serial();
    let initial = u64::from(Settings::DEFAULT.initial_stream_window);
    let to_max = (MAX_WINDOW - initial) as u32;
    // Exactly the maximum is allowed; one byte more is not.
    expect(
        Config::default(),
        &[open(1), window(Some(1), to_max)],
        window(Some(1), 1),
        overflow("stream credit overflow", MAX_WINDOW + 1),
    );
    // In one grant, with no room for an overflow in the arithmetic either.
    expect(
        Config::default(),
        &[open(1)],
        window(Some(1), u32::MAX),
        overflow("stream credit overflow", initial + u64::from(u32::MAX)),
    );
}

#[test]
fn connection_credit_past_2_31_minus_1_is_a_flow_control_error() {
    let _serial = serial();
    let initial = u64::from(Settings::DEFAULT.connection_window);
    let half = 1u32 << 30;
    expect(
        Config::default(),
        &[window(None, (MAX_WINDOW - initial) as u32)],
        window(None, 1),
        overflow("connection credit overflow", MAX_WINDOW + 1),
    );
    // Two grants that are each fine but sum past the maximum.
    expect(
        Config::default(),
        &[window(None, half)],
        window(None, half),
        overflow("connection credit overflow", initial + 2 * u64::from(half)),
    );
}

#[test]
fn message_credit_past_2_31_minus_1_is_a_flow_control_error() {
    let _serial = serial();
    let initial = u64::from(Settings::DEFAULT.message_window);
    let grant = |increment| Frame::MessageWindow { increment };
    expect(
        Config::default(),
        &[grant((MAX_WINDOW - initial) as u32)],
        grant(1),
        overflow("message credit overflow", MAX_WINDOW + 1),
    );
    expect(
        Config::default(),
        &[],
        grant(u32::MAX),
        overflow("message credit overflow", initial + u64::from(u32::MAX)),
    );
}

#[test]
fn data_beyond_the_stream_window_is_a_flow_control_error_and_never_buffered() {
    let _serial = serial();
    let w = 16 * KIB;
    let mut v = Victim::connected(small_windows(w, 1 << 20));
    v.feed_all(&encode_all(&[open(1), data(1, false, w as usize)]));
    assert_eq!(v.conn.stream(sid(1)).unwrap().readable(), w as usize);
    v.feed_all(&encode(&data(1, false, 1)));
    v.assert_closed_with(ProtocolViolation::FlowControl {
        what: "stream window",
        limit: u64::from(w),
        attempted: u64::from(w) + 1,
    });
    // An OPEN followed by a first DATA larger than the whole window.
    expect(
        small_windows(w, 1 << 20),
        &[open(1)],
        data(1, true, w as usize + 1),
        ProtocolViolation::FlowControl {
            what: "stream window",
            limit: u64::from(w),
            attempted: u64::from(w) + 1,
        },
    );
}

#[test]
fn data_beyond_the_connection_window_is_a_flow_control_error() {
    let _serial = serial();
    // Three streams of 16 KiB windows share a 40 KiB connection window.
    let (w, c) = (16 * KIB as usize, 40 * KIB as usize);
    let mut v = Victim::connected(small_windows(w as u32, c as u32));
    let setup = [
        open(1),
        open(3),
        open(5),
        data(1, false, w),
        data(3, false, w),
        data(5, false, c - 2 * w),
    ];
    v.feed_all(&encode_all(&setup));
    let buffered: usize = [1, 3, 5]
        .iter()
        .map(|id| v.conn.stream(sid(*id)).unwrap().readable())
        .sum();
    assert_eq!(buffered, c, "exactly the connection window is buffered");
    v.feed_all(&encode(&data(5, false, 1)));
    v.assert_closed_with(ProtocolViolation::FlowControl {
        what: "connection window",
        limit: c as u64,
        attempted: c as u64 + 1,
    });
}

#[test]
fn bodies_beyond_the_message_window_are_a_flow_control_error() {
    let _serial = serial();
    // Each whole 4 KiB body costs 4 KiB + 256 of credit: two do not fit in 8 KiB.
    let config = small_messages(4096, 8192);
    let cost = HEAD_CREDIT + 4096;
    let fail = ProtocolViolation::FlowControl {
        what: "message window",
        limit: 8192,
        attempted: 2 * cost,
    };
    expect(
        config.clone(),
        &[request(1, 4096)],
        request(2, 4096),
        fail.clone(),
    );
    expect(
        config,
        &[message(1, true, 4096)],
        message(2, false, 4096),
        fail,
    );
}

#[test]
fn a_declared_body_larger_than_max_message_size_is_too_large() {
    let _serial = serial();
    let config = small_messages(4096, 8192);
    let too_large = |ty| ProtocolViolation::TooLarge {
        ty,
        len: 4097,
        max: 4096,
    };
    expect(
        config.clone(),
        &[],
        request_head(1, 4097, 100, true),
        too_large(FrameType::Request),
    );
    expect(
        config.clone(),
        &[],
        message_head(1, false, 4097, 100, true),
        too_large(FrameType::Message),
    );
    // A response to one of our calls.
    let mut v = Victim::connected(config);
    let call = Call::new(Name::from_static("m").unwrap(), Bytes::new());
    let now = v.now;
    v.conn.rpc().call(now, call).unwrap();
    assert!(matches!(
        v.read_frames().as_slice(),
        [Frame::Request { .. }]
    ));
    v.feed_all(&encode(&response(1, 4097, 100, true)));
    v.assert_closed_with(too_large(FrameType::Response));
}

#[test]
fn fragments_that_disagree_with_their_head_are_protocol_errors() {
    let _serial = serial();
    let cont = |id, more, len| Frame::Request {
        id: RequestId::from_raw(id),
        more,
        head: None,
        body: Bytes::from(vec![1; len]),
    };
    expect(
        Config::default(),
        &[request_head(1, 100, 50, true)],
        cont(1, false, 60),
        ProtocolViolation::Fragment {
            ty: FrameType::Request,
            id: 1,
            what: "fragment exceeds the declared body length",
        },
    );
    expect(
        Config::default(),
        &[request_head(1, 100, 50, true)],
        cont(1, false, 40),
        ProtocolViolation::Fragment {
            ty: FrameType::Request,
            id: 1,
            what: "body ended before its declared length",
        },
    );
    expect(
        Config::default(),
        &[],
        cont(1, true, 10),
        ProtocolViolation::UnknownId {
            ty: FrameType::Request,
            id: 1,
        },
    );
}

#[test]
fn streams_opened_out_of_order_or_with_our_parity_are_protocol_errors() {
    let _serial = serial();
    let out_of_order = |expected, got| ProtocolViolation::StreamOutOfOrder { expected, got };
    expect(Config::default(), &[], open(3), out_of_order(1, 3));
    expect(Config::default(), &[], open(2), out_of_order(1, 2));
    expect(Config::default(), &[open(1)], open(1), out_of_order(3, 1));
}

#[test]
fn opening_beyond_the_stream_credit_is_limit_exceeded() {
    let _serial = serial();
    let config = Config {
        settings: Settings {
            max_concurrent_streams: 4,
            ..Settings::DEFAULT
        },
        ..Config::default()
    };
    expect(
        config,
        &[open(1), open(3), open(5), open(7)],
        open(9),
        ProtocolViolation::StreamLimit { id: 9, limit: 4 },
    );
}

#[test]
fn max_streams_may_not_decrease() {
    let _serial = serial();
    let advertised = u64::from(Settings::DEFAULT.max_concurrent_streams);
    // Repeating the current value changes nothing and is allowed.
    expect(
        Config::default(),
        &[Frame::MaxStreams { max: advertised }],
        Frame::MaxStreams {
            max: advertised - 1,
        },
        ProtocolViolation::StreamCreditDecreased {
            from: advertised,
            to: advertised - 1,
        },
    );
}

#[test]
fn data_on_a_never_opened_stream_is_a_protocol_error() {
    let _serial = serial();
    let unknown = |id| ProtocolViolation::UnknownStream {
        ty: FrameType::Data,
        id,
    };
    expect(
        Config::default(),
        &[open(1)],
        data(5, false, 10),
        unknown(5),
    );
    // An id of our parity that we never opened.
    expect(Config::default(), &[], data(2, false, 10), unknown(2));
    expect(
        Config::default(),
        &[],
        reset(7),
        ProtocolViolation::UnknownStream {
            ty: FrameType::Reset,
            id: 7,
        },
    );
}

#[test]
fn data_on_a_closed_stream_is_ignored_and_its_connection_credit_returned() {
    let _serial = serial();
    let (w, c) = (16 * KIB as usize, 32 * KIB as usize);
    let mut v = Victim::connected(small_windows(w as u32, c as u32));
    // A stream that lives and closes normally in both directions.
    v.feed_all(&encode_all(&[open(1), data(1, true, 100)]));
    let incoming = v.conn.next_incoming_stream().unwrap();
    v.conn.accept_stream(incoming.id, Bytes::new()).unwrap();
    let mut stream = v.conn.stream(sid(1)).unwrap();
    assert_eq!(stream.read(1000).unwrap().map(|b| b.len()), Some(100));
    assert_eq!(stream.read(1000), Ok(None));
    stream.finish().unwrap();
    v.pump();
    assert_eq!(v.conn.stream_ids().count(), 0, "the stream is forgotten");
    let mut credit = c as u64 - 100;
    for frame in v.read_frames() {
        if let Frame::Window {
            stream: None,
            increment,
        } = frame
        {
            credit += u64::from(increment);
        }
    }
    v.events.clear();
    // Late DATA worth four connection windows: dropped, and its credit comes back each time.
    let mut sent = 0u64;
    while sent < 4 * c as u64 {
        let len = (w as u64).min(credit) as usize;
        assert!(len > 0, "connection credit was not returned");
        v.feed_all(&encode(&data(1, false, len)));
        sent += len as u64;
        credit -= len as u64;
        for frame in v.read_frames() {
            if let Frame::Window {
                stream: None,
                increment,
            } = frame
            {
                credit += u64::from(increment);
            }
        }
    }
    assert_eq!(v.conn.error(), None);
    assert_eq!(v.conn.stream_ids().count(), 0);
    assert!(
        v.events.is_empty(),
        "late DATA is invisible: {:?}",
        v.events
    );
}

#[test]
fn accept_twice_or_for_a_peer_stream_is_a_protocol_error() {
    let _serial = serial();
    let accept = |id| Frame::Accept {
        id: sid(id),
        metadata: Bytes::new(),
    };
    let mut v = Victim::connected(Config::default());
    let ours = v.conn.open_stream(OpenStream::default()).unwrap();
    assert_eq!(ours, sid(2));
    assert!(matches!(v.read_frames().as_slice(), [Frame::Open { .. }]));
    v.feed_all(&encode(&accept(2)));
    assert!(
        v.take_event(|e| matches!(e, Event::Stream(StreamEvent::Accepted { .. })))
            .is_some()
    );
    v.feed_all(&encode(&accept(2)));
    v.assert_closed_with(ProtocolViolation::StreamState {
        id: 2,
        what: "second ACCEPT",
    });
    expect(
        Config::default(),
        &[open(1)],
        accept(1),
        ProtocolViolation::StreamState {
            id: 1,
            what: "ACCEPT for a stream the peer opened",
        },
    );
}

#[test]
fn request_and_message_ids_out_of_order_are_protocol_errors() {
    let _serial = serial();
    let out_of_order = |kind, expected, got| ProtocolViolation::IdOutOfOrder {
        kind,
        expected,
        got,
    };
    // Ids only grow; gaps are allowed (a sender may cancel an item before sending it),
    // a repeated or lower id is not.
    expect(
        Config::default(),
        &[request(1, 10)],
        request(1, 10),
        out_of_order("request", 2, 1),
    );
    expect(
        Config::default(),
        &[request(1, 10), request(5, 10)],
        request(3, 10),
        out_of_order("request", 6, 3),
    );
    expect(
        Config::default(),
        &[message(1, false, 10), message(3, false, 10)],
        message(2, false, 10),
        out_of_order("message", 4, 2),
    );
}

#[test]
fn replies_and_cancels_for_ids_never_sent_are_protocol_errors() {
    let _serial = serial();
    let unknown = |ty, id| ProtocolViolation::UnknownId { ty, id };
    expect(
        Config::default(),
        &[],
        response(1, 0, 0, false),
        unknown(FrameType::Response, 1),
    );
    let ack = Frame::Ack {
        id: MessageId::from_raw(1),
        code: ErrorCode::OK,
        text: String::new(),
    };
    expect(Config::default(), &[], ack, unknown(FrameType::Ack, 1));
    let cancel = Frame::Cancel {
        id: RequestId::from_raw(3),
    };
    expect(
        Config::default(),
        &[request(1, 0)],
        cancel,
        unknown(FrameType::Cancel, 3),
    );
    let cancel = Frame::MessageCancel {
        id: MessageId::from_raw(1),
    };
    expect(
        Config::default(),
        &[],
        cancel,
        unknown(FrameType::MessageCancel, 1),
    );
}

#[test]
fn too_many_requests_or_acknowledged_messages_in_flight_is_limit_exceeded() {
    let _serial = serial();
    let config = Config {
        settings: Settings {
            max_inflight_requests: 4,
            max_inflight_messages: 4,
            ..Settings::DEFAULT
        },
        ..Config::default()
    };
    let requests: Vec<Frame> = (1..=4).map(|id| request(id, 10)).collect();
    expect(
        config.clone(),
        &requests,
        request(5, 10),
        ProtocolViolation::LimitExceeded {
            what: "in-flight requests",
            max: 4,
        },
    );
    // Fire-and-forget messages owe no reply and do not count.
    let mut messages: Vec<Frame> = (1..=10).map(|id| message(id, false, 10)).collect();
    messages.extend((11..=14).map(|id| message(id, true, 10)));
    expect(
        config,
        &messages,
        message(15, true, 10),
        ProtocolViolation::LimitExceeded {
            what: "in-flight messages",
            max: 4,
        },
    );
}

#[test]
fn too_many_registrations_is_limit_exceeded() {
    let _serial = serial();
    let config = Config {
        settings: Settings {
            max_registrations: 8,
            ..Settings::DEFAULT
        },
        ..Config::default()
    };
    let names = |range: std::ops::Range<u32>| Frame::Register {
        remove: false,
        entries: range
            .map(|i| Registration {
                kind: RegistrationKind::Topic,
                name: Name::new(&format!("topic-{i}")).unwrap(),
            })
            .collect(),
    };
    // Re-registering a name does not count twice.
    expect(
        config,
        &[names(0..5), names(0..8)],
        names(8..9),
        ProtocolViolation::LimitExceeded {
            what: "registrations",
            max: 8,
        },
    );
}
