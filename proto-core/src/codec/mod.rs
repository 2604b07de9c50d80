//! The wire format: preface, frame header, and every frame type.
//!
//! Decoding is two-phase over a bounded buffer (mini-redis style): [`FrameHeader::peek`] says
//! whether a whole header is there, the length is checked against the limit *before* waiting
//! for or allocating anything, and only a complete frame is parsed. Payloads come out as
//! [`Bytes`] split from the input buffer. Encoding writes into any [`Sink`]: a `Vec<u8>`
//! (contiguous copy) or a [`TransmitBuf`](crate::TransmitBuf) (payloads referenced for
//! vectored writes).
//!
//! Spec: `docs/PROTOCOL.md#frames`.

mod decode;
mod encode;
mod framer;
mod preface;
mod reader;
#[cfg(test)]
pub(crate) mod tests;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use bytes::Bytes;

pub use decode::{DecodeError, DecodeLimits, decode_frame};
pub use encode::Sink;
pub(crate) use framer::Framer;
pub(crate) use preface::HTTP_REJECTION;
pub use preface::{ClientPreface, MAGIC, MAX_VERSIONS, PrefaceError, ServerPreface};

use crate::code::ErrorCode;
use crate::config::Settings;
use crate::ids::{MessageId, RequestId, Role, StreamId};
use crate::name::Name;

/// Length of the fixed frame header: 24-bit length, type, flags, 64-bit id.
pub const HEADER_LEN: usize = 13;
/// The smallest `max_frame_size` a peer may advertise.
pub const MIN_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// The largest frame payload the 24-bit length can express.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest HELLO or WELCOME payload any peer must accept.
pub const MAX_HANDSHAKE_PAYLOAD: u32 = 64 * 1024;
/// The largest window (per stream, per connection, for messages).
pub const MAX_WINDOW: u64 = (1 << 31) - 1;
/// The longest reason or error text carried in REFUSE, GOAWAY, RESET and ACK.
pub const MAX_TEXT_LEN: usize = 4096;
/// The protocol version this crate implements.
pub const VERSION_1: u16 = 1;

/// Frame type codes (`docs/PROTOCOL.md#frame-types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client handshake.
    Hello = 0x01,
    /// Server accepts the handshake.
    Welcome = 0x02,
    /// Server rejects the handshake.
    Refuse = 0x03,
    /// Keepalive / RTT probe, or its acknowledgement.
    Ping = 0x04,
    /// Graceful or fatal shutdown.
    GoAway = 0x05,
    /// Add or remove registered method, topic and hook names.
    Register = 0x06,
    /// Stream credit: how many streams the peer may open in total.
    MaxStreams = 0x07,
    /// Stream-data credit for one stream or the whole connection.
    Window = 0x08,
    /// Credit for request, response and message bodies.
    MessageWindow = 0x09,
    /// Open a stream.
    Open = 0x10,
    /// Accept a stream.
    Accept = 0x11,
    /// Stream bytes, optionally ending the sender's half.
    Data = 0x12,
    /// Abort the sender's half of a stream (or refuse a stream not yet accepted).
    Reset = 0x13,
    /// Ask the peer to stop sending on a stream.
    Stop = 0x14,
    /// RPC request (head or continuation).
    Request = 0x20,
    /// RPC response (head or continuation).
    Response = 0x21,
    /// Cancel an RPC request.
    Cancel = 0x22,
    /// Message (head or continuation).
    Message = 0x30,
    /// Message acknowledgement: done or error.
    Ack = 0x31,
    /// Withdraw a message whose acknowledgement is no longer awaited.
    MessageCancel = 0x32,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [FrameType; 20] = [
        FrameType::Hello,
        FrameType::Welcome,
        FrameType::Refuse,
        FrameType::Ping,
        FrameType::GoAway,
        FrameType::Register,
        FrameType::MaxStreams,
        FrameType::Window,
        FrameType::MessageWindow,
        FrameType::Open,
        FrameType::Accept,
        FrameType::Data,
        FrameType::Reset,
        FrameType::Stop,
        FrameType::Request,
        FrameType::Response,
        FrameType::Cancel,
        FrameType::Message,
        FrameType::Ack,
        FrameType::MessageCancel,
    ];

    /// The type for a wire code, if known.
    pub fn from_wire(code: u8) -> Option<FrameType> {
        FrameType::ALL.into_iter().find(|t| *t as u8 == code)
    }

    /// Flags this type may carry; any other bit set is a protocol error.
    pub fn allowed_flags(self) -> u8 {
        match self {
            FrameType::Ping => flags::ACK,
            FrameType::Register => flags::REMOVE,
            FrameType::Data => flags::FIN,
            FrameType::Request | FrameType::Response => flags::MORE | flags::CONT,
            FrameType::Message => flags::MORE | flags::CONT | flags::ACK_WANTED,
            _ => 0,
        }
    }

    /// Whether the header's id field is meaningful for this type. Where it is not, it must be
    /// zero.
    pub(crate) fn id_use(self) -> IdUse {
        match self {
            FrameType::Hello
            | FrameType::Refuse
            | FrameType::GoAway
            | FrameType::Register
            | FrameType::MaxStreams
            | FrameType::MessageWindow => IdUse::Zero,
            FrameType::Welcome | FrameType::Ping | FrameType::Window => IdUse::Any,
            _ => IdUse::NonZero,
        }
    }

    /// True for HELLO and WELCOME, whose size limit is the handshake limit.
    pub(crate) fn is_handshake(self) -> bool {
        matches!(self, FrameType::Hello | FrameType::Welcome)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdUse {
    Zero,
    NonZero,
    Any,
}

/// Flag bits (`docs/PROTOCOL.md#frame-types`).
pub mod flags {
    /// PING: this is the acknowledgement.
    pub const ACK: u8 = 0x01;
    /// DATA: last bytes of the sender's half.
    pub const FIN: u8 = 0x01;
    /// REGISTER: remove the names instead of adding them.
    pub const REMOVE: u8 = 0x01;
    /// REQUEST / RESPONSE / MESSAGE: more fragments of this body follow.
    pub const MORE: u8 = 0x01;
    /// REQUEST / RESPONSE / MESSAGE: a continuation; the payload is body bytes only.
    pub const CONT: u8 = 0x02;
    /// MESSAGE head: the publisher wants a done/error acknowledgement.
    pub const ACK_WANTED: u8 = 0x04;
}

/// What a name registration names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegistrationKind {
    /// An RPC method this peer answers.
    Method,
    /// A message topic this peer receives.
    Topic,
    /// A gateway hook this peer provides or subscribes to (e.g. edge-id assignment).
    Hook,
}

impl RegistrationKind {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            RegistrationKind::Method => 1,
            RegistrationKind::Topic => 2,
            RegistrationKind::Hook => 3,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Option<RegistrationKind> {
        match v {
            1 => Some(RegistrationKind::Method),
            2 => Some(RegistrationKind::Topic),
            3 => Some(RegistrationKind::Hook),
            _ => None,
        }
    }
}

/// One registered name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    /// Method, topic or hook.
    pub kind: RegistrationKind,
    /// The name.
    pub name: Name,
}

/// Who a client is and what it offers: everything in HELLO except the settings, which come
/// from the connection's [`Config`](crate::Config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Service or edge.
    pub role: Role,
    /// The id the client asks for (an edge's previous id, say), if any.
    pub requested_id: Option<u64>,
    /// The service name (empty for edges).
    pub name: Name,
    /// The application's version, e.g. `1.4.2` (may be empty).
    pub version: Name,
    /// An opaque authentication token (may be empty).
    pub token: Bytes,
    /// Opaque metadata (the gateway hands it to the edge-id and auth hooks).
    pub metadata: Bytes,
    /// Methods, topics and hooks registered from the start.
    pub registrations: Vec<Registration>,
}

impl ClientInfo {
    /// A client with the given role and nothing else: no name, id, token or metadata.
    pub fn new(role: Role) -> Self {
        ClientInfo {
            role,
            requested_id: None,
            name: Name::EMPTY,
            version: Name::EMPTY,
            token: Bytes::new(),
            metadata: Bytes::new(),
            registrations: Vec::new(),
        }
    }
}

/// The client's handshake (`docs/PROTOCOL.md#hello`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Identity, credentials, metadata and registrations.
    pub info: ClientInfo,
    /// What the client is willing to receive.
    pub settings: Settings,
}

/// The server's acceptance (`docs/PROTOCOL.md#welcome`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The id the server assigned to the client (edge id or service id).
    pub assigned_id: u64,
    /// What the server is willing to receive.
    pub settings: Settings,
    /// Opaque server metadata (e.g. gateway name).
    pub metadata: Bytes,
}

/// Shutdown notice (`docs/PROTOCOL.md#goaway`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// `OK` for a graceful drain, an error code for a fatal close.
    pub code: ErrorCode,
    /// Highest stream id opened by the receiver that the sender will still process.
    pub last_stream: u64,
    /// Highest request id from the receiver that the sender will still process.
    pub last_request: u64,
    /// Highest message id from the receiver that the sender will still process.
    pub last_message: u64,
    /// Human-readable reason.
    pub reason: String,
}

/// Who a stream, request or message is for or from (`docs/PROTOCOL.md#addresses`).
///
/// On a link from a client to the gateway these name the *target*; on a link from the
/// gateway to a client they name the *source*.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    /// An edge id (0 = none).
    pub peer_id: u64,
    /// A service name (empty = none).
    pub peer_name: Name,
}

/// First fragment of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Target (client → gateway) or source (gateway → client).
    pub address: Address,
    /// The method to call.
    pub method: Name,
    /// Relative timeout in milliseconds (0 = none).
    pub timeout_ms: u32,
    /// Length of the whole body.
    pub total_len: u32,
}

/// First fragment of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// `OK`, or an error code whose body is the error text.
    pub status: ErrorCode,
    /// Length of the whole body.
    pub total_len: u32,
}

/// First fragment of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHead {
    /// Target (client → gateway) or source (gateway → client).
    pub address: Address,
    /// The topic (may be empty for service → edge messages).
    pub topic: Name,
    /// Whether the publisher awaits a done/error acknowledgement.
    pub ack_wanted: bool,
    /// Relative timeout in milliseconds (0 = none).
    pub timeout_ms: u32,
    /// Length of the whole body.
    pub total_len: u32,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// HELLO.
    Hello(Box<Hello>),
    /// WELCOME.
    Welcome(Welcome),
    /// REFUSE: handshake rejected.
    Refuse {
        /// Why.
        code: ErrorCode,
        /// Human-readable reason.
        reason: String,
    },
    /// PING or its acknowledgement.
    Ping {
        /// This is the acknowledgement.
        ack: bool,
        /// Echoed back unchanged.
        opaque: u64,
    },
    /// GOAWAY.
    GoAway(GoAway),
    /// REGISTER.
    Register {
        /// Remove instead of add.
        remove: bool,
        /// The names.
        entries: Vec<Registration>,
    },
    /// MAX_STREAMS: the receiver may open streams up to this cumulative count.
    MaxStreams {
        /// Cumulative stream count.
        max: u64,
    },
    /// WINDOW: stream-data credit.
    Window {
        /// The stream, or `None` for the connection.
        stream: Option<StreamId>,
        /// Bytes of credit added (non-zero).
        increment: u32,
    },
    /// MESSAGE_WINDOW: body credit.
    MessageWindow {
        /// Bytes of credit added (non-zero).
        increment: u32,
    },
    /// OPEN.
    Open {
        /// The new stream.
        id: StreamId,
        /// Target or source.
        address: Address,
        /// Opaque open metadata (e.g. which exposed service).
        metadata: Bytes,
    },
    /// ACCEPT.
    Accept {
        /// The stream.
        id: StreamId,
        /// Opaque metadata for the opener.
        metadata: Bytes,
    },
    /// DATA.
    Data {
        /// The stream.
        id: StreamId,
        /// Last bytes of the sender's half.
        fin: bool,
        /// The bytes.
        payload: Bytes,
    },
    /// RESET.
    Reset {
        /// The stream.
        id: StreamId,
        /// Why.
        code: ErrorCode,
        /// Human-readable reason.
        reason: String,
    },
    /// STOP.
    Stop {
        /// The stream.
        id: StreamId,
        /// Code the peer should reset with.
        code: ErrorCode,
    },
    /// REQUEST (head when `head` is set, else a continuation).
    Request {
        /// The request.
        id: RequestId,
        /// More fragments follow.
        more: bool,
        /// Present on the first fragment only.
        head: Option<Box<RequestHead>>,
        /// This fragment's body bytes.
        body: Bytes,
    },
    /// RESPONSE (head when `head` is set, else a continuation).
    Response {
        /// The request answered.
        id: RequestId,
        /// More fragments follow.
        more: bool,
        /// Present on the first fragment only.
        head: Option<ResponseHead>,
        /// This fragment's body bytes.
        body: Bytes,
    },
    /// CANCEL.
    Cancel {
        /// The request.
        id: RequestId,
    },
    /// MESSAGE (head when `head` is set, else a continuation).
    Message {
        /// The message.
        id: MessageId,
        /// More fragments follow.
        more: bool,
        /// Present on the first fragment only.
        head: Option<Box<MessageHead>>,
        /// This fragment's body bytes.
        body: Bytes,
    },
    /// ACK.
    Ack {
        /// The message.
        id: MessageId,
        /// `OK` = done; anything else = error.
        code: ErrorCode,
        /// Error text (empty for done).
        text: String,
    },
    /// MESSAGE_CANCEL.
    MessageCancel {
        /// The message.
        id: MessageId,
    },
}

impl Frame {
    /// This frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Welcome(_) => FrameType::Welcome,
            Frame::Refuse { .. } => FrameType::Refuse,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::GoAway(_) => FrameType::GoAway,
            Frame::Register { .. } => FrameType::Register,
            Frame::MaxStreams { .. } => FrameType::MaxStreams,
            Frame::Window { .. } => FrameType::Window,
            Frame::MessageWindow { .. } => FrameType::MessageWindow,
            Frame::Open { .. } => FrameType::Open,
            Frame::Accept { .. } => FrameType::Accept,
            Frame::Data { .. } => FrameType::Data,
            Frame::Reset { .. } => FrameType::Reset,
            Frame::Stop { .. } => FrameType::Stop,
            Frame::Request { .. } => FrameType::Request,
            Frame::Response { .. } => FrameType::Response,
            Frame::Cancel { .. } => FrameType::Cancel,
            Frame::Message { .. } => FrameType::Message,
            Frame::Ack { .. } => FrameType::Ack,
            Frame::MessageCancel { .. } => FrameType::MessageCancel,
        }
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (excluding the header).
    pub len: u32,
    /// Raw type code.
    pub ty: u8,
    /// Raw flags.
    pub flags: u8,
    /// Stream, request or message id (meaning depends on the type).
    pub id: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`, or `None` if fewer than [`HEADER_LEN`] bytes
    /// are there.
    pub fn peek(buf: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let [l0, l1, l2, ty, flags, i0, i1, i2, i3, i4, i5, i6, i7] = *h;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            ty,
            flags,
            id: u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        })
    }

    /// The header's wire bytes. `len` must fit 24 bits (the encoder guarantees it).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [_, l0, l1, l2] = self.len.to_be_bytes();
        let [i0, i1, i2, i3, i4, i5, i6, i7] = self.id.to_be_bytes();
        [
            l0, l1, l2, self.ty, self.flags, i0, i1, i2, i3, i4, i5, i6, i7,
        ]
    }
}
