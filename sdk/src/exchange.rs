//! RPC and messages on a [`Connection`]: calls and publishes that wait for their outcome,
//! and the [`Request`]s and [`Message`]s the peer sends, which must be answered.

use std::future::poll_fn;
use std::hash::Hash;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use proto_core::ids::{MessageId, RequestId};
use proto_core::name::Name;
use proto_core::{Address, Call, ErrorCode, Publish, ReplyError, SendError};

use crate::connection::Connection;
use crate::error::Error;
use crate::runtime::until;
use crate::state::{Outcomes, Pending, State};

/// What to queue: a call or a message.
enum Outgoing {
    Call(Call),
    Publish(Publish),
}

impl Outgoing {
    /// Sets the time left until `deadline` as the timeout the core enforces. The core reads
    /// a zero timeout as none at all, so a deadline that has passed fails here instead.
    fn set_timeout_until(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let awaits_outcome = match self {
            Outgoing::Call(_) => true,
            Outgoing::Publish(publish) => publish.ack,
        };
        if remaining.is_zero() && awaits_outcome {
            return Err(Error::Timeout(String::from(
                "the timeout passed before it could be sent",
            )));
        }
        match self {
            Outgoing::Call(call) => call.timeout = Some(remaining),
            Outgoing::Publish(publish) => publish.timeout = Some(remaining),
        }
        Ok(())
    }
}

impl Connection {
    /// Calls a method on the peer and waits for its answer.
    ///
    /// `call.timeout` bounds the whole call, including any wait for room to send it (the
    /// peer's in-flight limit or our send buffer). Dropping the future cancels the call on
    /// the peer.
    pub async fn call(&self, call: Call) -> Result<Bytes, Error> {
        // A zero timeout is none, as in the core.
        let deadline = call
            .timeout
            .filter(|t| !t.is_zero())
            .map(|t| Instant::now() + t);
        let id = self.queue(Outgoing::Call(call), deadline).await?;
        let mut guard = Outstanding {
            conn: self,
            id: Id::Request(RequestId::from_raw(id)),
            done: false,
        };
        let result = self
            .outcome(RequestId::from_raw(id), |state| &mut state.calls)
            .await;
        guard.done = true;
        result
    }

    /// Publishes a message. With `publish.ack` it resolves when the receiver acknowledges
    /// (done → `Ok`, error → its error); without, once the message is queued.
    ///
    /// `publish.timeout` bounds the whole operation. Dropping the future withdraws the
    /// message if it was not delivered yet.
    pub async fn publish(&self, publish: Publish) -> Result<(), Error> {
        let ack = publish.ack;
        let deadline = publish
            .timeout
            .filter(|t| !t.is_zero())
            .map(|t| Instant::now() + t);
        let id = self.queue(Outgoing::Publish(publish), deadline).await?;
        if !ack {
            return Ok(());
        }
        let mut guard = Outstanding {
            conn: self,
            id: Id::Message(MessageId::from_raw(id)),
            done: false,
        };
        let result = self
            .outcome(MessageId::from_raw(id), |state| &mut state.publishes)
            .await;
        guard.done = true;
        result
    }

    /// Waits for the outcome filed under `key` in the map `slots` selects (calls or
    /// publishes), and removes the entry once it is taken. A missing entry means the
    /// connection ended.
    async fn outcome<K, T>(
        &self,
        key: K,
        slots: fn(&mut State) -> &mut Outcomes<K, T>,
    ) -> Result<T, Error>
    where
        K: Eq + Hash,
    {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            let map = slots(&mut state);
            let Some(pending) = map.get_mut(&key) else {
                return Poll::Ready(Err(state.lost_error()));
            };
            match pending.result.take() {
                Some(result) => {
                    map.remove(&key);
                    Poll::Ready(result)
                }
                None => {
                    pending.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Queues a call or message, waiting (until `deadline`) while the core says `Busy` or
    /// `Blocked`. Returns the raw id.
    async fn queue(&self, item: Outgoing, deadline: Option<Instant>) -> Result<u64, Error> {
        let mut item = item;
        loop {
            let generation = {
                let mut state = self.shared.lock();
                if state.is_ending() {
                    return Err(state.lost_error());
                }
                item.set_timeout_until(deadline)?;
                let now = self.shared.now();
                let queued = match &item {
                    Outgoing::Call(call) => state.core.rpc().call(now, call.clone()).map(|id| {
                        state.calls.insert(id, Pending::default());
                        id.raw()
                    }),
                    Outgoing::Publish(publish) => {
                        let ack = publish.ack;
                        state
                            .core
                            .messages()
                            .publish(now, publish.clone())
                            .map(|id| {
                                if ack {
                                    state.publishes.insert(id, Pending::default());
                                }
                                id.raw()
                            })
                    }
                };
                match queued {
                    Ok(id) => {
                        state.wake_driver();
                        return Ok(id);
                    }
                    Err(SendError::Busy { .. } | SendError::Blocked) => state.unblocked_generation,
                    Err(e) => return Err(send_error(&state, e)),
                }
            };
            let runtime = &*self.shared.runtime;
            if until(runtime, deadline, self.unblocked_since(generation))
                .await
                .is_none()
            {
                return Err(Error::Timeout(String::from(
                    "no room to send within the timeout (the peer's in-flight limit or our send buffer)",
                )));
            }
        }
    }

    /// Waits for the next request from the peer; `None` once the connection has ended.
    ///
    /// Requests wait in the connection until taken, and the peer gets flow-control credit
    /// back only then, so a slow consumer slows the peer down.
    pub async fn next_request(&self) -> Option<Request> {
        let taken = poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(request) = state.core.rpc().next_request() {
                state.handling.insert(request.id, Pending::default());
                state.wake_driver();
                let deadline = request.deadline.map(|at| self.shared.instant(at));
                return Poll::Ready(Some((request, deadline)));
            }
            if state.is_ending() {
                return Poll::Ready(None);
            }
            state.incoming_requests.register(cx.waker());
            Poll::Pending
        })
        .await;
        let (request, deadline) = taken?;
        Some(Request {
            conn: self.clone(),
            id: request.id,
            method: request.method,
            address: request.address,
            body: request.body,
            deadline,
            answered: false,
        })
    }

    /// Waits for the next message from the peer; `None` once the connection has ended.
    pub async fn next_message(&self) -> Option<Message> {
        let taken = poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(message) = state.core.messages().next_message() {
                state.wake_driver();
                let deadline = message.deadline.map(|at| self.shared.instant(at));
                return Poll::Ready(Some((message, deadline)));
            }
            if state.is_ending() {
                return Poll::Ready(None);
            }
            state.incoming_messages.register(cx.waker());
            Poll::Pending
        })
        .await;
        let (message, deadline) = taken?;
        Some(Message {
            conn: self.clone(),
            id: message.id,
            topic: message.topic,
            address: message.address,
            body: message.body,
            ack_wanted: message.ack_wanted,
            deadline,
        })
    }
}

fn send_error(state: &State, e: SendError) -> Error {
    match e {
        SendError::NotConnected => Error::NotConnected(String::from("the handshake is not done")),
        SendError::GoingAway => Error::GoingAway(String::from("the connection is shutting down")),
        SendError::TooLarge { .. } => Error::TooLarge(e.to_string()),
        SendError::Closed | SendError::Busy { .. } | SendError::Blocked => state.lost_error(),
    }
}

enum Id {
    Request(RequestId),
    Message(MessageId),
}

/// Withdraws a call or message whose future was dropped before its outcome arrived.
struct Outstanding<'a> {
    conn: &'a Connection,
    id: Id,
    done: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.conn.shared.lock();
        match self.id {
            Id::Request(id) => {
                state.calls.remove(&id);
                state.core.rpc().cancel(id);
            }
            Id::Message(id) => {
                state.publishes.remove(&id);
                state.core.messages().cancel(id);
            }
        }
        state.wake_driver();
    }
}

/// A request from the peer. Answer it with [`respond`](Self::respond); dropping it
/// unanswered answers `INTERNAL`, so the caller never waits for nothing.
#[derive(Debug)]
pub struct Request {
    conn: Connection,
    id: RequestId,
    method: Name,
    address: Address,
    body: Bytes,
    deadline: Option<Instant>,
    answered: bool,
}

impl Request {
    /// The method called.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out (it is left empty).
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// The address the request carried: its source on a link from the gateway (the
    /// calling edge's id, or the calling service's name), its target on a link to it.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// When the caller stops waiting, if it set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Answers: `Ok(body)`, or an error whose code and text the caller receives.
    pub fn respond(mut self, result: Result<Bytes, Error>) {
        self.answer(result);
    }

    fn answer(&mut self, result: Result<Bytes, Error>) {
        self.answered = true;
        let mut state = self.conn.shared.lock();
        state.handling.remove(&self.id);
        let (status, body) = match result {
            Ok(body) => (ErrorCode::OK, body),
            Err(e) => (e.code(), Bytes::from(e.text())),
        };
        if let Err(ReplyError::TooLarge { .. }) = state.core.rpc().respond(self.id, status, body) {
            // The caller must still learn the outcome.
            let text = Bytes::from_static(b"the response is larger than the caller accepts");
            let _ = state
                .core
                .rpc()
                .respond(self.id, ErrorCode::TOO_LARGE, text);
        }
        // Other failures mean the caller no longer waits (cancelled, timed out, gone).
        state.wake_driver();
    }

    /// Resolves when the caller no longer wants the answer (it cancelled, timed out, or
    /// the connection ended), with the reason. Handlers race their work against it.
    pub async fn cancelled(&self) -> ErrorCode {
        poll_fn(|cx| {
            let mut state = self.conn.shared.lock();
            match state.handling.get_mut(&self.id) {
                None => Poll::Ready(ErrorCode::CANCELLED),
                Some(pending) => match pending.result {
                    Some(code) => Poll::Ready(code),
                    None => {
                        pending.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
            }
        })
        .await
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Err(Error::Status {
                code: ErrorCode::INTERNAL,
                text: String::from("the handler dropped the request without answering"),
            }));
        }
    }
}

/// A message from the peer. If the sender wants an acknowledgement, answer with
/// [`done`](Self::done) or [`error`](Self::error); dropping it unanswered sends an error
/// acknowledgement (`INTERNAL`), never silence.
#[derive(Debug)]
pub struct Message {
    conn: Connection,
    id: MessageId,
    topic: Name,
    address: Address,
    body: Bytes,
    ack_wanted: bool,
    deadline: Option<Instant>,
}

impl Message {
    /// The topic.
    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out (it is left empty).
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Source (on a link from the gateway: the publishing edge's id or service's name) or
    /// target.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the sender waits for an acknowledgement.
    pub fn ack_wanted(&self) -> bool {
        self.ack_wanted
    }

    /// When the sender stops waiting for the acknowledgement, if it set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Acknowledges: processed.
    pub fn done(mut self) {
        self.ack(ErrorCode::OK, "");
    }

    /// Acknowledges with an error; the sender receives its code and text.
    pub fn error(mut self, error: Error) {
        // The encoder cuts texts to the wire's limit (`docs/PROTOCOL.md#conventions`).
        self.ack(error.code(), &error.text());
    }

    fn ack(&mut self, code: ErrorCode, text: &str) {
        if !std::mem::take(&mut self.ack_wanted) {
            return;
        }
        let mut state = self.conn.shared.lock();
        // Fails only if the sender gave up or the connection ended: nobody to tell.
        let _ = state.core.messages().ack(self.id, code, text);
        state.wake_driver();
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        self.ack(
            ErrorCode::INTERNAL,
            "the receiver dropped the message without acknowledging it",
        );
    }
}
