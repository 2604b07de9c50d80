//! The agent's loop: reconnects with backoff around sessions; a session dials, handshakes
//! and drives one connection and its pipes on one `mio::Poll` (see the crate docs).

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use proto_core::{ClientInfo, Connection, Role, Timestamp};

use crate::backoff::Backoff;
use crate::session::Session;
use crate::{AgentConfig, AgentError, AgentEvent};

/// The gateway socket's token; local sockets count up from 1.
pub(crate) const GATEWAY: Token = Token(0);
/// `stop` is checked at least this often.
pub(crate) const STOP_CHECK: Duration = Duration::from_millis(100);

/// How a session ended.
pub(crate) enum End {
    /// `stop` was set.
    Stopped,
    /// The connection failed or ended; `assigned` is the id of a session that connected.
    Lost {
        error: AgentError,
        assigned: Option<u64>,
    },
    /// Nothing more can be done (the poller failed).
    Fatal(AgentError),
}

/// The reconnect loop behind [`crate::run`].
pub(crate) fn run(
    config: AgentConfig,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(AgentEvent),
) -> Result<(), AgentError> {
    // Fails fast on a bad configuration or an oversized HELLO, before any dialing.
    Connection::client(config.config.clone(), hello(&config, None), Timestamp::ZERO)?;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut requested = config.requested_id;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match session(&config, requested, stop, emit) {
            End::Stopped => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Lost { error, assigned } => {
                if let Some(id) = assigned {
                    requested = Some(id);
                    backoff.reset();
                }
                emit(AgentEvent::Disconnected {
                    reason: error.to_string(),
                });
                if !config.reconnect {
                    return Err(error);
                }
                if sleep(backoff.next_delay(), stop) {
                    return Ok(());
                }
            }
        }
    }
}

/// What the agent says in HELLO.
fn hello(config: &AgentConfig, requested: Option<u64>) -> ClientInfo {
    let mut info = ClientInfo::new(Role::Edge);
    info.requested_id = requested;
    info.metadata = config.metadata.clone();
    info.token = config.token.clone();
    info
}

/// Sleeps for `delay`, checking `stop`; returns true if it was set.
fn sleep(delay: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(STOP_CHECK));
    }
}

/// One connection attempt and, if it connects, the session until it ends.
fn session(
    config: &AgentConfig,
    requested: Option<u64>,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(AgentEvent),
) -> End {
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(e) => return End::Fatal(AgentError::Poll(e)),
    };
    let connect_failed = |source| End::Lost {
        error: AgentError::Connect {
            addr: config.gateway,
            source,
        },
        assigned: None,
    };
    let sock = match dial(
        &mut poll,
        config.gateway,
        config.config.handshake_timeout,
        stop,
    ) {
        Ok(Some(sock)) => sock,
        Ok(None) => return End::Stopped,
        Err(Dial::Poll(e)) => return End::Fatal(AgentError::Poll(e)),
        Err(Dial::Connect(e)) => return connect_failed(e),
    };
    let epoch = Instant::now();
    let info = hello(config, requested);
    let conn = match Connection::client(config.config.clone(), info, Timestamp::ZERO) {
        Ok(conn) => conn,
        Err(e) => return End::Fatal(e.into()),
    };
    Session::new(config, emit, poll, sock, conn, epoch).run(stop)
}

/// Why dialing failed.
enum Dial {
    Poll(io::Error),
    Connect(io::Error),
}

/// A non-blocking connect to `addr`, waiting for writability (and `stop`) up to `timeout`.
/// `Ok(None)` if `stop` was set.
fn dial(
    poll: &mut Poll,
    addr: SocketAddr,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Option<TcpStream>, Dial> {
    let mut sock = TcpStream::connect(addr).map_err(Dial::Connect)?;
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry()
        .register(&mut sock, GATEWAY, interest)
        .map_err(Dial::Poll)?;
    let deadline = Instant::now() + timeout;
    let mut events = Events::with_capacity(4);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Dial::Connect(io::Error::new(
                ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
        match poll.poll(&mut events, Some(left.min(STOP_CHECK))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Dial::Poll(e)),
        }
        if events.is_empty() {
            continue;
        }
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => return Err(Dial::Connect(e)),
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotConnected => continue,
            Err(e) => return Err(Dial::Connect(e)),
        }
    }
    let _ = sock.set_nodelay(true);
    Ok(Some(sock))
}
