//! One connected session: the gateway socket, the core and the pipes on one `mio::Poll`,
//! pumped until nothing moves, then waiting for readiness or the next deadline (see the
//! crate docs).

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use proto_core::ids::StreamId;
use proto_core::{
    Connection, ConnectionError, ErrorCode, Event, IncomingStream, StreamEvent, Timestamp,
    TransmitBuf,
};

use crate::agent::{End, GATEWAY, STOP_CHECK};
use crate::pipe::{Closed, ConnectState, Pipe};
use crate::{AgentConfig, AgentError, AgentEvent};

/// Output waiting this long without the gateway taking any closes the connection.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the final GOAWAY to flush after `stop`.
const STOP_FLUSH: Duration = Duration::from_secs(1);
/// Rounds of pumping per wake-up before the poller (and `stop`) is checked again.
const MAX_ROUNDS: usize = 64;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Most slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;
/// Longest service name quoted in a refusal.
const MAX_NAME_IN_REASON: usize = 256;

/// One connected session.
pub(crate) struct Session<'a> {
    config: &'a AgentConfig,
    emit: &'a mut dyn FnMut(AgentEvent),
    poll: Poll,
    sock: TcpStream,
    conn: Connection,
    /// The core's time zero.
    epoch: Instant,
    out: TransmitBuf,
    /// Bytes read from the gateway, `input[in_start..in_end]` not yet taken by the core.
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Edge-triggered readiness of the gateway socket, cleared by `WouldBlock`.
    gw_readable: bool,
    gw_writable: bool,
    /// The gateway socket is registered for writability.
    write_interest: bool,
    read_closed: bool,
    write_failed: bool,
    /// Since when output has been waiting without the gateway taking any.
    stalled_since: Option<Instant>,
    pipes: BTreeMap<Token, Pipe>,
    by_stream: BTreeMap<StreamId, Token>,
    next_token: usize,
    scratch: Vec<u8>,
    assigned: Option<u64>,
    lost: Option<ConnectionError>,
    /// `stop` was seen: return by then at the latest.
    stopping_until: Option<Instant>,
    /// The core finished: give up flushing by then.
    linger_until: Option<Instant>,
}

impl<'a> Session<'a> {
    /// A session over a connected gateway socket (registered as [`GATEWAY`] for
    /// readability and writability) and a fresh client core whose time zero is `epoch`.
    pub(crate) fn new(
        config: &'a AgentConfig,
        emit: &'a mut dyn FnMut(AgentEvent),
        poll: Poll,
        sock: TcpStream,
        conn: Connection,
        epoch: Instant,
    ) -> Session<'a> {
        Session {
            config,
            emit,
            poll,
            sock,
            conn,
            epoch,
            out: TransmitBuf::new(),
            input: vec![0; READ_CHUNK],
            in_start: 0,
            in_end: 0,
            gw_readable: true,
            gw_writable: true,
            write_interest: true,
            read_closed: false,
            write_failed: false,
            stalled_since: None,
            pipes: BTreeMap::new(),
            by_stream: BTreeMap::new(),
            next_token: 1,
            scratch: vec![0; READ_CHUNK],
            assigned: None,
            lost: None,
            stopping_until: None,
            linger_until: None,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.epoch.elapsed())
    }

    /// Runs until the connection ends or `stop` is set.
    pub(crate) fn run(mut self, stop: &AtomicBool) -> End {
        let mut events = Events::with_capacity(256);
        loop {
            let busy = self.pump();
            if self.stopping_until.is_none() && stop.load(Ordering::Relaxed) {
                let now = self.now();
                self.conn.close(now, ErrorCode::OK, "edge agent stopping");
                self.stopping_until = Some(Instant::now() + STOP_FLUSH);
                continue;
            }
            if self.conn.is_finished() {
                let linger = self.conn.config().close_linger;
                let until = *self
                    .linger_until
                    .get_or_insert_with(|| Instant::now() + linger);
                if self.out.is_empty() || Instant::now() >= until {
                    break;
                }
            }
            if self.stopping_until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if let Err(e) = self.update_interest() {
                return End::Fatal(AgentError::Poll(e));
            }
            let timeout = if busy { Duration::ZERO } else { self.timeout() };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return End::Fatal(AgentError::Poll(e)),
            }
            for event in &events {
                if event.token() == GATEWAY {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.gw_readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        self.gw_writable = true;
                    }
                } else if let Some(pipe) = self.pipes.get_mut(&event.token()) {
                    pipe.on_ready(event);
                }
            }
        }
        // FIN after the last bytes; discard what is still readable so that closing does not
        // turn into a reset that could overtake them.
        let _ = self.sock.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        for _ in 0..64 {
            if !matches!(self.sock.read(&mut sink), Ok(1..)) {
                break;
            }
        }
        let tokens: Vec<Token> = self.pipes.keys().copied().collect();
        for token in tokens {
            self.remove_pipe(token, true);
        }
        if self.stopping_until.is_some() {
            return End::Stopped;
        }
        let cause = self
            .lost
            .take()
            .or_else(|| self.conn.error().cloned())
            .unwrap_or(ConnectionError::TransportClosed);
        End::Lost {
            error: AgentError::ConnectionLost(cause),
            assigned: self.assigned,
        }
    }

    /// How long the poller may wait: until the core's deadline, the stall deadline or the
    /// linger deadline, and never longer than the stop check.
    fn timeout(&self) -> Duration {
        let mut wait = STOP_CHECK;
        if let Some((at, _)) = self.conn.poll_timeout() {
            wait = wait.min(at.saturating_duration_since(self.now()));
        }
        let now = Instant::now();
        if let Some(since) = self.stalled_since {
            wait = wait.min((since + WRITE_STALL_TIMEOUT).saturating_duration_since(now));
        }
        if let Some(until) = self.linger_until {
            wait = wait.min(until.saturating_duration_since(now));
        }
        wait
    }

    /// Writability interest on the gateway socket only while output waits.
    fn update_interest(&mut self) -> io::Result<()> {
        let want = !self.out.is_empty() && !self.write_failed;
        if want == self.write_interest {
            return Ok(());
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.poll
            .registry()
            .reregister(&mut self.sock, GATEWAY, interest)?;
        self.write_interest = want;
        Ok(())
    }

    /// Works until nothing moves. Returns true if it stopped because of its round budget
    /// with work left.
    fn pump(&mut self) -> bool {
        for _ in 0..MAX_ROUNDS {
            let now = self.now();
            let mut progress = self.feed(now);
            progress |= self.read_gateway(now);
            progress |= self.feed(now);
            self.check_timers(now);
            progress |= self.dispatch();
            progress |= self.pump_pipes();
            progress |= self.dispatch();
            progress |= self.flush(now);
            if !progress {
                return false;
            }
        }
        true
    }

    /// Hands buffered gateway bytes to the core, as many as it takes.
    fn feed(&mut self, now: Timestamp) -> bool {
        if self.in_start == self.in_end {
            return false;
        }
        let taken = self
            .conn
            .handle_input(now, &self.input[self.in_start..self.in_end]);
        self.in_start += taken;
        taken > 0
    }

    /// Reads from the gateway while it is readable, the buffer is empty and the core has
    /// room.
    fn read_gateway(&mut self, now: Timestamp) -> bool {
        if self.read_closed || self.in_start < self.in_end {
            return false;
        }
        // After a failed write, read what already arrived (the peer's last frames say how
        // the connection ended), then end the input.
        if !self.gw_readable && !self.write_failed {
            return false;
        }
        let room = self.conn.input_capacity().min(self.input.len());
        if room == 0 {
            return false;
        }
        match self.sock.read(&mut self.input[..room]) {
            Ok(0) => self.end_input(now),
            Ok(n) => {
                self.in_start = 0;
                self.in_end = n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.gw_readable = false;
                if !self.write_failed {
                    return false;
                }
                self.end_input(now);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.end_input(now),
        }
        true
    }

    fn end_input(&mut self, now: Timestamp) {
        self.read_closed = true;
        self.conn.handle_eof(now);
    }

    /// Handles due core timers and the write-stall deadline.
    fn check_timers(&mut self, now: Timestamp) {
        if self.conn.poll_timeout().is_some_and(|(at, _)| now >= at) {
            self.conn.handle_timeout(now);
        }
        if self
            .stalled_since
            .is_some_and(|since| since.elapsed() >= WRITE_STALL_TIMEOUT)
        {
            self.stalled_since = None;
            self.conn
                .close(now, ErrorCode::WRITE_STALL, "the gateway stopped reading");
        }
    }

    /// Appends the core's output and writes it to the gateway until it would block.
    fn flush(&mut self, now: Timestamp) -> bool {
        let mut progress = false;
        loop {
            if self.out.len() < self.out.soft_limit()
                && self.conn.poll_transmit(now, &mut self.out) > 0
            {
                progress = true;
            }
            if self.write_failed {
                // Nothing can be sent any more; what the core still produces is dropped.
                self.out = TransmitBuf::new();
                return progress;
            }
            if self.out.is_empty() || !self.gw_writable {
                break;
            }
            let slices: Vec<IoSlice<'_>> = self
                .out
                .chunks()
                .take(MAX_IO_SLICES)
                .map(IoSlice::new)
                .collect();
            match self.sock.write_vectored(&slices) {
                Ok(0) => self.on_write_failed(),
                Ok(n) => {
                    self.out.advance(n);
                    self.stalled_since = None;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.gw_writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.on_write_failed(),
            }
        }
        if self.out.is_empty() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
        progress
    }

    fn on_write_failed(&mut self) {
        self.write_failed = true;
        self.out = TransmitBuf::new();
        self.stalled_since = None;
    }

    /// Drains the core's events.
    fn dispatch(&mut self) -> bool {
        let mut progress = false;
        while let Some(event) = self.conn.poll_event() {
            progress = true;
            match event {
                Event::Connected(connected) => {
                    self.assigned = Some(connected.assigned_id);
                    (self.emit)(AgentEvent::Connected {
                        edge_id: connected.assigned_id,
                    });
                }
                Event::IncomingStreams => {
                    while let Some(incoming) = self.conn.next_incoming_stream() {
                        self.on_incoming(incoming);
                    }
                }
                Event::Stream(StreamEvent::Reset { id, .. } | StreamEvent::Stopped { id, .. }) => {
                    self.on_peer_abort(id);
                }
                Event::IncomingRequests => {
                    while let Some(req) = self.conn.rpc().next_request() {
                        let text = Bytes::from_static(b"this edge agent serves no methods");
                        let _ = self
                            .conn
                            .rpc()
                            .respond(req.id, ErrorCode::METHOD_NOT_FOUND, text);
                    }
                }
                Event::IncomingMessages => {
                    while let Some(msg) = self.conn.messages().next_message() {
                        if msg.ack_wanted {
                            let text = "this edge agent takes no messages";
                            let _ =
                                self.conn
                                    .messages()
                                    .ack(msg.id, ErrorCode::TOPIC_NOT_FOUND, text);
                        }
                    }
                }
                Event::ConnectionLost(error) => self.lost = Some(error),
                _ => {}
            }
        }
        progress
    }

    /// A stream from the gateway: refuse an unknown service, or start the local connect.
    fn on_incoming(&mut self, incoming: IncomingStream) {
        let name = String::from_utf8_lossy(&incoming.metadata).into_owned();
        let target = std::str::from_utf8(&incoming.metadata)
            .ok()
            .and_then(|name| self.config.exposes.get(name))
            .copied();
        let Some(local) = target else {
            let reason = format!("no exposed service {}", clip(&name));
            self.refuse(incoming.id, ErrorCode::NOT_FOUND, name, reason);
            return;
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        match Pipe::connect(
            name.clone(),
            local,
            incoming.id,
            token,
            self.poll.registry(),
        ) {
            Ok(pipe) => {
                self.pipes.insert(token, pipe);
                self.by_stream.insert(incoming.id, token);
            }
            Err(e) => {
                let reason = format!("connect to {local} failed: {e}");
                self.refuse(incoming.id, ErrorCode::REFUSED, name, reason);
            }
        }
    }

    fn refuse(&mut self, id: StreamId, code: ErrorCode, service: String, reason: String) {
        // Fails only if the peer withdrew the stream first.
        let _ = self.conn.refuse_stream(id, code, &reason);
        (self.emit)(AgentEvent::StreamRefused { service, reason });
    }

    /// The peer reset or stopped a stream: close its local socket.
    fn on_peer_abort(&mut self, id: StreamId) {
        let Some(&token) = self.by_stream.get(&id) else {
            return;
        };
        if let Some(pipe) = self.pipes.get_mut(&token)
            && pipe.is_open()
        {
            let Closed = pipe.peer_aborted(&mut self.conn);
            self.remove_pipe(token, true);
        }
    }

    /// Completes local connects and moves bytes through every pipe.
    fn pump_pipes(&mut self) -> bool {
        let mut progress = false;
        let mut done = Vec::new();
        let now = Instant::now();
        for (&token, pipe) in &mut self.pipes {
            if !pipe.is_open() {
                match pipe.poll_connect(now) {
                    ConnectState::Waiting => continue,
                    ConnectState::Connected => {
                        progress = true;
                        if self.conn.accept_stream(pipe.stream, Bytes::new()).is_err() {
                            // The peer withdrew the stream meanwhile.
                            done.push((token, false));
                            continue;
                        }
                        (self.emit)(AgentEvent::StreamOpened {
                            service: pipe.service.clone(),
                            local: pipe.local,
                        });
                    }
                    ConnectState::Failed(reason) => {
                        progress = true;
                        // The caller sees which exposed service failed, as with the smol agent.
                        let reason = format!("{}: {reason}", pipe.service);
                        let _ = self
                            .conn
                            .refuse_stream(pipe.stream, ErrorCode::REFUSED, &reason);
                        (self.emit)(AgentEvent::StreamRefused {
                            service: pipe.service.clone(),
                            reason,
                        });
                        done.push((token, false));
                        continue;
                    }
                }
            }
            match pipe.pump(&mut self.conn, &mut self.scratch) {
                Ok(moved) => progress |= moved,
                Err(Closed) => {
                    progress = true;
                    done.push((token, true));
                }
            }
        }
        for (token, report) in done {
            self.remove_pipe(token, report);
        }
        progress
    }

    /// Drops a pipe and its socket; reports the end of an opened stream if `report`.
    fn remove_pipe(&mut self, token: Token, report: bool) {
        let Some(mut pipe) = self.pipes.remove(&token) else {
            return;
        };
        self.by_stream.remove(&pipe.stream);
        pipe.deregister(self.poll.registry());
        if report && pipe.is_open() {
            (self.emit)(AgentEvent::StreamClosed {
                service: pipe.service,
            });
        }
    }
}

/// Cuts a peer-chosen name for quoting in a reason.
fn clip(name: &str) -> &str {
    if name.len() <= MAX_NAME_IN_REASON {
        return name;
    }
    let mut end = MAX_NAME_IN_REASON;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
