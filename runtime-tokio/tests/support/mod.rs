//! A minimal gateway stand-in built on the SDK's server-side `Connection`: it accepts
//! clients on loopback TCP and hands each accepted session to the test, which then plays
//! the edges or services on the other side of the gateway.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto_core::{Config, ErrorCode, HandshakeAccept, Hello};
use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How the stand-in answers a HELLO.
pub(crate) enum Decision {
    Accept(u64),
    Reject(ErrorCode, &'static str),
}

type Policy = Arc<dyn Fn(&Hello) -> Decision + Send + Sync>;

/// One accepted session and the HELLO it came with.
pub(crate) struct Session {
    pub(crate) conn: Connection,
    pub(crate) hello: Hello,
}

/// The stand-in gateway: a TCP listener on 127.0.0.1 and the sessions it accepted.
pub(crate) struct MockGateway {
    pub(crate) addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
    hellos: Arc<Mutex<Vec<Hello>>>,
    task: JoinHandle<()>,
}

impl MockGateway {
    /// Accepts everyone: edges get the id they asked for, or 1000 + a counter.
    pub(crate) async fn start() -> MockGateway {
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1000));
        MockGateway::with_policy(
            Config::default(),
            Arc::new(move |hello| {
                Decision::Accept(
                    hello
                        .info
                        .requested_id
                        .unwrap_or_else(|| next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                )
            }),
        )
        .await
    }

    pub(crate) async fn with_policy(config: Config, policy: Policy) -> MockGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        MockGateway::on_listener(listener, config, policy)
    }

    /// Serves on an already bound listener (to restart a gateway on the same port).
    pub(crate) fn on_listener(
        listener: TcpListener,
        config: Config,
        policy: Policy,
    ) -> MockGateway {
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hellos);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (tx, policy, config, seen) = (
                    tx.clone(),
                    Arc::clone(&policy),
                    config.clone(),
                    Arc::clone(&seen),
                );
                tokio::spawn(async move {
                    let Ok(hs) = Connection::accept(
                        runtime(),
                        tcp_transport(socket),
                        config,
                        DriverConfig::default(),
                    )
                    .await
                    else {
                        return;
                    };
                    let hello = hs.hello().clone();
                    seen.lock().unwrap().push(hello.clone());
                    match policy(&hello) {
                        Decision::Accept(id) => {
                            let accept = HandshakeAccept {
                                assigned_id: id,
                                ..Default::default()
                            };
                            if let Ok(conn) = hs.accept(accept) {
                                let _ = tx.send(Session { conn, hello });
                            }
                        }
                        Decision::Reject(code, reason) => hs.reject(code, reason),
                    }
                });
            }
        });
        MockGateway {
            addr,
            sessions,
            hellos,
            task,
        }
    }

    /// The next accepted session (panics after 10 s: the client never came).
    pub(crate) async fn session(&mut self) -> Session {
        tokio::time::timeout(Duration::from_secs(10), self.sessions.recv())
            .await
            .expect("no client connected within 10 s")
            .expect("the gateway stopped")
    }

    /// Every HELLO seen so far, accepted or not.
    pub(crate) fn hellos(&self) -> Vec<Hello> {
        self.hellos.lock().unwrap().clone()
    }

    /// Stops listening (sessions already accepted stay up).
    pub(crate) fn stop_listening(&self) {
        self.task.abort();
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bounds a test step so a bug shows up as a failure, not a hang.
pub(crate) async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within 20 s"))
}

// ---- helpers for the rpc, messages, presence and lifecycle tests --------------------------

/// A wire name (panics on an invalid one).
pub(crate) fn wire_name(text: &str) -> proto_core::name::Name {
    proto_core::name::Name::new(text).unwrap()
}

/// A call as edge `edge_id` makes it through the gateway (a gateway → service link carries
/// the source: the calling edge's id).
pub(crate) fn call_from_edge(edge_id: u64, method: &str, body: bytes::Bytes) -> proto_core::Call {
    let mut call = proto_core::Call::new(wire_name(method), body);
    call.address = proto_core::Address {
        peer_id: edge_id,
        peer_name: proto_core::name::Name::EMPTY,
    };
    call
}

/// A call as service `service` makes it through the gateway (a gateway → edge link
/// carries the calling service's name).
pub(crate) fn call_from_service(
    service: &str,
    method: &str,
    body: bytes::Bytes,
) -> proto_core::Call {
    let mut call = proto_core::Call::new(wire_name(method), body);
    call.address = proto_core::Address {
        peer_id: 0,
        peer_name: wire_name(service),
    };
    call
}

/// Polls `check` every 10 ms until it holds; panics after 10 s.
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers every request on `conn` with its own body, each on its own task, until the
/// connection ends.
pub(crate) fn spawn_echo(conn: Connection) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(req) = conn.next_request().await {
            tokio::spawn(async move {
                let body = req.body().clone();
                req.respond(Ok(body));
            });
        }
    })
}

/// Reconnect quickly in tests that make the client retry.
pub(crate) fn quick_backoff() -> tether_tokio::Backoff {
    tether_tokio::Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
    }
}

/// A loopback address nobody listens on (bound, then released).
pub(crate) async fn unused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The policy of [`MockGateway::start`]: accept everyone, edges with the id they asked for
/// or 1000 + a counter.
pub(crate) fn accept_all() -> Arc<dyn Fn(&Hello) -> Decision + Send + Sync> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1000));
    Arc::new(move |hello| {
        Decision::Accept(
            hello
                .info
                .requested_id
                .unwrap_or_else(|| next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        )
    })
}

/// Takes the next client dialing `listener` up to its HELLO, for tests that act between
/// the HELLO and the decision.
pub(crate) async fn next_handshake(listener: &TcpListener) -> tether_tokio::Handshake {
    let (socket, _) = within("a client dials", listener.accept()).await.unwrap();
    let accepted = Connection::accept(
        runtime(),
        tcp_transport(socket),
        Config::default(),
        DriverConfig::default(),
    );
    within("its HELLO", accepted).await.unwrap()
}

/// The next two sessions, a service's and an edge's (they connect in either order): the one
/// whose HELLO names `service` first.
pub(crate) async fn service_and_edge_sessions(
    gw: &mut MockGateway,
    service: &str,
) -> (Session, Session) {
    let (a, b) = (gw.session().await, gw.session().await);
    if a.hello.info.name.as_str() == service {
        (a, b)
    } else {
        (b, a)
    }
}

/// A call from the gateway side, bounded by [`within`].
pub(crate) async fn gateway_call(
    conn: &Connection,
    call: proto_core::Call,
) -> Result<bytes::Bytes, tether_tokio::Error> {
    within("a call from the gateway side", conn.call(call)).await
}

/// Waits for every task (bounded by [`within`]), propagating their panics.
pub(crate) async fn join_all(what: &str, tasks: Vec<JoinHandle<()>>) {
    within(what, async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
}
