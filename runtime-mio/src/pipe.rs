//! One stream ↔ local socket pipe: the local connect, then bytes both ways with
//! backpressure, half-close and resets.
//!
//! Readiness is edge-triggered: a mio event sets `readable`/`writable`, and only a read or
//! write that returns `WouldBlock` clears them. A pipe holds at most one chunk per
//! direction: `up` (read from the socket, not yet taken by the stream) and `down` (read
//! from the stream, not yet written to the socket); it takes no more until that chunk is
//! gone.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use proto_core::ids::StreamId;
use proto_core::{Connection, ErrorCode, ReadError, WriteError};

/// How long a local connect may take before the stream is refused.
pub(crate) const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes taken from the stream at a time for the local socket.
const DOWN_CHUNK: usize = 64 * 1024;

/// The pipe is over: its socket must be dropped (the stream was reset, stopped or
/// finished as needed before this is returned).
#[derive(Debug)]
pub(crate) struct Closed;

/// Where a local connect stands.
#[derive(Debug)]
pub(crate) enum ConnectState {
    /// Still in progress.
    Waiting,
    /// Connected: accept the stream.
    Connected,
    /// Failed: refuse the stream with this reason.
    Failed(String),
}

/// One accepted (or being connected) stream and its local socket.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The exposed service's name.
    pub(crate) service: String,
    /// The local address.
    pub(crate) local: SocketAddr,
    /// The stream.
    pub(crate) stream: StreamId,
    sock: TcpStream,
    /// While the local connect is in progress: since when.
    connecting_since: Option<Instant>,
    /// The socket may have bytes (or EOF, or an error) to read.
    readable: bool,
    /// The socket may take bytes.
    writable: bool,
    /// Read from the socket, not yet taken by the stream.
    up: Bytes,
    /// The socket reached EOF (FIN follows once `up` is taken).
    local_eof: bool,
    /// Our sending half ended (FIN or reset): the socket is not read any more.
    up_done: bool,
    /// Read from the stream, not yet written to the socket.
    down: Bytes,
    /// The peer's sending half ended and was passed on (socket shut down for writing).
    down_done: bool,
}

impl Pipe {
    /// Starts a non-blocking connect to `local` and registers it under `token`.
    pub(crate) fn connect(
        service: String,
        local: SocketAddr,
        stream: StreamId,
        token: Token,
        registry: &Registry,
    ) -> io::Result<Pipe> {
        let mut sock = TcpStream::connect(local)?;
        registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Pipe {
            service,
            local,
            stream,
            sock,
            connecting_since: Some(Instant::now()),
            readable: false,
            writable: false,
            up: Bytes::new(),
            local_eof: false,
            up_done: false,
            down: Bytes::new(),
            down_done: false,
        })
    }

    /// True once the local connect succeeded (the stream was accepted).
    pub(crate) fn is_open(&self) -> bool {
        self.connecting_since.is_none()
    }

    /// Records a readiness event for the socket.
    pub(crate) fn on_ready(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
    }

    /// Checks the local connect: connected, failed, or still waiting (timing out after
    /// [`LOCAL_CONNECT_TIMEOUT`]).
    pub(crate) fn poll_connect(&mut self, now: Instant) -> ConnectState {
        let Some(since) = self.connecting_since else {
            return ConnectState::Connected;
        };
        let failed =
            |e: io::Error| ConnectState::Failed(format!("cannot connect to {}: {e}", self.local));
        if self.writable {
            match self.sock.take_error() {
                Ok(Some(e)) | Err(e) => return failed(e),
                Ok(None) => {}
            }
            match self.sock.peer_addr() {
                Ok(_) => {
                    self.connecting_since = None;
                    // The socket may hold bytes already; try a read.
                    self.readable = true;
                    let _ = self.sock.set_nodelay(true);
                    return ConnectState::Connected;
                }
                // Not connected yet: a spurious wake-up; wait for the next event.
                Err(e) if e.kind() == ErrorKind::NotConnected => self.writable = false,
                Err(e) => return failed(e),
            }
        }
        if now.saturating_duration_since(since) >= LOCAL_CONNECT_TIMEOUT {
            return ConnectState::Failed(format!(
                "cannot connect to {}: timed out after {} s",
                self.local,
                LOCAL_CONNECT_TIMEOUT.as_secs()
            ));
        }
        ConnectState::Waiting
    }

    /// Moves what can be moved in both directions. `Ok(true)` if anything moved; `Err`
    /// when the pipe is over and its socket should be dropped.
    pub(crate) fn pump(
        &mut self,
        conn: &mut Connection,
        scratch: &mut [u8],
    ) -> Result<bool, Closed> {
        if !self.is_open() {
            return Ok(false);
        }
        let mut progress = self.pump_up(conn, scratch)?;
        progress |= self.pump_down(conn)?;
        if self.up_done && self.down_done && self.down.is_empty() {
            return Err(Closed);
        }
        Ok(progress)
    }

    /// Local socket → stream, only while the stream can take bytes.
    fn pump_up(&mut self, conn: &mut Connection, scratch: &mut [u8]) -> Result<bool, Closed> {
        let mut progress = false;
        while !self.up_done {
            let Ok(mut stream) = conn.stream(self.stream) else {
                return Err(self.abort(conn, ErrorCode::CANCELLED, ""));
            };
            if !self.up.is_empty() {
                match stream.write_bytes(&mut self.up) {
                    Ok(n) if n > 0 => progress = true,
                    // Wait for `Writable` (the pump runs again after every event).
                    Ok(_) | Err(WriteError::Blocked) => break,
                    // Our half is gone (stopped by the peer, or the connection closed).
                    Err(_) => return Err(self.abort(conn, ErrorCode::CANCELLED, "")),
                }
                continue;
            }
            if self.local_eof {
                let _ = stream.finish();
                self.up_done = true;
                progress = true;
                break;
            }
            let room = usize::try_from(stream.writable()).unwrap_or(usize::MAX);
            if !self.readable || room == 0 {
                break;
            }
            let want = room.min(scratch.len());
            match self.sock.read(&mut scratch[..want]) {
                Ok(0) => self.local_eof = true,
                Ok(n) => self.up = Bytes::copy_from_slice(&scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.local_failed(conn, &e)),
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Stream → local socket: the next chunk is taken from the stream only once the last
    /// one was written.
    fn pump_down(&mut self, conn: &mut Connection) -> Result<bool, Closed> {
        let mut progress = false;
        loop {
            if !self.down.is_empty() {
                if !self.writable {
                    break;
                }
                match self.sock.write(&self.down) {
                    Ok(0) => {
                        let e = io::Error::from(ErrorKind::WriteZero);
                        return Err(self.local_failed(conn, &e));
                    }
                    Ok(n) => {
                        self.down.advance(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.writable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.local_failed(conn, &e)),
                }
                continue;
            }
            if self.down_done {
                break;
            }
            let Ok(mut stream) = conn.stream(self.stream) else {
                return Err(self.abort(conn, ErrorCode::CANCELLED, ""));
            };
            match stream.read(DOWN_CHUNK) {
                Ok(Some(chunk)) => {
                    self.down = chunk;
                    progress = true;
                }
                Ok(None) => {
                    // FIN: pass the half-close on. The socket may already be gone on the
                    // local side; that shows up on its next read or write.
                    let _ = self.sock.shutdown(Shutdown::Write);
                    self.down_done = true;
                    progress = true;
                }
                Err(ReadError::Blocked) => break,
                // Reset by the peer, or the connection ended: close the local socket.
                Err(_) => return Err(self.peer_aborted(conn)),
            }
        }
        Ok(progress)
    }

    /// The peer reset or stopped the stream: end what is left of our side and close the
    /// local socket.
    pub(crate) fn peer_aborted(&mut self, conn: &mut Connection) -> Closed {
        self.abort(conn, ErrorCode::CANCELLED, "the peer aborted the stream")
    }

    /// The local socket failed: reset the stream with the error.
    fn local_failed(&mut self, conn: &mut Connection, e: &io::Error) -> Closed {
        let reason = format!("local socket {}: {e}", self.local);
        self.abort(conn, ErrorCode::CANCELLED, &reason)
    }

    /// Ends both halves that are still open (reset ours, stop the peer's), dropping what
    /// is buffered; the caller drops the socket.
    pub(crate) fn abort(&mut self, conn: &mut Connection, code: ErrorCode, reason: &str) -> Closed {
        if let Ok(mut stream) = conn.stream(self.stream) {
            if !self.up_done {
                let _ = stream.reset(code, reason);
            }
            if !self.down_done {
                let _ = stream.stop(code);
            }
        }
        self.up_done = true;
        self.down_done = true;
        self.up = Bytes::new();
        self.down = Bytes::new();
        Closed
    }

    /// Removes the socket from the poller (dropping it closes it anyway).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }
}
