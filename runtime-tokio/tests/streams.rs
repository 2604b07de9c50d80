//! Byte streams end to end: services and edges against the gateway stand-in over loopback
//! TCP (and the low-level `Connection` over an in-memory duplex). Opening, refusing and
//! accepting streams in both directions, half-close, reset and stop, large transfers with
//! content checks, independence of streams on one connection, and clean failure when a
//! stream or its connection goes away mid-transfer.

mod pattern;
mod support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use pattern::*;
use proto_core::name::Name;
use proto_core::{Address, ClientInfo, Config, ErrorCode, HandshakeAccept, OpenStream, Role};
use support::*;
use tether_tokio::{
    ConnectExt, Connection, DriverConfig, Edge, Error, Service, Stream, runtime, transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

async fn service_with_session() -> (MockGateway, Service, Session) {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("svc").connect(gw.addr).unwrap();
    let session = gw.session().await;
    (gw, service, session)
}

/// Opens a stream from the service (to edge 5) and accepts it on the gateway side:
/// (client end, gateway end).
async fn open_pair(service: &Service, conn: &Connection) -> (Stream, Stream) {
    let (near, far) = within("open", async {
        tokio::join!(service.open_stream(5, Bytes::new()), async {
            incoming(conn).await.accept(Bytes::new()).unwrap()
        })
    })
    .await;
    (near.unwrap(), far)
}

/// The server side's next incoming stream (within 20 s).
async fn incoming(conn: &Connection) -> tether_tokio::IncomingStream {
    within("incoming stream", conn.incoming_stream())
        .await
        .expect("connection ended")
}

/// Service → edge 42 and edge → service "svc": the open carries the target and the
/// metadata to the gateway side, and the accepted stream carries bytes both ways.
#[tokio::test]
async fn opens_carry_target_and_metadata_and_bytes_flow_both_ways() {
    let (mut gw, service, session) = service_with_session().await;
    let (near, mut far) = within("open", async {
        let open = service.open_stream(42, Bytes::from_static(b"port=22"));
        tokio::join!(open, async {
            let inc = incoming(&session.conn).await;
            assert_eq!(inc.address().unwrap().peer_id, 42);
            assert_eq!(inc.metadata(), &Bytes::from_static(b"port=22"));
            inc.accept(Bytes::from_static(b"welcome")).unwrap()
        })
    })
    .await;
    let mut near = near.unwrap();
    assert_eq!(near.address().peer_id, 42);
    near.write_all(b"ping").await.unwrap();
    near.shutdown().await.unwrap();
    assert_eq!(read_all(&mut far).await.unwrap(), b"ping");
    far.write_all(b"pong").await.unwrap();
    far.shutdown().await.unwrap();
    assert_eq!(read_all(&mut near).await.unwrap(), b"pong");

    let edge = Edge::builder().connect(gw.addr).unwrap();
    let e_sess = gw.session().await;
    let (near, mut far) = within("open", async {
        tokio::join!(edge.open_stream("svc", Bytes::from_static(b"m")), async {
            let inc = incoming(&e_sess.conn).await;
            let addr = inc.address().unwrap();
            assert_eq!((addr.peer_id, addr.peer_name.as_str()), (0, "svc"));
            assert_eq!(inc.metadata(), &Bytes::from_static(b"m"));
            inc.accept(Bytes::new()).unwrap()
        })
    })
    .await;
    let mut near = near.unwrap();
    far.write_all(b"hi").await.unwrap();
    assert_eq!(
        within("read", near.read_u16()).await.unwrap(),
        u16::from_be_bytes(*b"hi")
    );
    near.write_all(b"yo").await.unwrap();
    assert_eq!(
        within("read", far.read_u16()).await.unwrap(),
        u16::from_be_bytes(*b"yo")
    );
}

/// A refusal reaches the opener with the refuser's code and reason; dropping an
/// `IncomingStream` refuses with `REFUSED`; the connection stays usable.
#[tokio::test]
async fn refused_and_dropped_opens_fail_with_the_code() {
    let (_gw, service, session) = service_with_session().await;
    let (err, ()) = within("refused open", async {
        tokio::join!(service.open_stream(1, Bytes::new()), async {
            incoming(&session.conn)
                .await
                .refuse(ErrorCode::NOT_FOUND, "no such port")
        })
    })
    .await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NOT_FOUND);
    assert!(
        matches!(&err, Error::Status { code: ErrorCode::NOT_FOUND, text } if text == "no such port"),
        "{err:?}"
    );
    let (err, ()) = within("dropped open", async {
        tokio::join!(service.open_stream(1, Bytes::new()), async {
            drop(incoming(&session.conn).await)
        })
    })
    .await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), ErrorCode::REFUSED);
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    open_pair(&service, &session.conn).await;
}

/// Streams the gateway side opens reach services and edges (`incoming_stream` with source
/// address and metadata, the acceptor's metadata going back; and `accept_stream`).
#[tokio::test]
async fn services_and_edges_accept_streams_the_gateway_opens() {
    let mut gw = MockGateway::start().await;
    let service = Service::builder("svc").connect(gw.addr).unwrap();
    let s_sess = gw.session().await;
    let edge = Edge::builder().connect(gw.addr).unwrap();
    let e_sess = gw.session().await;

    let address = Address {
        peer_id: 9,
        peer_name: Name::EMPTY,
    };
    let open = OpenStream {
        address,
        metadata: Bytes::from_static(b"to-svc"),
    };
    let (far, near) = within("open to service", async {
        tokio::join!(
            s_sess.conn.open_stream(open, Some(Duration::from_secs(10))),
            async {
                let inc = service.incoming_stream().await.unwrap();
                assert_eq!(inc.address().unwrap().peer_id, 9);
                assert_eq!(inc.metadata(), &Bytes::from_static(b"to-svc"));
                inc.accept(Bytes::from_static(b"accepted")).unwrap()
            }
        )
    })
    .await;
    let ((mut far, meta), mut near) = (far.unwrap(), near);
    assert_eq!(meta, Bytes::from_static(b"accepted"));
    near.write_all(b"x").await.unwrap();
    assert_eq!(within("read", far.read_u8()).await.unwrap(), b'x');

    check_accept_stream(&s_sess.conn, service.accept_stream()).await;
    check_accept_stream(&e_sess.conn, edge.accept_stream()).await;
}

/// The gateway side opens a stream from "caller"; `accept` (a client's `accept_stream`)
/// must yield it, carrying bytes.
async fn check_accept_stream(conn: &Connection, accept: impl Future<Output = Option<Stream>>) {
    let address = Address {
        peer_id: 0,
        peer_name: Name::new("caller").unwrap(),
    };
    let open = OpenStream {
        address,
        metadata: Bytes::new(),
    };
    let (near, far) = within("accept_stream", async {
        tokio::join!(
            accept,
            conn.open_stream(open, Some(Duration::from_secs(10)))
        )
    })
    .await;
    let (mut near, (mut far, _)) = (near.expect("the client closed"), far.unwrap());
    assert_eq!(near.address().peer_name.as_str(), "caller");
    far.write_all(b"abc").await.unwrap();
    far.shutdown().await.unwrap();
    assert_eq!(read_all(&mut near).await.unwrap(), b"abc");
}

/// Half-close: after the client's FIN the peer reads EOF, yet still writes back; the client
/// reads that, then EOF (repeatedly); writing after our own FIN fails.
#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    near.write_all(b"request").await.unwrap();
    near.shutdown().await.unwrap();
    assert_eq!(read_all(&mut far).await.unwrap(), b"request");
    assert!(near.write_all(b"more").await.is_err());
    for _ in 0..3 {
        far.write_all(b"reply part;").await.unwrap();
    }
    far.shutdown().await.unwrap();
    assert_eq!(read_all(&mut near).await.unwrap(), b"reply part;".repeat(3));
    assert_eq!(near.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF repeats");
}

/// RESET with a code: the reader's io error carries that code and reason, both directions;
/// writing after our own reset fails.
#[tokio::test]
async fn reset_reaches_the_reader_with_its_code() {
    let (_gw, service, session) = service_with_session().await;
    for client_resets in [false, true] {
        let (near, far) = open_pair(&service, &session.conn).await;
        let (mut writer, mut reader) = if client_resets {
            (near, far)
        } else {
            (far, near)
        };
        writer.write_all(b"partial data").await.unwrap();
        writer.reset(ErrorCode::BAD_REQUEST, "bad input");
        let err = read_until_error(&mut reader).await;
        assert_eq!(inner(&err).code(), ErrorCode::BAD_REQUEST, "{err:?}");
        assert_eq!(inner(&err).text(), "bad input");
        assert!(writer.write_all(b"x").await.is_err());
    }
}

/// STOP: once the reader stops with a code, the writer's writes fail with that code; the
/// other direction is unaffected.
#[tokio::test]
async fn stop_fails_the_writers_next_writes() {
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    far.write_all(b"first").await.unwrap();
    within("read", near.read_exact(&mut [0u8; 5]))
        .await
        .unwrap();
    near.stop(ErrorCode::TOO_LARGE);
    assert_eq!(
        near.read(&mut [0u8; 5]).await.unwrap(),
        0,
        "a stopped reader reads nothing"
    );
    let err = write_until_error(&mut far).await;
    assert_eq!(inner(&err).code(), ErrorCode::TOO_LARGE, "{err:?}");
    near.write_all(b"still").await.unwrap();
    near.shutdown().await.unwrap();
    assert_eq!(read_all(&mut far).await.unwrap(), b"still");
}

/// 64 MiB each way at once on one stream over loopback TCP, every byte checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_both_ways_over_tcp() {
    const TOTAL: u64 = 64 * MIB;
    let (_gw, service, session) = service_with_session().await;
    let (near, far) = open_pair(&service, &session.conn).await;
    let far = tokio::spawn(exchange(far, 2, 1, TOTAL));
    let near = exchange(near, 1, 2, TOTAL);
    timeout(Duration::from_secs(60), near)
        .await
        .expect("client side stuck");
    timeout(Duration::from_secs(60), far)
        .await
        .expect("gateway side stuck")
        .unwrap();
}

/// 16 streams × 4 MiB in parallel on one connection, echoed by the gateway side through
/// `read_chunk`/`write_all_bytes`, checked by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_in_parallel() {
    let (_gw, service, session) = service_with_session().await;
    let conn = session.conn.clone();
    tokio::spawn(async move {
        while let Some(mut s) = conn.accept_stream().await {
            tokio::spawn(async move {
                while let Some(chunk) = s.read_chunk(64 * 1024).await.expect("echo read") {
                    s.write_all_bytes(chunk).await.expect("echo write");
                }
                s.shutdown().await.unwrap();
            });
        }
    });
    let tasks: Vec<_> = (100..116)
        .map(|seed| {
            let service = service.clone();
            tokio::spawn(async move {
                let stream = service.open_stream(seed, Bytes::new()).await.unwrap();
                exchange(stream, seed, seed, 4 * MIB).await;
            })
        })
        .collect();
    for task in tasks {
        timeout(Duration::from_secs(60), task)
            .await
            .expect("a stream stalled")
            .unwrap();
    }
}

/// The same two-way transfer on the low-level `Connection` over `tokio::io::duplex`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_over_a_duplex() {
    const TOTAL: u64 = 32 * MIB;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let (config, driver) = (Config::default(), DriverConfig::default());
        let hs = Connection::accept(runtime(), transport(b), config, driver)
            .await
            .unwrap();
        let conn = hs
            .accept(HandshakeAccept {
                assigned_id: 3,
                ..Default::default()
            })
            .unwrap();
        exchange(conn.accept_stream().await.unwrap(), 20, 10, TOTAL).await;
        conn
    });
    let (config, driver, info) = (
        Config::default(),
        DriverConfig::default(),
        ClientInfo::new(Role::Edge),
    );
    let connect = Connection::connect(runtime(), transport(a), config, info, driver);
    let client = within("handshake", connect).await.unwrap();
    let (stream, _) = within("open", client.open_stream(OpenStream::default(), None))
        .await
        .unwrap();
    let near = exchange(stream, 10, 20, TOTAL);
    timeout(Duration::from_secs(60), near)
        .await
        .expect("client side stuck");
    let server = timeout(Duration::from_secs(60), server)
        .await
        .expect("server side stuck")
        .unwrap();
    client.close(ErrorCode::OK, "done");
    assert_eq!(
        within("closed", server.closed()).await.code(),
        ErrorCode::OK
    );
}

/// A stream whose reader stopped reading (after its window auto-tuned up) does not hold up
/// another stream of the same connection in the same direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_stream_does_not_stall_the_others() {
    let (_gw, service, session) = service_with_session().await;
    let (mut slow_near, mut slow_far) = open_pair(&service, &session.conn).await;
    let (fast_near, fast_far) = open_pair(&service, &session.conn).await;

    // Stream A: the gateway side writes 24 MiB; the client reads 8 MiB, then nothing.
    let slow_writer =
        tokio::spawn(async move { send_pattern(&mut slow_far, 7, 0, 24 * MIB).await });
    let mut checker = Checker::new(7);
    while checker.offset < 8 * MIB {
        let chunk = within("slow read", slow_near.read_chunk(64 * 1024))
            .await
            .unwrap();
        checker.check(&chunk.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !slow_writer.is_finished(),
        "the unread stream's writer should be blocked"
    );

    // Stream B moves 16 MiB each way meanwhile.
    let fast_far = tokio::spawn(exchange(fast_far, 9, 8, 16 * MIB));
    let fast_near = exchange(fast_near, 8, 9, 16 * MIB);
    timeout(Duration::from_secs(30), fast_near)
        .await
        .expect("stream B stalled");
    timeout(Duration::from_secs(30), fast_far)
        .await
        .expect("stream B stalled")
        .unwrap();

    // A resumes and delivers everything intact.
    timeout(Duration::from_secs(30), async {
        while let Some(chunk) = slow_near.read_chunk(64 * 1024).await.unwrap() {
            checker.check(&chunk);
        }
    })
    .await
    .expect("stream A never finished");
    assert_eq!(checker.offset, 24 * MIB);
    slow_writer.await.unwrap();
}

/// Zero-copy path: `write_all_bytes` of odd-sized slices of one buffer, `read_chunk` with
/// varying bounds; chunks respect `max`, content is intact, EOF is `None` (repeatedly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_copy_chunks() {
    const LEN: usize = 8 * MIB as usize + 12345;
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    let mut data = vec![0u8; LEN];
    fill(31, 0, &mut data);
    let data = Bytes::from(data);
    let writer = tokio::spawn(async move {
        let (mut at, mut step) = (0, 1);
        while at < LEN {
            let end = (at + step).min(LEN);
            near.write_all_bytes(data.slice(at..end)).await.unwrap();
            at = end;
            step = (step * 3 + 7) % 300_000 + 1; // from 1 byte to ~300 KiB
        }
        near.finish().unwrap();
        near
    });
    let (mut checker, mut max) = (Checker::new(31), 1);
    timeout(Duration::from_secs(30), async {
        while let Some(chunk) = far.read_chunk(max).await.unwrap() {
            assert!(
                !chunk.is_empty() && chunk.len() <= max,
                "{} bytes, max {max}",
                chunk.len()
            );
            checker.check(&chunk);
            max = (max * 5 + 3) % 200_000 + 1;
        }
    })
    .await
    .expect("zero-copy read stuck");
    assert_eq!(checker.offset, LEN as u64);
    assert_eq!(far.read_chunk(10).await.unwrap(), None);
    within("writer", writer).await.unwrap();
}

/// Dropping a stream mid-transfer (both directions busy): the peer's writer fails, and the
/// peer's reader sees EOF after a prefix of the data, or an error — never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_mid_transfer_never_hangs_the_peer() {
    let (_gw, service, session) = service_with_session().await;
    for client_drops in [false, true] {
        let (near, far) = open_pair(&service, &session.conn).await;
        let (mut dropper, peer) = if client_drops {
            (near, far)
        } else {
            (far, near)
        };
        let (mut peer_r, mut peer_w) = tokio::io::split(peer);
        let peer_writer = tokio::spawn(async move { write_until_error(&mut peer_w).await });
        let peer_reader = tokio::spawn(async move {
            let (mut checker, mut buf) = (Checker::new(4), vec![0u8; 64 * 1024]);
            loop {
                match peer_r.read(&mut buf).await {
                    Ok(0) => return Ok(checker.offset),
                    Ok(n) => checker.check(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        });
        // The dropper writes 1 MiB and reads some, then drops the stream.
        let mut buf = vec![0u8; MIB as usize];
        fill(4, 0, &mut buf);
        within("dropper write", dropper.write_all(&buf))
            .await
            .unwrap();
        within("dropper read", dropper.read_exact(&mut buf[..64 * 1024]))
            .await
            .unwrap();
        drop(dropper);

        let err = timeout(Duration::from_secs(20), peer_writer)
            .await
            .expect("writer hung")
            .unwrap();
        // The STOP carries `CANCELLED`, whichever of the peer's halves ended first.
        assert_eq!(inner(&err).code(), ErrorCode::CANCELLED, "{err:?}");
        let read = timeout(Duration::from_secs(20), peer_reader)
            .await
            .expect("reader hung");
        if let Ok(n) = read.unwrap() {
            assert!(n <= MIB, "read {n} bytes, more than were written");
        }
    }
}

/// The gateway closes the connection under open streams: a pending read and a blocked
/// write both fail with an io error carrying the close code; later writes fail too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fail_cleanly_when_the_connection_closes() {
    let (_gw, service, session) = service_with_session().await;
    let (mut reading, _far1) = open_pair(&service, &session.conn).await;
    let (mut writing, _far2) = open_pair(&service, &session.conn).await;
    let reader = tokio::spawn(async move {
        let r = reading.read(&mut [0u8; 16]).await;
        (reading, r)
    });
    // Nobody reads `_far2`: the writer blocks once the window is full.
    let writer = tokio::spawn(async move {
        let (buf, mut written) = (vec![0u8; 64 * 1024], 0u64);
        loop {
            match writing.write(&buf).await {
                Ok(n) => written += n as u64,
                Err(e) => return (written, e),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished() && !writer.is_finished());

    session.conn.close(ErrorCode::INTERNAL, "gateway crashed");
    let (mut reading, r) = within("pending read", reader).await.unwrap();
    let err = r.expect_err("a read on a closed connection must fail");
    assert_eq!(inner(&err).code(), ErrorCode::INTERNAL, "{err:?}");
    assert!(matches!(inner(&err), Error::ConnectionLost(_)), "{err:?}");
    let (written, err) = within("blocked write", writer).await.unwrap();
    assert!(written >= 64 * 1024, "the writer never got going");
    assert_eq!(inner(&err).code(), ErrorCode::INTERNAL, "{err:?}");
    // Later reads: see `a_failed_read_is_not_followed_by_eof`.
    assert!(
        within("write again", reading.write_all(b"x"))
            .await
            .is_err()
    );
}

/// An open the peer does not answer in time fails with `Timeout` and withdraws the stream:
/// the late acceptor gets an error or a stream that ends at once, never a hang.
#[tokio::test]
async fn an_unanswered_open_times_out_and_is_withdrawn() {
    let (_gw, service, session) = service_with_session().await;
    within("connected", service.wait_connected()).await.unwrap();
    let client = service.connection().unwrap();
    let (opened, inc) = within("open", async {
        let open = client.open_stream(OpenStream::default(), Some(Duration::from_millis(300)));
        tokio::join!(open, async {
            let inc = incoming(&session.conn).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            inc
        })
    })
    .await;
    let err = opened.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    if let Ok(mut late) = inc.accept(Bytes::new()) {
        let read = read_all(&mut late).await;
        assert!(read.as_ref().map_or(true, Vec::is_empty), "{read:?}");
    }
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    near.write_all(b"ok").await.unwrap();
    assert_eq!(
        within("read", far.read_u16()).await.unwrap(),
        u16::from_be_bytes(*b"ok")
    );
}

/// `Service::close` is graceful for streams: a transfer in progress completes intact, and
/// `close` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_lets_streams_finish() {
    const TOTAL: u64 = 8 * MIB;
    let (_gw, service, session) = service_with_session().await;
    let (near, far) = open_pair(&service, &session.conn).await;
    let far = tokio::spawn(exchange(far, 2, 1, TOTAL));
    let near = tokio::spawn(exchange(near, 1, 2, TOTAL));
    tokio::time::sleep(Duration::from_millis(20)).await;
    timeout(Duration::from_secs(30), service.close())
        .await
        .expect("close never returned");
    timeout(Duration::from_secs(30), near)
        .await
        .expect("client side stuck")
        .unwrap();
    timeout(Duration::from_secs(30), far)
        .await
        .expect("gateway side stuck")
        .unwrap();
}

/// Bytes (and a FIN) that arrived before the connection closed stay readable: the reader
/// gets them, then EOF where the FIN came, or an error where it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_received_before_a_close_is_still_readable() {
    const LEN: usize = 100_000;
    let (_gw, service, session) = service_with_session().await;
    within("connected", service.wait_connected()).await.unwrap();
    let client = service.connection().unwrap();
    let (mut with_fin, mut far1) = open_pair(&service, &session.conn).await;
    let (mut without_fin, mut far2) = open_pair(&service, &session.conn).await;
    let before = client.stats().bytes_in;
    let mut data = vec![0u8; LEN];
    fill(55, 0, &mut data);
    far1.write_all(&data).await.unwrap();
    far1.shutdown().await.unwrap();
    far2.write_all(&data).await.unwrap();
    // Wait until the client's connection has taken everything (both streams' bytes, and no
    // more input for 100 ms) before closing; the client reads nothing yet.
    within("bytes arrive", async {
        loop {
            let seen = client.stats().bytes_in;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if seen >= before + 2 * LEN as u64 && client.stats().bytes_in == seen {
                break;
            }
        }
    })
    .await;
    session.conn.close(ErrorCode::INTERNAL, "bye");
    within("client sees the close", client.closed()).await;

    assert!(read_all(&mut with_fin).await.expect("EOF after the data") == data);
    let mut got = Vec::new();
    let err = within("read", without_fin.read_to_end(&mut got))
        .await
        .unwrap_err();
    assert!(got == data, "{} bytes instead of {LEN}", got.len());
    assert_eq!(inner(&err).code(), ErrorCode::INTERNAL, "{err:?}");
}

// ---- codes and errors that must survive the core forgetting the stream ----

/// A RESET that arrives after our own FIN went out must still reach the reader with its
/// code (request/response: we sent the request, the peer fails it with a code).
#[tokio::test]
async fn a_reset_code_survives_the_stream_being_forgotten() {
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    near.write_all(b"request").await.unwrap();
    near.shutdown().await.unwrap();
    read_all(&mut far).await.unwrap();
    far.reset(ErrorCode::BAD_REQUEST, "rejected");
    let err = read_until_error(&mut near).await;
    assert_eq!(inner(&err).code(), ErrorCode::BAD_REQUEST, "{err:?}");
}

/// A STOP that arrives after we read the peer's FIN must still fail our writes with its
/// code, not a generic `Closed`.
#[tokio::test]
async fn a_stop_code_survives_the_stream_being_forgotten() {
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    near.shutdown().await.unwrap();
    read_all(&mut far).await.unwrap();
    near.stop(ErrorCode::TOO_LARGE);
    let err = write_until_error(&mut far).await;
    assert_eq!(inner(&err).code(), ErrorCode::TOO_LARGE, "{err:?}");
}

/// After a read failed (peer reset, connection lost), later reads must keep failing: a
/// clean EOF would make a truncated stream look complete.
#[tokio::test]
async fn a_failed_read_is_not_followed_by_eof() {
    let (_gw, service, session) = service_with_session().await;
    let (mut near, mut far) = open_pair(&service, &session.conn).await;
    far.write_all(b"partial").await.unwrap();
    far.reset(ErrorCode::INTERNAL, "crashed");
    assert_eq!(
        inner(&read_until_error(&mut near).await).code(),
        ErrorCode::INTERNAL
    );
    let again = near.read(&mut [0u8; 64]).await;
    assert!(
        again.is_err(),
        "after a reset the next read returned {again:?}"
    );
    assert!(
        near.read_chunk(64).await.is_err(),
        "read_chunk after a reset"
    );
}
