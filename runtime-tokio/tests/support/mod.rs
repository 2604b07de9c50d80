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
                Decision::Accept(hello.info.requested_id.unwrap_or_else(|| {
                    next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                }))
            }),
        )
        .await
    }

    pub(crate) async fn with_policy(config: Config, policy: Policy) -> MockGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        MockGateway::on_listener(listener, config, policy)
    }

    /// Serves on an already bound listener (to restart a gateway on the same port).
    pub(crate) fn on_listener(listener: TcpListener, config: Config, policy: Policy) -> MockGateway {
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hellos);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (tx, policy, config, seen) =
                    (tx.clone(), Arc::clone(&policy), config.clone(), Arc::clone(&seen));
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
                            let accept = HandshakeAccept { assigned_id: id, ..Default::default() };
                            if let Ok(conn) = hs.accept(accept) {
                                let _ = tx.send(Session { conn, hello });
                            }
                        }
                        Decision::Reject(code, reason) => hs.reject(code, reason),
                    }
                });
            }
        });
        MockGateway { addr, sessions, hellos, task }
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
