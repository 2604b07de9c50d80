//! Byte streams: [`Stream`] (with tokio and futures-io `AsyncRead`/`AsyncWrite` behind
//! features) and [`IncomingStream`], a stream the peer opened that awaits a decision.

use std::future::poll_fn;
use std::io;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use proto_core::ids::StreamId;
use proto_core::{Address, ErrorCode, OpenError, OpenStream, ReadError, StreamError, WriteError};

use crate::connection::Connection;
use crate::error::Error;
use crate::runtime::until;
use crate::state::{State, StreamSlot};

impl Connection {
    /// Opens a stream and waits until the peer accepts it (returning the stream and the
    /// acceptor's metadata) or refuses it (with the peer's code, e.g. `NOT_FOUND`).
    ///
    /// Waits up to `timeout` (if any) for stream credit when the peer's concurrent-stream
    /// limit is reached, and for the peer's answer.
    pub async fn open_stream(
        &self,
        open: OpenStream,
        timeout: Option<std::time::Duration>,
    ) -> Result<(Stream, Bytes), Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let runtime = &*self.shared.runtime;
        let id = loop {
            let generation = {
                let mut state = self.shared.lock();
                if state.is_ending() {
                    return Err(state.lost_error());
                }
                match state.core.open_stream(open.clone()) {
                    Ok(id) => {
                        state.streams.insert(id, StreamSlot::default());
                        state.wake_driver();
                        break id;
                    }
                    Err(OpenError::StreamLimit) => state.unblocked_generation,
                    Err(OpenError::GoingAway) => {
                        return Err(Error::GoingAway(String::from(
                            "the connection is shutting down",
                        )));
                    }
                    Err(OpenError::MetadataTooLarge { .. }) => {
                        return Err(Error::TooLarge(String::from("open metadata")));
                    }
                    Err(_) => return Err(state.lost_error()),
                }
            };
            if until(runtime, deadline, self.unblocked_since(generation))
                .await
                .is_none()
            {
                return Err(Error::Timeout(String::from(
                    "the peer's stream limit did not clear within the timeout",
                )));
            }
        };
        // From here the stream exists: dropping it (on error or cancellation) resets it.
        let stream = Stream::new(self.clone(), id, open.address);
        let answer = poll_fn(|cx| {
            let mut state = self.shared.lock();
            match state.streams.get_mut(&id) {
                Some(slot) => match slot.opened.result.take() {
                    Some(result) => Poll::Ready(result),
                    None => {
                        slot.opened.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
                None => Poll::Ready(Err(state.lost_error())),
            }
        });
        match until(runtime, deadline, answer).await {
            Some(Ok(metadata)) => Ok((stream, metadata)),
            Some(Err(e)) => {
                stream.forget();
                Err(e)
            }
            None => Err(Error::Timeout(String::from(
                "the peer did not accept the stream within the timeout",
            ))),
        }
    }

    /// Waits for the next stream the peer opens; `None` once the connection has ended.
    pub async fn incoming_stream(&self) -> Option<IncomingStream> {
        let incoming = poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(incoming) = state.core.next_incoming_stream() {
                state.streams.insert(incoming.id, StreamSlot::default());
                return Poll::Ready(Some(incoming));
            }
            if state.is_ending() {
                return Poll::Ready(None);
            }
            state.incoming_streams.register(cx.waker());
            Poll::Pending
        })
        .await?;
        Some(IncomingStream {
            stream: Some(Stream::new(self.clone(), incoming.id, incoming.address)),
            metadata: incoming.metadata,
        })
    }

    /// Waits for the next stream the peer opens and accepts it.
    pub async fn accept_stream(&self) -> Option<Stream> {
        accept_next(|| self.incoming_stream()).await
    }
}

/// Accepts the next stream `next` yields, skipping streams the opener withdrew before
/// they could be accepted; `None` when `next` has no more.
pub(crate) async fn accept_next<F>(mut next: impl FnMut() -> F) -> Option<Stream>
where
    F: std::future::Future<Output = Option<IncomingStream>>,
{
    loop {
        if let Ok(stream) = next().await?.accept(Bytes::new()) {
            return Some(stream);
        }
    }
}

/// A stream the peer opened. Accept it with [`accept`](Self::accept) or refuse it with
/// [`refuse`](Self::refuse); dropping it refuses it with `REFUSED`.
#[derive(Debug)]
pub struct IncomingStream {
    stream: Option<Stream>,
    metadata: Bytes,
}

impl IncomingStream {
    /// The opener's metadata (e.g. which exposed service it wants).
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }

    /// Source (on a link from the gateway) or target of the stream.
    pub fn address(&self) -> Option<&Address> {
        self.stream.as_ref().map(|s| &s.address)
    }

    /// Accepts, sending `metadata` back to the opener.
    pub fn accept(mut self, metadata: Bytes) -> Result<Stream, Error> {
        let stream = self.stream.take().ok_or(Error::Closed)?;
        let mut state = stream.conn.shared.lock();
        let result = state.core.accept_stream(stream.id, metadata);
        state.wake_driver();
        match result {
            Ok(()) => {
                drop(state);
                Ok(stream)
            }
            Err(StreamError::MetadataTooLarge { .. }) => {
                // Refuse rather than let the stream's drop accept it with empty metadata.
                drop(state);
                stream.refuse(ErrorCode::INTERNAL, "the acceptor's metadata was too large");
                Err(Error::TooLarge(String::from("accept metadata")))
            }
            Err(StreamError::Unknown(_) | StreamError::NotPending(_)) => Err(Error::Cancelled(
                String::from("the opener withdrew the stream"),
            )),
            Err(_) => Err(state.lost_error()),
        }
    }

    /// Refuses with `code` (e.g. `NOT_FOUND`, `UNAUTHORIZED`) and `reason`.
    pub fn refuse(mut self, code: ErrorCode, reason: &str) {
        if let Some(stream) = self.stream.take() {
            stream.refuse(code, reason);
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.refuse(
                ErrorCode::REFUSED,
                "the application did not accept the stream",
            );
        }
    }
}

/// A bidirectional byte stream with flow control.
///
/// Reads return what the peer sent, then `0` at its FIN. [`finish`](Self::finish) (or
/// `shutdown` through `AsyncWrite`) sends FIN; [`reset`](Self::reset) aborts our half with a
/// code. Dropping the stream finishes our half if still open and stops reading the peer's.
#[derive(Debug)]
pub struct Stream {
    conn: Connection,
    id: StreamId,
    address: Address,
    /// We saw the peer's FIN, reset or refusal: reads only repeat that.
    read_done: bool,
    /// Why reading failed, repeated by later reads (`None` after a FIN or our STOP).
    read_error: Option<Error>,
    /// We finished or reset our half.
    write_done: bool,
}

impl Stream {
    fn new(conn: Connection, id: StreamId, address: Address) -> Stream {
        Stream {
            conn,
            id,
            address,
            read_done: false,
            read_error: None,
            write_done: false,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Source or target address the stream was opened with.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The connection the stream belongs to.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Reads into `buf`: `Ok(0)` is the end of the stream (or an empty `buf`).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = &self.read_error {
            return Poll::Ready(Err(e.clone().into()));
        }
        if buf.is_empty() || self.read_done {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.conn.shared.lock();
        let result = match state.core.stream(self.id) {
            Ok(mut stream) => stream.read_into(buf),
            Err(_) => Err(forgotten_read(&state, self.id)),
        };
        let result = result.map(|n| n.map(|n| (n, ())));
        on_read(
            self.id,
            &mut self.read_done,
            &mut self.read_error,
            &mut state,
            cx,
            result,
        )
        .map_ok(|(n, ())| n)
    }

    /// Reads up to `max` bytes without copying; `Ok(None)` at the end of the stream.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        if let Some(e) = &self.read_error {
            return Poll::Ready(Err(e.clone().into()));
        }
        if self.read_done {
            return Poll::Ready(Ok(None));
        }
        let mut state = self.conn.shared.lock();
        let result = match state.core.stream(self.id) {
            Ok(mut stream) => stream.read(max.max(1)),
            Err(_) => Err(forgotten_read(&state, self.id)),
        };
        let result = result.map(|chunk| chunk.map(|c| (c.len(), c)));
        match on_read(
            self.id,
            &mut self.read_done,
            &mut self.read_error,
            &mut state,
            cx,
            result,
        ) {
            Poll::Ready(Ok((0, _))) => Poll::Ready(Ok(None)),
            Poll::Ready(Ok((_, chunk))) => Poll::Ready(Ok(Some(chunk))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads up to `max` bytes without copying; `Ok(None)` at the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Writes from `buf`, returning how many bytes the stream took (at least one).
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.conn.shared.lock();
        let result = match state.core.stream(self.id) {
            Ok(mut stream) => stream.write(buf),
            Err(_) => Err(forgotten_write(&state, self.id)),
        };
        on_write(self.id, &mut state, cx, result)
    }

    /// Writes `data` without copying; `data` keeps what was not taken.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.conn.shared.lock();
        let result = match state.core.stream(self.id) {
            Ok(mut stream) => stream.write_bytes(data),
            Err(_) => Err(forgotten_write(&state, self.id)),
        };
        on_write(self.id, &mut state, cx, result)
    }

    /// Writes all of `data` without copying it.
    pub async fn write_all_bytes(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            poll_fn(|cx| self.poll_write_bytes(cx, &mut data)).await?;
        }
        Ok(())
    }

    /// Sends FIN after the bytes written so far. Idempotent.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.write_done {
            return Ok(());
        }
        self.write_done = true;
        let mut state = self.conn.shared.lock();
        let result = match state.core.stream(self.id) {
            Ok(mut stream) => stream.finish(),
            Err(_) => Err(forgotten_write(&state, self.id)),
        };
        state.wake_driver();
        result.map_err(|e| write_error(&state, e))
    }

    /// Aborts our sending half: unsent bytes are dropped and the peer's reads fail with
    /// `code` and `reason`.
    pub fn reset(&mut self, code: ErrorCode, reason: &str) {
        self.write_done = true;
        let mut state = self.conn.shared.lock();
        if let Ok(mut stream) = state.core.stream(self.id) {
            let _ = stream.reset(code, reason);
        }
        state.wake_driver();
    }

    /// Stops reading: the peer's writes fail with `code`, and buffered bytes are dropped.
    pub fn stop(&mut self, code: ErrorCode) {
        self.read_done = true;
        let mut state = self.conn.shared.lock();
        if let Ok(mut stream) = state.core.stream(self.id) {
            let _ = stream.stop(code);
        }
        state.wake_driver();
    }

    /// Refuses a stream not yet accepted (RESET instead of ACCEPT).
    fn refuse(mut self, code: ErrorCode, reason: &str) {
        let mut state = self.conn.shared.lock();
        // Fails only if the peer withdrew it first.
        let _ = state.core.refuse_stream(self.id, code, reason);
        state.wake_driver();
        self.read_done = true;
        self.write_done = true;
    }

    /// Drops a stream the core has already forgotten (refused), without resetting it.
    fn forget(mut self) {
        self.read_done = true;
        self.write_done = true;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut state = self.conn.shared.lock();
        state.streams.remove(&self.id);
        if let Ok(mut stream) = state.core.stream(self.id) {
            if !self.write_done {
                let _ = stream.finish();
            }
            if !self.read_done {
                let _ = stream.stop(ErrorCode::CANCELLED);
            }
        }
        state.wake_driver();
    }
}

/// Shared tail of the read paths: `Ok(None)` from the core is the end (reported as a
/// zero length), `Blocked` parks the reader.
fn on_read<T: Default>(
    id: StreamId,
    read_done: &mut bool,
    read_error: &mut Option<Error>,
    state: &mut State,
    cx: &mut Context<'_>,
    result: Result<Option<(usize, T)>, ReadError>,
) -> Poll<io::Result<(usize, T)>> {
    match result {
        Ok(Some(read)) => {
            // The core queued a credit update for the peer.
            state.wake_driver();
            Poll::Ready(Ok(read))
        }
        Ok(None) => {
            *read_done = true;
            // Reading the FIN may have closed the stream, which queues a MAX_STREAMS grant.
            state.wake_driver();
            Poll::Ready(Ok((0, T::default())))
        }
        Err(ReadError::Blocked) => {
            if let Some(slot) = state.streams.get_mut(&id) {
                slot.reader = Some(cx.waker().clone());
            }
            Poll::Pending
        }
        Err(e) => {
            *read_done = true;
            let error = read_error_of(state, e);
            *read_error = Some(error.clone());
            Poll::Ready(Err(error.into()))
        }
    }
}

/// The read error for a stream the core no longer knows: the peer's RESET if one came
/// (a RESET after our FIN closes the stream at once), otherwise `Unknown`.
fn forgotten_read(state: &State, id: StreamId) -> ReadError {
    match state.streams.get(&id).and_then(|slot| slot.reset.clone()) {
        Some((code, reason)) => ReadError::Reset { code, reason },
        None => ReadError::Unknown,
    }
}

/// The write error for a stream the core no longer knows: the peer's STOP if one came.
fn forgotten_write(state: &State, id: StreamId) -> WriteError {
    match state.streams.get(&id).and_then(|slot| slot.stopped) {
        Some(code) => WriteError::Stopped(code),
        None => WriteError::Unknown,
    }
}

fn on_write(
    id: StreamId,
    state: &mut State,
    cx: &mut Context<'_>,
    result: Result<usize, WriteError>,
) -> Poll<io::Result<usize>> {
    match result {
        Ok(0) | Err(WriteError::Blocked) => {
            if let Some(slot) = state.streams.get_mut(&id) {
                slot.writer = Some(cx.waker().clone());
            }
            Poll::Pending
        }
        Ok(n) => {
            state.wake_driver();
            Poll::Ready(Ok(n))
        }
        Err(e) => Poll::Ready(Err(write_error(state, e))),
    }
}

fn read_error_of(state: &State, e: ReadError) -> Error {
    match e {
        ReadError::Reset { code, reason } => Error::from_status(code, reason),
        ReadError::Refused { code, reason } => Error::from_status(code, reason),
        ReadError::Stopped => Error::Closed,
        ReadError::Closed | ReadError::Unknown => {
            if state.is_ending() {
                state.lost_error()
            } else {
                Error::Closed
            }
        }
        ReadError::Blocked => Error::Closed,
    }
}

fn write_error(state: &State, e: WriteError) -> io::Error {
    let error = match e {
        WriteError::Stopped(code) => Error::from_status(code, "the peer stopped reading"),
        WriteError::Refused(code) => Error::from_status(code, "the peer refused the stream"),
        WriteError::Finished => Error::Closed,
        WriteError::Closed | WriteError::Unknown | WriteError::Blocked => {
            if state.is_ending() {
                state.lost_error()
            } else {
                Error::Closed
            }
        }
    };
    error.into()
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = std::task::ready!(Stream::poll_read(this, cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued in the connection, which sends them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish())
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_read(self.get_mut(), cx, buf)
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish())
    }
}
