//! Test support (feature `testing`): an in-memory pair of connections on a virtual clock,
//! and the fuzz entry points that the `fuzz/` targets and the corpus-replay tests share.
//!
//! Not part of the protocol API; it exists so tests, benchmarks and fuzzers drive the core
//! the same way.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub mod fuzz;

use alloc::vec::Vec;
use core::time::Duration;

use crate::codec::ClientInfo;
use crate::config::Config;
use crate::conn::{Connection, HandshakeAccept};
use crate::event::Event;
use crate::ids::Role;
use crate::time::Timestamp;
use crate::transmit::TransmitBuf;

/// How the byte pipe splits what one side wrote before the other reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Deliver everything available at once.
    Whole,
    /// Deliver at most this many bytes per `handle_input` call (1 = byte by byte).
    Fixed(usize),
    /// Deliver a pseudo-random number of bytes between 1 and `max` per call.
    Random {
        /// Largest chunk.
        max: usize,
    },
}

/// A tiny deterministic generator (xorshift64*), so runs replay exactly from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `1..=max` (`max` ≥ 1).
    pub fn below_inclusive(&mut self, max: usize) -> usize {
        let max = max.max(1) as u64;
        ((self.next_u64() % max) + 1) as usize
    }
}

/// One end of the pair, as seen by a test.
#[derive(Debug)]
pub struct End {
    /// The connection.
    pub conn: Connection,
    /// Events polled so far and not yet taken by the test.
    pub events: Vec<Event>,
    /// Output polled and not yet delivered.
    out: TransmitBuf,
    /// The transport towards this end is stalled: nothing is delivered to it.
    pub stalled: bool,
    /// The peer's driver closed the transport and this end was told (EOF).
    pub eof_delivered: bool,
}

impl End {
    fn new(conn: Connection) -> Self {
        End {
            conn,
            events: Vec::new(),
            out: TransmitBuf::new(),
            stalled: false,
            eof_delivered: false,
        }
    }

    /// Takes the collected events.
    pub fn take_events(&mut self) -> Vec<Event> {
        core::mem::take(&mut self.events)
    }

    /// Removes and returns the first collected event matching `pred`.
    pub fn take_event(&mut self, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let at = self.events.iter().position(pred)?;
        Some(self.events.remove(at))
    }
}

/// Two connections joined by an in-memory byte pipe, on a virtual clock.
#[derive(Debug)]
pub struct Pair {
    /// The client (dials, sends HELLO).
    pub client: End,
    /// The server.
    pub server: End,
    /// The virtual clock.
    pub now: Timestamp,
    /// How deliveries are split.
    pub chunking: Chunking,
    /// Bytes in flight client → server.
    c2s: Pipe,
    /// Bytes in flight server → client.
    s2c: Pipe,
    rng: Rng,
    /// Accept every handshake with this, if set.
    pub auto_accept: Option<HandshakeAccept>,
}

/// `drive` gives up after this many rounds without settling: a livelock is a bug.
const MAX_ROUNDS: usize = 1_000_000;

impl Pair {
    /// A pair that has not handshaken yet. The clock starts at one second.
    pub fn new(client: Config, server: Config, info: ClientInfo) -> Self {
        let now = Timestamp::from_millis(1000);
        let client =
            Connection::client(client, info, now).unwrap_or_else(|e| panic!("client config: {e}"));
        let server =
            Connection::server(server, now).unwrap_or_else(|e| panic!("server config: {e}"));
        Pair {
            client: End::new(client),
            server: End::new(server),
            now,
            chunking: Chunking::Whole,
            c2s: Pipe::default(),
            s2c: Pipe::default(),
            rng: Rng::new(0x5eed),
            auto_accept: Some(HandshakeAccept {
                assigned_id: 1,
                ..HandshakeAccept::default()
            }),
        }
    }

    /// A connected pair with the given configs (the server assigns id 1). Events of the
    /// handshake are discarded.
    pub fn connected_with(client: Config, server: Config, info: ClientInfo) -> Self {
        let mut pair = Pair::new(client, server, info);
        pair.drive();
        assert!(
            pair.client.conn.is_connected(),
            "client did not connect: {:?}",
            pair.client.conn.error()
        );
        assert!(
            pair.server.conn.is_connected(),
            "server did not connect: {:?}",
            pair.server.conn.error()
        );
        pair.client.events.clear();
        pair.server.events.clear();
        pair
    }

    /// A connected pair with default configs and an edge client.
    pub fn connected() -> Self {
        Pair::connected_with(
            Config::default(),
            Config::default(),
            ClientInfo::new(Role::Edge),
        )
    }

    /// Seeds the chunking generator.
    pub fn seed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// One round: both sides transmit, bytes are delivered (chunked, respecting each side's
    /// input capacity), events are collected. Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        progress |= transmit(&mut self.client, now, &mut self.c2s);
        progress |= transmit(&mut self.server, now, &mut self.s2c);
        progress |= deliver(
            &mut self.c2s,
            &mut self.server,
            now,
            self.chunking,
            &mut self.rng,
        );
        progress |= deliver(
            &mut self.s2c,
            &mut self.client,
            now,
            self.chunking,
            &mut self.rng,
        );
        // A finished side's driver closes the transport: once its last bytes arrived, the
        // other side reads end of input.
        progress |= close_transport(&self.client.conn, &self.c2s, &mut self.server, now);
        progress |= close_transport(&self.server.conn, &self.s2c, &mut self.client, now);
        progress |= collect(&mut self.client, now, None);
        progress |= collect(&mut self.server, now, self.auto_accept.as_ref());
        progress
    }

    /// Steps until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !self.step() {
                return;
            }
        }
        panic!("the pair did not settle after {MAX_ROUNDS} rounds");
    }

    /// The earliest timer of either side.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        let c = self.client.conn.poll_timeout().map(|(t, _)| t);
        let s = self.server.conn.poll_timeout().map(|(t, _)| t);
        match (c, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the clock forward by `d` at once, fires due timers, and drives.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.client.conn.handle_timeout(self.now);
        self.server.conn.handle_timeout(self.now);
        self.drive();
    }

    /// Runs the clock timer by timer up to `until` (inclusive), driving after each.
    pub fn run_until(&mut self, until: Timestamp) {
        self.drive();
        while let Some(t) = self.next_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.client.conn.handle_timeout(self.now);
            self.server.conn.handle_timeout(self.now);
            self.drive();
        }
        self.now = self.now.max(until);
    }

    /// Runs the clock for `d`, timer by timer.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    /// Bytes written by one side that the other has not taken yet.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.c2s.len(), self.s2c.len())
    }
}

/// Bytes in flight in one direction: appended at the back, taken from the front as slices,
/// so moving megabytes costs a `memcpy`, not a loop per byte.
#[derive(Debug, Default)]
struct Pipe {
    buf: Vec<u8>,
    head: usize,
}

impl Pipe {
    fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn front(&self, n: usize) -> &[u8] {
        &self.buf[self.head..self.head + n]
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

fn transmit(end: &mut End, now: Timestamp, pipe: &mut Pipe) -> bool {
    let added = end.conn.poll_transmit(now, &mut end.out);
    let mut moved = false;
    for chunk in end.out.chunks() {
        pipe.push(chunk);
        moved = true;
    }
    let n = end.out.len();
    end.out.advance(n);
    added > 0 || moved
}

fn deliver(
    pipe: &mut Pipe,
    to: &mut End,
    now: Timestamp,
    chunking: Chunking,
    rng: &mut Rng,
) -> bool {
    if to.stalled {
        return false;
    }
    let mut progress = false;
    while !pipe.is_empty() {
        let want = match chunking {
            Chunking::Whole => pipe.len(),
            Chunking::Fixed(n) => n.max(1),
            Chunking::Random { max } => rng.below_inclusive(max),
        };
        let n = want.min(pipe.len()).min(to.conn.input_capacity());
        if n == 0 {
            break;
        }
        let taken = to.conn.handle_input(now, pipe.front(n));
        pipe.consume(taken);
        progress |= taken > 0;
        if taken < n {
            break;
        }
        if to.conn.is_closed() {
            // Whatever is left would be ignored; drop it so `drive` settles.
            pipe.clear();
            break;
        }
    }
    progress
}

fn close_transport(from: &Connection, pipe: &Pipe, to: &mut End, now: Timestamp) -> bool {
    if !from.is_finished() || !pipe.is_empty() || to.stalled || to.eof_delivered {
        return false;
    }
    to.eof_delivered = true;
    to.conn.handle_eof(now);
    true
}

fn collect(end: &mut End, now: Timestamp, auto_accept: Option<&HandshakeAccept>) -> bool {
    let mut progress = false;
    while let Some(event) = end.conn.poll_event() {
        progress = true;
        if let (Event::HandshakeRequest(_), Some(accept)) = (&event, auto_accept) {
            end.conn
                .accept_handshake(now, accept.clone())
                .unwrap_or_else(|e| panic!("auto-accept: {e}"));
            continue;
        }
        end.events.push(event);
    }
    progress
}
