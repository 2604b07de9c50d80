//! The numeric error taxonomy shared by every hop.
//!
//! One `u16` space serves RPC response statuses, message acknowledgements, stream resets and
//! refusals, handshake rejections and GOAWAY. Because the gateway forwards codes unchanged, an
//! error keeps its kind across hops: an edge that calls a method no service registered sees
//! [`ErrorCode::METHOD_NOT_FOUND`], not a string.
//!
//! Spec: `docs/PROTOCOL.md#error-codes`.

use core::fmt;

/// A wire error code. Unknown values are preserved, so a newer peer's codes survive a hop
/// through an older gateway.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// The code's name as written in the spec, or `None` for a code this version does
            /// not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A short human description of the code.
            pub fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown error code",
                }
            }

            /// Every code this version defines, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode($value)),*];
        }
    };
}

codes! {
    /// Success: a response with a body, a `done` acknowledgement, a graceful GOAWAY.
    OK = 0x0000, "ok";
    /// The application answered with an error; the text says what.
    APPLICATION_ERROR = 0x0001, "application error";
    /// The addressed edge is not connected to the gateway.
    EDGE_NOT_ONLINE = 0x0002, "edge not online";
    /// No service with that name is connected.
    SERVICE_NOT_ONLINE = 0x0003, "service not online";
    /// No connected peer registered that method.
    METHOD_NOT_FOUND = 0x0004, "method not found";
    /// No connected peer or forwarder takes that topic.
    TOPIC_NOT_FOUND = 0x0005, "topic not found";
    /// The operation's relative timeout elapsed.
    TIMEOUT = 0x0006, "timeout";
    /// The caller cancelled the operation.
    CANCELLED = 0x0007, "cancelled";
    /// Too much in flight; nothing was done, retrying later is safe.
    BUSY = 0x0008, "busy";
    /// The receiver refused the stream, request or message.
    REFUSED = 0x0009, "refused";
    /// A body, metadata or name is larger than the receiver accepts.
    TOO_LARGE = 0x000A, "too large";
    /// Authentication or authorisation failed.
    UNAUTHORIZED = 0x000B, "unauthorized";
    /// The peer is shutting down and takes no new work.
    GOING_AWAY = 0x000C, "going away";
    /// An operator removed the session.
    KICKED = 0x000D, "kicked";
    /// A newer connection with the same id replaced this session.
    REPLACED = 0x000E, "replaced by a newer session";
    /// A bug or unexpected failure inside the sender.
    INTERNAL = 0x000F, "internal error";
    /// The request was malformed at the application level (bad argument).
    BAD_REQUEST = 0x0010, "bad request";
    /// The addressed target (for example an exposed service on an edge) does not exist.
    NOT_FOUND = 0x0011, "not found";
    /// The version requirement of the request matches no candidate.
    VERSION_MISMATCH = 0x0012, "no candidate with a matching version";
    /// The peer violated the protocol.
    PROTOCOL_ERROR = 0x0040, "protocol error";
    /// The peer sent more than its credit, or granted credit past the maximum window.
    FLOW_CONTROL_ERROR = 0x0041, "flow control error";
    /// A frame was longer than the receiver's maximum frame size.
    FRAME_SIZE_ERROR = 0x0042, "frame size error";
    /// The peer exceeded an advertised limit (streams, in-flight requests, registrations).
    LIMIT_EXCEEDED = 0x0043, "limit exceeded";
    /// The peer spent a budget of cheap-for-it, costly-for-us frames (pings, resets, ...).
    ENHANCE_YOUR_CALM = 0x0044, "enhance your calm: too many control frames";
    /// Nothing was received for the idle timeout.
    IDLE_TIMEOUT = 0x0045, "idle timeout";
    /// A keepalive ping went unanswered.
    KEEPALIVE_TIMEOUT = 0x0046, "keepalive timeout";
    /// The handshake did not complete in time.
    HANDSHAKE_TIMEOUT = 0x0047, "handshake timeout";
    /// The peers share no protocol version, or the peer does not speak Tether.
    INCOMPATIBLE = 0x0048, "incompatible protocol version";
    /// Graceful shutdown did not finish before its deadline.
    DRAIN_TIMEOUT = 0x0049, "drain timeout";
    /// A driver closed the connection because its writes made no progress for too long: the
    /// peer stopped reading. (The core has no view of the transport; drivers send this.)
    WRITE_STALL = 0x004A, "write stalled";
}

impl ErrorCode {
    /// True for [`ErrorCode::OK`].
    pub fn is_ok(self) -> bool {
        self == ErrorCode::OK
    }

    /// True when a retry of the same operation cannot have been executed twice: the receiver
    /// definitely did not process it (edge or service not online, method, topic or target
    /// not found, busy, refused, too large, unauthorized, going away, version mismatch).
    pub fn is_definitely_not_processed(self) -> bool {
        matches!(
            self,
            ErrorCode::EDGE_NOT_ONLINE
                | ErrorCode::SERVICE_NOT_ONLINE
                | ErrorCode::METHOD_NOT_FOUND
                | ErrorCode::TOPIC_NOT_FOUND
                | ErrorCode::BUSY
                | ErrorCode::REFUSED
                | ErrorCode::TOO_LARGE
                | ErrorCode::UNAUTHORIZED
                | ErrorCode::GOING_AWAY
                | ErrorCode::NOT_FOUND
                | ErrorCode::VERSION_MISMATCH
        )
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "ErrorCode({:#06x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#06x})", self.description(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_unique_value_and_name() {
        let mut seen = alloc::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.0), "duplicate value {:#x}", code.0);
            assert!(code.name().is_some());
        }
        assert_eq!(ErrorCode::ALL.len(), 30);
    }

    #[test]
    fn unknown_codes_are_preserved_and_printable() {
        let code = ErrorCode(0x7777);
        assert_eq!(code.name(), None);
        assert_eq!(alloc::format!("{code:?}"), "ErrorCode(0x7777)");
        assert_eq!(code.description(), "unknown error code");
    }

    #[test]
    fn display_names_the_kind() {
        assert_eq!(
            alloc::format!("{}", ErrorCode::EDGE_NOT_ONLINE),
            "edge not online (0x0002)"
        );
    }
}
