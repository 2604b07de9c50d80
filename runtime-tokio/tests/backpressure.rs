//! Backpressure: a reader that does not read, a handler that does not finish, or a peer
//! that does not read its transport must make the other side wait, never make memory grow
//! without bound or make work fail.
//!
//! What is measured: how many bytes a writer gets *accepted* (`write` returned) before a
//! write stays pending for 300 ms. Accepted bytes are what the SDK holds in memory on the
//! writer's side (its send buffer) plus what is in flight or buffered at the receiver, so
//! that count bounds memory. Flow control allows at most the receiver's stream window
//! (`initial_stream_window`, 256 KiB; auto-tuning only grows it when the reader consumes)
//! plus the writer's `stream_send_buffer` (1 MiB); we assert that bound plus slack. Where
//! the receiving connection is reachable, its `stats().bytes_in` (bytes its core took off
//! the transport) is checked against the window too.

mod pattern;
mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use pattern::*;
use proto_core::name::Name;
use proto_core::{
    Address, Call, ClientInfo, Config, ConnectionError, ErrorCode, HandshakeAccept, Role,
};
use support::*;
use tether_tokio::{
    ConnectExt, Connection, DriverConfig, Edge, Error, Service, Stream, runtime, transport,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The receiver's initial stream window.
fn window() -> u64 {
    u64::from(Config::default().settings.initial_stream_window)
}

/// The most a writer may have accepted while its reader reads nothing.
fn bound() -> u64 {
    window() + u64::from(Config::default().stream_send_buffer) + 64 * KIB
}

/// Writes 16 KiB pattern chunks until one write stays pending for 300 ms; returns the bytes
/// accepted. Panics if the writer is never held back (more than 64 MiB accepted).
async fn write_until_blocked(stream: &mut Stream, seed: u64) -> u64 {
    let mut buf = vec![0u8; 16 * KIB as usize];
    let mut accepted = 0u64;
    loop {
        fill(seed, accepted, &mut buf);
        match timeout(Duration::from_millis(300), stream.write(&buf)).await {
            Ok(Ok(n)) => accepted += n as u64,
            Ok(Err(e)) => panic!("write failed after {accepted} bytes: {e}"),
            Err(_) => return accepted,
        }
        assert!(accepted < 64 * MIB, "the writer was never held back");
    }
}

/// The writer blocks after about one window while the reader does not read, then
/// everything arrives once it does; checked in both directions through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_writer_to_its_window() {
    const TOTAL: u64 = 4 * MIB;
    let mut gw = MockGateway::start().await;
    let service = Service::builder("svc").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let client_conn = within("connected", async {
        service.wait_connected().await.unwrap();
        service.connection().unwrap()
    })
    .await;
    for client_writes in [false, true] {
        let (near, far) = within("open", async {
            tokio::join!(
                service.open_stream(1, Bytes::new()),
                session.conn.accept_stream()
            )
        })
        .await;
        let (mut writer, mut reader) = match client_writes {
            true => (near.unwrap(), far.unwrap()),
            false => (far.unwrap(), near.unwrap()),
        };
        let receiving = if client_writes {
            &session.conn
        } else {
            &client_conn
        };
        let bytes_in_before = receiving.stats().bytes_in;

        let accepted = within("write until blocked", write_until_blocked(&mut writer, 5)).await;
        eprintln!("client writes: {client_writes}; accepted before blocking: {accepted}");
        assert!(
            accepted <= bound(),
            "{accepted} bytes accepted for an idle reader"
        );
        assert!(
            accepted >= window() / 2,
            "blocked after only {accepted} bytes"
        );
        // Tighter, as the core documents it: a stream never buffers more than the peer's
        // credit, which stays at the initial window while nothing is read.
        assert!(
            accepted <= window() + 16 * KIB,
            "{accepted} bytes: more than the peer's credit"
        );
        let taken = receiving.stats().bytes_in - bytes_in_before;
        assert!(
            taken <= window() + 64 * KIB,
            "the idle reader's connection took {taken} bytes"
        );

        let writing =
            tokio::spawn(async move { send_pattern(&mut writer, 5, accepted, TOTAL).await });
        let got = timeout(Duration::from_secs(30), recv_pattern(&mut reader, 5))
            .await
            .expect("stuck");
        assert_eq!(got, TOTAL);
        within("writer completes", writing).await.unwrap();
    }
}

/// Calls to a handler that never finishes: at most `max_inflight_requests` (8, as the
/// service advertises) run at once; the other calls wait without failing, and all finish
/// once the handler is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_concurrency_is_bounded_by_max_inflight_requests() {
    const LIMIT: usize = 8;
    const CALLS: usize = 40;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (started, running, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut gw = MockGateway::start().await;
    let (r, s, run, p) = (
        release.clone(),
        started.clone(),
        running.clone(),
        peak.clone(),
    );
    let _service = Service::builder("svc")
        .configure(|o| o.config.settings.max_inflight_requests = LIMIT as u32)
        .method("hold", move |req| {
            let (r, s, run, p) = (r.clone(), s.clone(), run.clone(), p.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                p.fetch_max(run.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                r.acquire().await.unwrap().forget();
                run.fetch_sub(1, Ordering::SeqCst);
                Ok(req.body)
            }
        })
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;

    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let conn = session.conn.clone();
            tokio::spawn(async move {
                let mut call = Call::new(Name::new("hold").unwrap(), Bytes::from(i.to_string()));
                call.address = Address {
                    peer_id: 77,
                    peer_name: Name::EMPTY,
                };
                call.timeout = Some(Duration::from_secs(30));
                (i, conn.call(call).await)
            })
        })
        .collect();
    within("the first calls start", async {
        while started.load(Ordering::SeqCst) < LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        LIMIT,
        "more handlers ran than the limit allows"
    );
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "a call finished (or failed) early"
    );

    release.add_permits(CALLS);
    for call in calls {
        let (i, result) = within("call", call).await.unwrap();
        assert_eq!(
            result.expect("a waiting call failed"),
            Bytes::from(i.to_string())
        );
    }
    assert_eq!(started.load(Ordering::SeqCst), CALLS);
    assert!(
        peak.load(Ordering::SeqCst) <= LIMIT,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
}

/// The other direction: the gateway advertises 8 in-flight requests and holds what it gets;
/// the service's extra calls wait in the SDK (not failing `BUSY`) and complete later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_wait_for_the_peers_inflight_limit() {
    const LIMIT: usize = 8;
    const CALLS: usize = 30;
    let mut config = Config::default();
    config.settings.max_inflight_requests = LIMIT as u32;
    let mut gw = MockGateway::with_policy(config, Arc::new(|_| Decision::Accept(1))).await;
    let service = Service::builder("svc").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move { (i, service.call(3, "m", Bytes::from(i.to_string())).await) })
        })
        .collect();
    let mut held = Vec::new();
    while held.len() < LIMIT {
        held.push(
            within("request", session.conn.next_request())
                .await
                .unwrap(),
        );
    }
    let extra = timeout(Duration::from_millis(300), session.conn.next_request()).await;
    assert!(
        extra.is_err(),
        "a request beyond the peer's in-flight limit was sent"
    );
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "a call finished (or failed) early"
    );

    let conn = session.conn.clone();
    let echo = |req: tether_tokio::Request| {
        let body = req.body().clone();
        req.respond(Ok(body));
    };
    held.into_iter().for_each(echo);
    tokio::spawn(async move {
        while let Some(req) = conn.next_request().await {
            echo(req);
        }
    });
    for call in calls {
        let (i, result) = within("call", call).await.unwrap();
        assert_eq!(
            result.expect("a waiting call failed"),
            Bytes::from(i.to_string())
        );
    }
}

/// A service connected to a gateway stand-in that allows 4 concurrent streams, with 4
/// streams open and accepted (client end, gateway end), and a 5th open waiting.
async fn four_streams_and_a_waiting_open() -> (
    MockGateway,
    Service,
    Vec<(Stream, Stream)>,
    JoinHandle<Stream>,
) {
    let mut config = Config::default();
    config.settings.max_concurrent_streams = 4;
    let mut gw = MockGateway::with_policy(config, Arc::new(|_| Decision::Accept(1))).await;
    let service = Service::builder("svc").connect(gw.addr).unwrap();
    let session = gw.session().await;
    let conn = session.conn.clone();
    let mut open = Vec::new();
    for _ in 0..4 {
        let (near, far) = within("open", async {
            tokio::join!(service.open_stream(1, Bytes::new()), conn.accept_stream())
        })
        .await;
        open.push((near.unwrap(), far.unwrap()));
    }
    let s2 = service.clone();
    let fifth = tokio::spawn(async move {
        let (near, far) = tokio::join!(s2.open_stream(1, Bytes::new()), conn.accept_stream());
        let (mut near, mut far) = (near.expect("the waiting open failed"), far.unwrap());
        near.write_all(b"5").await.unwrap();
        assert_eq!(far.read_u8().await.unwrap(), b'5');
        near
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fifth.is_finished(),
        "an open beyond the limit did not wait"
    );
    (gw, service, open, fifth)
}

/// Stream opens beyond the peer's `max_concurrent_streams` (4) wait rather than fail, and
/// proceed soon after an open stream is finished and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_beyond_the_stream_limit_wait_for_a_slot() {
    let (_gw, _service, mut open, fifth) = four_streams_and_a_waiting_open().await;
    let (mut near, mut far) = open.remove(0);
    near.shutdown().await.unwrap();
    far.shutdown().await.unwrap();
    drop((near, far));
    // Well under the 15 s keepalive, which would flush a forgotten credit update anyway.
    timeout(Duration::from_secs(5), fifth)
        .await
        .expect("the 5th open still waits")
        .unwrap();
}

/// The same, when the stream ends by the gateway side reading the client's FIN after its
/// own FIN went out (so reading EOF is what closes the stream on the gateway side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_by_reading_eof_frees_its_slot() {
    let (_gw, _service, mut open, fifth) = four_streams_and_a_waiting_open().await;
    let (mut near, mut far) = open.remove(0);
    far.shutdown().await.unwrap();
    let mut sink = Vec::new();
    // The client read the gateway side's FIN, so that FIN is on the wire.
    within("near EOF", near.read_to_end(&mut sink))
        .await
        .unwrap();
    near.shutdown().await.unwrap();
    within("far EOF", far.read_to_end(&mut sink)).await.unwrap();
    // Both ends stay alive: only the EOF read closed the stream.
    timeout(Duration::from_secs(5), fifth)
        .await
        .expect("the 5th open still waits")
        .unwrap();
    drop((near, far));
}

/// A duplex end whose reads can be paused: while paused, the connection that owns it takes
/// nothing off the pipe, like a peer that stopped reading its socket.
struct Gated {
    io: DuplexStream,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    paused: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.gate.paused.load(Ordering::SeqCst) {
            *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.gate.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A client connection over a 64 KiB duplex to a server whose transport reads can be
/// paused, with `streams` streams opened and accepted: (client, server, gate, pairs).
async fn gated_pair(
    driver: DriverConfig,
    streams: usize,
) -> (Connection, Connection, Arc<Gate>, Vec<(Stream, Stream)>) {
    let (a, b) = tokio::io::duplex(64 * KIB as usize);
    let gate = Arc::new(Gate::default());
    let server_io = Gated {
        io: b,
        gate: Arc::clone(&gate),
    };
    let server = tokio::spawn(async move {
        let hs = Connection::accept(
            runtime(),
            transport(server_io),
            Config::default(),
            DriverConfig::default(),
        )
        .await
        .unwrap();
        hs.accept(HandshakeAccept {
            assigned_id: 1,
            ..Default::default()
        })
        .unwrap()
    });
    let client = within(
        "handshake",
        Connection::connect(
            runtime(),
            transport(a),
            Config::default(),
            ClientInfo::new(Role::Edge),
            driver,
        ),
    )
    .await
    .unwrap();
    let server = within("accept", server).await.unwrap();
    let mut pairs = Vec::new();
    for _ in 0..streams {
        let (near, far) = within("open", async {
            tokio::join!(
                client.open_stream(Default::default(), None),
                server.accept_stream()
            )
        })
        .await;
        pairs.push((near.unwrap().0, far.unwrap()));
    }
    (client, server, gate, pairs)
}

/// A peer that stops reading its transport: the client's writes on every stream block after
/// about one window each (the client's core produced no more than that), and nothing is
/// lost once the peer reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_its_transport_blocks_the_writers() {
    const STREAMS: usize = 4;
    const TOTAL: u64 = 2 * MIB;
    let (client, _server, gate, pairs) = gated_pair(DriverConfig::default(), STREAMS).await;
    gate.pause();
    let out_before = client.stats().bytes_out;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut total_accepted = 0;
    for (seed, (mut near, far)) in (1..).zip(pairs) {
        let accepted = within("write until blocked", write_until_blocked(&mut near, seed)).await;
        eprintln!("stream {seed}: accepted {accepted} bytes before blocking");
        assert!(
            accepted <= bound(),
            "{accepted} bytes accepted towards a peer that reads nothing"
        );
        total_accepted += accepted;
        writers.push((near, seed, accepted));
        readers.push((far, seed));
    }
    // What the client's core turned into frames is bounded by what it accepted.
    let produced = client.stats().bytes_out - out_before;
    assert!(
        produced <= total_accepted + 64 * KIB,
        "{produced} bytes produced for {total_accepted} accepted"
    );

    gate.resume();
    let mut tasks = Vec::new();
    for (mut far, seed) in readers {
        tasks.push(tokio::spawn(async move {
            assert_eq!(recv_pattern(&mut far, seed).await, TOTAL)
        }));
    }
    for (mut near, seed, accepted) in writers {
        tasks.push(tokio::spawn(async move {
            send_pattern(&mut near, seed, accepted, TOTAL).await
        }));
    }
    for task in tasks {
        timeout(Duration::from_secs(30), task)
            .await
            .expect("stuck after the peer resumed")
            .unwrap();
    }
}

/// A peer that never reads again: the blocked writer does not wait forever; the driver
/// gives up after `write_stall_timeout` (`WRITE_STALL`) and the write fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_again_ends_in_write_stall() {
    let driver = DriverConfig {
        write_stall_timeout: Duration::from_millis(500),
        ..DriverConfig::default()
    };
    let (client, _server, gate, mut pairs) = gated_pair(driver, 1).await;
    gate.pause();
    let (mut near, _far) = pairs.remove(0);
    let err = within("the blocked write fails", async {
        let buf = vec![0u8; 16 * KIB as usize];
        let mut accepted = 0u64;
        loop {
            match near.write(&buf).await {
                Ok(n) => accepted += n as u64,
                Err(e) => return e,
            }
            assert!(
                accepted <= bound(),
                "{accepted} bytes accepted towards a peer that reads nothing"
            );
        }
    })
    .await;
    eprintln!("write failed with {err}");
    let why = within("closed", client.closed()).await;
    assert!(
        matches!(
            why,
            ConnectionError::LocallyClosed {
                code: ErrorCode::WRITE_STALL,
                ..
            }
        ),
        "{why:?}"
    );
}

/// A "gateway" that accepts TCP but never reads or answers: the client sends only its
/// handshake attempts, and its stream opens and calls fail with `NotConnected` at their
/// timeout instead of queueing data or hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gateway_gets_only_handshakes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut sockets) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = tx.send(socket); // held, never read
        }
    });
    let edge = Edge::builder()
        .configure(|o| {
            o.connect_timeout = Duration::from_millis(300);
            o.default_timeout = Duration::from_secs(1);
        })
        .connect(addr)
        .unwrap();
    let err = within(
        "open_stream",
        edge.open_stream("svc", Bytes::from(vec![7u8; 1024])),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
    let err = within("call", edge.call("m", Bytes::from(vec![7u8; 100_000])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
    edge.close().await;
    acceptor.abort();

    // Everything the client sent, over all its attempts: handshakes only.
    let mut sent = 0;
    let mut attempts = 0;
    while let Ok(mut socket) = sockets.try_recv() {
        attempts += 1;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n @ 1..)) = timeout(Duration::from_millis(200), socket.read(&mut buf)).await
        {
            sent += n;
        }
    }
    assert!(attempts >= 1);
    assert!(
        sent <= attempts * 8 * 1024,
        "{sent} bytes over {attempts} attempts"
    );
}
