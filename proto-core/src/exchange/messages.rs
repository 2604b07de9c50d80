//! The application's view of messages: publish, cancel, take, acknowledge.

use alloc::boxed::Box;
use alloc::string::String;
use core::time::Duration;

use bytes::Bytes;

use super::outbox::{OutHead, OutKind, Outgoing};
use super::{DeadlineKey, Exchanges};
use crate::code::ErrorCode;
use crate::codec::{Address, Frame, MessageHead};
use crate::conn::Connection;
use crate::error::{ReplyError, SendError};
use crate::ids::MessageId;
use crate::name::Name;
use crate::time::{Timestamp, duration_to_wire_millis};

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Target: an edge id on a service link (empty on an edge link, which routes by topic).
    pub address: Address,
    /// The topic (required edge → service; optional service → edge).
    pub topic: Name,
    /// The body.
    pub body: Bytes,
    /// Wait for a done/error acknowledgement (`MessageEvent::Acked`). Without it the
    /// message is fire-and-forget: at most once, no outcome reported.
    pub ack: bool,
    /// How long to wait for the acknowledgement (only with `ack`).
    pub timeout: Option<Duration>,
}

impl Publish {
    /// An acknowledged message on `topic`, no address, no timeout.
    pub fn new(topic: Name, body: Bytes) -> Self {
        Publish {
            address: Address::default(),
            topic,
            body,
            ack: true,
            timeout: None,
        }
    }
}

/// A message taken from the peer. If `ack_wanted`, acknowledge it with [`Messages::ack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Its id, for the acknowledgement.
    pub id: MessageId,
    /// The topic.
    pub topic: Name,
    /// Source (gateway → client) or target (client → gateway).
    pub address: Address,
    /// The body.
    pub body: Bytes,
    /// The publisher waits for done or error.
    pub ack_wanted: bool,
    /// When the publisher stops waiting, if it set a timeout.
    pub deadline: Option<Timestamp>,
}

/// Message commands, from [`Connection::messages`](crate::Connection::messages).
#[derive(Debug)]
pub struct Messages<'a> {
    pub(crate) conn: &'a mut Connection,
}

impl Messages<'_> {
    /// Queues a message. With `ack`, the outcome arrives as `MessageEvent::Acked` or
    /// `MessageEvent::Failed`.
    pub fn publish(&mut self, now: Timestamp, msg: Publish) -> Result<MessageId, SendError> {
        let conn = &mut *self.conn;
        conn.check_can_send()?;
        // A timeout bounds the wait for an acknowledgement; without one it means nothing.
        let timeout = if msg.ack { msg.timeout } else { None };
        let awaited = msg.ack.then(|| Exchanges::deadline(now, timeout));
        let ex = &mut conn.exchanges;
        let id = ex.admit(
            OutKind::Message,
            msg.body.len(),
            awaited,
            &conn.peer_settings,
            &conn.config,
        )?;
        let total_len = u32::try_from(msg.body.len()).unwrap_or(u32::MAX);
        ex.outbox.push(Outgoing {
            kind: OutKind::Message,
            id,
            head: Some(OutHead::Message(Box::new(MessageHead {
                address: msg.address,
                topic: msg.topic,
                ack_wanted: msg.ack,
                timeout_ms: timeout.map_or(0, duration_to_wire_millis),
                total_len,
            }))),
            body: msg.body,
            limited: true,
        });
        Ok(MessageId::from_raw(id))
    }

    /// Stops waiting for an acknowledgement; the receiver is told if any of the message went
    /// out. Returns false if it was not awaiting one.
    pub fn cancel(&mut self, id: MessageId) -> bool {
        let conn = &mut *self.conn;
        let ex = &mut conn.exchanges;
        let Some(entry) = ex.published.entries.remove(&id.raw()) else {
            return false;
        };
        ex.drop_deadline(entry.deadline, DeadlineKey::Published(id.raw()));
        ex.abandon(OutKind::Message, id.raw(), &mut conn.fx);
        true
    }

    /// Takes the next message that arrived, or `None` (then an `IncomingMessages` event
    /// announces the next one). Taking it returns its message credit to the peer.
    pub fn next_message(&mut self) -> Option<IncomingMessage> {
        let conn = &mut *self.conn;
        let ex = &mut conn.exchanges;
        let taken = ex.messages.take_next()?;
        ex.release(taken.release, &mut conn.fx);
        let head = *taken.head;
        Some(IncomingMessage {
            id: MessageId::from_raw(taken.id),
            topic: head.topic,
            address: head.address,
            body: taken.body,
            ack_wanted: head.ack_wanted,
            deadline: taken.deadline,
        })
    }

    /// Acknowledges a message taken with [`next_message`](Self::next_message): `OK` for
    /// done, or an error code with text.
    pub fn ack(&mut self, id: MessageId, code: ErrorCode, text: &str) -> Result<(), ReplyError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(ReplyError::Closed);
        }
        let ex = &mut conn.exchanges;
        let deadline = ex.messages.finish(id.raw()).ok_or(ReplyError::Unknown)?;
        ex.drop_deadline(deadline, DeadlineKey::Message(id.raw()));
        conn.fx.push_frame(Frame::Ack {
            id,
            code,
            text: String::from(text),
        });
        Ok(())
    }

    /// Our acknowledged messages awaiting their acknowledgement.
    pub fn awaiting_ack(&self) -> usize {
        self.conn.exchanges.published.entries.len()
    }

    /// Messages from the peer not yet taken, or taken and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.conn.exchanges.messages.len()
    }
}
