//! [`Connection`]: one live Tether connection, client or server side, driven by a spawned
//! task. The gateway uses it for each peer; [`Service`](crate::Service) and
//! [`Edge`](crate::Edge) use it for each session between reconnects.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use proto_core::{
    ClientInfo, Config, ConnectionError, ErrorCode, HandshakeAccept, Hello, Registration,
    RegistrationKind, Stats,
};

use crate::driver::{Driver, DriverConfig};
use crate::error::Error;
use crate::runtime::{BoxTransport, Runtime};
use crate::state::{Shared, State};

/// A handle to one connection. Clones share it; when the last handle (including streams,
/// requests and messages taken from it) is dropped, the connection closes gracefully.
#[derive(Debug)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection::from_shared(Arc::clone(&self.shared))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.shared.drop_handle() {
            let mut state = self.shared.lock();
            if !state.core.is_closed() {
                let now = self.shared.now();
                state.core.go_away(now, ErrorCode::OK, "no handles left");
                state.wake_driver();
            }
        }
    }
}

/// A server-side connection whose client has sent its HELLO and awaits a decision.
#[derive(Debug)]
pub struct Handshake {
    connection: Connection,
    hello: Box<Hello>,
}

impl Connection {
    fn from_shared(shared: Arc<Shared>) -> Connection {
        shared.add_handle();
        Connection { shared }
    }

    fn start(
        runtime: Arc<dyn Runtime>,
        transport: BoxTransport,
        core: proto_core::Connection,
        epoch: Instant,
        driver: DriverConfig,
    ) -> Connection {
        let peer_addr = transport.peer_addr();
        let shared = Shared::new(Arc::clone(&runtime), epoch, core, peer_addr);
        let connection = Connection::from_shared(Arc::clone(&shared));
        runtime.spawn(Box::pin(Driver::new(shared, transport, driver)));
        connection
    }

    /// Connects as a client over `transport` and waits for the server's WELCOME.
    ///
    /// Fails with the server's code if it refuses (e.g. [`Error::Unauthorized`]), or with
    /// [`Error::ConnectionLost`] if the transport fails or the handshake times out.
    pub async fn connect(
        runtime: Arc<dyn Runtime>,
        transport: BoxTransport,
        config: Config,
        info: ClientInfo,
        driver: DriverConfig,
    ) -> Result<Connection, Error> {
        let epoch = Instant::now();
        let core = proto_core::Connection::client(config, info, proto_core::Timestamp::ZERO)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let connection = Connection::start(runtime, transport, core, epoch, driver);
        connection
            .wait(|state| {
                if state.connected.is_some() {
                    Some(Ok(()))
                } else if state.is_ending() {
                    Some(Err(state.lost_error()))
                } else {
                    None
                }
            })
            .await?;
        Ok(connection)
    }

    /// Serves a client over `transport` until its HELLO arrives. Decide with
    /// [`Handshake::accept`] or [`Handshake::reject`] before `handshake_timeout`.
    pub async fn accept(
        runtime: Arc<dyn Runtime>,
        transport: BoxTransport,
        config: Config,
        driver: DriverConfig,
    ) -> Result<Handshake, Error> {
        let epoch = Instant::now();
        let core = proto_core::Connection::server(config, proto_core::Timestamp::ZERO)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let connection = Connection::start(runtime, transport, core, epoch, driver);
        let hello = connection
            .wait(|state| {
                if let Some(hello) = state.hello.take() {
                    Some(Ok(hello))
                } else if state.is_ending() {
                    Some(Err(state.lost_error()))
                } else {
                    None
                }
            })
            .await?;
        Ok(Handshake { connection, hello })
    }

    /// Waits until `check` (run under the lock, after every change) returns a value.
    pub(crate) async fn wait<T>(&self, mut check: impl FnMut(&mut State) -> Option<T>) -> T {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            match check(&mut state) {
                Some(value) => Poll::Ready(value),
                None => {
                    state.changes.register(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The id the server assigned to us (client), or to the peer (server); 0 before the
    /// handshake.
    pub fn assigned_id(&self) -> u64 {
        self.shared.lock().core.assigned_id()
    }

    /// The client's HELLO (server side).
    pub fn peer_hello(&self) -> Option<Hello> {
        self.shared.lock().core.peer_hello().cloned()
    }

    /// The transport's remote address, where it has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.lock().peer_addr
    }

    /// What the peer has registered (methods, topics, hooks).
    pub fn peer_registrations(&self) -> Vec<Registration> {
        self.shared
            .lock()
            .core
            .peer_registrations()
            .cloned()
            .collect()
    }

    /// Whether the connection takes new work: it has not ended and the peer has not sent
    /// GOAWAY.
    pub fn accepts_work(&self) -> bool {
        let state = self.shared.lock();
        !state.is_ending() && !state.going_away
    }

    /// Whether the connection takes new work and the peer registered `name` as `kind`:
    /// the routing check of a gateway, under one lock and without copying the peer's
    /// registrations.
    pub fn accepts_work_for(&self, kind: RegistrationKind, name: &str) -> bool {
        let state = self.shared.lock();
        !state.is_ending()
            && !state.going_away
            && state
                .core
                .peer_registrations()
                .any(|r| r.kind == kind && r.name.as_str() == name)
    }

    /// Adds registrations (REGISTER), e.g. a method registered after connecting.
    pub fn register(&self, entries: Vec<Registration>) -> Result<(), Error> {
        let mut state = self.shared.lock();
        state
            .core
            .register(entries)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        state.wake_driver();
        Ok(())
    }

    /// Removes registrations (REGISTER with REMOVE).
    pub fn unregister(&self, entries: Vec<Registration>) -> Result<(), Error> {
        let mut state = self.shared.lock();
        state
            .core
            .unregister(entries)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        state.wake_driver();
        Ok(())
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.lock().core.rtt()
    }

    /// Byte and frame counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().core.stats()
    }

    /// Whether the connection has ended (or is ending) and takes no new work.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_ending()
    }

    /// Whether the peer announced a graceful shutdown.
    pub fn is_going_away(&self) -> bool {
        self.shared.lock().going_away
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<ConnectionError> {
        self.shared.lock().lost.clone()
    }

    /// Starts a graceful shutdown: GOAWAY, then in-flight work drains (up to
    /// `drain_timeout`) and the connection closes.
    pub fn go_away(&self, code: ErrorCode, reason: &str) {
        let mut state = self.shared.lock();
        let now = self.shared.now();
        state.core.go_away(now, code, reason);
        state.wake_driver();
    }

    /// Closes at once: GOAWAY with `code`, and everything in flight fails.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        let mut state = self.shared.lock();
        let now = self.shared.now();
        state.core.close(now, code, reason);
        state.dispatch_events();
        state.wake_driver();
    }

    /// Waits until the connection has ended and its transport is closed; returns why.
    pub async fn closed(&self) -> ConnectionError {
        self.wait(|state| {
            state.finished.then(|| {
                state
                    .lost
                    .clone()
                    .unwrap_or(ConnectionError::TransportClosed)
            })
        })
        .await
    }

    /// Waits until the peer announces a shutdown or the connection ends.
    pub async fn going_away_or_closed(&self) {
        self.wait(|state| (state.going_away || state.is_ending()).then_some(()))
            .await
    }

    /// Waits for an `Unblocked` event after `generation`, or the end.
    pub(crate) async fn unblocked_since(&self, generation: u64) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.unblocked_generation != generation || state.is_ending() {
                Poll::Ready(())
            } else {
                state.unblocked.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

impl Handshake {
    /// The client's HELLO: role, name, token, metadata, registrations, settings.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The client's address, where the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.connection.peer_addr()
    }

    /// Accepts the client with `accept.assigned_id`; the connection is then open.
    pub fn accept(self, accept: HandshakeAccept) -> Result<Connection, Error> {
        let shared = &self.connection.shared;
        let mut state = shared.lock();
        let now = shared.now();
        match state.core.accept_handshake(now, accept) {
            Ok(()) => {}
            Err(_) => return Err(state.lost_error()),
        }
        state.dispatch_events();
        state.wake_driver();
        drop(state);
        Ok(self.connection)
    }

    /// Refuses the client with `code` and `reason` (REFUSE), and closes.
    pub fn reject(self, code: ErrorCode, reason: &str) {
        let shared = &self.connection.shared;
        let mut state = shared.lock();
        let now = shared.now();
        // Fails only if the connection already ended, which is the outcome wanted.
        let _ = state.core.reject_handshake(now, code, reason);
        state.wake_driver();
    }
}
