//! The hostile peer's toolkit: a real server [`Connection`] driven by raw bytes that the test
//! writes as the attacker, a decoder for what the victim sends back, and heap accounting.
//!
//! Every binary that includes this module gets a counting global allocator, so the tests in
//! it take [`serial`] first: the allocator's counters are process-wide and libtest runs
//! tests on parallel threads.
#![allow(dead_code)]

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto_core::codec::{
    ClientPreface, DecodeLimits, Frame, GoAway, MAX_HANDSHAKE_PAYLOAD, MAX_MAX_FRAME_SIZE,
    MessageHead, RequestHead, ResponseHead, ServerPreface, Sink, decode_frame,
};
use proto_core::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

// A safe declaration: the `unsafe impl GlobalAlloc` lives in the crate.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary so heap measurements see only their own test. A test
/// that failed poisons the lock; the next one still runs.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live heap bytes of the whole process right now.
pub(crate) fn live_heap() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Live heap bytes once other threads are quiet: the smallest of several samples over
/// about 50 ms. libtest's main thread allocates while it collects other tests' results,
/// which a single sample can catch in the middle.
pub(crate) fn settled_heap() -> i64 {
    let mut least = live_heap();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        least = least.min(live_heap());
    }
    least
}

/// Cumulative bytes ever allocated (never decreases): a jump shows an allocation even if it
/// was freed again before we looked.
pub(crate) fn total_allocated() -> u64 {
    GLOBAL.stats().bytes_allocated as u64
}

/// The time every victim starts at.
pub(crate) const START: Timestamp = Timestamp::from_millis(1000);

/// Decode limits wide enough for anything the victim may legitimately send.
pub(crate) const WIDE: DecodeLimits = DecodeLimits {
    max_frame_size: MAX_MAX_FRAME_SIZE,
    max_handshake_size: MAX_HANDSHAKE_PAYLOAD,
};

/// The connection under attack and what a well-behaved application around it does: it
/// polls events after every input (keeping them for the test) and, while the attacker reads,
/// hands our output to the wire.
#[derive(Debug)]
pub(crate) struct Victim {
    pub(crate) conn: Connection,
    pub(crate) now: Timestamp,
    /// Events polled and not yet inspected.
    pub(crate) events: Vec<Event>,
    /// Our bytes the attacker received but the test has not decoded yet.
    wire: BytesMut,
    /// The driver's output buffer. While the attacker does not read, it is full and never
    /// advanced, exactly as a driver whose socket write blocks.
    out: TransmitBuf,
    /// Whether the attacker reads our output.
    pub(crate) peer_reads: bool,
    /// A server preface was already stripped from `wire`.
    preface_seen: bool,
}

impl Victim {
    /// A fresh server that has received nothing.
    pub(crate) fn server(config: Config) -> Victim {
        let conn = Connection::server(config, START).expect("valid test config");
        Victim {
            conn,
            now: START,
            events: Vec::new(),
            wire: BytesMut::new(),
            out: TransmitBuf::new(),
            peer_reads: true,
            preface_seen: false,
        }
    }

    /// A server that completed the handshake with a client advertising default settings.
    pub(crate) fn connected(config: Config) -> Victim {
        Victim::connected_with(config, Settings::DEFAULT)
    }

    /// A server that completed the handshake with a client advertising `settings`.
    pub(crate) fn connected_with(config: Config, settings: Settings) -> Victim {
        let mut v = Victim::server(config);
        let hello = Hello {
            info: ClientInfo::new(Role::Edge),
            settings,
        };
        let mut bytes = client_preface(&[1]);
        Frame::Hello(Box::new(hello)).encode(&mut bytes).unwrap();
        v.feed_all(&bytes);
        let decided = v.take_event(|e| matches!(e, Event::HandshakeRequest(_)));
        assert!(decided.is_some(), "no HandshakeRequest: {:?}", v.events);
        let accept = HandshakeAccept {
            assigned_id: 1,
            ..HandshakeAccept::default()
        };
        v.conn.accept_handshake(v.now, accept).unwrap();
        v.pump();
        assert!(v.conn.is_connected());
        // The WELCOME and our first keepalive probe: the attacker has seen them.
        let frames = v.read_frames();
        assert!(
            matches!(frames.first(), Some(Frame::Welcome(_))),
            "{frames:?}"
        );
        v.events.clear();
        v
    }

    /// The attacker stops reading: from now on the driver's buffer stays full.
    pub(crate) fn stall(&mut self) {
        self.pump();
        self.read_wire();
        self.peer_reads = false;
        let mut full = TransmitBuf::with_limit(1);
        full.put_slice(&[0]);
        self.out = full;
    }

    /// The attacker reads again: the driver's buffer empties and output flows.
    pub(crate) fn unstall(&mut self) {
        self.peer_reads = true;
        self.out = TransmitBuf::new();
        self.pump();
    }

    /// What the driver does after every input: polls output (into a full buffer while the
    /// attacker does not read) and events.
    pub(crate) fn pump(&mut self) {
        loop {
            let added = self.conn.poll_transmit(self.now, &mut self.out);
            if self.peer_reads {
                let mut bytes = Vec::new();
                self.out.drain_into(&mut bytes);
                self.wire.extend_from_slice(&bytes);
            }
            if added == 0 || !self.peer_reads {
                break;
            }
        }
        while let Some(event) = self.conn.poll_event() {
            self.events.push(event);
        }
    }

    /// One read of the transport: hands over at most `input_capacity` bytes, as a driver
    /// does, then pumps. Returns how many bytes were taken.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> usize {
        let room = self.conn.input_capacity().min(bytes.len());
        let taken = if room == 0 {
            0
        } else {
            self.conn.handle_input(self.now, &bytes[..room])
        };
        self.pump();
        taken
    }

    /// Feeds everything, failing the test if the victim ever stops reading.
    pub(crate) fn feed_all(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.feed(bytes);
            assert!(
                n > 0,
                "the victim stopped reading with {} bytes left",
                bytes.len()
            );
            bytes = &bytes[n..];
        }
    }

    /// Encodes `frame` and feeds it; returns how many of its bytes were taken.
    pub(crate) fn send(&mut self, frame: &Frame) -> usize {
        self.feed(&encode(frame))
    }

    /// Sends frames one read each until one is not taken whole or closes the connection.
    /// Returns how many were taken with the connection still open afterwards.
    pub(crate) fn send_while_open(&mut self, frames: impl IntoIterator<Item = Frame>) -> usize {
        let mut sent = 0;
        for frame in frames {
            let bytes = encode(&frame);
            if self.conn.is_closed() || self.feed(&bytes) < bytes.len() || self.conn.is_closed() {
                break;
            }
            sent += 1;
        }
        sent
    }

    /// Moves the clock and fires due timers.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.conn.handle_timeout(self.now);
        self.pump();
    }

    /// Removes and returns the first event matching `pred`.
    pub(crate) fn take_event(&mut self, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let at = self.events.iter().position(pred)?;
        Some(self.events.remove(at))
    }

    /// Our raw output the attacker received so far (including any preface), taken.
    pub(crate) fn read_wire(&mut self) -> Vec<u8> {
        self.pump();
        let bytes = self.wire.to_vec();
        self.wire = BytesMut::new();
        bytes
    }

    /// Our output decoded into frames (a leading server preface is checked and skipped).
    pub(crate) fn read_frames(&mut self) -> Vec<Frame> {
        self.pump();
        if !self.preface_seen && !self.wire.is_empty() {
            let (preface, used) = ServerPreface::decode(&self.wire)
                .expect("a valid server preface")
                .expect("a whole server preface");
            assert_eq!(preface.selected, 1);
            let _ = self.wire.split_to(used);
            self.preface_seen = true;
        }
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(&mut self.wire, WIDE).expect("we send valid frames") {
            frames.push(frame);
        }
        assert!(self.wire.is_empty(), "a partial frame in our output");
        // The attacker's buffer must not count as the victim's heap.
        self.wire = BytesMut::new();
        frames
    }

    /// The protocol violation the victim closed with; panics if it ended otherwise.
    pub(crate) fn violation(&self) -> ProtocolViolation {
        match self.conn.error() {
            Some(ConnectionError::ProtocolViolation(v)) => v.clone(),
            other => panic!("expected a protocol violation, got {other:?}"),
        }
    }

    /// Asserts the victim closed with `expected`, told the attacker with a final GOAWAY
    /// carrying its wire code, and reported it once through `ConnectionLost`.
    pub(crate) fn assert_closed_with(&mut self, expected: ProtocolViolation) {
        assert_eq!(self.violation(), expected);
        self.assert_final_goaway(expected.code());
        let lost = self.take_event(|e| matches!(e, Event::ConnectionLost(_)));
        assert_eq!(
            lost,
            Some(Event::ConnectionLost(ConnectionError::ProtocolViolation(
                expected
            )))
        );
        assert_eq!(
            self.conn.input_capacity(),
            0,
            "a closed connection reads nothing"
        );
        assert_eq!(self.conn.buffered_input(), 0, "input is freed on close");
    }

    /// Reads our output (unstalling) and asserts it ends with exactly one GOAWAY with
    /// `code`, after which the connection is finished.
    pub(crate) fn assert_final_goaway(&mut self, code: ErrorCode) -> GoAway {
        if !self.peer_reads {
            self.unstall();
        }
        let frames = self.read_frames();
        let goaways: Vec<&Frame> = frames
            .iter()
            .filter(|f| matches!(f, Frame::GoAway(_)))
            .collect();
        assert_eq!(goaways.len(), 1, "one GOAWAY expected: {frames:?}");
        let Some(Frame::GoAway(goaway)) = frames.last() else {
            panic!("GOAWAY is not the last frame: {frames:?}");
        };
        assert_eq!(goaway.code, code, "GOAWAY code ({})", goaway.reason);
        assert!(self.conn.is_finished(), "finished once the GOAWAY went out");
        goaway.clone()
    }
}

/// A client preface offering `versions`.
pub(crate) fn client_preface(versions: &[u16]) -> Vec<u8> {
    let mut bytes = Vec::new();
    ClientPreface {
        versions: versions.to_vec(),
    }
    .encode(&mut bytes);
    bytes
}

pub(crate) fn encode(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).expect("encodable");
    bytes
}

pub(crate) fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in frames {
        frame.encode(&mut bytes).expect("encodable");
    }
    bytes
}

/// A raw 13-byte frame header.
pub(crate) fn header(len: u32, ty: u8, flags: u8, id: u64) -> Vec<u8> {
    proto_core::codec::FrameHeader { len, ty, flags, id }
        .to_bytes()
        .to_vec()
}

pub(crate) fn sid(raw: u64) -> StreamId {
    StreamId::from_raw(raw)
}

pub(crate) fn open(id: u64) -> Frame {
    Frame::Open {
        id: sid(id),
        address: Address::default(),
        metadata: Bytes::new(),
    }
}

pub(crate) fn data(id: u64, fin: bool, len: usize) -> Frame {
    Frame::Data {
        id: sid(id),
        fin,
        payload: Bytes::from(vec![0xA5; len]),
    }
}

pub(crate) fn reset(id: u64) -> Frame {
    Frame::Reset {
        id: sid(id),
        code: ErrorCode::CANCELLED,
        reason: String::new(),
    }
}

pub(crate) fn window(stream: Option<u64>, increment: u32) -> Frame {
    Frame::Window {
        stream: stream.map(sid),
        increment,
    }
}

/// A whole request in one frame: head and `body_len` body bytes.
pub(crate) fn request(id: u64, body_len: usize) -> Frame {
    request_head(id, body_len as u32, body_len, false)
}

/// A request head declaring `total_len` and carrying `body_len` bytes of it.
pub(crate) fn request_head(id: u64, total_len: u32, body_len: usize, more: bool) -> Frame {
    Frame::Request {
        id: RequestId::from_raw(id),
        more,
        head: Some(Box::new(RequestHead {
            address: Address::default(),
            method: Name::from_static("m").unwrap(),
            timeout_ms: 0,
            total_len,
        })),
        body: Bytes::from(vec![7; body_len]),
    }
}

pub(crate) fn response(id: u64, total_len: u32, body_len: usize, more: bool) -> Frame {
    Frame::Response {
        id: RequestId::from_raw(id),
        more,
        head: Some(ResponseHead {
            status: ErrorCode::OK,
            total_len,
        }),
        body: Bytes::from(vec![7; body_len]),
    }
}

/// A whole message in one frame.
pub(crate) fn message(id: u64, ack_wanted: bool, body_len: usize) -> Frame {
    message_head(id, ack_wanted, body_len as u32, body_len, false)
}

pub(crate) fn message_head(
    id: u64,
    ack_wanted: bool,
    total_len: u32,
    body_len: usize,
    more: bool,
) -> Frame {
    Frame::Message {
        id: MessageId::from_raw(id),
        more,
        head: Some(Box::new(MessageHead {
            address: Address::default(),
            topic: Name::from_static("t").unwrap(),
            ack_wanted,
            timeout_ms: 0,
            total_len,
        })),
        body: Bytes::from(vec![9; body_len]),
    }
}
