//! Entry points that feed one connection raw bytes: a fresh server or client, or one whose
//! handshake the real codec already completed.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{Bytes, BytesMut};

use super::Gen;
use crate::code::ErrorCode;
use crate::codec::{
    ClientInfo, ClientPreface, DecodeLimits, Frame, HEADER_LEN, Hello, MAX_HANDSHAKE_PAYLOAD,
    MIN_MAX_FRAME_SIZE, ServerPreface, VERSION_1, Welcome, decode_frame,
};
use crate::config::{Budgets, Config, Settings};
use crate::conn::{Connection, HandshakeAccept, OpenStream, SUPPORTED_VERSIONS};
use crate::event::{Event, StreamEvent};
use crate::exchange::messages::Publish;
use crate::exchange::rpc::Call;
use crate::ids::Role;
use crate::name::Name;
use crate::testing::Rng;
use crate::time::Timestamp;
use crate::transmit::TransmitBuf;

/// Small limits everywhere, so backpressure, budgets and timers are reached with few bytes.
pub(super) fn tight_config() -> Config {
    let mut c = Config::default();
    let s = &mut c.settings;
    s.max_frame_size = MIN_MAX_FRAME_SIZE;
    s.initial_stream_window = 4096;
    s.connection_window = 16 * 1024;
    s.max_message_size = 4096;
    s.message_window = 4096 + 2 * crate::exchange::HEAD_CREDIT as u32;
    s.max_concurrent_streams = 4;
    s.max_inflight_requests = 4;
    s.max_inflight_messages = 4;
    s.idle_timeout_ms = 5_000;
    s.max_open_metadata = 64;
    s.max_registrations = 8;
    c.max_stream_window = 16 * 1024;
    c.max_pending_accept = 2;
    c.max_handshake_size = 1024;
    c.max_metadata_size = 64;
    c.max_token_size = 64;
    c.handshake_timeout = Duration::from_secs(2);
    c.keepalive_interval = Duration::from_secs(1);
    c.keepalive_timeout = Duration::from_secs(1);
    c.drain_timeout = Duration::from_secs(2);
    c.close_linger = Duration::from_millis(100);
    c.stream_send_buffer = 4096;
    c.exchange_send_buffer = 8192;
    c.max_input_buffer = MIN_MAX_FRAME_SIZE + HEADER_LEN as u32;
    c.max_pending_control = 1024;
    c.max_pending_events = 16;
    c.budgets = Budgets {
        window: Duration::from_secs(1),
        pings: 4,
        peer_resets: 4,
        local_resets: 4,
        empty_frames: 4,
        wasted_frames: 16,
        registrations: 4,
    };
    c
}

/// What the application behind a fuzzed connection does with what it is handed.
#[derive(Clone, Copy, Debug)]
struct App {
    /// Server: answer HELLO with 0–1 accept, 2 reject, 3 no decision.
    decision: u8,
    /// Take incoming streams, accepting two of three and refusing the third.
    streams: bool,
    /// Read readable streams until blocked.
    read: bool,
    /// Take requests and messages; answer and acknowledge them.
    serve: bool,
}

const ACCEPT_ALL: App = App {
    decision: 0,
    streams: true,
    read: true,
    serve: true,
};

/// One connection, a virtual clock and an application, checked after every call.
struct Harness {
    conn: Connection,
    now: Timestamp,
    out: TransmitBuf,
    app: App,
    rng: Rng,
    /// `ConnectionLost` events seen.
    lost: u32,
    events: u64,
    /// Commands the application issued (each may cause a bounded number of events).
    commands: u64,
    /// The connection closed and everything was drained: nothing may come out any more.
    done: bool,
    /// Output not yet decoded, from the start (preface included); `None` once the output is
    /// known not to be frames (the HTTP rejection).
    sent: Option<BytesMut>,
    /// The output's preface was decoded.
    preface_sent: bool,
}

impl Harness {
    fn new(server: bool, config: Config, app: App, seed: u64) -> Self {
        let now = Timestamp::from_millis(1000);
        let conn = if server {
            Connection::server(config, now)
        } else {
            Connection::client(config, ClientInfo::new(Role::Edge), now)
        };
        Harness {
            conn: conn.expect("fuzz configs are valid"),
            now,
            out: TransmitBuf::new(),
            app,
            rng: Rng::new(seed),
            lost: 0,
            events: 0,
            commands: 0,
            done: false,
            sent: Some(BytesMut::new()),
            preface_sent: false,
        }
    }

    /// Polls transmit and events until both are empty, as the run-loop contract asks, then
    /// checks that a driver following the contract can neither spin nor stall.
    fn drain(&mut self) {
        loop {
            let n = self.conn.poll_transmit(self.now, &mut self.out);
            assert!(
                !self.done || n == 0,
                "{n} bytes out after the connection ended"
            );
            assert_eq!(n, self.out.len(), "poll_transmit miscounted");
            if let Some(sent) = &mut self.sent {
                self.out.chunks().for_each(|c| sent.extend_from_slice(c));
            }
            self.out.advance(n);
            self.check_sent();
            let mut moved = n > 0;
            while let Some(event) = self.conn.poll_event() {
                moved = true;
                self.on_event(event);
            }
            if !moved {
                break;
            }
        }
        if self.conn.is_closed() {
            assert!(
                self.conn.is_finished(),
                "closed and drained but not finished"
            );
            self.done = true;
        } else if !self.conn.is_finished() {
            assert!(
                !self.conn.has_pending_output(),
                "has_pending_output() after poll_transmit produced nothing: a driver spins"
            );
            assert!(
                self.conn.input_capacity() > 0,
                "no input capacity after a full drain: a driver stalls forever"
            );
        }
        assert_eq!(
            self.lost > 0,
            self.conn.error().is_some(),
            "error() vs ConnectionLost"
        );
        let limit = 8 + 2 * (self.conn.stats().frames_in + self.commands);
        assert!(self.events <= limit, "{} events for {limit}", self.events);
    }

    /// Everything we send must be a valid preface and valid frames within the peer's limits:
    /// decodes the output as the peer would.
    fn check_sent(&mut self) {
        let Some(sent) = &mut self.sent else {
            return;
        };
        if !self.preface_sent {
            let preface = if self.conn.side().is_client() {
                ClientPreface::decode(sent).map(|p| p.map(|(_, used)| used))
            } else {
                ServerPreface::decode(sent).map(|p| p.map(|(_, used)| used))
            };
            match preface {
                Ok(Some(used)) => {
                    let _ = sent.split_to(used);
                    self.preface_sent = true;
                }
                Ok(None) => return,
                Err(e) => {
                    let http = sent.starts_with(b"HTTP/1.1 400");
                    assert!(http, "we sent a bad preface: {e}");
                    self.sent = None;
                    return;
                }
            }
        }
        let limits = DecodeLimits {
            max_frame_size: self.conn.peer_settings().max_frame_size,
            max_handshake_size: MAX_HANDSHAKE_PAYLOAD,
        };
        while let Some(_frame) =
            decode_frame(sent, limits).unwrap_or_else(|e| panic!("we sent a bad frame: {e}"))
        {
        }
    }

    fn on_event(&mut self, event: Event) {
        assert_eq!(self.lost, 0, "event after ConnectionLost: {event:?}");
        self.events += 1;
        let now = self.now;
        let conn = &mut self.conn;
        match event {
            Event::ConnectionLost(e) => {
                assert_eq!(
                    Some(&e),
                    conn.error(),
                    "ConnectionLost differs from error()"
                );
                self.lost += 1;
            }
            Event::HandshakeRequest(_) => {
                self.commands += 1;
                let decided = match self.app.decision {
                    0 | 1 => conn.accept_handshake(now, HandshakeAccept::default()),
                    2 => conn.reject_handshake(now, ErrorCode::UNAUTHORIZED, "fuzz"),
                    _ => Ok(()),
                };
                // Events outlive the state they announce: the connection may have failed
                // since, and then there is nothing left to decide.
                if !conn.is_closed() {
                    decided.expect("a pending handshake can be decided");
                }
            }
            Event::IncomingStreams if self.app.streams => {
                while let Some(s) = conn.next_incoming_stream() {
                    self.commands += 1;
                    let _ = if s.id.raw() % 3 == 0 {
                        conn.refuse_stream(s.id, ErrorCode::REFUSED, "fuzz")
                    } else {
                        conn.accept_stream(s.id, Bytes::from_static(b"ok"))
                    };
                }
            }
            Event::Stream(StreamEvent::Readable { id }) if self.app.read => {
                while let Ok(mut stream) = conn.stream(id) {
                    if !matches!(stream.read(4096), Ok(Some(_))) {
                        break;
                    }
                }
            }
            Event::IncomingRequests if self.app.serve => {
                while let Some(req) = conn.rpc().next_request() {
                    self.commands += 1;
                    let _ = conn.rpc().respond(req.id, ErrorCode::OK, req.body);
                }
            }
            Event::IncomingMessages if self.app.serve => {
                while let Some(msg) = conn.messages().next_message() {
                    self.commands += 1;
                    if msg.ack_wanted {
                        let _ = conn.messages().ack(msg.id, ErrorCode::OK, "");
                    }
                }
            }
            _ => {}
        }
    }

    /// Hands `chunk` to the connection, draining whenever it takes less than offered.
    fn feed(&mut self, mut chunk: &[u8]) {
        let max_input = self.conn.config().max_input_buffer as usize;
        while !chunk.is_empty() {
            let closed = self.conn.is_closed();
            let capacity = self.conn.input_capacity();
            assert!(
                capacity + self.conn.buffered_input() <= max_input,
                "capacity"
            );
            let n = self.conn.handle_input(self.now, chunk);
            let want = if closed {
                chunk.len()
            } else {
                capacity.min(chunk.len())
            };
            assert_eq!(
                n,
                want,
                "handle_input took {n} of {} (capacity {capacity})",
                chunk.len()
            );
            assert!(
                self.conn.buffered_input() <= max_input,
                "input buffer overflow"
            );
            let control = self.conn.fx.control_bytes();
            let bound = self.conn.config().max_pending_control as usize + 4 * max_input;
            assert!(control <= bound, "{control} bytes of control frames queued");
            chunk = &chunk[n..];
            self.drain();
            if n == 0 {
                break; // unreachable: drain() asserted there is capacity again
            }
        }
    }

    /// Moves the clock (to the next deadline, a little, or a lot) and fires the timers.
    fn tick(&mut self, kind: u64) {
        let r = self.rng.next_u64();
        self.now = match kind % 3 {
            0 => self
                .conn
                .poll_timeout()
                .map_or(self.now, |(t, _)| t.max(self.now)),
            1 => self.now.saturating_add(Duration::from_millis(r % 1000 + 1)),
            _ => self.now.saturating_add(Duration::from_secs(r % 40 + 1)),
        };
        self.conn.handle_timeout(self.now);
        self.drain();
        // Otherwise a driver re-arming from poll_timeout would call handle_timeout in a loop.
        if !self.conn.is_closed()
            && let Some((at, kind)) = self.conn.poll_timeout()
        {
            assert!(
                at > self.now,
                "{kind:?} timer {at:?} not after {:?}",
                self.now
            );
        }
    }

    /// Feeds `payload` in chunks of `1..=max` bytes (`fixed`: exactly `max`), firing timers
    /// between chunks with probability `time`/4.
    fn feed_chunked(&mut self, payload: &[u8], max: usize, fixed: bool, time: u64) {
        let mut rest = payload;
        while !rest.is_empty() {
            let n = if fixed {
                max
            } else {
                self.rng.below_inclusive(max)
            };
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            self.feed(chunk);
            rest = tail;
            let r = self.rng.next_u64();
            if r % 4 < time {
                self.tick(r >> 8);
            }
        }
    }

    /// Runs a few timers, then the transport ends: exactly one `ConnectionLost` in all.
    fn finish(&mut self) {
        for _ in 0..6 {
            if self.conn.is_finished() {
                break;
            }
            self.tick(0);
        }
        self.conn.handle_eof(self.now);
        self.drain();
        assert_eq!(self.lost, 1, "exactly one ConnectionLost");
        assert!(self.conn.is_finished(), "not finished after EOF");
        assert_eq!(self.conn.handle_input(self.now, b"late"), 4);
        self.drain();
    }
}

/// The chunk sizes a header byte can pick.
const CHUNK_MAX: [usize; 8] = [1, 2, 3, 5, 8, 13, 64, 4096];

/// Decodes the three header bytes every single-connection target starts with.
///
/// `b0`: target-specific mode bits. `b1`: bits 0–2 pick the largest chunk from
/// `[1, 2, 3, 5, 8, 13, 64, 4096]`, bit 3 makes every chunk that size. `b2`: bits 0–1 are
/// the chance in four of firing timers after each chunk, bit 2 selects [`tight_config`].
fn header(g: &mut Gen<'_>) -> (u8, usize, bool, u64, Config, u64) {
    let (b0, b1, b2) = (g.u8(), g.u8(), g.u8());
    let config = if b2 & 4 != 0 {
        tight_config()
    } else {
        Config::default()
    };
    let seed = u64::from_be_bytes([0, 0, 0, 0, 0, b0, b1, b2]);
    (
        b0,
        CHUNK_MAX[usize::from(b1 & 7)],
        b1 & 8 != 0,
        u64::from(b2 & 3),
        config,
        seed,
    )
}

/// The client's opening bytes: preface and a default HELLO.
fn client_opening(hello: bool) -> Vec<u8> {
    let mut out = Vec::new();
    ClientPreface {
        versions: SUPPORTED_VERSIONS.to_vec(),
    }
    .encode(&mut out);
    if hello {
        let hello = Hello {
            info: ClientInfo::new(Role::Edge),
            settings: Settings::DEFAULT,
        };
        Frame::Hello(Box::new(hello))
            .encode(&mut out)
            .expect("HELLO");
    }
    out
}

/// The server's opening bytes: preface and a default WELCOME.
fn server_opening(welcome: bool) -> Vec<u8> {
    let mut out = Vec::new();
    ServerPreface {
        selected: VERSION_1,
        supported: SUPPORTED_VERSIONS.to_vec(),
    }
    .encode(&mut out);
    if welcome {
        let welcome = Welcome {
            assigned_id: 7,
            settings: Settings::DEFAULT,
            metadata: Bytes::new(),
        };
        Frame::Welcome(welcome).encode(&mut out).expect("WELCOME");
    }
    out
}

/// A fresh server fed the input in chunks.
///
/// Layout: three header bytes (see [`header`]; in `b0`, bits 0–1 prefix nothing, a valid
/// client preface, a preface and HELLO, or nothing; bits 2–3 are the handshake decision: accept,
/// accept, reject, none), then the bytes the client sends.
///
/// Invariants: no panic; `handle_input` takes exactly `min(input_capacity, len)` and the
/// buffered input stays within `max_input_buffer`; after every full drain a driver can
/// neither spin (`has_pending_output` with nothing to send) nor stall (no input capacity);
/// one `ConnectionLost`, last, equal to `error()`; nothing out once closed and drained; after
/// `handle_timeout(now)` the next deadline is after `now` unless the connection ended;
/// events stay linear in frames and commands.
pub fn server_handshake(data: &[u8]) {
    let mut g = Gen(data);
    let (b0, max, fixed, time, config, seed) = header(&mut g);
    let app = App {
        decision: (b0 >> 2) & 3,
        ..ACCEPT_ALL
    };
    let mut input = match b0 & 3 {
        1 | 2 => client_opening(b0 & 3 == 2),
        _ => Vec::new(),
    };
    input.extend_from_slice(g.rest());
    let mut h = Harness::new(true, config, app, seed);
    h.feed_chunked(&input, max, fixed, time);
    h.finish();
}

/// A fresh client fed the input in chunks: as [`server_handshake`], but `b0 & 3` prefixes
/// nothing, a valid server preface, a preface and WELCOME, or nothing.
pub fn client_handshake(data: &[u8]) {
    let mut g = Gen(data);
    let (b0, max, fixed, time, config, seed) = header(&mut g);
    let mut input = match b0 & 3 {
        1 | 2 => server_opening(b0 & 3 == 2),
        _ => Vec::new(),
    };
    input.extend_from_slice(g.rest());
    let mut h = Harness::new(false, config, ACCEPT_ALL, seed);
    h.drain();
    h.feed_chunked(&input, max, fixed, time);
    h.finish();
}

/// A connected server or client (handshake made with the real codec) fed arbitrary frames.
///
/// Layout: three header bytes (see [`header`]; in `b0`, bit 0 picks the client, bits 1–3
/// turn off taking streams, reading, and serving requests and messages, bit 4 starts local
/// work first: stream 1 or 2 with bytes, stream 3 or 4, request 1 and message 1), then the
/// peer's frames. Invariants as for [`server_handshake`].
pub fn connection_chunks(data: &[u8]) {
    let mut g = Gen(data);
    let (b0, max, fixed, time, config, seed) = header(&mut g);
    let server = b0 & 1 == 0;
    let app = App {
        decision: 0,
        streams: b0 & 2 == 0,
        read: b0 & 4 == 0,
        serve: b0 & 8 == 0,
    };
    let mut h = Harness::new(server, config, app, seed);
    h.drain();
    let opening = if server {
        client_opening(true)
    } else {
        server_opening(true)
    };
    h.feed(&opening);
    assert!(
        h.conn.is_connected(),
        "handshake failed: {:?}",
        h.conn.error()
    );
    if b0 & 16 != 0 {
        let now = h.now;
        let conn = &mut h.conn;
        let first = conn.open_stream(OpenStream::default()).expect("open");
        conn.open_stream(OpenStream::default()).expect("open");
        conn.stream(first)
            .expect("stream")
            .write(&[7; 1000])
            .expect("write");
        let method = Name::from_static("m").expect("name");
        conn.rpc()
            .call(now, Call::new(method, Bytes::from_static(b"q")))
            .expect("call");
        let topic = Name::from_static("t").expect("name");
        conn.messages()
            .publish(now, Publish::new(topic, Bytes::new()))
            .expect("publish");
        h.commands += 5;
        h.drain();
    }
    h.feed_chunked(g.rest(), max, fixed, time);
    h.finish();
}
