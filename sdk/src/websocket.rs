//! The Tether byte stream over a WebSocket (feature `websocket`).
//!
//! [`WsTransport`] adapts any tungstenite message stream (tokio-tungstenite's or
//! async-tungstenite's `WebSocketStream`, on the client or the server side) to
//! [`Transport`]. It depends on neither tokio nor smol, so both runtime crates and the
//! gateway share it.
//!
//! The mapping (`docs/PROTOCOL.md` frames the byte stream; WebSocket only carries it):
//!
//! - bytes travel in **binary** messages; message boundaries mean nothing, and a reader
//!   must not rely on them;
//! - a write sends one binary message of at most [`MAX_WRITE`] bytes;
//! - a text message is a protocol error (`InvalidData`);
//! - pings are answered (tungstenite queues the pong; the transport flushes it);
//! - a Close message or the end of the message stream is the end of input;
//! - shutting down sends a Close message.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
pub use tungstenite;
use tungstenite::{Error as WsError, Message};

use crate::endpoint::Endpoint;
use crate::runtime::Transport;

/// The largest binary message one write sends.
pub const MAX_WRITE: usize = 64 * 1024;

/// The largest frame and message a Tether client accepts: generous next to the 64 KiB a
/// [`WsTransport`] writes, small enough that a peer cannot make it buffer much.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// The WebSocket settings the runtime crates' dialers use: frames and messages up to
/// [`MAX_MESSAGE`].
pub fn client_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(MAX_MESSAGE))
        .max_message_size(Some(MAX_MESSAGE))
}

/// A failed client handshake with `endpoint` as an I/O error that says what happened (the
/// HTTP status of a refused upgrade, say).
pub fn handshake_error(endpoint: &Endpoint, e: WsError) -> io::Error {
    let kind = match &e {
        WsError::Io(e) => e.kind(),
        WsError::Http(_) => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::InvalidData,
    };
    let detail = match &e {
        WsError::Http(response) => format!("the server answered HTTP {}", response.status()),
        other => other.to_string(),
    };
    io::Error::new(
        kind,
        format!("WebSocket handshake with {endpoint} failed: {detail}"),
    )
}

/// A WebSocket connection as tungstenite's async bindings give it (tokio-tungstenite's or
/// async-tungstenite's `WebSocketStream`): a stream of received messages and a sink for
/// messages to send. Implemented for every such type.
pub trait MessageStream:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send + 'static
{
}

impl<S> MessageStream for S where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static
{
}

/// A WebSocket message stream as a [`Transport`].
///
/// `S` is typically `tokio_tungstenite::WebSocketStream<T>` or
/// `async_tungstenite::WebSocketStream<T>`.
pub struct WsTransport<S> {
    ws: S,
    peer_addr: Option<SocketAddr>,
    /// What is left of the binary message being read.
    unread: Bytes,
    /// A Close message or the end of the stream was seen.
    read_closed: bool,
    /// A ping arrived and its pong may still sit in tungstenite's buffer.
    pong_pending: bool,
    /// Our Close message was queued.
    close_sent: bool,
}

impl<S> WsTransport<S> {
    /// Wraps an established WebSocket (after the HTTP upgrade); `peer_addr` is the TCP
    /// peer's address, where known.
    pub fn new(ws: S, peer_addr: Option<SocketAddr>) -> WsTransport<S> {
        WsTransport {
            ws,
            peer_addr,
            unread: Bytes::new(),
            read_closed: false,
            pong_pending: false,
            close_sent: false,
        }
    }

    /// The wrapped message stream.
    pub fn get_ref(&self) -> &S {
        &self.ws
    }

    /// The wrapped message stream, consuming the transport (unread bytes are lost).
    pub fn into_inner(self) -> S {
        self.ws
    }
}

impl<S> std::fmt::Debug for WsTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("peer_addr", &self.peer_addr)
            .field("unread", &self.unread.len())
            .field("read_closed", &self.read_closed)
            .field("close_sent", &self.close_sent)
            .finish()
    }
}

/// A tungstenite error as an I/O error; `None` for the orderly ends of a connection.
fn io_error(e: WsError) -> Option<io::Error> {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        WsError::Io(e) => Some(e),
        e @ WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            Some(io::Error::new(io::ErrorKind::ConnectionReset, e))
        }
        e @ (WsError::Capacity(_) | WsError::Utf8(_) | WsError::Protocol(_)) => {
            Some(io::Error::new(io::ErrorKind::InvalidData, e))
        }
        e => Some(io::Error::other(e)),
    }
}

impl<S> WsTransport<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    /// Pushes a queued pong out without blocking the read: if the sink cannot take it now,
    /// the next read or write tries again.
    fn flush_pong(&mut self, cx: &mut Context<'_>) {
        if self.pong_pending
            && let Poll::Ready(result) = Pin::new(&mut self.ws).poll_flush(cx)
        {
            // A failed flush shows up again on the next write or read.
            let _ = result;
            self.pong_pending = false;
        }
    }
}

impl<S: MessageStream> Transport for WsTransport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flush_pong(cx);
        loop {
            if !this.unread.is_empty() {
                let n = buf.len().min(this.unread.len());
                buf[..n].copy_from_slice(&this.unread[..n]);
                this.unread.advance(n);
                return Poll::Ready(Ok(n));
            }
            if this.read_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => this.unread = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a Tether WebSocket",
                    )));
                }
                Some(Ok(Message::Ping(_))) => {
                    this.pong_pending = true;
                    this.flush_pong(cx);
                }
                // Pongs answer pings we never send; raw frames are not returned by reads.
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.read_closed = true,
                Some(Err(e)) => match io_error(e) {
                    None => this.read_closed = true,
                    Some(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let closed = || io::Error::from(io::ErrorKind::BrokenPipe);
        match ready!(Pin::new(&mut this.ws).poll_ready(cx)) {
            Ok(()) => {}
            Err(e) => return Poll::Ready(Err(io_error(e).unwrap_or_else(closed))),
        }
        let mut payload = Vec::with_capacity(total);
        for buf in bufs {
            let take = buf.len().min(total - payload.len());
            payload.extend_from_slice(&buf[..take]);
            if payload.len() == total {
                break;
            }
        }
        // A queued pong goes out with this message.
        this.pong_pending = false;
        match Pin::new(&mut this.ws).start_send(Message::Binary(Bytes::from(payload))) {
            Ok(()) => Poll::Ready(Ok(total)),
            Err(e) => Poll::Ready(Err(io_error(e).unwrap_or_else(closed))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Ok(()) => {
                this.pong_pending = false;
                Poll::Ready(Ok(()))
            }
            Err(e) => match io_error(e) {
                // Nothing is left to flush on a closed connection.
                None => Poll::Ready(Ok(())),
                Some(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            match ready!(Pin::new(&mut this.ws).poll_ready(cx)) {
                Ok(()) => {}
                Err(e) => {
                    this.close_sent = true;
                    return Poll::Ready(io_error(e).map_or(Ok(()), Err));
                }
            }
            this.close_sent = true;
            if let Err(e) = Pin::new(&mut this.ws).start_send(Message::Close(None)) {
                return Poll::Ready(io_error(e).map_or(Ok(()), Err));
            }
        }
        Pin::new(this).poll_flush(cx)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }
}

#[cfg(test)]
mod tests;
