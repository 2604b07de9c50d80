//! The Tether protocol as a pure state machine.
//!
//! Tether links cloud services and edge devices through a gateway over one long-lived
//! connection each: RPC in both directions, acknowledged messages, multiplexed byte streams
//! with flow control, presence and graceful shutdown. This crate is the whole protocol and
//! nothing else: no sockets, no async, no threads, no clock. Bytes, time and commands go in;
//! bytes, events and the next deadline come out. Drivers for tokio, smol and mio, the
//! gateway and the edge agent are built on it; fuzzers and tests drive it directly. The
//! wire format is specified in `docs/PROTOCOL.md`, which the code cites by section.
//!
//! `#![no_std]` with `alloc`; the default `std` feature only adds `std::error::Error`
//! implementations. Dependencies: `bytes` and `thiserror`.
//!
//! # The contract
//!
//! A [`Connection`] has four kinds of methods:
//!
//! - **getters** (`&self`): [`Connection::is_connected`], [`Connection::error`],
//!   [`Connection::input_capacity`], ...;
//! - **inputs**: [`Connection::handle_input`] (bytes from the transport),
//!   [`Connection::handle_eof`], [`Connection::handle_timeout`];
//! - **commands**: [`Connection::open_stream`], [`Connection::stream`] (write, read,
//!   finish, reset, stop), [`Connection::rpc`] (call, respond, cancel),
//!   [`Connection::messages`] (publish, ack), [`Connection::accept_handshake`],
//!   [`Connection::go_away`], [`Connection::close`], ...;
//! - **outputs**: [`Connection::poll_transmit`], [`Connection::poll_event`],
//!   [`Connection::poll_timeout`].
//!
//! **After every input and every command, drain the outputs**: call `poll_transmit` and
//! write what it produced, `poll_event` until `None`, and re-arm one timer from
//! `poll_timeout`. Nothing happens between calls: the core never blocks, never wakes up on
//! its own, and never reads a clock; time is the [`Timestamp`] you pass in, so tests can
//! jump minutes ahead instantly.
//!
//! **Backpressure.** `handle_input` takes at most [`Connection::input_capacity`] bytes;
//! when that is zero, stop reading the transport until you have drained the outputs. It is
//! zero while a peer's frames have produced more replies or events than you drained, so a
//! peer that floods us while refusing to read stalls itself, not our memory. Writes return
//! how much was taken; a `Writable` or `Unblocked` event says when to try again.
//!
//! **Pull, not push.** Streams, requests and messages from the peer wait in the core until
//! you take them ([`Connection::next_incoming_stream`], [`Rpc::next_request`],
//! [`Messages::next_message`]); an `Incoming*` event announces the first of a batch.
//! Their flow-control credit returns to the peer only when you take them, so an application
//! that stops taking work slows its peer down instead of filling up. Work the peer cancels
//! before you took it disappears without you ever seeing it.
//!
//! **The end.** [`Event::ConnectionLost`] arrives exactly once, last, carrying a
//! [`ConnectionError`] that says who was at fault; every in-flight call, message and stream
//! failed with it. Close the transport when [`Connection::is_finished`] says so.
//!
//! # Errors by cause
//!
//! - [`ProtocolViolation`]: the peer broke the protocol (with the wire [`ErrorCode`] sent in
//!   GOAWAY). Nothing a peer sends can make this crate panic.
//! - [`Incompatible`]: the peer is not a Tether peer, or shares no version.
//! - [`ApiMisuse`] and the small per-command enums ([`OpenError`], [`WriteError`],
//!   [`ReadError`], [`SendError`], [`ReplyError`], [`StreamError`]): the application asked
//!   for something the state does not allow.
//! - [`ConnectionError`]: why the connection ended, delivered once.
//!
//! # A complete driver
//!
//! A blocking driver over `std::net::TcpStream`, and a client and a server using it for one
//! RPC:
//!
//! ```
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use proto_core::*;
//!
//! /// Runs `conn` over `sock` until it finishes; `app` handles each event.
//! fn drive(
//!     conn: &mut Connection,
//!     sock: &mut TcpStream,
//!     mut app: impl FnMut(&mut Connection, Timestamp, Event),
//! ) -> std::io::Result<()> {
//!     let epoch = Instant::now();
//!     let clock = || Timestamp::from_duration(epoch.elapsed());
//!     let (mut out, mut buf) = (TransmitBuf::new(), vec![0u8; 64 * 1024]);
//!     loop {
//!         let now = clock();
//!         let _ = conn.poll_transmit(now, &mut out);
//!         while !out.is_empty() {
//!             let n = sock.write(out.first_chunk())?;
//!             out.advance(n);
//!         }
//!         while let Some(event) = conn.poll_event() {
//!             app(conn, now, event);
//!         }
//!         if conn.is_finished() {
//!             return Ok(());
//!         }
//!         if conn.has_pending_output() || conn.input_capacity() == 0 {
//!             continue; // the application queued something: send it before blocking
//!         }
//!         let wait = conn.poll_timeout().map(|(at, _)| at.saturating_duration_since(now));
//!         sock.set_read_timeout(wait.map(|d| d.max(Duration::from_millis(1))))?;
//!         let room = conn.input_capacity().min(buf.len());
//!         match sock.read(&mut buf[..room]) {
//!             Ok(0) => conn.handle_eof(clock()),
//!             Ok(n) => _ = conn.handle_input(clock(), &buf[..n]),
//!             Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
//!                 conn.handle_timeout(clock())
//!             }
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (mut sock, _) = listener.accept()?;
//!     let mut conn = Connection::server(Config::default(), Timestamp::ZERO).unwrap();
//!     drive(&mut conn, &mut sock, |conn, now, event| match event {
//!         Event::HandshakeRequest(hello) => {
//!             let id = hello.info.requested_id.unwrap_or(7);
//!             let accept = HandshakeAccept { assigned_id: id, ..Default::default() };
//!             conn.accept_handshake(now, accept).unwrap();
//!         }
//!         Event::IncomingRequests => {
//!             while let Some(req) = conn.rpc().next_request() {
//!                 conn.rpc().respond(req.id, ErrorCode::OK, req.body).unwrap();
//!             }
//!         }
//!         _ => {}
//!     })
//! });
//!
//! let mut sock = TcpStream::connect(addr)?;
//! let info = ClientInfo::new(Role::Edge);
//! let mut conn = Connection::client(Config::default(), info, Timestamp::ZERO).unwrap();
//! let mut answer = None;
//! drive(&mut conn, &mut sock, |conn, now, event| match event {
//!     Event::Connected(_) => {
//!         let call = Call::new(Name::new("echo").unwrap(), Bytes::from_static(b"hi"));
//!         conn.rpc().call(now, call).unwrap();
//!     }
//!     Event::Rpc(RpcEvent::Response { body, .. }) => {
//!         answer = Some(body);
//!         conn.go_away(now, ErrorCode::OK, "done");
//!     }
//!     _ => {}
//! })?;
//! assert_eq!(answer.as_deref(), Some(&b"hi"[..]));
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod budget;
pub mod code;
pub mod codec;
pub mod config;
mod conn;
mod context;
mod effects;
pub mod error;
mod event;
mod exchange;
mod flow;
pub mod ids;
pub mod name;
mod streams;
pub mod time;
pub mod transmit;

pub use budget::BudgetKind;
pub use code::ErrorCode;
pub use codec::{Address, ClientInfo, Hello, Registration, RegistrationKind};
pub use conn::{Connection, HandshakeAccept, OpenStream, SUPPORTED_VERSIONS, Stats, TimerKind};
pub use error::{
    ApiMisuse, ConnectionError, Incompatible, OpenError, ProtocolViolation, ReadError, ReplyError,
    SendError, StreamError, TimeoutKind, WriteError,
};
pub use event::{Connected, Event, MessageEvent, RpcEvent, StreamEvent};
pub use exchange::HEAD_CREDIT;
pub use exchange::messages::{IncomingMessage, Messages, Publish};
pub use exchange::rpc::{Call, IncomingRequest, Rpc};
pub use streams::{IncomingStream, Stream};

#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use config::{Budgets, Config, ConfigError, Settings};
pub use ids::{MessageId, RequestId, Role, Side, StreamId};
pub use name::{Name, NameError};
pub use time::Timestamp;
pub use transmit::TransmitBuf;
