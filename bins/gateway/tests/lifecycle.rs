//! Peers and the gateway coming and going, against the real gateway process: a peer that
//! dies with calls in flight, a gateway restart on the same ports, the SIGTERM drain, and
//! keepalive cutting off a peer that went silent.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use proto_core::transmit::TransmitBuf;
use proto_core::{ClientInfo, Config, ErrorCode, Role, Timestamp};
use support::*;
use tether_tokio::{ConnectExt, Edge, EdgeInfo, Error, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bounds a step that must fail fast rather than wait for a 30 s timeout.
async fn fast<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still pending after 10 s"))
}

/// Clients running on their own tokio runtime (on a thread of its own), which can be
/// killed at once: every task and socket of that runtime is dropped, so the gateway sees
/// the transport close without a GOAWAY, as when a process dies.
struct Doomed<T> {
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the setup returned (kept alive until after the kill).
    clients: Option<T>,
}

impl<T: Send + 'static> Doomed<T> {
    /// Runs `setup` on a fresh runtime; returns once it finished.
    fn start<F, Fut>(setup: F) -> Doomed<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<T>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let clients = runtime.block_on(setup());
            let _ = ready_tx.send(clients);
            // Kill on request, or when the test ends (the sender is dropped).
            let _ = killed.recv();
            runtime.shutdown_background();
        });
        let clients = ready
            .recv_timeout(Duration::from_secs(30))
            .expect("the doomed clients did not start within 30 s");
        Doomed {
            kill: Some(kill),
            thread: Some(thread),
            clients: Some(clients),
        }
    }

    fn clients(&self) -> &T {
        self.clients.as_ref().unwrap()
    }

    /// Kills the runtime abruptly and waits for that to be done.
    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        // Dropped only now: a graceful close would have said GOAWAY.
        self.clients.take();
    }
}

impl<T> Drop for Doomed<T> {
    fn drop(&mut self) {
        self.kill.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_dies_fails_the_calls_in_flight_to_it_at_once() {
    let mut gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("caller").connect(gw.service_addr).unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();

    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let edge_addr = gw.edge_addr;
    let mut doomed = Doomed::start(move || async move {
        let edge = Edge::builder()
            .edge_id(21)
            .method("hang", move |_| {
                let _ = entered_tx.send(());
                std::future::pending::<Result<Bytes, Error>>()
            })
            .connect(edge_addr)
            .unwrap();
        edge.wait_connected().await.unwrap();
        edge
    });
    assert_eq!(doomed.clients().edge_id(), Some(21));
    gw.edge_joined(21).await;

    let pending = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .call_with_timeout(21, "hang", Bytes::new(), Some(Duration::from_secs(30)))
                .await
        }
    });
    within("the edge handles the call", entered.recv())
        .await
        .unwrap();
    doomed.kill();
    let failed = fast("the pending call", pending).await.unwrap();
    assert!(matches!(failed, Err(Error::EdgeNotOnline(_))), "{failed:?}");
    // The gateway noticed. (Usually no GOAWAY reached it; a runtime shutting down may still
    // poll the edge's driver once after its handles were dropped, so either end is fine.)
    gw.log_line("disconnected role=\"edge\" id=21 ").await;
    // And the edge is gone for new calls too.
    let again = fast("a new call", service.call(21, "hang", Bytes::new())).await;
    assert!(matches!(again, Err(Error::EdgeNotOnline(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_dies_fails_the_calls_in_flight_to_it_at_once() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let service_addr = gw.service_addr;
    let mut doomed = Doomed::start(move || async move {
        let service = Service::builder("doomed")
            .method("hang", move |_| {
                let _ = entered_tx.send(());
                std::future::pending::<Result<Bytes, Error>>()
            })
            .connect(service_addr)
            .unwrap();
        service.wait_connected().await.unwrap();
        service
    });
    gw.services_joined(&["doomed"]).await;
    let edge = Edge::builder().connect(gw.edge_addr).unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();

    let pending = tokio::spawn({
        let edge = edge.clone();
        async move {
            edge.call_service(None, "hang", Bytes::new(), Some(Duration::from_secs(30)))
                .await
        }
    });
    within("the service handles the call", entered.recv())
        .await
        .unwrap();
    doomed.kill();
    let failed = fast("the pending call", pending).await.unwrap();
    assert!(
        matches!(failed, Err(Error::ServiceNotOnline(_))),
        "{failed:?}"
    );
    let again = fast("a new call", edge.call("hang", Bytes::new())).await;
    assert!(matches!(again, Err(Error::MethodNotFound(_))), "{again:?}");
}

/// Repeats `call` until it succeeds (at most 20 s); the last error otherwise.
async fn until_ok<F, Fut>(what: &str, mut call: F) -> Bytes
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Bytes, Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), call()).await;
        match attempt {
            Ok(Ok(answer)) => return answer,
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still failing after 20 s: {e:?}")
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still hanging after 20 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_back_by_themselves_after_a_gateway_restart_on_the_same_ports() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (service_addr, edge_addr) = (gw.service_addr, gw.edge_addr);
    let service = Service::builder("echo")
        .configure(quick_backoff)
        .method("echo", |req| async move { Ok(req.body) })
        .connect(service_addr)
        .unwrap();
    let edge = Edge::builder()
        .configure(quick_backoff)
        .edge_id(31)
        .method("ping", |_| async { Ok(Bytes::from_static(b"pong")) })
        .connect(edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    gw.edge_joined(31).await;
    let body = Bytes::from_static(b"before");
    let answer = within("edge → service", edge.call("echo", body.clone())).await;
    assert_eq!(answer.unwrap(), body);
    let answer = within("service → edge", service.call(31, "ping", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"pong"));

    gw.terminate();
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));
    let (service_flag, edge_flag) = (service_addr.to_string(), edge_addr.to_string());
    let gw = GatewayProcess::start_with(
        &[
            "--service-listen",
            &service_flag,
            "--edge-listen",
            &edge_flag,
        ],
        &[],
    )
    .await;
    assert_eq!((gw.service_addr, gw.edge_addr), (service_addr, edge_addr));

    // Nothing is done to the clients: they reconnect on their own.
    let body = Bytes::from_static(b"after");
    let answer = until_ok("edge → service", || edge.call("echo", body.clone())).await;
    assert_eq!(answer, body);
    let answer = until_ok("service → edge", || {
        service.call(31, "ping", Bytes::new())
    })
    .await;
    assert_eq!(answer, Bytes::from_static(b"pong"));
    assert_eq!(edge.edge_id(), Some(31), "the edge kept its id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_finish_then_exits_cleanly() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (edge_entered_tx, mut edge_entered_rx) = mpsc::unbounded_channel();
    let service = Service::builder("slow")
        .method("slow", move |_| {
            let _ = entered_tx.send(());
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(Bytes::from_static(b"done"))
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    let edge_entered = edge_entered_tx;
    let edge = Edge::builder()
        .edge_id(3)
        .method("slow", move |_| {
            let _ = edge_entered.send(());
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(Bytes::from_static(b"edge done"))
            }
        })
        .connect(gw.edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    gw.joined(&["slow"], &[3]).await;
    let edge_session = edge.connection().unwrap();
    let service_session = service.connection().unwrap();

    // A slow call each way.
    let pending = tokio::spawn({
        let edge = edge.clone();
        async move { edge.call("slow", Bytes::new()).await }
    });
    let pending_to_edge = tokio::spawn({
        let service = service.clone();
        async move { service.call(3, "slow", Bytes::new()).await }
    });
    within("the call reaches the service", entered.recv())
        .await
        .unwrap();
    within("the call reaches the edge", edge_entered_rx.recv())
        .await
        .unwrap();
    gw.terminate();

    // Both clients hear that the gateway is going away.
    within("edge sees GOAWAY", edge_session.going_away_or_closed()).await;
    within(
        "service sees GOAWAY",
        service_session.going_away_or_closed(),
    )
    .await;
    assert!(edge_session.is_going_away(), "{:?}", edge_session.error());
    assert!(
        service_session.is_going_away(),
        "{:?}",
        service_session.error()
    );
    // The call in flight still completes.
    let answer = within("the call in flight", pending).await.unwrap();
    assert_eq!(answer.unwrap(), Bytes::from_static(b"done"));
    let answer = within("the call in flight", pending_to_edge).await.unwrap();
    assert_eq!(answer.unwrap(), Bytes::from_static(b"edge done"));
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));
    gw.log_line("SIGTERM: shutting down").await;
    gw.log_line("stopped").await;

    // The clients neither hang nor pretend: the old sessions are over, and a call now fails
    // (no gateway) within its timeout.
    let why = within("edge session ends", edge_session.closed()).await;
    assert!(
        why.code() == ErrorCode::GOING_AWAY || why.code() == ErrorCode::OK,
        "{why:?}"
    );
    let failed = within(
        "a call with no gateway",
        edge.call_service(None, "slow", Bytes::new(), Some(Duration::from_millis(500))),
    )
    .await;
    assert!(matches!(failed, Err(Error::NotConnected(_))), "{failed:?}");
    within("edge close", edge.close()).await;
    within("service close", service.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlasts_the_drain_deadline_fails_and_the_gateway_still_exits() {
    let mut gw = GatewayProcess::start(&["--drain-timeout-ms", "1000"]).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let service = Service::builder("stuck")
        .method("hang", move |_| {
            let _ = entered_tx.send(());
            std::future::pending::<Result<Bytes, Error>>()
        })
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder().connect(gw.edge_addr).unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    gw.services_joined(&["stuck"]).await;
    let pending = tokio::spawn({
        let edge = edge.clone();
        async move {
            edge.call_service(None, "hang", Bytes::new(), Some(Duration::from_secs(30)))
                .await
        }
    });
    within("the call reaches the service", entered.recv())
        .await
        .unwrap();
    gw.terminate();
    // The gateway gives up on it at its 1 s drain deadline, not at the call's 30 s timeout.
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
    let failed = fast("the stuck call", pending).await.unwrap();
    assert!(failed.is_err(), "{failed:?}");
    gw.log_line("stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_shutting_down_gets_no_new_calls_while_another_instance_is_up() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let mut services = Vec::new();
    for name in ["a", "b"] {
        let released = released.clone();
        let service = Service::builder(name)
            .method("which", move |_| async move { Ok(Bytes::from(name)) })
            .method("hold", move |_| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|go| *go).await;
                    Ok(Bytes::from(name))
                }
            })
            .connect(gw.service_addr)
            .unwrap();
        within("service up", service.wait_connected())
            .await
            .unwrap();
        services.push(service);
    }
    gw.services_joined(&["a", "b"]).await;
    let edge = Edge::builder().connect(gw.edge_addr).unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    // Which instance this edge's calls go to.
    let chosen = within("which", edge.call("which", Bytes::new()))
        .await
        .unwrap();
    let (leaving, staying) = if chosen == "a" {
        (services[0].clone(), Bytes::from_static(b"b"))
    } else {
        (services[1].clone(), Bytes::from_static(b"a"))
    };
    // A call it is busy with keeps its drain going.
    let held = tokio::spawn({
        let edge = edge.clone();
        async move { edge.call("hold", Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closing = tokio::spawn(async move { leaving.close().await });
    // Its GOAWAY reaches the gateway at once; give it ample time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let answer = within("which, during the drain", edge.call("which", Bytes::new())).await;
        assert_eq!(
            answer,
            Ok(staying.clone()),
            "a new call went to the leaving instance"
        );
    }
    release.send(true).unwrap();
    let answer = within("the held call", held).await.unwrap();
    assert_eq!(
        answer.unwrap(),
        chosen,
        "the leaving instance finishes its work"
    );
    within("the leaving instance closes", closing)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_admitted_during_the_drain_is_told_to_go_away_too() {
    // A long drain deadline: the gateway must not need it, nothing is in flight.
    let mut gw = GatewayProcess::start(&["--drain-timeout-ms", "20000"]).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let service = Service::builder("registry")
        .edge_id_hook(move |_| {
            let mut released = released.clone();
            let _ = entered_tx.send(());
            async move {
                let _ = released.wait_for(|go| *go).await;
                Ok(8)
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["registry"]).await;
    // Edge 8's handshake waits on the hook while the gateway receives SIGTERM.
    let edge = Edge::builder()
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("the hook runs", entered.recv()).await.unwrap();
    gw.terminate();
    gw.log_line("shutting down: GOAWAY to every peer").await;
    release.send(true).unwrap();
    // Refused, or admitted and then told to go away: either way not left hanging on.
    if within("edge 8's handshake", edge.wait_connected())
        .await
        .is_ok()
    {
        let session = edge.connection().expect("a session");
        fast("edge 8 sees GOAWAY", session.going_away_or_closed()).await;
        assert!(session.is_going_away(), "{:?}", session.error());
    }
    assert_eq!(fast("exit", gw.child.wait()).await.unwrap().code(), Some(0));
}

/// Completes an edge handshake by hand over TCP, then never reads or writes again.
async fn blackholed_edge(gateway: SocketAddr, id: u64) -> TcpStream {
    let mut info = ClientInfo::new(Role::Edge);
    info.requested_id = Some(id);
    let mut core = proto_core::Connection::client(Config::default(), info, Timestamp::ZERO)
        .expect("a valid client");
    let mut socket = TcpStream::connect(gateway).await.unwrap();
    let (mut buf, mut out) = (vec![0u8; 16 * 1024], TransmitBuf::new());
    loop {
        let _ = core.poll_transmit(Timestamp::ZERO, &mut out);
        let mut wire = Vec::new();
        out.drain_into(&mut wire);
        socket.write_all(&wire).await.unwrap();
        if core.is_connected() {
            assert_eq!(core.assigned_id(), id);
            return socket;
        }
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway hung up during the handshake");
        let _ = core.handle_input(Timestamp::ZERO, &buf[..n]);
        while core.poll_event().is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_takes_a_silent_edge_offline() {
    let file =
        YamlFile::new("protocol:\n  keepalive_interval_ms: 300\n  keepalive_timeout_ms: 300\n");
    let mut gw = GatewayProcess::start(&["--config", file.arg()]).await;
    let (tx, mut events) = mpsc::unbounded_channel::<(bool, EdgeInfo)>();
    let offline = tx.clone();
    let service = Service::builder("watcher")
        .on_edge_online(move |edge| {
            let _ = tx.send((true, edge));
            async { Ok(()) }
        })
        .on_edge_offline(move |edge| {
            let _ = offline.send((false, edge));
            async { Ok(()) }
        })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["watcher"]).await;
    // A healthy SDK edge answers the gateway's pings and stays.
    let healthy = Edge::builder()
        .edge_id(67)
        .method("ping", |_| async { Ok(Bytes::from_static(b"pong")) })
        .connect(gw.edge_addr)
        .unwrap();
    within("healthy edge up", healthy.wait_connected())
        .await
        .unwrap();
    let (online, edge) = within("online 67", events.recv()).await.unwrap();
    assert!(online && edge.id == 67);

    let _silent = within("silent edge handshake", blackholed_edge(gw.edge_addr, 66)).await;
    let (online, edge) = within("online 66", events.recv()).await.unwrap();
    assert!(online && edge.id == 66, "{edge:?}");
    // 300 ms of silence, a ping, 300 ms without an answer: offline in well under 10 s.
    let (online, edge) = fast("offline 66", events.recv()).await.unwrap();
    assert!(!online && edge.id == 66, "{online} {edge:?}");
    let gone = within("call 66", service.call(66, "ping", Bytes::new())).await;
    assert!(matches!(gone, Err(Error::EdgeNotOnline(_))), "{gone:?}");

    // Several keepalive periods later the healthy edge is still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = within("call 67", service.call(67, "ping", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"pong"));
    assert!(events.try_recv().is_err(), "an unexpected presence event");
}
