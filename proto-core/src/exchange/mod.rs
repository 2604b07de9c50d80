//! RPC and messages: bodies in fragments under a shared message window, ids, in-flight
//! limits, relative timeouts, cancellation and replies.
//!
//! Requests and messages have the same life: a head with an address and a name, a body in
//! one or more fragments, an optional reply (response or acknowledgement), a relative
//! timeout, and a cancel. The tables here are generic over that shape; [`rpc`] and
//! [`messages`] are the application's views.
//!
//! Incoming requests and messages wait in an inbox until the application takes them; their
//! message credit returns only then, so an application that stops taking work slows its
//! peer instead of growing our memory. Work cancelled or timed out before it was taken is
//! dropped without the application ever seeing it.
//!
//! Spec: `docs/PROTOCOL.md#rpc` and `docs/PROTOCOL.md#messages`.

mod assembly;
mod inbound;
pub(crate) mod messages;
mod outbox;
pub(crate) mod rpc;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use core::time::Duration;

use bytes::Bytes;

use assembly::Assembly;
use inbound::InboundTable;
use outbox::{OutKind, Outbox};

use crate::budget::BudgetKind;
use crate::code::ErrorCode;
use crate::codec::{Frame, FrameType, MessageHead, RequestHead, ResponseHead};
use crate::config::{Config, Settings};
use crate::context::Context;
use crate::effects::{Control, Effects};
use crate::error::{ProtocolViolation, SendError};
use crate::event::{Event, MessageEvent, RpcEvent};
use crate::flow::{RecvWindow, SendCredit};
use crate::ids::{MessageId, RequestId};
use crate::time::Timestamp;

/// Message credit every REQUEST, RESPONSE and MESSAGE head costs on top of its body bytes,
/// so the number of bodies a peer can make us hold is bounded by the window, however small
/// the bodies (`docs/PROTOCOL.md#message-window`).
pub const HEAD_CREDIT: u64 = 256;

/// A timer on one request or message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DeadlineKey {
    /// A call of ours awaiting its response.
    Call(u64),
    /// A message of ours awaiting its acknowledgement.
    Published(u64),
    /// A request from the peer.
    Request(u64),
    /// A message from the peer.
    Message(u64),
}

/// A request or message from the peer, by id.
#[derive(Clone, Copy, Debug)]
enum PeerItem {
    Request(u64),
    Message(u64),
}

impl PeerItem {
    fn deadline_key(self) -> DeadlineKey {
        match self {
            PeerItem::Request(id) => DeadlineKey::Request(id),
            PeerItem::Message(id) => DeadlineKey::Message(id),
        }
    }

    /// The event telling the application to stop working on it.
    fn cancelled(self, code: ErrorCode) -> Event {
        match self {
            PeerItem::Request(id) => Event::Rpc(RpcEvent::Cancelled {
                id: RequestId::from_raw(id),
                code,
            }),
            PeerItem::Message(id) => Event::Message(MessageEvent::Cancelled {
                id: MessageId::from_raw(id),
                code,
            }),
        }
    }
}

/// One of our calls or acknowledged messages.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    deadline: Option<Timestamp>,
    /// A response being reassembled.
    response: Option<(ErrorCode, Assembly)>,
}

/// Our requests or messages awaiting replies.
#[derive(Debug)]
pub(crate) struct OutboundTable {
    /// The next id to use.
    next_id: u64,
    entries: BTreeMap<u64, Outbound>,
}

impl OutboundTable {
    fn new() -> Self {
        OutboundTable {
            next_id: 1,
            entries: BTreeMap::new(),
        }
    }

    fn was_sent(&self, id: u64) -> bool {
        id < self.next_id
    }
}

#[derive(Debug)]
pub(crate) struct Exchanges {
    pub(crate) calls: OutboundTable,
    pub(crate) requests: InboundTable<RequestHead>,
    pub(crate) published: OutboundTable,
    pub(crate) messages: InboundTable<MessageHead>,
    pub(crate) outbox: Outbox,
    /// Our message window.
    pub(crate) recv_window: RecvWindow,
    /// The peer's message window.
    pub(crate) send_credit: SendCredit,
    deadlines: BTreeSet<(Timestamp, DeadlineKey)>,
    /// A call or publish failed with Busy or Blocked: emit `Unblocked` when that changes.
    pub(crate) blocked: bool,
}

impl Exchanges {
    pub(crate) fn new(config: &Config) -> Self {
        Exchanges {
            calls: OutboundTable::new(),
            requests: InboundTable::new(FrameType::Request, "request"),
            published: OutboundTable::new(),
            messages: InboundTable::new(FrameType::Message, "message"),
            outbox: Outbox::default(),
            recv_window: RecvWindow::with_min_available(
                config.settings.message_window,
                u64::from(config.settings.max_message_size).saturating_add(HEAD_CREDIT),
            ),
            send_credit: SendCredit::new(Settings::DEFAULT.message_window),
            deadlines: BTreeSet::new(),
            blocked: false,
        }
    }

    pub(crate) fn on_peer_settings(&mut self, peer: &Settings) {
        self.send_credit = SendCredit::new(peer.message_window);
    }

    /// No call, request or message is in flight in either direction.
    pub(crate) fn is_idle(&self) -> bool {
        self.calls.entries.is_empty()
            && self.published.entries.is_empty()
            && self.requests.is_empty()
            && self.messages.is_empty()
            && self.outbox.is_empty()
    }

    /// The earliest request or message deadline, and whose it is.
    pub(crate) fn next_deadline_key(&self) -> Option<(Timestamp, DeadlineKey)> {
        self.deadlines.first().copied()
    }

    /// The last request and message ids the peer used.
    pub(crate) fn last_peer_ids(&self) -> (u64, u64) {
        (self.requests.last_id(), self.messages.last_id())
    }

    fn add_deadline(&mut self, deadline: Option<Timestamp>, key: DeadlineKey) {
        if let Some(t) = deadline {
            self.deadlines.insert((t, key));
        }
    }

    fn drop_deadline(&mut self, deadline: Option<Timestamp>, key: DeadlineKey) {
        if let Some(t) = deadline {
            self.deadlines.remove(&(t, key));
        }
    }

    /// Returns message credit for bytes that left the core.
    fn release(&mut self, n: u64, fx: &mut Effects) {
        self.recv_window.on_consume(n);
        if self.recv_window.wants_update() {
            fx.push_credit(Control::MessageWindow);
        }
    }

    /// Charges an arriving fragment against our message window.
    fn charge(&mut self, n: u64) -> Result<(), ProtocolViolation> {
        self.recv_window
            .on_receive(n)
            .map_err(|e| ProtocolViolation::FlowControl {
                what: "message window",
                limit: e.limit,
                attempted: e.attempted,
            })
    }

    /// Largest body the peer accepts from us.
    pub(crate) fn max_send_body(peer: &Settings) -> usize {
        let by_window = u64::from(peer.message_window).saturating_sub(HEAD_CREDIT);
        let max = u64::from(peer.max_message_size).min(by_window);
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    /// Admits a new call (`Request`) or message: checks the body size, the peer's in-flight
    /// limit (for items awaiting a reply) and the send queue, allocates the id, and, when
    /// `awaited` is `Some(deadline)`, registers the item as awaiting its reply.
    pub(crate) fn admit(
        &mut self,
        kind: OutKind,
        body_len: usize,
        awaited: Option<Option<Timestamp>>,
        peer: &Settings,
        config: &Config,
    ) -> Result<u64, SendError> {
        let max = Exchanges::max_send_body(peer);
        if body_len > max {
            return Err(SendError::TooLarge { len: body_len, max });
        }
        let (table, limit) = if kind == OutKind::Request {
            (&self.calls, peer.max_inflight_requests)
        } else {
            (&self.published, peer.max_inflight_messages)
        };
        if awaited.is_some() && table.entries.len() >= usize::try_from(limit).unwrap_or(usize::MAX)
        {
            self.blocked = true;
            return Err(SendError::Busy { limit });
        }
        // A single body larger than the queue limit is still accepted into an empty queue,
        // so every size the peer allows can be sent.
        let queued = self.outbox.queued();
        let after = queued.saturating_add(u64::try_from(body_len).unwrap_or(u64::MAX));
        if queued > 0 && after > u64::from(config.exchange_send_buffer) {
            self.blocked = true;
            return Err(SendError::Blocked);
        }
        let table = if kind == OutKind::Request {
            &mut self.calls
        } else {
            &mut self.published
        };
        let id = table.next_id;
        table.next_id = id.saturating_add(1);
        if let Some(deadline) = awaited {
            table.entries.insert(
                id,
                Outbound {
                    deadline,
                    response: None,
                },
            );
            let key = if kind == OutKind::Request {
                DeadlineKey::Call(id)
            } else {
                DeadlineKey::Published(id)
            };
            self.add_deadline(deadline, key);
        }
        Ok(id)
    }

    /// Emits `Unblocked` once a blocked call or publish could proceed.
    pub(crate) fn check_unblocked(&mut self, config: &Config, peer: &Settings, fx: &mut Effects) {
        if !self.blocked {
            return;
        }
        let calls_ok = self.calls.entries.len()
            < usize::try_from(peer.max_inflight_requests).unwrap_or(usize::MAX);
        let msgs_ok = self.published.entries.len()
            < usize::try_from(peer.max_inflight_messages).unwrap_or(usize::MAX);
        let queue_ok = self.outbox.queued() < u64::from(config.exchange_send_buffer);
        if calls_ok && msgs_ok && queue_ok {
            self.blocked = false;
            fx.emit(Event::Unblocked);
        }
    }

    // ---- incoming frames -------------------------------------------------------------

    pub(crate) fn on_request(
        &mut self,
        id: RequestId,
        more: bool,
        head: Option<alloc::boxed::Box<RequestHead>>,
        body: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let limit = cx.config.settings.max_inflight_requests;
        let outcome = self.requests.on_fragment(
            id.raw(),
            more,
            head,
            body,
            limit,
            cx,
            &mut self.recv_window,
        )?;
        self.after_inbound(
            &outcome,
            DeadlineKey::Request(id.raw()),
            Event::IncomingRequests,
            cx.fx,
        );
        Ok(())
    }

    pub(crate) fn on_message(
        &mut self,
        id: MessageId,
        more: bool,
        head: Option<alloc::boxed::Box<MessageHead>>,
        body: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let limit = cx.config.settings.max_inflight_messages;
        let outcome = self.messages.on_fragment(
            id.raw(),
            more,
            head,
            body,
            limit,
            cx,
            &mut self.recv_window,
        )?;
        self.after_inbound(
            &outcome,
            DeadlineKey::Message(id.raw()),
            Event::IncomingMessages,
            cx.fx,
        );
        Ok(())
    }

    /// Applies what handling a request or message fragment asked for: arm its deadline,
    /// return credit for dropped bytes, announce a newly non-empty inbox with `incoming`.
    fn after_inbound(
        &mut self,
        outcome: &inbound::Outcome,
        key: DeadlineKey,
        incoming: Event,
        fx: &mut Effects,
    ) {
        if outcome.notify {
            fx.emit(incoming);
        }
        self.add_deadline(outcome.deadline, key);
        if outcome.release > 0 {
            self.release(outcome.release, fx);
        }
    }

    pub(crate) fn on_response(
        &mut self,
        id: RequestId,
        more: bool,
        head: Option<ResponseHead>,
        body: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let cost = if head.is_some() {
            HEAD_CREDIT.saturating_add(len)
        } else {
            len
        };
        self.charge(cost)?;
        let raw = id.raw();
        let Some(call) = self.calls.entries.get_mut(&raw) else {
            if !self.calls.was_sent(raw) {
                return Err(ProtocolViolation::UnknownId {
                    ty: FrameType::Response,
                    id: raw,
                });
            }
            // A response to a call we cancelled or timed out: drop it.
            self.release(cost, cx.fx);
            return cx.spend(BudgetKind::WastedFrames);
        };
        let fragment_error = |what| ProtocolViolation::Fragment {
            ty: FrameType::Response,
            id: raw,
            what,
        };
        match (head, call.response.as_mut()) {
            (Some(head), None) => {
                let max = u64::from(cx.config.settings.max_message_size);
                if u64::from(head.total_len) > max {
                    return Err(ProtocolViolation::TooLarge {
                        ty: FrameType::Response,
                        len: u64::from(head.total_len),
                        max,
                    });
                }
                call.response = Some((head.status, Assembly::new(head.total_len, body)));
            }
            (Some(_), Some(_)) => return Err(fragment_error("second response head")),
            (None, Some((_, assembly))) => assembly.push(body, more).map_err(fragment_error)?,
            (None, None) => return Err(fragment_error("continuation without a head")),
        }
        if !call.response.as_ref().is_some_and(|(_, a)| a.is_complete()) {
            return Ok(());
        }
        let Some(call) = self.calls.entries.remove(&raw) else {
            return Ok(());
        };
        self.drop_deadline(call.deadline, DeadlineKey::Call(raw));
        if let Some((status, assembly)) = call.response {
            self.release(
                HEAD_CREDIT.saturating_add(u64::from(assembly.total())),
                cx.fx,
            );
            cx.fx.emit(Event::Rpc(RpcEvent::Response {
                id,
                status,
                body: assembly.into_body(),
            }));
        }
        Ok(())
    }

    pub(crate) fn on_ack(
        &mut self,
        id: MessageId,
        code: ErrorCode,
        text: String,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let raw = id.raw();
        match self.published.entries.remove(&raw) {
            Some(entry) => {
                self.drop_deadline(entry.deadline, DeadlineKey::Published(raw));
                cx.fx
                    .emit(Event::Message(MessageEvent::Acked { id, code, text }));
                Ok(())
            }
            None if self.published.was_sent(raw) => cx.spend(BudgetKind::WastedFrames),
            None => Err(ProtocolViolation::UnknownId {
                ty: FrameType::Ack,
                id: raw,
            }),
        }
    }

    pub(crate) fn on_cancel(
        &mut self,
        id: RequestId,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let raw = id.raw();
        let outcome = self.requests.cancel(raw, FrameType::Cancel, cx)?;
        if let inbound::Cancelled::Gone = outcome {
            // Already answered: drop the response if it has not gone out.
            self.outbox
                .remove(OutKind::Response, raw, &mut self.send_credit);
        }
        self.settle(PeerItem::Request(raw), outcome, ErrorCode::CANCELLED, cx.fx);
        Ok(())
    }

    pub(crate) fn on_message_cancel(
        &mut self,
        id: MessageId,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let raw = id.raw();
        let outcome = self.messages.cancel(raw, FrameType::MessageCancel, cx)?;
        self.settle(PeerItem::Message(raw), outcome, ErrorCode::CANCELLED, cx.fx);
        Ok(())
    }

    /// Settles a request or message from the peer that was cancelled or timed out: return
    /// the credit of one the application never took, or tell the application to stop
    /// working on one it did.
    fn settle(
        &mut self,
        item: PeerItem,
        outcome: inbound::Cancelled,
        code: ErrorCode,
        fx: &mut Effects,
    ) {
        match outcome {
            inbound::Cancelled::BeforeTaken { released, deadline } => {
                self.drop_deadline(deadline, item.deadline_key());
                self.release(released, fx);
            }
            inbound::Cancelled::Taken { deadline } => {
                self.drop_deadline(deadline, item.deadline_key());
                fx.emit(item.cancelled(code));
            }
            inbound::Cancelled::Gone => {}
        }
    }

    pub(crate) fn on_message_window(
        &mut self,
        increment: u32,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        if crate::flow::is_tiny_grant(increment, cx.peer.message_window) {
            cx.spend(BudgetKind::WastedFrames)?;
        }
        let before = self.send_credit.available();
        self.send_credit
            .grant(increment)
            .map_err(|_| ProtocolViolation::FlowControl {
                what: "message credit overflow",
                limit: crate::codec::MAX_WINDOW,
                attempted: before.saturating_add(u64::from(increment)),
            })
    }

    // ---- timers and shutdown ----------------------------------------------------------

    /// Fires every deadline at or before `now`.
    pub(crate) fn handle_timeout(&mut self, now: Timestamp, fx: &mut Effects) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match key {
                DeadlineKey::Call(id) => {
                    if self.forget_call(id, fx) {
                        self.abandon(OutKind::Request, id, fx);
                        fx.emit(Event::Rpc(RpcEvent::Failed {
                            id: RequestId::from_raw(id),
                            code: ErrorCode::TIMEOUT,
                        }));
                    }
                }
                DeadlineKey::Published(id) => {
                    if self.published.entries.remove(&id).is_some() {
                        self.abandon(OutKind::Message, id, fx);
                        fx.emit(Event::Message(MessageEvent::Failed {
                            id: MessageId::from_raw(id),
                            code: ErrorCode::TIMEOUT,
                        }));
                    }
                }
                DeadlineKey::Request(id) => {
                    let outcome = self.requests.expire(id);
                    self.settle(PeerItem::Request(id), outcome, ErrorCode::TIMEOUT, fx);
                }
                DeadlineKey::Message(id) => {
                    let outcome = self.messages.expire(id);
                    self.settle(PeerItem::Message(id), outcome, ErrorCode::TIMEOUT, fx);
                }
            }
        }
    }

    /// Forgets one of our calls: its deadline, and the credit of a response half received.
    /// False if it was not in flight.
    pub(crate) fn forget_call(&mut self, id: u64, fx: &mut Effects) -> bool {
        let Some(entry) = self.calls.entries.remove(&id) else {
            return false;
        };
        self.drop_deadline(entry.deadline, DeadlineKey::Call(id));
        if let Some((_, assembly)) = entry.response {
            self.release(
                HEAD_CREDIT.saturating_add(u64::from(assembly.received())),
                fx,
            );
        }
        true
    }

    /// Stops sending one of our requests or messages; tells the peer to cancel it if any
    /// of it went out.
    pub(crate) fn abandon(&mut self, kind: OutKind, id: u64, fx: &mut Effects) {
        let never_sent = self.outbox.remove(kind, id, &mut self.send_credit) == Some(false);
        if never_sent {
            return;
        }
        let frame = match kind {
            OutKind::Request => Frame::Cancel {
                id: RequestId::from_raw(id),
            },
            _ => Frame::MessageCancel {
                id: MessageId::from_raw(id),
            },
        };
        fx.push_frame(frame);
    }

    /// We sent GOAWAY: refuse requests and messages above the last ones seen. Returns them.
    pub(crate) fn start_refusing(&mut self) -> (u64, u64) {
        (
            self.requests.start_refusing(),
            self.messages.start_refusing(),
        )
    }

    /// The peer sent GOAWAY: our calls and messages above its last ids will not be
    /// processed; they fail with `GOING_AWAY`.
    pub(crate) fn on_peer_goaway(
        &mut self,
        last_request: u64,
        last_message: u64,
        fx: &mut Effects,
    ) {
        let calls: alloc::vec::Vec<u64> = self
            .calls
            .entries
            .range(last_request.saturating_add(1)..)
            .map(|(id, _)| *id)
            .collect();
        for id in calls {
            self.forget_call(id, fx);
            fx.emit(Event::Rpc(RpcEvent::Failed {
                id: RequestId::from_raw(id),
                code: ErrorCode::GOING_AWAY,
            }));
        }
        self.outbox
            .remove_above(OutKind::Request, last_request, &mut self.send_credit);
        let published: alloc::vec::Vec<u64> = self
            .published
            .entries
            .range(last_message.saturating_add(1)..)
            .map(|(id, _)| *id)
            .collect();
        for id in published {
            if let Some(entry) = self.published.entries.remove(&id) {
                self.drop_deadline(entry.deadline, DeadlineKey::Published(id));
            }
            fx.emit(Event::Message(MessageEvent::Failed {
                id: MessageId::from_raw(id),
                code: ErrorCode::GOING_AWAY,
            }));
        }
        self.outbox
            .remove_above(OutKind::Message, last_message, &mut self.send_credit);
    }

    /// Converts a relative timeout into a local deadline.
    pub(crate) fn deadline(now: Timestamp, timeout: Option<Duration>) -> Option<Timestamp> {
        timeout
            .filter(|t| !t.is_zero())
            .map(|t| now.saturating_add(t))
    }
}
