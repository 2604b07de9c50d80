//! Pipes one accepted stream and its local TCP connection both ways, in one task.
//!
//! Half-close maps one to one: the local side's EOF finishes the stream (FIN), the
//! stream's FIN shuts down the local socket's write half, and each direction goes on
//! until its own end. A reset from the peer (or the loss of the gateway) closes the local
//! socket; a local socket error resets the stream. Backpressure is end to end: a
//! direction reads its source only once the previous chunk was written to its sink.

use std::fmt;
use std::future::poll_fn;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use proto_core::ErrorCode;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use tether_smol::Stream;

/// Bytes read from the local socket at a time.
const LOCAL_READ: usize = 16 * 1024;
/// Most bytes taken from the stream at a time.
const STREAM_READ: usize = 64 * 1024;
/// Turns of the loop per poll before yielding to other tasks.
const BUDGET: usize = 64;

/// How a pipe ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Bytes from the local service to the stream's opener.
    pub(crate) sent: u64,
    /// Bytes from the stream's opener to the local service.
    pub(crate) received: u64,
    /// What went wrong, if anything (`None`: both directions ended with FIN).
    pub(crate) error: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => f.write_str("both sides finished")?,
            Some(error) => f.write_str(error)?,
        }
        write!(f, " (sent {} bytes, received {})", self.sent, self.received)
    }
}

struct Pipe {
    stream: Stream,
    local: TcpStream,
    /// Local → stream: a buffer and the part of it not yet written.
    up: Vec<u8>,
    up_start: usize,
    up_end: usize,
    up_open: bool,
    /// Stream → local: the chunk not yet written.
    down: Bytes,
    down_open: bool,
    outcome: Outcome,
}

/// Pipes until both directions are done (or one side fails); never fails itself.
pub(crate) async fn pipe(stream: Stream, local: TcpStream) -> Outcome {
    let mut pipe = Pipe {
        stream,
        local,
        up: vec![0; LOCAL_READ],
        up_start: 0,
        up_end: 0,
        up_open: true,
        down: Bytes::new(),
        down_open: true,
        outcome: Outcome {
            sent: 0,
            received: 0,
            error: None,
        },
    };
    poll_fn(|cx| pipe.poll(cx)).await;
    pipe.outcome
}

impl Pipe {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            let mut progress = false;
            if self.up_open {
                match self.poll_up(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(())) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if self.down_open {
                match self.poll_down(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(())) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if !self.up_open && !self.down_open {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy: let other streams run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One step local → stream: `Ready(Ok)` on progress, `Ready(Err)` when the pipe must
    /// end now.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.up_start == self.up_end {
            match Pin::new(&mut self.local).poll_read(cx, &mut self.up) {
                Poll::Ready(Ok(0)) => {
                    // The local service is done sending: FIN.
                    if let Err(e) = self.stream.finish() {
                        self.fail(format!("cannot finish the stream: {e}"));
                    }
                    self.up_open = false;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(n)) => {
                    self.up_start = 0;
                    self.up_end = n;
                }
                Poll::Ready(Err(e)) => {
                    let reason = format!("local read failed: {e}");
                    self.stream.reset(ErrorCode::CANCELLED, &reason);
                    self.stream.stop(ErrorCode::CANCELLED);
                    self.fail(reason);
                    return Poll::Ready(Err(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match self
            .stream
            .poll_write(cx, &self.up[self.up_start..self.up_end])
        {
            Poll::Ready(Ok(n)) => {
                self.up_start += n;
                self.outcome.sent += n as u64;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                // The opener stopped reading, or the gateway is gone: nothing more goes up.
                self.fail(format!("stream write failed: {e}"));
                self.up_open = false;
                let _ = self.local.shutdown(Shutdown::Read);
                Poll::Ready(Ok(()))
            }
            // Read something but cannot write it yet: that is progress for this turn.
            Poll::Pending => Poll::Pending,
        }
    }

    /// One step stream → local, as [`poll_up`](Self::poll_up).
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.down.is_empty() {
            match self.stream.poll_read_chunk(cx, STREAM_READ) {
                Poll::Ready(Ok(Some(chunk))) => self.down = chunk,
                Poll::Ready(Ok(None)) => {
                    // The opener is done sending: shut the local socket's write half.
                    let _ = self.local.shutdown(Shutdown::Write);
                    self.down_open = false;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    // Reset by the opener, or the gateway is gone: close the local socket.
                    self.fail(format!("stream ended: {e}"));
                    let _ = self.local.shutdown(Shutdown::Both);
                    return Poll::Ready(Err(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.local).poll_write(cx, &self.down) {
            Poll::Ready(Ok(n)) => {
                self.down.advance(n);
                self.outcome.received += n as u64;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                let reason = format!("local write failed: {e}");
                self.stream.stop(ErrorCode::CANCELLED);
                self.fail(reason);
                self.down = Bytes::new();
                self.down_open = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Keeps the first error as the reason.
    fn fail(&mut self, reason: String) {
        self.outcome.error.get_or_insert(reason);
    }
}
