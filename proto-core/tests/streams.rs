//! Stream scenarios on an in-memory pair: integrity under every chunking, flow control
//! stalls and credit, slow readers, resets racing data, stop, refusal, limits.

mod common;

use bytes::Bytes;
use common::*;
use proto_core::testing::{Chunking, Pair};
use proto_core::*;

fn transfer_both_ways(pair: &mut Pair, size: u64, write_chunk: usize, read_max: usize) {
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    let mut up = Transfer {
        total: size,
        ..Transfer::default()
    };
    let mut down = Transfer {
        total: size,
        ..Transfer::default()
    };
    let mut accepted = false;
    for _ in 0..10_000_000 {
        write_some(&mut pair.client, id, &mut up, write_chunk);
        if accepted {
            write_some(&mut pair.server, id, &mut down, write_chunk);
            read_some(&mut pair.server, id, &mut up, read_max);
        }
        read_some(&mut pair.client, id, &mut down, read_max);
        let moved = pair.step();
        if !accepted && !accept_all(&mut pair.server).is_empty() {
            accepted = true;
        }
        if up.eof && down.eof {
            break;
        }
        if !moved && !accepted {
            continue;
        }
    }
    assert!(
        up.eof && down.eof,
        "transfer stalled: up {up:?} down {down:?}"
    );
    assert_eq!(up.read, size);
    assert_eq!(down.read, size);
    pair.drive();
    assert_no_violation(pair);
    assert_eq!(
        pair.client.conn.stream_ids().count(),
        0,
        "client stream not reaped"
    );
    assert_eq!(
        pair.server.conn.stream_ids().count(),
        0,
        "server stream not reaped"
    );
}

#[test]
fn large_transfer_whole_chunks() {
    let mut pair = Pair::connected();
    transfer_both_ways(&mut pair, 8 << 20, 64 * 1024, 1 << 20);
}

#[test]
fn transfer_delivered_byte_by_byte() {
    let mut pair = Pair::connected();
    pair.chunking = Chunking::Fixed(1);
    transfer_both_ways(&mut pair, 300 * 1024, 7000, 333);
}

#[test]
fn transfer_with_random_chunking_and_small_writes() {
    for seed in 1..5 {
        let mut pair = Pair::connected();
        pair.seed(seed);
        pair.chunking = Chunking::Random { max: 5000 };
        transfer_both_ways(&mut pair, 2 << 20, 100 + seed as usize * 37, 4096);
    }
}

#[test]
fn a_stalled_writer_resumes_on_credit_and_the_window_is_never_exceeded() {
    let mut pair = Pair::connected();
    let window = Settings::DEFAULT.initial_stream_window as usize;
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    // Nobody reads on the server: the writer may put exactly one window in flight.
    let mut data = Bytes::from(vec![0u8; window * 3]);
    let n = pair
        .client
        .conn
        .stream(id)
        .unwrap()
        .write_bytes(&mut data)
        .unwrap();
    assert_eq!(n, window);
    assert_eq!(
        pair.client.conn.stream(id).unwrap().write(b"x"),
        Err(WriteError::Blocked)
    );
    pair.drive();
    accept_all(&mut pair.server);
    pair.drive();
    assert_eq!(pair.server.conn.stream(id).unwrap().readable(), window);
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Writable { .. })))
            .is_none()
    );
    // Reading half the window returns credit; the writer hears Writable.
    let mut got = 0;
    while got < window / 2 {
        got += pair
            .server
            .conn
            .stream(id)
            .unwrap()
            .read(window / 2 - got)
            .unwrap()
            .unwrap()
            .len();
    }
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Writable { .. }))),
        Some(Event::Stream(StreamEvent::Writable { id }))
    );
    assert_eq!(
        pair.client
            .conn
            .stream(id)
            .unwrap()
            .write_bytes(&mut data)
            .unwrap(),
        window / 2
    );
    assert_no_violation(&pair);
}

#[test]
fn a_slow_reader_does_not_stall_other_streams() {
    let mut pair = Pair::connected();
    let slow = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    let fast = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    let mut slow_t = Transfer {
        total: 4 << 20,
        ..Transfer::default()
    };
    let mut fast_t = Transfer {
        total: 4 << 20,
        ..Transfer::default()
    };
    for _ in 0..100_000 {
        write_some(&mut pair.client, slow, &mut slow_t, 32 * 1024);
        write_some(&mut pair.client, fast, &mut fast_t, 32 * 1024);
        pair.step();
        accept_all(&mut pair.server);
        // Only the fast stream is ever read.
        read_some(&mut pair.server, fast, &mut fast_t, 1 << 20);
        if fast_t.eof {
            break;
        }
    }
    assert!(
        fast_t.eof,
        "the fast stream stalled behind the slow one: {fast_t:?}"
    );
    let window = Settings::DEFAULT.initial_stream_window as usize;
    assert_eq!(
        pair.server.conn.stream(slow).unwrap().readable(),
        window,
        "slow stream holds exactly its window"
    );
    assert_no_violation(&pair);
}

#[test]
fn reset_racing_data_discards_and_reports_the_code() {
    let mut pair = Pair::connected();
    pair.chunking = Chunking::Fixed(3);
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .write(&[1u8; 50_000])
        .unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .reset(ErrorCode::CANCELLED, "changed my mind")
        .unwrap();
    pair.drive();
    // The server never accepted: a stream reset before it was taken is never seen.
    assert_eq!(pair.server.conn.next_incoming_stream(), None);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert_no_violation(&pair);

    // Accepted first, then reset while data is in flight.
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    accept_all(&mut pair.server);
    pair.drive();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .write(&[2u8; 10_000])
        .unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .reset(ErrorCode::CANCELLED, "abort")
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server.conn.stream(id).unwrap().read(100_000),
        Err(ReadError::Reset {
            code: ErrorCode::CANCELLED,
            reason: "abort".into()
        })
    );
    assert!(
        pair.server
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Reset { .. })))
            .is_some()
    );
    // The server's half is still open: it can answer, then finish.
    pair.server
        .conn
        .stream(id)
        .unwrap()
        .write(b"still here")
        .unwrap();
    pair.server.conn.stream(id).unwrap().finish().unwrap();
    pair.drive();
    assert_eq!(
        &pair
            .client
            .conn
            .stream(id)
            .unwrap()
            .read(100)
            .unwrap()
            .unwrap()[..],
        b"still here"
    );
    assert_eq!(
        pair.client.conn.stream(id).unwrap().read(100).unwrap(),
        None
    );
    pair.drive();
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert_no_violation(&pair);
}

#[test]
fn stop_makes_the_peer_reset_with_the_code() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    accept_all(&mut pair.server);
    pair.server
        .conn
        .stream(id)
        .unwrap()
        .stop(ErrorCode::REFUSED)
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Stopped { .. }))),
        Some(Event::Stream(StreamEvent::Stopped {
            id,
            code: ErrorCode::REFUSED
        }))
    );
    assert_eq!(
        pair.client.conn.stream(id).unwrap().write(b"x"),
        Err(WriteError::Stopped(ErrorCode::REFUSED))
    );
    assert_no_violation(&pair);
}

#[test]
fn refusal_reaches_the_opener_with_code_and_reason() {
    let mut pair = Pair::connected();
    let open = OpenStream {
        address: Address {
            peer_id: 0,
            peer_name: name("ssh"),
        },
        metadata: Bytes::from_static(b"port=22"),
    };
    let id = pair.client.conn.open_stream(open).unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .write(b"early data")
        .unwrap();
    pair.drive();
    let incoming = pair.server.conn.next_incoming_stream().unwrap();
    assert_eq!(incoming.address.peer_name, "ssh");
    assert_eq!(&incoming.metadata[..], b"port=22");
    pair.server
        .conn
        .refuse_stream(id, ErrorCode::NOT_FOUND, "no service named ssh")
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Refused { .. }))),
        Some(Event::Stream(StreamEvent::Refused {
            id,
            code: ErrorCode::NOT_FOUND,
            reason: "no service named ssh".into()
        }))
    );
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert_no_violation(&pair);
}

#[test]
fn accept_metadata_reaches_the_opener() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    let incoming = pair.server.conn.next_incoming_stream().unwrap();
    pair.server
        .conn
        .accept_stream(incoming.id, Bytes::from_static(b"welcome"))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Accepted { .. }))),
        Some(Event::Stream(StreamEvent::Accepted {
            id,
            metadata: Bytes::from_static(b"welcome")
        }))
    );
}

#[test]
fn the_stream_limit_refuses_locally_and_unblocks_when_streams_close() {
    let mut server = Config::default();
    server.settings.max_concurrent_streams = 4;
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Edge));
    let ids: Vec<StreamId> = (0..4)
        .map(|_| pair.client.conn.open_stream(OpenStream::default()).unwrap())
        .collect();
    assert_eq!(
        pair.client.conn.open_stream(OpenStream::default()),
        Err(OpenError::StreamLimit)
    );
    pair.drive();
    accept_all(&mut pair.server);
    for id in &ids {
        pair.client.conn.stream(*id).unwrap().finish().unwrap();
        pair.server.conn.stream(*id).unwrap().finish().unwrap();
    }
    pair.drive();
    for id in &ids {
        assert_eq!(
            pair.server.conn.stream(*id).unwrap().read(10).unwrap(),
            None
        );
        assert_eq!(
            pair.client.conn.stream(*id).unwrap().read(10).unwrap(),
            None
        );
    }
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Unblocked))
            .is_some()
    );
    for _ in 0..4 {
        pair.client.conn.open_stream(OpenStream::default()).unwrap();
    }
    assert_no_violation(&pair);
}

#[test]
fn streams_beyond_the_pending_accept_limit_are_refused() {
    let server = Config {
        max_pending_accept: 3,
        ..Config::default()
    };
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Edge));
    let ids: Vec<StreamId> = (0..5)
        .map(|_| pair.client.conn.open_stream(OpenStream::default()).unwrap())
        .collect();
    pair.drive();
    let refused: Vec<_> = pair
        .client
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Stream(StreamEvent::Refused { id, code, .. }) => Some((id, code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        vec![(ids[3], ErrorCode::REFUSED), (ids[4], ErrorCode::REFUSED)]
    );
    assert_eq!(accept_all(&mut pair.server), ids[..3].to_vec());
    assert_no_violation(&pair);
}

#[test]
fn server_opened_streams_work_the_same() {
    let mut pair = Pair::connected();
    let id = pair.server.conn.open_stream(OpenStream::default()).unwrap();
    assert_eq!(id.initiator(), Side::Server);
    pair.server
        .conn
        .stream(id)
        .unwrap()
        .write(b"from the gateway")
        .unwrap();
    pair.drive();
    accept_all(&mut pair.client);
    pair.drive();
    assert_eq!(
        &pair
            .client
            .conn
            .stream(id)
            .unwrap()
            .read(100)
            .unwrap()
            .unwrap()[..],
        b"from the gateway"
    );
}

#[test]
fn writing_to_an_unaccepted_peer_stream_accepts_it() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    let _ = pair.server.conn.next_incoming_stream().unwrap();
    pair.server
        .conn
        .stream(id)
        .unwrap()
        .write(b"implicit")
        .unwrap();
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Accepted { .. })))
            .is_some()
    );
    assert_eq!(
        &pair
            .client
            .conn
            .stream(id)
            .unwrap()
            .read(100)
            .unwrap()
            .unwrap()[..],
        b"implicit"
    );
    assert_no_violation(&pair);
}

#[test]
fn many_concurrent_streams_keep_their_bytes_apart() {
    let mut pair = Pair::connected();
    pair.chunking = Chunking::Random { max: 3000 };
    let ids: Vec<StreamId> = (0..64)
        .map(|_| pair.client.conn.open_stream(OpenStream::default()).unwrap())
        .collect();
    let mut ts: Vec<Transfer> = (0..64)
        .map(|i| Transfer {
            total: 20_000 + i * 1000,
            ..Transfer::default()
        })
        .collect();
    for _ in 0..1_000_000 {
        for (id, t) in ids.iter().zip(ts.iter_mut()) {
            write_some(&mut pair.client, *id, t, 1500);
        }
        pair.step();
        accept_all(&mut pair.server);
        for (id, t) in ids.iter().zip(ts.iter_mut()) {
            read_some(&mut pair.server, *id, t, 999);
        }
        if ts.iter().all(|t| t.eof) {
            break;
        }
    }
    assert!(ts.iter().all(|t| t.eof && t.read == t.total));
    assert_no_violation(&pair);
}

#[test]
fn a_fin_goes_out_while_other_streams_wait_for_connection_credit() {
    let mut client = Config::default();
    client.settings.connection_window = 64 * 1024;
    let mut server = Config::default();
    server.settings.connection_window = 64 * 1024;
    let mut pair = Pair::connected_with(client, server, ClientInfo::new(Role::Edge));
    let bulk = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    let done = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.client
        .conn
        .stream(bulk)
        .unwrap()
        .write(&[0u8; 200_000])
        .unwrap();
    pair.drive();
    // The connection window is spent and the server reads nothing: bulk is stuck.
    pair.client.conn.stream(done).unwrap().finish().unwrap();
    assert!(pair.client.conn.has_pending_output());
    let mut buf = TransmitBuf::new();
    let now = pair.now;
    assert!(
        pair.client.conn.poll_transmit(now, &mut buf) > 0,
        "pending output must be sendable"
    );
    assert!(
        !pair.client.conn.has_pending_output(),
        "only the stuck stream remains, and it cannot send"
    );
}

#[test]
fn stopping_an_unaccepted_stream_refuses_it() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    let _ = pair.server.conn.next_incoming_stream().unwrap();
    pair.server
        .conn
        .stream(id)
        .unwrap()
        .stop(ErrorCode::REFUSED)
        .unwrap();
    pair.drive();
    assert!(
        pair.client
            .take_event(|e| matches!(
                e,
                Event::Stream(StreamEvent::Refused {
                    code: ErrorCode::REFUSED,
                    ..
                })
            ))
            .is_some()
    );
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert_no_violation(&pair);
}

#[test]
fn an_opener_stopping_before_accept_leaves_nothing_behind() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .stop(ErrorCode::CANCELLED)
        .unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .reset(ErrorCode::CANCELLED, "")
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.conn.next_incoming_stream(), None);
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Refused { .. })))
            .is_none(),
        "we reset it ourselves"
    );
    assert_no_violation(&pair);
}

#[test]
fn refusals_keep_the_pending_accept_limit_exact() {
    let server = Config {
        max_pending_accept: 4,
        ..Config::default()
    };
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Edge));
    for _ in 0..4 {
        pair.client.conn.open_stream(OpenStream::default()).unwrap();
    }
    pair.drive();
    // Refuse two; exactly two more may then wait.
    for _ in 0..2 {
        let s = pair.server.conn.next_incoming_stream().unwrap();
        pair.server
            .conn
            .refuse_stream(s.id, ErrorCode::REFUSED, "")
            .unwrap();
    }
    pair.drive();
    for _ in 0..3 {
        pair.client.conn.open_stream(OpenStream::default()).unwrap();
    }
    pair.client.take_events();
    pair.drive();
    let refused = pair
        .client
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Stream(StreamEvent::Refused { .. })))
        .count();
    assert_eq!(refused, 1, "the third new stream is over the limit");
}

#[test]
fn open_metadata_must_fit_the_peers_frame() {
    let mut server = Config::default();
    server.settings.max_frame_size = 16 * 1024;
    server.settings.max_open_metadata = 60 * 1024;
    let mut pair = Pair::connected_with(Config::default(), server, ClientInfo::new(Role::Edge));
    let open = OpenStream {
        address: Address::default(),
        metadata: Bytes::from(vec![0u8; 16 * 1024]),
    };
    assert!(matches!(
        pair.client.conn.open_stream(open),
        Err(OpenError::MetadataTooLarge { .. })
    ));
    let open = OpenStream {
        address: Address::default(),
        metadata: Bytes::from(vec![0u8; 16 * 1024 - 11]),
    };
    pair.client.conn.open_stream(open).unwrap();
    pair.drive();
    assert_no_violation(&pair);
}
