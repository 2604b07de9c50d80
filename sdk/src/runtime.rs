//! What a runtime crate supplies: spawning, timers and transports.
//!
//! Everything else (the driver loop, the SDK) is written once against these traits, the way
//! quinn's `Runtime` trait lets one endpoint run on tokio or smol. `tether-tokio` and
//! `tether-smol` implement them in about a hundred lines each.

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A future that can be sent to another thread.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An async runtime: spawning and timers.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: BoxFuture<()>);

    /// A timer that fires at `deadline`.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn Timer>>;
}

/// A resettable one-shot timer from [`Runtime::new_timer`].
pub trait Timer: Send + Debug {
    /// Moves the deadline (earlier or later); the timer fires again after a reset.
    fn reset(self: Pin<&mut Self>, deadline: Instant);

    /// Ready once the deadline has passed.
    fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A byte transport a connection runs over: TCP, TLS, WebSocket, an in-memory pipe.
///
/// Runtime crates adapt their own I/O traits to this one; the driver needs nothing more.
pub trait Transport: Send + 'static {
    /// Reads into `buf`; `Ok(0)` is the end of input.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>>;

    /// Writes from `bufs` in order, returning how many bytes were taken.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Flushes buffered writes (a TLS record, say).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the sending direction after a flush.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The remote address, where the transport has one.
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// A boxed transport.
pub type BoxTransport = Pin<Box<dyn Transport>>;

/// Opens a fresh transport to the gateway; called for the first connection and for every
/// reconnect.
pub type Dialer = Arc<dyn Fn() -> BoxFuture<io::Result<BoxTransport>> + Send + Sync>;

/// Makes a [`Dialer`] from an async function.
pub fn dialer<F, Fut>(dial: F) -> Dialer
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<BoxTransport>> + Send + 'static,
{
    Arc::new(move || Box::pin(dial()))
}

/// Waits until `deadline` on `runtime`.
pub(crate) async fn sleep_until(runtime: &dyn Runtime, deadline: Instant) {
    let mut timer = runtime.new_timer(deadline);
    std::future::poll_fn(|cx| timer.as_mut().poll_elapsed(cx)).await
}

/// Runs `future` until `deadline`; `None` if the deadline came first. The timer is only
/// created if the future does not finish on its first poll: calls and publishes on an
/// established connection, the common case, take no timer.
pub(crate) async fn until<T>(
    runtime: &dyn Runtime,
    deadline: Option<Instant>,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let Some(deadline) = deadline else {
        return Some(future.await);
    };
    let mut timer: Option<Pin<Box<dyn Timer>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        let timer = timer.get_or_insert_with(|| runtime.new_timer(deadline));
        timer.as_mut().poll_elapsed(cx).map(|()| None)
    })
    .await
}
