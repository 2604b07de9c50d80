//! The task that moves one connection's bytes: transport → core → transport, plus its one
//! timer. Written once for every runtime (see [`crate::runtime`]).
//!
//! Each wake-up does a bounded amount of work (firezone's event-loop budget), then yields,
//! so a fast peer cannot starve the other tasks of the runtime.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use proto_core::ErrorCode;
use proto_core::transmit::TransmitBuf;

use crate::runtime::{BoxTransport, Timer};
use crate::state::Shared;

/// Rounds of read / process / write per wake-up before the driver yields.
const ROUNDS_PER_WAKE: usize = 16;

/// The largest read (a busy connection's buffer).
const READ_BUFFER: usize = 64 * 1024;

/// The first read of each wake-up goes through this much stack.
const SMALL_READ: usize = 4 * 1024;

/// The buffers one wake-up reads into. Reads start in a small stack buffer, which costs
/// almost nothing to zero (what an RPC's wake-up needs); a read that fills it switches the
/// rest of the wake-up to a 64 KiB buffer, zeroed once (what a bulk transfer needs). Nothing
/// outlives the wake-up, so an idle connection holds no read buffer.
struct ReadBuffers {
    small: [u8; SMALL_READ],
    large: Vec<u8>,
}

impl Default for ReadBuffers {
    fn default() -> Self {
        ReadBuffers {
            small: [0; SMALL_READ],
            large: Vec::new(),
        }
    }
}

impl ReadBuffers {
    fn get(&mut self) -> &mut [u8] {
        if self.large.is_empty() {
            &mut self.small
        } else {
            &mut self.large
        }
    }

    fn grow(&mut self) {
        if self.large.is_empty() {
            self.large = vec![0; READ_BUFFER];
        }
    }
}

/// Most slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

/// Driver settings that the core does not know about: they concern the transport.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Bytes read from the transport at a time (default and maximum 64 KiB). The core's
    /// `max_input_buffer` bounds it further. Reads go through a buffer on the stack, so a
    /// connection holds no read buffer between reads.
    pub read_chunk: usize,
    /// Close the connection with `WRITE_STALL` when output is waiting and the transport
    /// has taken nothing for this long: the peer stopped reading (default 30 s).
    pub write_stall_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            read_chunk: 64 * 1024,
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// The future a runtime spawns for each connection.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    transport: BoxTransport,
    config: DriverConfig,
    /// Bytes read but not yet taken by the core (it takes less than it was offered only
    /// while it applies backpressure). Empty, and unallocated, almost always: reads go
    /// through a buffer on the stack, so an idle connection holds no read buffer.
    leftover: Vec<u8>,
    output: TransmitBuf,
    timer: Pin<Box<dyn Timer>>,
    read_closed: bool,
    /// A write failed: the transport takes no more output.
    write_failed: bool,
    /// Since when output has been waiting without the transport taking any.
    stalled_since: Option<Instant>,
    /// The last `poll_flush` returned `Pending`: retry it even when nothing new is written.
    flush_pending: bool,
    /// Once the core is finished: until when we still try to flush the last bytes.
    linger_until: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, transport: BoxTransport, config: DriverConfig) -> Self {
        let timer = shared.runtime.new_timer(Instant::now());
        Driver {
            shared,
            transport,
            leftover: Vec::new(),
            config,
            output: TransmitBuf::new(),
            timer,
            read_closed: false,
            write_failed: false,
            stalled_since: None,
            flush_pending: false,
            linger_until: None,
        }
    }

    /// One round: feed input, dispatch events, collect output. Returns whether the core
    /// is finished, its input capacity and its next deadline.
    fn process(&mut self, cx: &mut Context<'_>) -> (bool, usize, Option<Instant>, bool) {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        state.set_driver_waker(cx.waker());
        let now = shared.now();
        let mut progress = false;
        if !self.leftover.is_empty() {
            let taken = state.core.handle_input(now, &self.leftover);
            self.leftover.drain(..taken);
            if self.leftover.is_empty() {
                // Give the memory back: this buffer is only needed under backpressure.
                self.leftover = Vec::new();
            }
            progress |= taken > 0;
        }
        state.dispatch_events();
        if self.output.len() < self.output.soft_limit() {
            progress |= state.core.poll_transmit(now, &mut self.output) > 0;
            // Producing output can end the connection (a drain that finished when its last
            // response went out) or unblock senders: report that now, before the caller
            // sees `is_finished` and stops.
            state.dispatch_events();
        }
        // Handles may have been woken above and queued more; they wake us again.
        let deadline = state.core.poll_timeout().map(|(at, _)| shared.instant(at));
        (
            state.core.is_finished(),
            state.core.input_capacity(),
            deadline,
            progress,
        )
    }

    /// Writes as much output as the transport takes. Returns whether any was written.
    fn write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.write_failed {
            // Nothing can be sent any more; what the core still produces is dropped.
            self.output = TransmitBuf::new();
            return false;
        }
        let mut wrote = false;
        while !self.output.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .output
                .chunks()
                .take(MAX_IO_SLICES)
                .map(IoSlice::new)
                .collect();
            match self.transport.as_mut().poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => {
                    self.on_write_failed(None);
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    self.on_write_failed(Some(e));
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    self.output.advance(n);
                    wrote = true;
                }
                Poll::Pending => break,
            }
        }
        if wrote {
            self.stalled_since = None;
        } else if !self.output.is_empty() && self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
        // TCP ignores this; TLS and WebSocket transports need it to send a record. A flush
        // that could not finish holds bytes in the transport: retry it when the transport
        // wakes us, even if nothing new was written.
        if wrote || self.flush_pending {
            match self.transport.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush_pending = false,
                Poll::Ready(Err(e)) => {
                    self.on_write_failed(Some(e));
                    return true;
                }
                Poll::Pending => self.flush_pending = true,
            }
        }
        wrote
    }

    /// The transport refused a write: nothing more can be sent. What it already received is
    /// still read before the core hears of the end: the peer's last frames (its GOAWAY,
    /// say) may be waiting there, and they say how the connection ended.
    fn on_write_failed(&mut self, error: Option<io::Error>) {
        if let Some(e) = error {
            self.shared.lock().record_transport_error(&e);
        }
        self.write_failed = true;
        self.output = TransmitBuf::new();
        self.flush_pending = false;
        self.stalled_since = None;
    }

    /// No more input: tell the core.
    fn on_end_of_input(&mut self) {
        self.read_closed = true;
        let mut state = self.shared.lock();
        let now = self.shared.now();
        state.core.handle_eof(now);
    }

    /// Reads once if the core has room. Returns whether anything happened.
    fn read(&mut self, cx: &mut Context<'_>, capacity: usize, buffers: &mut ReadBuffers) -> bool {
        if self.read_closed || !self.leftover.is_empty() || capacity == 0 {
            return false;
        }
        let buf = buffers.get();
        let room = capacity.min(self.config.read_chunk).clamp(1, buf.len());
        match self.transport.as_mut().poll_read(cx, &mut buf[..room]) {
            Poll::Ready(Ok(0)) => {
                self.on_end_of_input();
                true
            }
            Poll::Ready(Err(e)) => {
                // A TLS alert ("certificate required"), a reset: why the end came.
                self.shared.lock().record_transport_error(&e);
                self.on_end_of_input();
                true
            }
            Poll::Ready(Ok(n)) => {
                let input = &buf[..n];
                let filled = n == buf.len();
                let mut state = self.shared.lock();
                let now = self.shared.now();
                let taken = state.core.handle_input(now, input);
                if let Some(rest) = input.get(taken..).filter(|rest| !rest.is_empty()) {
                    self.leftover = rest.to_vec();
                }
                drop(state);
                if filled {
                    // More is waiting: read the rest of this wake-up in large pieces.
                    buffers.grow();
                }
                true
            }
            // After a failed write, the end is whatever had arrived by now.
            Poll::Pending if self.write_failed => {
                self.on_end_of_input();
                true
            }
            Poll::Pending => false,
        }
    }

    /// Arms the timer for the earliest of the core's deadline and our stall deadline;
    /// returns true if it already passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>, core_deadline: Option<Instant>) -> bool {
        let stall_deadline = self
            .stalled_since
            .filter(|_| !self.output.is_empty())
            .map(|since| since + self.config.write_stall_timeout);
        let deadline = [core_deadline, stall_deadline, self.linger_until]
            .into_iter()
            .flatten()
            .min();
        let Some(deadline) = deadline else {
            return false;
        };
        self.timer.as_mut().reset(deadline);
        if self.timer.as_mut().poll_elapsed(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        if stall_deadline.is_some_and(|at| at <= now) {
            self.stalled_since = None;
            let mut state = self.shared.lock();
            let now = self.shared.now();
            state
                .core
                .close(now, ErrorCode::WRITE_STALL, "the peer stopped reading");
        } else {
            let mut state = self.shared.lock();
            let now = self.shared.now();
            state.core.handle_timeout(now);
        }
        true
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut buffers = ReadBuffers::default();
        for _ in 0..ROUNDS_PER_WAKE {
            let (finished, capacity, deadline, mut progress) = this.process(cx);
            progress |= this.write(cx);
            if finished {
                let linger = *this.linger_until.get_or_insert_with(|| {
                    let state = this.shared.lock();
                    Instant::now() + state.core.config().close_linger
                });
                if (this.output.is_empty() && !this.flush_pending) || Instant::now() >= linger {
                    // Best effort: the peer learns the end from our FIN.
                    let _ = this.transport.as_mut().poll_shutdown(cx);
                    this.shared.lock().on_finished();
                    return Poll::Ready(());
                }
            }
            progress |= this.read(cx, capacity, &mut buffers);
            progress |= this.poll_timer(cx, deadline);
            if !progress {
                if this.output.is_empty() {
                    // Going idle: drop the capacity a burst left in the output buffer, so
                    // an idle connection holds (almost) nothing.
                    this.output = TransmitBuf::new();
                }
                return Poll::Pending;
            }
        }
        // Out of budget with work left: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A runtime that shuts down drops its tasks; the handles must not wait forever.
        let mut state = self.shared.lock();
        if !state.finished {
            let now = self.shared.now();
            state.core.handle_eof(now);
            state.dispatch_events();
            state.on_finished();
        }
    }
}
