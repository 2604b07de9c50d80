//! What the core tells the application, through
//! [`Connection::poll_event`](crate::Connection::poll_event).
//!
//! Readiness events are edge-triggered: `Readable` fires when a stream goes from nothing to
//! read to something, `Incoming*` when a queue goes from empty to non-empty. After one, the
//! application should act until the matching call reports nothing more (read until
//! `Blocked`, pull until `None`); the next event fires only after that.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

use crate::code::ErrorCode;
use crate::codec::{Hello, Registration};
use crate::error::ConnectionError;
use crate::ids::{MessageId, RequestId, StreamId};

/// Something the application should know or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server only: a client sent HELLO. Decide with
    /// [`accept_handshake`](crate::Connection::accept_handshake) or
    /// [`reject_handshake`](crate::Connection::reject_handshake) before the handshake
    /// deadline; you may take your time (ask a service, check a database).
    HandshakeRequest(Box<Hello>),
    /// The handshake completed; the connection is open.
    Connected(Connected),
    /// The peer opened streams; take them with
    /// [`next_incoming_stream`](crate::Connection::next_incoming_stream).
    IncomingStreams,
    /// Something happened on one stream.
    Stream(StreamEvent),
    /// Requests arrived; take them with [`Rpc::next_request`](crate::Rpc::next_request).
    IncomingRequests,
    /// Something happened to one of our calls, or to a request we are handling.
    Rpc(RpcEvent),
    /// Messages arrived; take them with
    /// [`Messages::next_message`](crate::Messages::next_message).
    IncomingMessages,
    /// Something happened to one of our messages, or to a message we are handling.
    Message(MessageEvent),
    /// The peer added or removed registered names.
    PeerRegistration {
        /// Removed rather than added.
        remove: bool,
        /// The names.
        entries: Vec<Registration>,
    },
    /// A `call`, `publish` or `open_stream` that failed with `Busy`, `Blocked` or
    /// `StreamLimit` may succeed now.
    Unblocked,
    /// The peer announced a graceful shutdown: finish what is in flight, start nothing new.
    /// Work the peer will not process has already failed with `GOING_AWAY`.
    GoAway {
        /// `OK` or `GOING_AWAY` for a graceful shutdown.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// A ping sent with [`Connection::ping`](crate::Connection::ping) was answered.
    PingAcked {
        /// Round-trip time measured with the timestamps the driver passed in.
        rtt: Duration,
    },
    /// The connection ended. Delivered exactly once and always last; every in-flight call,
    /// message and stream failed with it.
    ConnectionLost(ConnectionError),
}

/// The handshake's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    /// The id the server assigned to the client (an edge id or a service id).
    pub assigned_id: u64,
    /// The negotiated protocol version.
    pub version: u16,
}

/// Stream events. Streams are opened with
/// [`Connection::open_stream`](crate::Connection::open_stream).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The peer accepted a stream we opened.
    Accepted {
        /// The stream.
        id: StreamId,
        /// The peer's accept metadata.
        metadata: Bytes,
    },
    /// The peer refused a stream we opened; it is closed.
    Refused {
        /// The stream.
        id: StreamId,
        /// Why.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// Bytes, the end of the stream, or a reset can be read.
    Readable {
        /// The stream.
        id: StreamId,
    },
    /// A write that was blocked can make progress.
    Writable {
        /// The stream.
        id: StreamId,
    },
    /// The peer reset its sending side; buffered bytes were discarded.
    Reset {
        /// The stream.
        id: StreamId,
        /// The peer's code.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// The peer stopped reading; our sending side was reset with its code.
    Stopped {
        /// The stream.
        id: StreamId,
        /// The peer's code.
        code: ErrorCode,
    },
}

/// RPC events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcEvent {
    /// The response to one of our calls.
    Response {
        /// The call.
        id: RequestId,
        /// `OK`, or the error kind.
        status: ErrorCode,
        /// The response body, or the error text when `status` is not `OK`.
        body: Bytes,
    },
    /// One of our calls failed locally: `TIMEOUT` (its timeout elapsed; the peer was told to
    /// cancel) or `GOING_AWAY` (the peer will not process it).
    Failed {
        /// The call.
        id: RequestId,
        /// Why.
        code: ErrorCode,
    },
    /// A request we took is no longer wanted: `CANCELLED` by the caller or `TIMEOUT`. Stop
    /// working on it; a response would be discarded.
    Cancelled {
        /// The request.
        id: RequestId,
        /// Why.
        code: ErrorCode,
    },
}

/// Message events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageEvent {
    /// The receiver acknowledged one of our messages.
    Acked {
        /// The message.
        id: MessageId,
        /// `OK` for done; otherwise the error kind.
        code: ErrorCode,
        /// The error text (empty for done).
        text: String,
    },
    /// One of our messages failed locally: `TIMEOUT` or `GOING_AWAY`.
    Failed {
        /// The message.
        id: MessageId,
        /// Why.
        code: ErrorCode,
    },
    /// A message we took no longer needs an acknowledgement: `CANCELLED` or `TIMEOUT`.
    Cancelled {
        /// The message.
        id: MessageId,
        /// Why.
        code: ErrorCode,
    },
}
