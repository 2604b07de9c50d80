//! One error type for every SDK operation, mirroring the wire taxonomy
//! (`docs/PROTOCOL.md#error-codes`), so an error keeps its kind across the gateway.

use std::io;

use proto_core::{ConnectionError, ErrorCode};

/// Why an SDK operation failed.
///
/// Errors that came over the wire keep their code ([`Error::code`]) and the text the other
/// side gave. [`Error::is_safe_to_retry`] says whether the operation was definitely not
/// processed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The addressed edge is not connected to the gateway.
    #[error("edge not online{}", suffix(.0))]
    EdgeNotOnline(String),
    /// No service with that name is connected.
    #[error("service not online{}", suffix(.0))]
    ServiceNotOnline(String),
    /// Nobody registered that method.
    #[error("method not found{}", suffix(.0))]
    MethodNotFound(String),
    /// Nobody takes that topic.
    #[error("topic not found{}", suffix(.0))]
    TopicNotFound(String),
    /// The operation's timeout elapsed; it may or may not have been processed.
    #[error("timed out{}", suffix(.0))]
    Timeout(String),
    /// The operation was cancelled.
    #[error("cancelled{}", suffix(.0))]
    Cancelled(String),
    /// Too much in flight; nothing was done. Retry later.
    #[error("busy{}", suffix(.0))]
    Busy(String),
    /// The receiver refused the stream, request or message.
    #[error("refused{}", suffix(.0))]
    Refused(String),
    /// A body, name or metadata is larger than the receiver accepts.
    #[error("too large{}", suffix(.0))]
    TooLarge(String),
    /// Authentication or authorisation failed.
    #[error("unauthorized{}", suffix(.0))]
    Unauthorized(String),
    /// The peer is shutting down and did not take this operation.
    #[error("going away{}", suffix(.0))]
    GoingAway(String),
    /// The handler answered with an application error; the text says what.
    #[error("application error: {0}")]
    Application(String),
    /// Any other code the peer sent (`NOT_FOUND`, `BAD_REQUEST`, `INTERNAL`, a newer code).
    #[error("{code}{}", suffix(.text))]
    Status {
        /// The wire code.
        code: ErrorCode,
        /// The peer's explanation.
        text: String,
    },
    /// Not connected to the gateway, and no connection came up within the operation's
    /// timeout. Nothing was sent.
    #[error("not connected to the gateway{}", suffix(.0))]
    NotConnected(String),
    /// The connection ended while the operation was in flight; its outcome is unknown.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The transport failed (a TLS alert such as "certificate required", a connection
    /// reset) while operations were in flight; their outcome is unknown.
    #[error("connection lost: the transport failed: {0}")]
    TransportFailed(String),
    /// The client or connection was closed by this program.
    #[error("closed")]
    Closed,
    /// The argument is invalid (a name too long or empty, a body over the size limit).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

impl Error {
    /// An application error with `text`, for handlers to return.
    pub fn application(text: impl Into<String>) -> Error {
        Error::Application(text.into())
    }

    /// The error for a non-`OK` wire `code` with the peer's `text`.
    pub fn from_status(code: ErrorCode, text: impl Into<String>) -> Error {
        let text = text.into();
        match code {
            ErrorCode::APPLICATION_ERROR => Error::Application(text),
            ErrorCode::EDGE_NOT_ONLINE => Error::EdgeNotOnline(text),
            ErrorCode::SERVICE_NOT_ONLINE => Error::ServiceNotOnline(text),
            ErrorCode::METHOD_NOT_FOUND => Error::MethodNotFound(text),
            ErrorCode::TOPIC_NOT_FOUND => Error::TopicNotFound(text),
            ErrorCode::TIMEOUT => Error::Timeout(text),
            ErrorCode::CANCELLED => Error::Cancelled(text),
            ErrorCode::BUSY => Error::Busy(text),
            ErrorCode::REFUSED => Error::Refused(text),
            ErrorCode::TOO_LARGE => Error::TooLarge(text),
            ErrorCode::UNAUTHORIZED => Error::Unauthorized(text),
            ErrorCode::GOING_AWAY => Error::GoingAway(text),
            code => Error::Status { code, text },
        }
    }

    /// The wire code for this error, as a handler's response or an acknowledgement carries
    /// it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::EdgeNotOnline(_) => ErrorCode::EDGE_NOT_ONLINE,
            Error::ServiceNotOnline(_) => ErrorCode::SERVICE_NOT_ONLINE,
            Error::MethodNotFound(_) => ErrorCode::METHOD_NOT_FOUND,
            Error::TopicNotFound(_) => ErrorCode::TOPIC_NOT_FOUND,
            Error::Timeout(_) => ErrorCode::TIMEOUT,
            Error::Cancelled(_) => ErrorCode::CANCELLED,
            Error::Busy(_) => ErrorCode::BUSY,
            Error::Refused(_) => ErrorCode::REFUSED,
            Error::TooLarge(_) => ErrorCode::TOO_LARGE,
            Error::Unauthorized(_) => ErrorCode::UNAUTHORIZED,
            Error::GoingAway(_)
            | Error::NotConnected(_)
            | Error::Closed
            | Error::TransportFailed(_) => ErrorCode::GOING_AWAY,
            Error::Application(_) => ErrorCode::APPLICATION_ERROR,
            Error::Status { code, .. } => *code,
            Error::ConnectionLost(e) => e.code(),
            Error::InvalidArgument(_) => ErrorCode::BAD_REQUEST,
        }
    }

    /// The text that travels with [`code`](Self::code) when this error answers a request or
    /// a message.
    pub fn text(&self) -> String {
        match self {
            Error::EdgeNotOnline(t)
            | Error::ServiceNotOnline(t)
            | Error::MethodNotFound(t)
            | Error::TopicNotFound(t)
            | Error::Timeout(t)
            | Error::Cancelled(t)
            | Error::Busy(t)
            | Error::Refused(t)
            | Error::TooLarge(t)
            | Error::Unauthorized(t)
            | Error::GoingAway(t)
            | Error::Application(t)
            | Error::NotConnected(t)
            | Error::InvalidArgument(t)
            | Error::TransportFailed(t)
            | Error::Status { text: t, .. } => t.clone(),
            Error::ConnectionLost(e) => e.to_string(),
            Error::Closed => String::from("closed"),
        }
    }

    /// The operation was definitely not processed, so retrying it cannot run it twice
    /// (`docs/PROTOCOL.md#error-codes`, "Safe to retry").
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::NotConnected(_) => true,
            Error::ConnectionLost(_)
            | Error::TransportFailed(_)
            | Error::Closed
            | Error::InvalidArgument(_) => false,
            other => other.code().is_definitely_not_processed(),
        }
    }

    /// The error for a connection that ended: a refused handshake keeps the server's code.
    pub(crate) fn from_connection(e: &ConnectionError) -> Error {
        match e {
            ConnectionError::Refused { code, reason } => Error::from_status(*code, reason.clone()),
            // Our own graceful close; a local close for a cause (a write stall, a
            // violation we detected) is a lost connection that says why.
            ConnectionError::LocallyClosed { code, .. } if code.is_ok() => Error::Closed,
            other => Error::ConnectionLost(other.clone()),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::Refused(_) | Error::EdgeNotOnline(_) | Error::ServiceNotOnline(_) => {
                io::ErrorKind::ConnectionRefused
            }
            Error::Unauthorized(_) => io::ErrorKind::PermissionDenied,
            Error::NotConnected(_) => io::ErrorKind::NotConnected,
            Error::ConnectionLost(_) | Error::TransportFailed(_) | Error::GoingAway(_) => {
                io::ErrorKind::ConnectionAborted
            }
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            Error::Status {
                code: ErrorCode::NOT_FOUND,
                ..
            } => io::ErrorKind::NotFound,
            Error::Cancelled(_) | Error::Status { .. } => io::ErrorKind::ConnectionReset,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
