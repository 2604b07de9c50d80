//! Codec vectors: every frame type round-trips, a few are pinned byte for byte against the
//! spec, and every header-level violation maps to its documented error.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};

use super::*;

pub(crate) fn sample_frames() -> Vec<Frame> {
    let name = |s: &'static str| Name::from_static(s).unwrap();
    let address = Address {
        peer_id: 42,
        peer_name: name("billing"),
    };
    vec![
        Frame::Hello(Box::new(Hello {
            info: ClientInfo {
                role: Role::Edge,
                requested_id: Some(7),
                name: Name::EMPTY,
                version: name("1.2.3"),
                token: Bytes::from_static(b"secret"),
                metadata: Bytes::from_static(b"{\"sn\":\"A1\"}"),
                registrations: vec![
                    Registration {
                        kind: RegistrationKind::Method,
                        name: name("reboot"),
                    },
                    Registration {
                        kind: RegistrationKind::Hook,
                        name: name("edge_id"),
                    },
                ],
            },
            settings: Settings::DEFAULT,
        })),
        Frame::Welcome(Welcome {
            assigned_id: 1001,
            settings: Settings {
                max_frame_size: 32768,
                ..Settings::DEFAULT
            },
            metadata: Bytes::new(),
        }),
        Frame::Refuse {
            code: ErrorCode::UNAUTHORIZED,
            reason: String::from("bad token"),
        },
        Frame::Ping {
            ack: true,
            opaque: u64::MAX,
        },
        Frame::GoAway(GoAway {
            code: ErrorCode::OK,
            last_stream: 9,
            last_request: 3,
            last_message: 0,
            reason: String::from("restarting"),
        }),
        Frame::Register {
            remove: true,
            entries: vec![Registration {
                kind: RegistrationKind::Topic,
                name: name("telemetry"),
            }],
        },
        Frame::MaxStreams { max: 2048 },
        Frame::Window {
            stream: None,
            increment: 65536,
        },
        Frame::Window {
            stream: Some(StreamId::from_raw(3)),
            increment: 1,
        },
        Frame::MessageWindow { increment: 99 },
        Frame::Open {
            id: StreamId::from_raw(5),
            address: address.clone(),
            metadata: Bytes::from_static(b"ssh"),
        },
        Frame::Accept {
            id: StreamId::from_raw(5),
            metadata: Bytes::new(),
        },
        Frame::Data {
            id: StreamId::from_raw(5),
            fin: true,
            payload: Bytes::from(vec![0xab; 40_000]),
        },
        Frame::Reset {
            id: StreamId::from_raw(5),
            code: ErrorCode::CANCELLED,
            reason: String::new(),
        },
        Frame::Stop {
            id: StreamId::from_raw(6),
            code: ErrorCode::REFUSED,
        },
        Frame::Request {
            id: RequestId::from_raw(1),
            more: true,
            head: Some(Box::new(RequestHead {
                address: address.clone(),
                method: name("get_config"),
                timeout_ms: 30_000,
                total_len: 10,
            })),
            body: Bytes::from_static(b"abc"),
        },
        Frame::Request {
            id: RequestId::from_raw(1),
            more: false,
            head: None,
            body: Bytes::from_static(b"defghij"),
        },
        Frame::Response {
            id: RequestId::from_raw(1),
            more: false,
            head: Some(ResponseHead {
                status: ErrorCode::OK,
                total_len: 2,
            }),
            body: Bytes::from_static(b"ok"),
        },
        Frame::Cancel {
            id: RequestId::from_raw(2),
        },
        Frame::Message {
            id: MessageId::from_raw(4),
            more: false,
            head: Some(Box::new(MessageHead {
                address,
                topic: name("alerts"),
                ack_wanted: true,
                timeout_ms: 0,
                total_len: 0,
            })),
            body: Bytes::new(),
        },
        Frame::Ack {
            id: MessageId::from_raw(4),
            code: ErrorCode::APPLICATION_ERROR,
            text: String::from("disk full"),
        },
        Frame::MessageCancel {
            id: MessageId::from_raw(4),
        },
    ]
}

fn decode_all(wire: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(frame) = decode_frame(&mut buf, DecodeLimits::default()).unwrap() {
        out.push(frame);
    }
    assert!(buf.is_empty(), "left {} bytes", buf.len());
    out
}

#[test]
fn every_frame_type_round_trips() {
    let frames = sample_frames();
    let covered: alloc::collections::BTreeSet<u8> =
        frames.iter().map(|f| f.frame_type() as u8).collect();
    assert_eq!(
        covered.len(),
        FrameType::ALL.len(),
        "a frame type lacks a vector"
    );
    let mut wire = Vec::new();
    for frame in &frames {
        let n = frame.encode(&mut wire).unwrap();
        assert_eq!(n, frame.encoded_len());
    }
    assert_eq!(decode_all(&wire), frames);
}

#[test]
fn transmit_buf_and_vec_encodings_are_identical() {
    let mut contiguous = Vec::new();
    let mut vectored = crate::TransmitBuf::new();
    for frame in sample_frames() {
        frame.encode(&mut contiguous).unwrap();
        frame.encode(&mut vectored).unwrap();
    }
    let mut flat = Vec::new();
    vectored.drain_into(&mut flat);
    assert_eq!(flat, contiguous);
}

#[test]
fn every_prefix_is_incomplete_not_an_error() {
    let mut wire = Vec::new();
    for frame in sample_frames() {
        wire.clear();
        frame.encode(&mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(
                decode_frame(&mut buf, DecodeLimits::default()),
                Ok(None),
                "{:?} cut at {cut}",
                frame.frame_type()
            );
            assert_eq!(buf.len(), cut, "nothing may be consumed");
        }
    }
}

#[test]
fn ping_vector_matches_the_spec() {
    // docs/PROTOCOL.md#ping: length 0, type 0x04, flags ACK, id = opaque.
    let mut wire = Vec::new();
    Frame::Ping {
        ack: true,
        opaque: 0x0102_0304_0506_0708,
    }
    .encode(&mut wire)
    .unwrap();
    assert_eq!(
        wire,
        [0, 0, 0, 0x04, 0x01, 1, 2, 3, 4, 5, 6, 7, 8],
        "header layout: len24 type flags id64"
    );
}

#[test]
fn data_vector_matches_the_spec() {
    let mut wire = Vec::new();
    Frame::Data {
        id: StreamId::from_raw(3),
        fin: true,
        payload: Bytes::from_static(b"hi"),
    }
    .encode(&mut wire)
    .unwrap();
    assert_eq!(
        wire,
        [0, 0, 2, 0x12, 0x01, 0, 0, 0, 0, 0, 0, 0, 3, b'h', b'i']
    );
}

#[test]
fn window_vector_matches_the_spec() {
    let mut wire = Vec::new();
    Frame::Window {
        stream: None,
        increment: 0x0001_0000,
    }
    .encode(&mut wire)
    .unwrap();
    assert_eq!(wire, [0, 0, 4, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
}

fn header(len: u32, ty: u8, flags: u8, id: u64) -> BytesMut {
    BytesMut::from(&FrameHeader { len, ty, flags, id }.to_bytes()[..])
}

#[test]
fn header_violations_are_detected_before_the_payload_arrives() {
    let limits = DecodeLimits::default();
    assert_eq!(
        decode_frame(&mut header(0, 0x7f, 0, 0), limits),
        Err(DecodeError::UnknownFrameType(0x7f))
    );
    assert_eq!(
        decode_frame(&mut header(0, 0x04, 0x02, 0), limits),
        Err(DecodeError::InvalidFlags {
            ty: FrameType::Ping,
            flags: 0x02
        })
    );
    assert_eq!(
        decode_frame(&mut header(2, 0x12, 0, 0), limits),
        Err(DecodeError::InvalidId {
            ty: FrameType::Data,
            id: 0
        })
    );
    assert_eq!(
        decode_frame(&mut header(8, 0x07, 0, 5), limits),
        Err(DecodeError::InvalidId {
            ty: FrameType::MaxStreams,
            id: 5
        })
    );
    // An oversized DATA frame is refused from its header alone: no payload byte needed.
    let err = decode_frame(&mut header(limits.max_frame_size + 1, 0x12, 0, 1), limits);
    assert_eq!(
        err,
        Err(DecodeError::FrameTooLarge {
            ty: FrameType::Data,
            len: limits.max_frame_size + 1,
            max: limits.max_frame_size
        })
    );
    assert_eq!(err.unwrap_err().code(), ErrorCode::FRAME_SIZE_ERROR);
    // The 16 MiB − 1 maximum the length field allows is still refused at the default limit.
    assert!(matches!(
        decode_frame(&mut header(MAX_MAX_FRAME_SIZE, 0x12, 0, 1), limits),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    // HELLO uses the handshake limit, not the frame limit.
    let big_hello = MAX_HANDSHAKE_PAYLOAD;
    assert_eq!(
        decode_frame(&mut header(big_hello, 0x01, 0, 0), limits),
        Ok(None)
    );
    assert!(matches!(
        decode_frame(&mut header(big_hello + 1, 0x01, 0, 0), limits),
        Err(DecodeError::FrameTooLarge { .. })
    ));
}

#[test]
fn payload_violations_map_to_documented_errors() {
    let limits = DecodeLimits::default();
    let with_payload = |ty: u8, flags: u8, id: u64, payload: &[u8]| {
        let mut buf = header(payload.len() as u32, ty, flags, id);
        buf.extend_from_slice(payload);
        decode_frame(&mut buf, limits)
    };
    assert_eq!(
        with_payload(0x08, 0, 0, &[0, 0, 0, 0]),
        Err(DecodeError::InvalidValue {
            ty: FrameType::Window,
            what: "zero window increment"
        })
    );
    assert_eq!(
        with_payload(0x08, 0, 0, &[0, 0, 1]),
        Err(DecodeError::Truncated {
            ty: FrameType::Window
        })
    );
    assert_eq!(
        with_payload(0x07, 0, 0, &[0; 9]),
        Err(DecodeError::TrailingBytes {
            ty: FrameType::MaxStreams
        })
    );
    assert_eq!(
        with_payload(0x04, 0, 1, &[1]),
        Err(DecodeError::TrailingBytes {
            ty: FrameType::Ping
        })
    );
    // Continuations must carry bytes.
    assert!(matches!(
        with_payload(0x20, flags::CONT, 1, &[]),
        Err(DecodeError::InvalidValue { .. })
    ));
    // ACK_WANTED belongs on a message head only.
    assert!(matches!(
        with_payload(0x30, flags::CONT | flags::ACK_WANTED, 1, b"x"),
        Err(DecodeError::InvalidFlags { .. })
    ));
    // A head whose fragment is longer than the declared body.
    let mut head = Vec::new();
    head.extend_from_slice(&0u16.to_be_bytes()); // status
    head.extend_from_slice(&1u32.to_be_bytes()); // total 1
    head.extend_from_slice(b"xy"); // 2 bytes
    assert!(matches!(
        with_payload(0x21, 0, 1, &head),
        Err(DecodeError::InvalidValue { .. })
    ));
    // A reason text longer than 4096 bytes.
    let mut reset = Vec::new();
    reset.extend_from_slice(&9u16.to_be_bytes());
    reset.extend_from_slice(&5000u16.to_be_bytes());
    reset.extend_from_slice(&[b'a'; 5000]);
    assert_eq!(
        with_payload(0x13, 0, 1, &reset),
        Err(DecodeError::TextTooLong {
            ty: FrameType::Reset,
            len: 5000
        })
    );
    // A name that is not UTF-8.
    let mut open = Vec::new();
    open.extend_from_slice(&0u64.to_be_bytes());
    open.extend_from_slice(&[2, 0xff, 0xff]);
    open.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        with_payload(0x10, 0, 1, &open),
        Err(DecodeError::InvalidName {
            ty: FrameType::Open
        })
    );
}

#[test]
fn a_lying_registration_count_does_not_preallocate() {
    // count = 65535 but no entries: fails as truncated after reading nothing large.
    let mut reg = Vec::new();
    reg.extend_from_slice(&u16::MAX.to_be_bytes());
    let mut buf = header(reg.len() as u32, 0x06, 0, 0);
    buf.extend_from_slice(&reg);
    assert_eq!(
        decode_frame(&mut buf, DecodeLimits::default()),
        Err(DecodeError::Truncated {
            ty: FrameType::Register
        })
    );
}

#[test]
fn large_payloads_share_the_input_buffer_and_small_ones_do_not() {
    let mut wire = Vec::new();
    let big = Bytes::from(vec![1u8; 32 * 1024]);
    Frame::Data {
        id: StreamId::from_raw(1),
        fin: false,
        payload: big.clone(),
    }
    .encode(&mut wire)
    .unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let base = buf.as_ptr() as usize;
    let Some(Frame::Data { payload, .. }) =
        decode_frame(&mut buf, DecodeLimits::default()).unwrap()
    else {
        panic!("not data");
    };
    assert_eq!(
        payload.as_ptr() as usize,
        base + HEADER_LEN,
        "split, not copied"
    );
    assert_eq!(payload, big);
}

#[test]
fn texts_are_truncated_at_a_char_boundary_when_encoding() {
    let reason: String = core::iter::repeat_n('é', 3000).collect(); // 6000 bytes
    let mut wire = Vec::new();
    Frame::Refuse {
        code: ErrorCode::INTERNAL,
        reason,
    }
    .encode(&mut wire)
    .unwrap();
    let frames = decode_all(&wire);
    let Frame::Refuse { reason, .. } = &frames[0] else {
        panic!()
    };
    assert_eq!(reason.len(), 4096);
    assert!(reason.chars().all(|c| c == 'é'));
}

#[test]
fn ack_wanted_on_a_continuation_is_rejected_from_the_header() {
    let mut buf = header(100, 0x30, flags::CONT | flags::ACK_WANTED, 1);
    assert_eq!(
        decode_frame(&mut buf, DecodeLimits::default()),
        Err(DecodeError::InvalidFlags {
            ty: FrameType::Message,
            flags: flags::CONT | flags::ACK_WANTED
        })
    );
}

#[test]
fn decoded_texts_stay_within_the_limit_after_replacing_invalid_utf8() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&9u16.to_be_bytes());
    payload.extend_from_slice(&4096u16.to_be_bytes());
    payload.extend_from_slice(&[0xff; 4096]);
    let mut buf = header(payload.len() as u32, 0x13, 0, 1);
    buf.extend_from_slice(&payload);
    let Some(Frame::Reset { reason, .. }) =
        decode_frame(&mut buf, DecodeLimits::default()).unwrap()
    else {
        panic!("not a reset")
    };
    assert!(reason.len() <= MAX_TEXT_LEN);
    assert!(reason.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
}
