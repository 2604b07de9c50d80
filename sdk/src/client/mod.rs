//! What services and edges share: a session to the gateway that is re-established after
//! every loss (with backoff and jitter), the registered handlers, and operations that wait
//! for a session while disconnected.

pub(crate) mod edge;
pub(crate) mod handler;
pub(crate) mod options;
pub(crate) mod presence;
pub(crate) mod service;

use std::collections::{BTreeSet, HashMap};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{
    Address, Call, ClientInfo, ErrorCode, OpenStream, Publish, Registration, RegistrationKind, Role,
};

use crate::connection::Connection;
use crate::error::Error;
use crate::exchange::Message;
use crate::runtime::{Dialer, Runtime, sleep_until, until};
use crate::state::WaitList;
use crate::stream::{IncomingStream, Stream, accept_next};
use handler::Handler;
use options::Options;

/// How long a session must have lasted for its graceful end (GOAWAY) to be followed by an
/// immediate reconnect rather than the backoff.
const GRACEFUL_RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The state of a client between and across sessions.
#[derive(Debug, Default)]
struct Sessions {
    current: Option<Connection>,
    /// Tasks waiting for a session or for the client to close.
    waiters: WaitList,
    closed: bool,
    /// Why the last attempt or session failed.
    last_error: Option<Error>,
    /// The id the gateway assigned in the current or last session.
    assigned_id: Option<u64>,
    /// Earlier sessions still draining after the gateway's GOAWAY: messages and streams
    /// they took before it are still received from them.
    draining: Vec<Connection>,
}

/// A connection to the gateway that outlives its sessions.
pub(crate) struct Client {
    runtime: Arc<dyn Runtime>,
    dialer: Dialer,
    options: Options,
    role: Role,
    name: Name,
    /// An edge's requested id: set by the application, or the id of the last session.
    requested_id: Mutex<Option<u64>>,
    registrations: Mutex<BTreeSet<(u8, Name)>>,
    handlers: Arc<Mutex<HashMap<String, Handler>>>,
    sessions: Mutex<Sessions>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a builder hands to [`Client::start`].
pub(crate) struct Setup {
    pub(crate) role: Role,
    pub(crate) name: Name,
    pub(crate) options: Options,
    pub(crate) requested_id: Option<u64>,
    pub(crate) topics: Vec<Name>,
    pub(crate) handlers: Vec<(Name, RegistrationKind, Handler)>,
}

fn kind_key(kind: RegistrationKind) -> u8 {
    match kind {
        RegistrationKind::Method => 1,
        RegistrationKind::Topic => 2,
        _ => 3,
    }
}

fn kind_of(key: u8) -> RegistrationKind {
    match key {
        1 => RegistrationKind::Method,
        2 => RegistrationKind::Topic,
        _ => RegistrationKind::Hook,
    }
}

/// The time left until `deadline`; a timeout once it has passed (a zero timeout would
/// mean none to the connection).
fn remaining(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(String::from(
            "the timeout passed while waiting for a connection",
        )));
    }
    Ok(left)
}

pub(crate) fn name(text: &str) -> Result<Name, Error> {
    Name::new(text).map_err(|e| Error::InvalidArgument(format!("{text:?}: {e}")))
}

impl Client {
    /// Starts the session supervisor; the client connects in the background.
    pub(crate) fn start(runtime: Arc<dyn Runtime>, dialer: Dialer, setup: Setup) -> Arc<Client> {
        let mut registrations = BTreeSet::new();
        let mut handlers = HashMap::new();
        for topic in setup.topics {
            registrations.insert((kind_key(RegistrationKind::Topic), topic));
        }
        for (method, kind, handler) in setup.handlers {
            registrations.insert((kind_key(kind), method.clone()));
            handlers.insert(method.as_str().to_owned(), handler);
        }
        let client = Arc::new(Client {
            runtime: Arc::clone(&runtime),
            dialer,
            options: setup.options,
            role: setup.role,
            name: setup.name,
            requested_id: Mutex::new(setup.requested_id),
            registrations: Mutex::new(registrations),
            handlers: Arc::new(Mutex::new(handlers)),
            sessions: Mutex::new(Sessions::default()),
        });
        runtime.spawn(Box::pin(supervise(Arc::clone(&client))));
        client
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client_info(&self) -> ClientInfo {
        let mut info = ClientInfo::new(self.role);
        info.name = self.name.clone();
        info.version = Name::new(&self.options.version).unwrap_or(Name::EMPTY);
        info.token = self.options.token.clone();
        info.metadata = self.options.metadata.clone();
        info.requested_id = *self.requested_id.lock().unwrap_or_else(|e| e.into_inner());
        info.registrations = self
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(kind, name)| Registration {
                kind: kind_of(*kind),
                name: name.clone(),
            })
            .collect();
        info
    }

    /// The default timeout's deadline, from now.
    pub(crate) fn deadline(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.options.default_timeout)
    }

    /// The current session, waiting for one (until `deadline`) while disconnected.
    pub(crate) async fn session(&self, deadline: Option<Instant>) -> Result<Connection, Error> {
        let wait = poll_fn(|cx| {
            let mut sessions = self.sessions();
            if sessions.closed {
                return Poll::Ready(Err(sessions.last_error.clone().unwrap_or(Error::Closed)));
            }
            match &sessions.current {
                Some(connection) if !connection.is_closed() && !connection.is_going_away() => {
                    Poll::Ready(Ok(connection.clone()))
                }
                _ => {
                    sessions.waiters.register(cx.waker());
                    Poll::Pending
                }
            }
        });
        match until(&*self.runtime, deadline, wait).await {
            Some(result) => result,
            None => Err(Error::NotConnected(match self.last_error() {
                Some(e) => format!("no connection within the timeout; last error: {e}"),
                None => String::from("no connection within the timeout"),
            })),
        }
    }

    /// Why the last connection attempt or session failed, if one did.
    pub(crate) fn last_error(&self) -> Option<Error> {
        self.sessions().last_error.clone()
    }

    pub(crate) fn assigned_id(&self) -> Option<u64> {
        self.sessions().assigned_id
    }

    pub(crate) fn current(&self) -> Option<Connection> {
        self.sessions().current.clone()
    }

    pub(crate) async fn call(&self, mut call: Call) -> Result<Bytes, Error> {
        let deadline = self.deadline(call.timeout);
        let session = self.session(Some(deadline)).await?;
        call.timeout = Some(remaining(deadline)?);
        session.call(call).await
    }

    pub(crate) async fn publish(&self, mut publish: Publish) -> Result<(), Error> {
        let deadline = self.deadline(publish.timeout);
        let session = self.session(Some(deadline)).await?;
        publish.timeout = Some(remaining(deadline)?);
        session.publish(publish).await
    }

    pub(crate) async fn open_stream(
        &self,
        address: Address,
        metadata: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(Stream, Bytes), Error> {
        let deadline = self.deadline(timeout);
        let session = self.session(Some(deadline)).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let open = OpenStream { address, metadata };
        session.open_stream(open, Some(remaining)).await
    }

    /// The next message of any session; `None` once the client is closed.
    pub(crate) async fn receive(&self) -> Option<Message> {
        self.next_from_sessions(|s| async move { s.next_message().await })
            .await
    }

    /// The next stream the gateway opens to us; `None` once the client is closed.
    pub(crate) async fn incoming_stream(&self) -> Option<IncomingStream> {
        self.next_from_sessions(|s| async move { s.incoming_stream().await })
            .await
    }

    /// The next stream the gateway opens to us, accepted; `None` once the client is closed.
    pub(crate) async fn accept_stream(&self) -> Option<Stream> {
        accept_next(|| self.incoming_stream()).await
    }

    /// The first item `take` yields from any live session: the sessions still draining
    /// after a GOAWAY, then the current one. Starts over whenever the current session
    /// changes, so a waiter never stays parked on a session that is going away; while
    /// there is no current session, the draining ones are still served (what they took
    /// before their GOAWAY must not wait for a reconnect). `None` once the client is closed.
    async fn next_from_sessions<T, F, Fut>(&self, take: F) -> Option<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        loop {
            // The installed session (as a marker of change), the live one to take from, and
            // the draining ones; wait while there is nothing to take from.
            let (installed, current, mut sources) = poll_fn(|cx| {
                let mut sessions = self.sessions();
                if sessions.closed {
                    return Poll::Ready(None);
                }
                sessions.draining.retain(|s| !s.is_closed());
                let installed = sessions.current.clone();
                let current = installed.clone().filter(|c| !c.is_closed());
                if current.is_none() && sessions.draining.is_empty() {
                    sessions.waiters.register(cx.waker());
                    return Poll::Pending;
                }
                Poll::Ready(Some((installed, current, sessions.draining.clone())))
            })
            .await?;
            let has_current = current.is_some();
            sources.extend(current);
            let mut waits: Vec<_> = sources
                .into_iter()
                .map(|s| Some(Box::pin(take(s))))
                .collect();
            let found = poll_fn(|cx| {
                for slot in &mut waits {
                    if let Some(wait) = slot {
                        match wait.as_mut().poll(cx) {
                            Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                            // That session ended.
                            Poll::Ready(None) => *slot = None,
                            Poll::Pending => {}
                        }
                    }
                }
                let mut sessions = self.sessions();
                let same_installed = match (&sessions.current, &installed) {
                    (Some(now), Some(then)) => Arc::ptr_eq(&now.shared, &then.shared),
                    (None, None) => true,
                    _ => false,
                };
                let current_ended = has_current && waits.last().is_none_or(Option::is_none);
                let all_ended = waits.iter().all(Option::is_none);
                if sessions.closed || !same_installed || current_ended || all_ended {
                    return Poll::Ready(None);
                }
                sessions.waiters.register(cx.waker());
                Poll::Pending
            })
            .await;
            if found.is_some() {
                return found;
            }
        }
    }

    /// Registers a method (now, and in the HELLO of every later session).
    pub(crate) fn register(
        &self,
        method: &str,
        kind: RegistrationKind,
        handler: Handler,
    ) -> Result<(), Error> {
        let method_name = name(method)?;
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(method.to_owned(), handler);
        // Held while looking at the session, so `install` either sees this entry or sees
        // the session already installed and leaves the REGISTER to us.
        let mut registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
        let added = registrations.insert((kind_key(kind), method_name.clone()));
        if let (true, Some(session)) = (added, self.current()) {
            let entry = Registration {
                kind,
                name: method_name,
            };
            match session.register(vec![entry]) {
                // The session just ended: the next one's HELLO carries the method.
                Err(_) if session.is_closed() => {}
                Err(e) => {
                    // Refused (e.g. the gateway's registration limit): keep nothing, so
                    // later HELLOs do not carry it either.
                    registrations.remove(&(kind_key(kind), name(method)?));
                    self.handlers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(method);
                    return Err(e);
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Removes a method: calls to it get `METHOD_NOT_FOUND` from now on.
    pub(crate) fn unregister(&self, method: &str, kind: RegistrationKind) -> Result<(), Error> {
        let method_name = name(method)?;
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(method);
        let mut registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
        let removed = registrations.remove(&(kind_key(kind), method_name.clone()));
        if let (true, Some(session)) = (removed, self.current()) {
            let entry = Registration {
                kind,
                name: method_name,
            };
            match session.unregister(vec![entry]) {
                // The session just ended: the next one's HELLO leaves the method out.
                Err(_) if session.is_closed() => {}
                result => result?,
            }
        }
        Ok(())
    }

    /// Waits until a session is up; with reconnection off, fails once the attempt failed.
    pub(crate) async fn wait_connected(&self) -> Result<(), Error> {
        self.session(None).await.map(drop)
    }

    /// Closes gracefully: the session drains what is in flight, then everything waiting
    /// gets [`Error::Closed`] or `None`.
    pub(crate) async fn close(&self) {
        if let Some(session) = self.begin_close() {
            session.closed().await;
        }
    }

    /// Marks the client closed and starts draining its session, which it returns.
    fn begin_close(&self) -> Option<Connection> {
        let session = {
            let mut sessions = self.sessions();
            sessions.closed = true;
            sessions.last_error = None;
            sessions.waiters.wake_all();
            sessions.current.take()
        };
        if let Some(session) = &session {
            session.go_away(ErrorCode::OK, "the client is closing");
        }
        session
    }

    /// Makes `session`, whose HELLO registered `sent`, the current one.
    fn install(&self, session: &Connection, sent: &BTreeSet<(u8, Name)>) -> bool {
        // Lock order: registrations, then sessions (as in `register` and `unregister`).
        let registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
        let mut sessions = self.sessions();
        if sessions.closed {
            return false;
        }
        let id = session.assigned_id();
        sessions.assigned_id = Some(id);
        sessions.current = Some(session.clone());
        sessions.last_error = None;
        sessions.waiters.wake_all();
        drop(sessions);
        // Registered or removed while the HELLO was on its way: tell this session now.
        let entry = |(kind, name): &(u8, Name)| Registration {
            kind: kind_of(*kind),
            name: name.clone(),
        };
        let added: Vec<_> = registrations.difference(sent).map(entry).collect();
        let removed: Vec<_> = sent.difference(&registrations).map(entry).collect();
        drop(registrations);
        // These fail only if the session already ended; the next HELLO carries the set.
        if !added.is_empty() {
            let _ = session.register(added);
        }
        if !removed.is_empty() {
            let _ = session.unregister(removed);
        }
        if self.role == Role::Edge {
            // Ask for the same id next time, so the edge keeps its identity.
            *self.requested_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        }
        true
    }

    fn uninstall(&self, error: Option<Error>) {
        let mut sessions = self.sessions();
        // Forget sessions that finished draining (else a client that never receives keeps
        // one dead session per GOAWAY).
        sessions.draining.retain(|s| !s.is_closed());
        if let Some(old) = sessions.current.take()
            && !old.is_closed()
        {
            // Going away gracefully: what it already took can still be received.
            sessions.draining.push(old);
        }
        if !sessions.closed {
            sessions.last_error = error;
        }
        sessions.waiters.wake_all();
    }

    fn fail(&self, error: Error, give_up: bool) {
        let mut sessions = self.sessions();
        if !sessions.closed {
            sessions.last_error = Some(error);
            sessions.closed |= give_up;
        }
        sessions.waiters.wake_all();
    }

    /// Ends the client after a failure, keeping the failure as the reason.
    fn give_up(&self) {
        let mut sessions = self.sessions();
        sessions.closed = true;
        sessions.waiters.wake_all();
    }

    fn is_closed(&self) -> bool {
        self.sessions().closed
    }

    /// One connection attempt; returns the session and the registrations its HELLO carried.
    async fn connect_once(&self) -> Result<(Connection, BTreeSet<(u8, Name)>), Error> {
        let info = self.client_info();
        let sent = info
            .registrations
            .iter()
            .map(|r| (kind_key(r.kind), r.name.clone()))
            .collect();
        let attempt = async {
            let transport = (self.dialer)()
                .await
                .map_err(|e| Error::NotConnected(format!("cannot reach the gateway: {e}")))?;
            Connection::connect(
                Arc::clone(&self.runtime),
                transport,
                self.options.config.clone(),
                info,
                self.options.driver.clone(),
            )
            .await
            .map(|session| (session, sent))
        };
        let deadline = Instant::now() + self.options.connect_timeout;
        match until(&*self.runtime, Some(deadline), attempt).await {
            Some(result) => result,
            None => Err(Error::NotConnected(String::from(
                "the gateway did not complete the handshake within the connect timeout",
            ))),
        }
    }
}

/// The application's handle on a client: when the last one is dropped, the client closes
/// (its supervisor task would otherwise keep it alive forever).
#[derive(Debug)]
pub(crate) struct ClientHandle(pub(crate) Arc<Client>);

impl std::ops::Deref for ClientHandle {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.0
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.0.begin_close();
    }
}

/// Keeps a session up: connect, serve, wait for the end, back off, reconnect.
async fn supervise(client: Arc<Client>) {
    let mut attempt = 0u32;
    while !client.is_closed() {
        let mut graceful = false;
        let started = Instant::now();
        match client.connect_once().await {
            Ok((session, sent)) => {
                attempt = 0;
                tracing::info!(
                    role = ?client.role,
                    id = session.assigned_id(),
                    "connected to the gateway"
                );
                if !client.install(&session, &sent) {
                    session.go_away(ErrorCode::OK, "the client is closing");
                    break;
                }
                let handlers: Arc<dyn handler::Handlers> = Arc::clone(&client.handlers) as _;
                let serving =
                    handler::serve(Arc::clone(&client.runtime), session.clone(), handlers);
                client.runtime.spawn(Box::pin(serving));
                session.going_away_or_closed().await;
                graceful = session.is_going_away() && session.error().is_none();
                let error = session.error().map(|e| Error::from_connection(&e));
                if !client.is_closed() {
                    match &error {
                        Some(e) => tracing::warn!(role = ?client.role, "lost the gateway: {e}"),
                        None => tracing::info!(role = ?client.role, "the gateway is going away"),
                    }
                }
                client.uninstall(error.or(Some(Error::GoingAway(String::from(
                    "the gateway is shutting down",
                )))));
            }
            Err(error) => {
                tracing::warn!(role = ?client.role, attempt, "cannot connect to the gateway: {error}");
                client.fail(error, !client.options.reconnect);
            }
        }
        if !client.options.reconnect {
            client.give_up();
            break;
        }
        // A gateway that sends GOAWAY to every new session must not cause a hot loop:
        // only a session that lasted a while earns an immediate reconnect.
        if graceful && started.elapsed() >= GRACEFUL_RECONNECT_AFTER {
            // The gateway drains the old session; a new one can start at once.
            continue;
        }
        let delay = client.options.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        sleep_until(&*client.runtime, Instant::now() + delay).await;
    }
}
