//! The mio edge agent against a gateway stand-in (the tokio SDK's server-side
//! `Connection`) over loopback TCP: HELLO contents, exposed services echoed (small and
//! 8 MiB with a content check), half-close both ways, refusals (unknown service, dead local
//! address), a peer reset closing the local socket, reconnecting with the assigned id,
//! and `stop`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use proto_core::{Config, ConnectionError, ErrorCode, HandshakeAccept, Hello, OpenStream};
use tether_mio::{AgentConfig, AgentError, AgentEvent};
use tether_tokio::{Connection, DriverConfig, Stream, runtime, tcp_transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Bounds a test step so a bug shows up as a failure, not a hang.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within 20 s"))
}

/// One accepted session and its HELLO.
struct Session {
    conn: Connection,
    hello: Hello,
}

/// The gateway stand-in: accepts every edge with the id it asked for, or 1000 + a counter.
struct MockGateway {
    addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
    task: tokio::task::JoinHandle<()>,
}

impl MockGateway {
    async fn start() -> MockGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let next = Arc::new(AtomicU64::new(1000));
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (tx, next) = (tx.clone(), Arc::clone(&next));
                tokio::spawn(async move {
                    let transport = tcp_transport(socket);
                    let config = Config::default();
                    let driver = DriverConfig::default();
                    let Ok(hs) = Connection::accept(runtime(), transport, config, driver).await
                    else {
                        return;
                    };
                    let hello = hs.hello().clone();
                    let id = hello
                        .info
                        .requested_id
                        .unwrap_or_else(|| next.fetch_add(1, Ordering::Relaxed));
                    let accept = HandshakeAccept {
                        assigned_id: id,
                        ..Default::default()
                    };
                    if let Ok(conn) = hs.accept(accept) {
                        let _ = tx.send(Session { conn, hello });
                    }
                });
            }
        });
        MockGateway {
            addr,
            sessions,
            task,
        }
    }

    async fn session(&mut self) -> Session {
        within("an edge connects", self.sessions.recv())
            .await
            .expect("the gateway stopped")
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `tether_mio::run` on its own thread, with its events recorded.
struct Agent {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<AgentEvent>>>,
    thread: Option<JoinHandle<Result<(), AgentError>>>,
}

impl Agent {
    fn spawn(config: AgentConfig) -> Agent {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (Arc::clone(&stop), Arc::clone(&events));
        let thread = std::thread::spawn(move || {
            tether_mio::run(config, &flag, &mut |event| log.lock().unwrap().push(event))
        });
        Agent {
            stop,
            events,
            thread: Some(thread),
        }
    }

    /// Waits (up to 10 s) for an event matching `check`, among all so far.
    async fn event(&self, what: &str, check: impl Fn(&AgentEvent) -> bool) -> AgentEvent {
        for _ in 0..1000 {
            if let Some(event) = self.events.lock().unwrap().iter().find(|e| check(e)) {
                return event.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{what}: no such event within 10 s; got {:?}",
            self.events.lock().unwrap()
        );
    }

    fn count(&self, check: impl Fn(&AgentEvent) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| check(e))
            .count()
    }

    /// Waits (up to 10 s) for `run` to return on its own.
    async fn join(mut self) -> Result<(), AgentError> {
        let thread = self.thread.take().unwrap();
        within(
            "run returns",
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .unwrap()
        .expect("the agent panicked")
    }

    /// Sets `stop` and waits for `run` to return (it must within about a second).
    async fn stop(self) -> Result<(), AgentError> {
        self.stop.store(true, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self.join().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stop took {:?}",
            started.elapsed()
        );
        result
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback echo server: echoes each connection until EOF, then closes it.
fn echo_server() -> SocketAddr {
    serve(|mut sock| {
        let mut out = sock.try_clone().unwrap();
        let _ = std::io::copy(&mut sock, &mut out);
        let _ = out.shutdown(Shutdown::Write);
    })
}

/// A loopback server that reads each connection to EOF, then answers with the byte count
/// and closes: checks that FIN reaches the local socket while the way back stays open.
fn count_server() -> SocketAddr {
    serve(|mut sock| {
        let mut n = 0usize;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        let _ = sock.write_all(format!("got {n}").as_bytes());
    })
}

/// Serves each accepted connection on its own thread with `handle`.
fn serve(handle: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            std::thread::spawn(move || handle(sock));
        }
    });
    addr
}

/// A loopback address nobody listens on.
fn unused_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(gateway: SocketAddr) -> AgentConfig {
    let mut config = AgentConfig::new(gateway);
    config.exposes.insert("echo".into(), echo_server());
    config.exposes.insert("count".into(), count_server());
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// Opens a stream for `service` from the gateway side.
async fn open(conn: &Connection, service: &str) -> Result<Stream, tether_tokio::Error> {
    let open = OpenStream {
        metadata: Bytes::copy_from_slice(service.as_bytes()),
        ..Default::default()
    };
    let opened = within("the stream's outcome", conn.open_stream(open, None)).await;
    opened.map(|(stream, _)| stream)
}

async fn read_all(stream: &mut Stream) -> Vec<u8> {
    let mut data = Vec::new();
    within("the stream's end", stream.read_to_end(&mut data))
        .await
        .unwrap();
    data
}

/// A deterministic pattern that catches reordered, lost or duplicated bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_carries_id_and_metadata_and_echo_works_then_stop_closes_cleanly() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    cfg.requested_id = Some(42);
    cfg.metadata = Bytes::from_static(b"sn-0042");
    cfg.token = Bytes::from_static(b"secret");
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;
    assert_eq!(session.hello.info.requested_id, Some(42));
    assert_eq!(session.hello.info.metadata, Bytes::from_static(b"sn-0042"));
    assert_eq!(session.hello.info.token, Bytes::from_static(b"secret"));
    assert_eq!(session.hello.info.role, proto_core::Role::Edge);
    agent
        .event("connected", |e| *e == AgentEvent::Connected { edge_id: 42 })
        .await;

    let mut stream = open(&session.conn, "echo").await.unwrap();
    stream.write_all(b"hello, edge").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stream).await, b"hello, edge");
    agent
        .event(
            "opened",
            |e| matches!(e, AgentEvent::StreamOpened { service, .. } if service == "echo"),
        )
        .await;
    agent
        .event(
            "closed",
            |e| matches!(e, AgentEvent::StreamClosed { service } if service == "echo"),
        )
        .await;

    agent.stop().await.unwrap();
    let end = within("the gateway sees the end", session.conn.closed()).await;
    assert!(
        matches!(
            end,
            ConnectionError::PeerClosed {
                code: ErrorCode::OK,
                ..
            }
        ),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_echo_keeps_every_byte_in_order() {
    let mut gw = MockGateway::start().await;
    let agent = Agent::spawn(config(gw.addr));
    let session = gw.session().await;
    let stream = open(&session.conn, "echo").await.unwrap();
    let data = pattern(8 << 20);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(100_003) {
            wr.write_all(chunk).await.unwrap();
        }
        wr.shutdown().await.unwrap();
    });
    let mut echoed = Vec::with_capacity(data.len());
    within("8 MiB echoed", rd.read_to_end(&mut echoed))
        .await
        .unwrap();
    within("the writer", writer).await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reaches_the_local_socket_and_its_answer_comes_back() {
    let mut gw = MockGateway::start().await;
    let agent = Agent::spawn(config(gw.addr));
    let session = gw.session().await;
    // Several streams at once, each half-closed by the gateway side first.
    let mut tasks = Vec::new();
    for i in 0..4usize {
        let mut stream = open(&session.conn, "count").await.unwrap();
        tasks.push(tokio::spawn(async move {
            let len = 300_000 * (i + 1);
            stream.write_all(&pattern(len)).await.unwrap();
            stream.shutdown().await.unwrap();
            assert_eq!(read_all(&mut stream).await, format!("got {len}").as_bytes());
        }));
    }
    for task in tasks {
        within("a counted stream", task).await.unwrap();
    }
    for _ in 0..100 {
        if agent.count(|e| matches!(e, AgentEvent::StreamClosed { .. })) == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        agent.count(|e| matches!(e, AgentEvent::StreamClosed { .. })),
        4
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_refused_with_not_found_and_a_dead_address_with_refused() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    let dead = unused_addr();
    cfg.exposes.insert("dead".into(), dead);
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;

    let err = open(&session.conn, "nope").await.expect_err("refused");
    assert_eq!(err.code(), ErrorCode::NOT_FOUND, "{err}");
    assert!(err.to_string().contains("no exposed service nope"), "{err}");
    agent
        .event(
            "refused nope",
            |e| matches!(e, AgentEvent::StreamRefused { service, .. } if service == "nope"),
        )
        .await;

    let err = open(&session.conn, "dead").await.expect_err("refused");
    assert_eq!(err.code(), ErrorCode::REFUSED, "{err}");
    assert!(err.to_string().contains(&dead.to_string()), "{err}");

    // The connection is still good.
    let mut stream = open(&session.conn, "echo").await.unwrap();
    stream.write_all(b"still here").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stream).await, b"still here");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_from_the_gateway_closes_the_local_socket() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    // A local server that reports when its connection is closed under it.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    cfg.exposes
        .insert("hold".into(), listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.write_all(b"ready").unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(());
    });
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;
    let mut stream = open(&session.conn, "hold").await.unwrap();
    let mut ready = [0u8; 5];
    within("the banner", stream.read_exact(&mut ready))
        .await
        .unwrap();
    assert_eq!(&ready, b"ready");
    stream.reset(ErrorCode::CANCELLED, "bye");
    stream.stop(ErrorCode::CANCELLED);
    within(
        "the local socket closes",
        tokio::task::spawn_blocking(move || closed_rx.recv_timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap()
    .expect("the local socket stayed open");
    agent
        .event(
            "closed",
            |e| matches!(e, AgentEvent::StreamClosed { service } if service == "hold"),
        )
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_gateway_closes_and_asks_for_its_id() {
    let mut gw = MockGateway::start().await;
    let agent = Agent::spawn(config(gw.addr));
    let first = gw.session().await;
    assert_eq!(first.hello.info.requested_id, None);
    let id = first.conn.assigned_id();
    agent
        .event("connected", |e| *e == AgentEvent::Connected { edge_id: id })
        .await;
    first.conn.close(ErrorCode::KICKED, "test kicks the edge");

    let second = gw.session().await;
    assert_eq!(second.hello.info.requested_id, Some(id));
    agent
        .event("disconnected", |e| {
            matches!(e, AgentEvent::Disconnected { .. })
        })
        .await;
    // The new session works.
    let mut stream = open(&second.conn, "echo").await.unwrap();
    stream.write_all(b"again").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stream).await, b"again");
    assert_eq!(
        agent.count(|e| matches!(e, AgentEvent::Connected { .. })),
        2
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnect_a_lost_connection_is_an_error() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    cfg.reconnect = false;
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;
    agent
        .event("connected", |e| matches!(e, AgentEvent::Connected { .. }))
        .await;
    session.conn.close(ErrorCode::KICKED, "bye");
    let err = agent.join().await.unwrap_err();
    match &err {
        AgentError::ConnectionLost(ConnectionError::PeerClosed { code, .. }) => {
            assert_eq!(*code, ErrorCode::KICKED)
        }
        other => panic!("unexpected {other:?}"),
    }

    // A gateway that is not there at all.
    let mut cfg = config(unused_addr());
    cfg.reconnect = false;
    let err = Agent::spawn(cfg).join().await.unwrap_err();
    assert!(matches!(err, AgentError::Connect { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_while_the_gateway_is_unreachable() {
    let agent = Agent::spawn(config(unused_addr()));
    agent
        .event("a failed attempt", |e| {
            matches!(e, AgentEvent::Disconnected { .. })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.stop().await.unwrap();
}

/// Most bytes a direction may hold in flight when its reader stops: windows, send buffers
/// and loopback socket buffers, far below what an unbounded buffer would take.
const IN_FLIGHT_BOUND: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_socket_that_does_not_read_stalls_the_gateway_writer() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    // A local server that reads only once released, then counts to EOF and answers.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    cfg.exposes
        .insert("slow".into(), listener.local_addr().unwrap());
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        release_rx.recv().unwrap();
        let mut n = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k @ 1..) = sock.read(&mut buf) {
            n += k;
        }
        let _ = sock.write_all(format!("got {n}").as_bytes());
    });
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;
    let mut stream = open(&session.conn, "slow").await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.write(&chunk)).await {
            Ok(n) => total += n.unwrap(),
            Err(_) => break, // stuck: backpressure reached the gateway side
        }
        assert!(
            total < IN_FLIGHT_BOUND,
            "{total} bytes taken without the reader reading"
        );
    }
    release_tx.send(()).unwrap();
    stream.write_all(&chunk).await.unwrap();
    total += chunk.len();
    stream.shutdown().await.unwrap();
    assert_eq!(
        read_all(&mut stream).await,
        format!("got {total}").as_bytes()
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_side_that_does_not_read_stalls_the_local_writer() {
    let mut gw = MockGateway::start().await;
    let mut cfg = config(gw.addr);
    // A local server that writes until it cannot, counting what the socket took.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    cfg.exposes
        .insert("firehose".into(), listener.local_addr().unwrap());
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let chunk = vec![1u8; 64 * 1024];
        while let Ok(n) = sock.write(&chunk) {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let agent = Agent::spawn(cfg);
    let session = gw.session().await;
    let mut stream = open(&session.conn, "firehose").await.unwrap();
    // Nobody reads on the gateway side: the count must stop growing.
    let mut last = u64::MAX;
    let mut settled = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(Ordering::Relaxed);
        if now == last && now > 0 {
            settled = true;
            break;
        }
        last = now;
    }
    assert!(settled, "the local writer never stalled ({last} bytes)");
    assert!(
        (last as usize) < IN_FLIGHT_BOUND,
        "{last} bytes taken while nobody read"
    );
    // Reading resumes the flow.
    let mut buf = vec![0u8; 4 << 20];
    within("reading", stream.read_exact(&mut buf))
        .await
        .unwrap();
    let target = last + (4 << 20);
    for _ in 0..500 {
        if written.load(Ordering::Relaxed) >= target {
            break;
        }
        let mut more = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut more)).await;
    }
    assert!(
        written.load(Ordering::Relaxed) > last,
        "the flow did not resume"
    );
    stream.stop(ErrorCode::CANCELLED);
    stream.reset(ErrorCode::CANCELLED, "done");
    agent.stop().await.unwrap();
}

#[test]
fn an_oversized_hello_is_a_configuration_error_before_dialing() {
    let mut cfg = AgentConfig::new(unused_addr());
    cfg.metadata = Bytes::from(vec![0u8; 1 << 20]);
    let stop = AtomicBool::new(false);
    let err = tether_mio::run(cfg, &stop, &mut |_| {}).unwrap_err();
    assert!(matches!(err, AgentError::Config(_)), "{err:?}");
}
