//! Proptest strategies for valid frames of every type. `props.rs` includes this file by
//! `#[path]` rather than through `support/mod.rs`, whose counting global allocator and
//! hostile-peer helpers it does not need.

use bytes::Bytes;
use proptest::prelude::*;
use proto_core::codec::{Frame, GoAway, MessageHead, RequestHead, ResponseHead, Welcome};
use proto_core::*;

/// Pushes characters while they fit in `max` bytes, so the result is valid UTF-8 of at most
/// `max` bytes whatever the characters' widths.
fn fit(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        4 => proptest::collection::vec(any::<char>(), 0..12),
        1 => proptest::collection::vec(any::<char>(), 60..256),
    ]
    .prop_map(|chars| Name::new(&fit(chars, 255)).unwrap())
}

fn non_empty_name() -> impl Strategy<Value = Name> {
    name().prop_filter("registration names are not empty", |n| !n.is_empty())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::collection::vec(any::<char>(), 0..16),
        1 => proptest::collection::vec(any::<char>(), 1000..1400),
    ]
    .prop_map(|chars| fit(chars, 4096))
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Mostly small payloads, sometimes past the decoder's 16 KiB zero-copy threshold.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        12 => bytes(200),
        1 => proptest::collection::vec(any::<u8>(), 16_384..17_000).prop_map(Bytes::from),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn nonzero() -> impl Strategy<Value = u64> {
    1..=u64::MAX
}

fn settings() -> impl Strategy<Value = Settings> {
    proptest::array::uniform11(any::<u32>()).prop_map(|v| Settings {
        max_frame_size: v[0],
        initial_stream_window: v[1],
        connection_window: v[2],
        message_window: v[3],
        max_message_size: v[4],
        max_concurrent_streams: v[5],
        max_inflight_requests: v[6],
        max_inflight_messages: v[7],
        idle_timeout_ms: v[8],
        max_open_metadata: v[9],
        max_registrations: v[10],
    })
}

fn registrations() -> impl Strategy<Value = Vec<Registration>> {
    let kind = prop_oneof![
        Just(RegistrationKind::Method),
        Just(RegistrationKind::Topic),
        Just(RegistrationKind::Hook),
    ];
    proptest::collection::vec(
        (kind, non_empty_name()).prop_map(|(kind, name)| Registration { kind, name }),
        0..6,
    )
}

fn address() -> impl Strategy<Value = Address> {
    (any::<u64>(), name()).prop_map(|(peer_id, peer_name)| Address { peer_id, peer_name })
}

/// A body fragment consistent with the decoder's rules (`head_body`, `continuation_body`):
/// a head declares `total_len` ≥ its own bytes, equal exactly when no MORE follows; a
/// continuation carries at least one byte. Returns (more, total_len if head, body).
fn fragment() -> impl Strategy<Value = (bool, Option<u32>, Bytes)> {
    prop_oneof![
        // A whole body in the head.
        payload().prop_map(|b| (false, Some(b.len() as u32), b)),
        // A head with more to come: up to the largest length the field holds.
        (payload(), 1..=u32::MAX - 20_000).prop_map(|(b, extra)| (
            true,
            Some(b.len() as u32 + extra),
            b
        )),
        // A continuation.
        (any::<bool>(), payload())
            .prop_filter("continuations are not empty", |(_, b)| !b.is_empty())
            .prop_map(|(more, b)| (more, None, b)),
    ]
}

/// Any frame the codec can encode and must decode back unchanged.
pub(crate) fn frame() -> impl Strategy<Value = Frame> {
    let hello = (
        prop_oneof![Just(Role::Service), Just(Role::Edge)],
        proptest::option::of(nonzero()),
        (name(), name(), bytes(64), bytes(64)),
        settings(),
        registrations(),
    )
        .prop_map(
            |(role, requested_id, (name, version, token, metadata), settings, regs)| {
                Frame::Hello(Box::new(Hello {
                    info: ClientInfo {
                        role,
                        requested_id,
                        name,
                        version,
                        token,
                        metadata,
                        registrations: regs,
                    },
                    settings,
                }))
            },
        );
    let request = (nonzero(), fragment(), address(), name(), any::<u32>()).prop_map(
        |(id, (more, total, body), address, method, timeout_ms)| Frame::Request {
            id: RequestId::from_raw(id),
            more,
            head: total.map(|total_len| {
                Box::new(RequestHead {
                    address,
                    method,
                    timeout_ms,
                    total_len,
                })
            }),
            body,
        },
    );
    let response = (nonzero(), fragment(), code()).prop_map(|(id, (more, total, body), status)| {
        Frame::Response {
            id: RequestId::from_raw(id),
            more,
            head: total.map(|total_len| ResponseHead { status, total_len }),
            body,
        }
    });
    let message = (
        nonzero(),
        fragment(),
        (address(), name(), any::<bool>(), any::<u32>()),
    )
        .prop_map(
            |(id, (more, total, body), (address, topic, ack_wanted, timeout_ms))| Frame::Message {
                id: MessageId::from_raw(id),
                more,
                head: total.map(|total_len| {
                    Box::new(MessageHead {
                        address,
                        topic,
                        ack_wanted,
                        timeout_ms,
                        total_len,
                    })
                }),
                body,
            },
        );
    let sid = || nonzero().prop_map(StreamId::from_raw);
    prop_oneof![
        hello,
        (any::<u64>(), settings(), bytes(64)).prop_map(|(assigned_id, settings, metadata)| {
            Frame::Welcome(Welcome {
                assigned_id,
                settings,
                metadata,
            })
        }),
        (code(), text()).prop_map(|(code, reason)| Frame::Refuse { code, reason }),
        (any::<bool>(), any::<u64>()).prop_map(|(ack, opaque)| Frame::Ping { ack, opaque }),
        (code(), any::<[u64; 3]>(), text()).prop_map(|(code, [s, r, m], reason)| {
            Frame::GoAway(GoAway {
                code,
                last_stream: s,
                last_request: r,
                last_message: m,
                reason,
            })
        }),
        (any::<bool>(), registrations())
            .prop_map(|(remove, entries)| Frame::Register { remove, entries }),
        any::<u64>().prop_map(|max| Frame::MaxStreams { max }),
        (proptest::option::of(sid()), 1..=u32::MAX)
            .prop_map(|(stream, increment)| Frame::Window { stream, increment }),
        (1..=u32::MAX).prop_map(|increment| Frame::MessageWindow { increment }),
        (sid(), address(), bytes(300)).prop_map(|(id, address, metadata)| Frame::Open {
            id,
            address,
            metadata
        }),
        (sid(), bytes(300)).prop_map(|(id, metadata)| Frame::Accept { id, metadata }),
        (sid(), any::<bool>(), payload()).prop_map(|(id, fin, payload)| Frame::Data {
            id,
            fin,
            payload
        }),
        (sid(), code(), text()).prop_map(|(id, code, reason)| Frame::Reset { id, code, reason }),
        (sid(), code()).prop_map(|(id, code)| Frame::Stop { id, code }),
        request,
        response,
        nonzero().prop_map(|id| Frame::Cancel {
            id: RequestId::from_raw(id)
        }),
        message,
        (nonzero(), code(), text()).prop_map(|(id, code, text)| Frame::Ack {
            id: MessageId::from_raw(id),
            code,
            text,
        }),
        nonzero().prop_map(|id| Frame::MessageCancel {
            id: MessageId::from_raw(id)
        }),
    ]
}
