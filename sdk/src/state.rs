//! The state one connection's handles share with its driver: the protocol core, and the
//! wakers and results its events complete.
//!
//! Handles lock it, issue a command on the core and wake the driver; the driver locks it,
//! feeds input, drains events into the slots below and writes what the core produced. A
//! future registers its waker under the same lock in which it found nothing to do, so an
//! event cannot slip between its check and its sleep (no lost wake-ups).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use proto_core::ids::{MessageId, RequestId, StreamId};
use proto_core::{
    Connected, ConnectionError, ErrorCode, Event, Hello, MessageEvent, RpcEvent, StreamEvent,
    Timestamp,
};

use crate::error::Error;
use crate::runtime::Runtime;

/// What the handles of one connection and its driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// The instant the core's [`Timestamp::ZERO`] stands for.
    epoch: Instant,
    state: Mutex<State>,
    /// Live user handles; the connection closes when the last one goes.
    handles: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(
        runtime: Arc<dyn Runtime>,
        epoch: Instant,
        core: proto_core::Connection,
        peer_addr: Option<SocketAddr>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            runtime,
            epoch,
            state: Mutex::new(State::new(core, peer_addr)),
            handles: AtomicUsize::new(0),
        })
    }

    /// Locks the state. A panic in another thread while it held the lock leaves the core
    /// consistent (every core command is all-or-nothing), so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The core's clock.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.epoch.elapsed())
    }

    /// The instant of a core timestamp.
    pub(crate) fn instant(&self, at: Timestamp) -> Instant {
        self.epoch + at.as_duration()
    }

    /// Counts a new user handle.
    pub(crate) fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets a user handle; true if it was the last.
    pub(crate) fn drop_handle(&self) -> bool {
        self.handles.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// A result a future waits for.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    pub(crate) result: Option<T>,
    pub(crate) waker: Option<Waker>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            result: None,
            waker: None,
        }
    }
}

impl<T> Pending<T> {
    fn complete(&mut self, result: T) {
        if self.result.is_none() {
            self.result = Some(result);
        }
        wake(&mut self.waker);
    }
}

/// Entries a [`WaitList`] holds before it sheds stale ones.
const MAX_WAITERS: usize = 1024;

/// Operations in flight by id, each completed with its outcome.
pub(crate) type Outcomes<K, T> = HashMap<K, Pending<Result<T, Error>>>;

/// Tasks waiting for the same kind of news. Waking wakes them all; each re-checks.
#[derive(Debug, Default)]
pub(crate) struct WaitList(Vec<Waker>);

impl WaitList {
    /// Adds `waker` unless it is already there (a future polled twice adds itself once).
    pub(crate) fn register(&mut self, waker: &Waker) {
        if self.0.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        // Futures dropped while waiting (timed out, cancelled) leave their wakers here.
        // Past this size, wake everyone: the live waiters re-register, the stale wakers go.
        if self.0.len() >= MAX_WAITERS {
            self.wake_all();
        }
        self.0.push(waker.clone());
    }

    pub(crate) fn wake_all(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}

/// Wakers of one stream's reader, writer and opener.
#[derive(Debug, Default)]
pub(crate) struct StreamSlot {
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
    /// For a stream we opened: the acceptor's metadata, or why it was refused.
    pub(crate) opened: Pending<Result<Bytes, Error>>,
    /// The peer's RESET, kept for reads after the core has forgotten the stream (a RESET
    /// after our FIN closes it at once).
    pub(crate) reset: Option<(ErrorCode, String)>,
    /// The peer's STOP code, kept for writes after the core has forgotten the stream.
    pub(crate) stopped: Option<ErrorCode>,
}

/// The shared state proper.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) core: proto_core::Connection,
    pub(crate) peer_addr: Option<SocketAddr>,
    driver: Option<Waker>,
    pub(crate) streams: HashMap<StreamId, StreamSlot>,
    pub(crate) calls: Outcomes<RequestId, Bytes>,
    pub(crate) publishes: Outcomes<MessageId, ()>,
    /// Requests the application is handling: completed with a code when the caller no
    /// longer wants the answer.
    pub(crate) handling: HashMap<RequestId, Pending<ErrorCode>>,
    pub(crate) incoming_streams: WaitList,
    pub(crate) incoming_requests: WaitList,
    pub(crate) incoming_messages: WaitList,
    /// Tasks waiting for a `Busy`, `Blocked` or `StreamLimit` to clear.
    pub(crate) unblocked: WaitList,
    /// Counts `Unblocked` events, so a waiter knows whether one came since it failed.
    pub(crate) unblocked_generation: u64,
    /// Tasks waiting for the handshake, a GOAWAY or the end.
    pub(crate) changes: WaitList,
    pub(crate) hello: Option<Box<Hello>>,
    pub(crate) connected: Option<Connected>,
    pub(crate) going_away: bool,
    pub(crate) lost: Option<ConnectionError>,
    /// The first error the transport reported, if it failed rather than ended: it explains
    /// a `TransportClosed` end (a TLS alert, a reset).
    pub(crate) transport_error: Option<String>,
    /// The driver has returned: the transport is closed.
    pub(crate) finished: bool,
}

impl State {
    fn new(core: proto_core::Connection, peer_addr: Option<SocketAddr>) -> State {
        State {
            core,
            peer_addr,
            driver: None,
            streams: HashMap::new(),
            calls: HashMap::new(),
            publishes: HashMap::new(),
            handling: HashMap::new(),
            incoming_streams: WaitList::default(),
            incoming_requests: WaitList::default(),
            incoming_messages: WaitList::default(),
            unblocked: WaitList::default(),
            unblocked_generation: 0,
            changes: WaitList::default(),
            hello: None,
            connected: None,
            going_away: false,
            lost: None,
            transport_error: None,
            finished: false,
        }
    }

    /// Asks the driver to run: a command queued output or returned credit.
    pub(crate) fn wake_driver(&mut self) {
        wake(&mut self.driver);
    }

    pub(crate) fn set_driver_waker(&mut self, waker: &Waker) {
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    /// The error for an operation on this connection once it has ended.
    pub(crate) fn lost_error(&self) -> Error {
        match &self.lost {
            Some(e) => self.failure(e),
            None if self.core.is_closed() => Error::Closed,
            None => Error::ConnectionLost(ConnectionError::TransportClosed),
        }
    }

    /// Whether the connection takes no new work.
    pub(crate) fn is_ending(&self) -> bool {
        self.lost.is_some() || self.core.is_closed()
    }

    /// Drains the core's events into the slots and wakes whoever waits on them.
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::HandshakeRequest(hello) => {
                self.hello = Some(hello);
                self.changes.wake_all();
            }
            Event::Connected(connected) => {
                self.connected = Some(connected);
                self.changes.wake_all();
            }
            Event::IncomingStreams => self.incoming_streams.wake_all(),
            Event::IncomingRequests => self.incoming_requests.wake_all(),
            Event::IncomingMessages => self.incoming_messages.wake_all(),
            Event::Stream(event) => self.on_stream_event(event),
            Event::Rpc(event) => self.on_rpc_event(event),
            Event::Message(event) => self.on_message_event(event),
            Event::Unblocked => {
                self.unblocked_generation = self.unblocked_generation.wrapping_add(1);
                self.unblocked.wake_all();
                // Connection credit came back: any stream may be able to write again.
                for slot in self.streams.values_mut() {
                    wake(&mut slot.writer);
                }
            }
            Event::GoAway { .. } => {
                self.going_away = true;
                self.changes.wake_all();
                // Work waiting for room may now be refused: let it retry once and fail fast.
                self.unblocked_generation = self.unblocked_generation.wrapping_add(1);
                self.unblocked.wake_all();
            }
            Event::ConnectionLost(error) => self.on_lost(error),
            // Registrations are read from the core when needed; RTT likewise.
            _ => {}
        }
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Accepted { id, metadata } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.opened.complete(Ok(metadata));
                }
            }
            StreamEvent::Refused { id, code, reason } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.opened.complete(Err(Error::from_status(code, reason)));
                    wake(&mut slot.reader);
                    wake(&mut slot.writer);
                }
            }
            StreamEvent::Readable { id } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    wake(&mut slot.reader);
                }
            }
            StreamEvent::Reset { id, code, reason } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.reset = Some((code, reason));
                    wake(&mut slot.reader);
                }
            }
            StreamEvent::Writable { id } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    wake(&mut slot.writer);
                }
            }
            StreamEvent::Stopped { id, code } => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.stopped = Some(code);
                    wake(&mut slot.writer);
                }
            }
            _ => {}
        }
    }

    fn on_rpc_event(&mut self, event: RpcEvent) {
        match event {
            RpcEvent::Response { id, status, body } => {
                if let Some(call) = self.calls.get_mut(&id) {
                    let result = if status.is_ok() {
                        Ok(body)
                    } else {
                        Err(Error::from_status(status, text_of(&body)))
                    };
                    call.complete(result);
                }
            }
            RpcEvent::Failed { id, code } => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.complete(Err(local_failure(code)));
                }
            }
            RpcEvent::Cancelled { id, code } => {
                if let Some(request) = self.handling.get_mut(&id) {
                    request.complete(code);
                }
            }
            _ => {}
        }
    }

    fn on_message_event(&mut self, event: MessageEvent) {
        match event {
            MessageEvent::Acked { id, code, text } => {
                if let Some(publish) = self.publishes.get_mut(&id) {
                    let result = if code.is_ok() {
                        Ok(())
                    } else {
                        Err(Error::from_status(code, text))
                    };
                    publish.complete(result);
                }
            }
            MessageEvent::Failed { id, code } => {
                if let Some(publish) = self.publishes.get_mut(&id) {
                    publish.complete(Err(local_failure(code)));
                }
            }
            // A message we hold no longer needs an answer; acking it later is a no-op.
            _ => {}
        }
    }

    /// The end: every waiter learns it, and every operation in flight fails with it.
    /// Records why the transport failed (the first error only).
    pub(crate) fn record_transport_error(&mut self, error: &std::io::Error) {
        self.transport_error
            .get_or_insert_with(|| error.to_string());
    }

    /// The error operations see when the connection ended with `error`.
    fn failure(&self, error: &ConnectionError) -> Error {
        match (error, &self.transport_error) {
            (ConnectionError::TransportClosed, Some(why)) => Error::TransportFailed(why.clone()),
            _ => Error::from_connection(error),
        }
    }

    fn on_lost(&mut self, error: ConnectionError) {
        let failure = self.failure(&error);
        self.lost = Some(error);
        for call in self.calls.values_mut() {
            call.complete(Err(failure.clone()));
        }
        for publish in self.publishes.values_mut() {
            publish.complete(Err(failure.clone()));
        }
        for request in self.handling.values_mut() {
            request.complete(ErrorCode::CANCELLED);
        }
        for slot in self.streams.values_mut() {
            slot.opened.complete(Err(failure.clone()));
            wake(&mut slot.reader);
            wake(&mut slot.writer);
        }
        self.incoming_streams.wake_all();
        self.incoming_requests.wake_all();
        self.incoming_messages.wake_all();
        self.unblocked.wake_all();
        self.changes.wake_all();
    }

    /// Called by the driver when it returns: nothing will change any more.
    pub(crate) fn on_finished(&mut self) {
        self.finished = true;
        if self.lost.is_none() {
            // The core always reports its end before it finishes; this is a safety net
            // for a driver that stopped on a transport error first.
            self.on_lost(ConnectionError::TransportClosed);
        }
        self.changes.wake_all();
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

/// An error text carried in a body: UTF-8, or shown lossily.
pub(crate) fn text_of(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The error for work the core failed locally (`RpcEvent::Failed`, `MessageEvent::Failed`).
fn local_failure(code: ErrorCode) -> Error {
    match code {
        ErrorCode::TIMEOUT => Error::Timeout(String::from("no answer within the timeout")),
        ErrorCode::GOING_AWAY => Error::GoingAway(String::from(
            "the peer is shutting down and did not process it",
        )),
        code => Error::from_status(code, ""),
    }
}
