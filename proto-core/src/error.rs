//! Errors, sorted by who is at fault.
//!
//! - [`ProtocolViolation`]: the peer broke the protocol. It carries the wire [`ErrorCode`] we
//!   send in GOAWAY. Only untrusted bytes produce these, and never a panic.
//! - [`Incompatible`]: the peer is not a Tether peer, or shares no version with us.
//! - [`ConnectionError`]: why a connection ended; delivered exactly once, as
//!   [`Event::ConnectionLost`](crate::Event::ConnectionLost).
//! - Small per-operation enums ([`OpenError`], [`WriteError`], [`ReadError`], [`SendError`],
//!   [`ReplyError`], [`StreamError`], [`ApiMisuse`]) for commands the application issues.
//!   Misusing the API returns one of these; it never panics.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use thiserror::Error;

use crate::budget::BudgetKind;
use crate::code::ErrorCode;
use crate::codec::{DecodeError, FrameType, PrefaceError};
use crate::config::SettingsError;
use crate::ids::StreamId;

/// The peer broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolViolation {
    /// Bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A valid frame at a point where it is not allowed.
    #[error("unexpected {ty:?} frame {during}")]
    UnexpectedFrame {
        /// The frame's type.
        ty: FrameType,
        /// The connection's state, e.g. "before the handshake completed".
        during: &'static str,
    },
    /// Settings outside the protocol's range.
    #[error("invalid settings: {0}")]
    Settings(SettingsError),
    /// A stream id that is not the next one the peer may open.
    #[error("stream {got} opened out of order (expected {expected})")]
    StreamOutOfOrder {
        /// The next id the peer may open.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// More streams opened than MAX_STREAMS allowed.
    #[error("stream {id} opened beyond the stream credit of {limit}")]
    StreamLimit {
        /// The stream opened.
        id: u64,
        /// Cumulative streams allowed.
        limit: u64,
    },
    /// A frame for a stream the peer never opened (or we never opened).
    #[error("{ty:?} frame for stream {id}, which was never opened")]
    UnknownStream {
        /// Frame type.
        ty: FrameType,
        /// Stream id.
        id: u64,
    },
    /// A frame the stream's state does not allow (DATA after FIN, a second ACCEPT, ...).
    #[error("stream {id}: {what}")]
    StreamState {
        /// Stream id.
        id: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// More bytes than the window allowed, or credit past the maximum window.
    #[error("flow control: {what} (limit {limit}, attempted {attempted})")]
    FlowControl {
        /// Which window.
        what: &'static str,
        /// The limit in force.
        limit: u64,
        /// What the peer tried.
        attempted: u64,
    },
    /// MAX_STREAMS lowered the cumulative stream credit.
    #[error("stream credit lowered from {from} to {to}")]
    StreamCreditDecreased {
        /// Previous credit.
        from: u64,
        /// New credit.
        to: u64,
    },
    /// A request or message id that is not the next one.
    #[error("{kind} {got} out of order (expected {expected})")]
    IdOutOfOrder {
        /// "request" or "message".
        kind: &'static str,
        /// The next id the peer may use.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// A reply, cancel or continuation for an id never sent.
    #[error("{ty:?} frame for id {id}, which was never used")]
    UnknownId {
        /// Frame type.
        ty: FrameType,
        /// The id.
        id: u64,
    },
    /// A continuation without a head, or a body that disagrees with its declared length.
    #[error("{ty:?} {id}: {what}")]
    Fragment {
        /// Frame type.
        ty: FrameType,
        /// The request or message id.
        id: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// A body larger than we advertised we accept.
    #[error("{ty:?} body of {len} bytes exceeds the advertised limit of {max}")]
    TooLarge {
        /// Frame type.
        ty: FrameType,
        /// Declared length.
        len: u64,
        /// Our limit.
        max: u64,
    },
    /// More in flight, or registered, than we advertised.
    #[error("peer exceeded the {what} limit of {max}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        max: u64,
    },
    /// Too many cheap-for-the-peer frames in one budget window.
    #[error("peer exhausted the budget for {0}")]
    Budget(BudgetKind),
}

impl ProtocolViolation {
    /// The code sent in GOAWAY for this violation.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolViolation::Decode(e) => e.code(),
            ProtocolViolation::FlowControl { .. } => ErrorCode::FLOW_CONTROL_ERROR,
            ProtocolViolation::StreamLimit { .. } | ProtocolViolation::LimitExceeded { .. } => {
                ErrorCode::LIMIT_EXCEEDED
            }
            ProtocolViolation::TooLarge { .. } => ErrorCode::TOO_LARGE,
            ProtocolViolation::Budget(_) => ErrorCode::ENHANCE_YOUR_CALM,
            ProtocolViolation::Settings(_) => ErrorCode::INCOMPATIBLE,
            _ => ErrorCode::PROTOCOL_ERROR,
        }
    }
}

/// The peer does not speak our protocol.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Incompatible {
    /// The first bytes were not the Tether magic.
    #[error("the peer does not speak Tether (it sent {})", if *.looks_like_http { "HTTP" } else { "unrecognised bytes" })]
    NotTether {
        /// The bytes were HTTP (a request to a server, a response to a client).
        looks_like_http: bool,
    },
    /// The client offered no version we support.
    #[error("no common protocol version: we support {ours:?}, the peer {theirs:?}")]
    NoCommonVersion {
        /// Our versions.
        ours: Vec<u16>,
        /// The peer's versions.
        theirs: Vec<u16>,
    },
    /// The preface was malformed (no versions, too many).
    #[error("malformed preface: {0}")]
    BadPreface(PrefaceError),
}

/// Which deadline ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The handshake did not complete in time.
    Handshake,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A keepalive ping went unanswered.
    Keepalive,
    /// Graceful shutdown did not finish in time.
    Drain,
}

impl TimeoutKind {
    /// The wire code for this timeout.
    pub fn code(self) -> ErrorCode {
        match self {
            TimeoutKind::Handshake => ErrorCode::HANDSHAKE_TIMEOUT,
            TimeoutKind::Idle => ErrorCode::IDLE_TIMEOUT,
            TimeoutKind::Keepalive => ErrorCode::KEEPALIVE_TIMEOUT,
            TimeoutKind::Drain => ErrorCode::DRAIN_TIMEOUT,
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Handshake => "the handshake did not complete in time",
            TimeoutKind::Idle => "nothing was received for the idle timeout",
            TimeoutKind::Keepalive => "a keepalive ping went unanswered",
            TimeoutKind::Drain => "graceful shutdown did not finish before its deadline",
        })
    }
}

/// Why a connection ended. Delivered once as
/// [`Event::ConnectionLost`](crate::Event::ConnectionLost); afterwards
/// [`Connection::error`](crate::Connection::error) returns it and every command fails.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConnectionError {
    /// The peer broke the protocol; we sent GOAWAY with the violation's code.
    #[error("the peer violated the protocol: {0}")]
    ProtocolViolation(ProtocolViolation),
    /// The peer does not speak our protocol or version.
    #[error("{0}")]
    Incompatible(Incompatible),
    /// The server rejected our handshake.
    #[error("the server refused the handshake: {code}: {reason}")]
    Refused {
        /// Why (e.g. `UNAUTHORIZED`).
        code: ErrorCode,
        /// The server's explanation.
        reason: String,
    },
    /// The peer sent GOAWAY and closed: `code` is `OK` for a graceful shutdown.
    #[error("the peer closed the connection: {code}{}", reason_suffix(.reason))]
    PeerClosed {
        /// The GOAWAY code.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// This side closed the connection (a command, a completed drain, or a refused
    /// handshake on a server).
    #[error("closed locally: {code}{}", reason_suffix(.reason))]
    LocallyClosed {
        /// The code sent to the peer.
        code: ErrorCode,
        /// The reason sent.
        reason: String,
    },
    /// The transport ended without a GOAWAY (peer crashed, network reset).
    #[error("the transport closed without a GOAWAY")]
    TransportClosed,
    /// A deadline passed.
    #[error("timed out: {0}")]
    TimedOut(TimeoutKind),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        alloc::format!(" ({reason})")
    }
}

impl ConnectionError {
    /// The wire code that best describes the end: what was sent or received in GOAWAY or
    /// REFUSE, or the code of the timeout.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConnectionError::ProtocolViolation(v) => v.code(),
            ConnectionError::Incompatible(_) => ErrorCode::INCOMPATIBLE,
            ConnectionError::Refused { code, .. }
            | ConnectionError::PeerClosed { code, .. }
            | ConnectionError::LocallyClosed { code, .. } => *code,
            ConnectionError::TransportClosed => ErrorCode::GOING_AWAY,
            ConnectionError::TimedOut(kind) => kind.code(),
        }
    }
}

/// A command issued at the wrong time; fixed by changing the calling code, never caused by
/// what a peer sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ApiMisuse {
    /// A server-only command on a client.
    #[error("only a server connection can do this")]
    NotServer,
    /// No handshake is waiting for a decision (already decided, or not yet received).
    #[error("no handshake is waiting for a decision")]
    NoHandshakePending,
    /// The connection has not completed its handshake yet.
    #[error("the handshake has not completed")]
    NotConnected,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// A name is longer than 255 bytes or otherwise unusable.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// A HELLO or WELCOME larger than the 64 KiB any peer must accept.
    #[error("the handshake frame would be {len} bytes; the limit is {max}")]
    HandshakeTooLarge {
        /// Encoded payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many registrations for the peer's limit.
    #[error("the peer accepts at most {max} registrations")]
    TooManyRegistrations {
        /// The peer's limit.
        max: u32,
    },
}

/// Why `open_stream` failed. Nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The handshake has not completed.
    #[error("the handshake has not completed")]
    NotConnected,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// One side sent GOAWAY: no new streams.
    #[error("the connection is going away")]
    GoingAway,
    /// The peer's stream credit is used up; wait for streams to close.
    #[error("the peer's stream limit is reached")]
    StreamLimit,
    /// Open metadata larger than the peer accepts.
    #[error("open metadata of {len} bytes exceeds the peer's limit of {max}")]
    MetadataTooLarge {
        /// Given length.
        len: usize,
        /// Peer's limit.
        max: usize,
    },
}

/// A stream command on an id that does not allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum StreamError {
    /// No such stream (never existed, or fully closed and forgotten).
    #[error("{0:?} is unknown or closed")]
    Unknown(StreamId),
    /// `accept`/`refuse` on a stream that is not waiting for a decision.
    #[error("{0:?} is not waiting to be accepted")]
    NotPending(StreamId),
    /// Metadata larger than the peer accepts.
    #[error("metadata of {len} bytes exceeds the peer's limit of {max}")]
    MetadataTooLarge {
        /// Given length.
        len: usize,
        /// Peer's limit.
        max: usize,
    },
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// Why a write accepted nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum WriteError {
    /// No credit or buffer space now; a `Writable` event follows when there is.
    #[error("the stream is blocked by flow control")]
    Blocked,
    /// This side already finished or reset the stream.
    #[error("the stream's sending side is already closed")]
    Finished,
    /// The peer asked us to stop sending (the stream was reset with this code).
    #[error("the peer stopped the stream: {0}")]
    Stopped(ErrorCode),
    /// The peer refused the stream.
    #[error("the peer refused the stream: {0}")]
    Refused(ErrorCode),
    /// No such stream.
    #[error("unknown or closed stream")]
    Unknown,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// Why a read returned no bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// Nothing buffered yet; a `Readable` event follows when there is.
    #[error("no data available yet")]
    Blocked,
    /// The peer reset its sending side.
    #[error("the peer reset the stream: {code}{}", reason_suffix(.reason))]
    Reset {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// The peer refused the stream we opened.
    #[error("the peer refused the stream: {code}{}", reason_suffix(.reason))]
    Refused {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// We stopped reading this stream.
    #[error("reading was stopped locally")]
    Stopped,
    /// No such stream.
    #[error("unknown or closed stream")]
    Unknown,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// Why a call or publish was not queued. Nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SendError {
    /// The handshake has not completed.
    #[error("the handshake has not completed")]
    NotConnected,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// One side sent GOAWAY: no new requests or messages.
    #[error("the connection is going away")]
    GoingAway,
    /// As many requests (or acknowledged messages) are in flight as the peer allows.
    #[error("too many in flight: the peer allows {limit}")]
    Busy {
        /// The peer's limit.
        limit: u32,
    },
    /// The send queue is full; retry after `poll_transmit` made progress.
    #[error("the send queue is full")]
    Blocked,
    /// The body exceeds what the peer accepts.
    #[error("body of {len} bytes exceeds the peer's limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// Peer's limit.
        max: usize,
    },
}

/// Why a response or acknowledgement could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// No pending request or message with that id: already answered, cancelled by the peer,
    /// or timed out.
    #[error("nothing with that id awaits a reply")]
    Unknown,
    /// The body exceeds what the peer accepts.
    #[error("body of {len} bytes exceeds the peer's limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// Peer's limit.
        max: usize,
    },
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}
