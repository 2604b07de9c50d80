//! The `pair_ops` entry point: an operation sequence applied to a connected [`Pair`], checked
//! against a model of what each side did.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

use super::Gen;
use crate::code::ErrorCode;
use crate::codec::{ClientInfo, HEADER_LEN, MIN_MAX_FRAME_SIZE};
use crate::config::Config;
use crate::conn::OpenStream;
use crate::error::{ConnectionError, ProtocolViolation};
use crate::event::{Event, MessageEvent, RpcEvent, StreamEvent};
use crate::exchange::messages::Publish;
use crate::exchange::rpc::Call;
use crate::ids::{MessageId, RequestId, Role, StreamId};
use crate::name::Name;
use crate::testing::{Chunking, End, Pair};

/// One operation of [`pair_ops`]: an input byte whose top bit picks the side (client, server)
/// and whose low five bits, modulo the count, the operation; its arguments follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PairOp {
    /// Open a stream.
    Open,
    /// `[stream, len_hi, len_lo, shift]`: write `len << (shift % 3)` pattern bytes.
    Write,
    /// `[stream, max_hi, max_lo]`: read up to `max` bytes, checking each.
    Read,
    /// `[stream]`: finish the sending half.
    Finish,
    /// `[stream]`: reset the sending half.
    Reset,
    /// `[stream]`: stop reading.
    Stop,
    /// `[how]`: take the next incoming stream; refuse it if `how % 4 == 3`, else accept it.
    Accept,
    /// `[len_hi, len_lo, timeout]`: call with a pattern body; timeout `50 ms × timeout` if
    /// non-zero.
    Call,
    /// `[which, how]`: take a request; unless `how & 2`, answer a taken one: echo with OK
    /// if `how & 1 == 0`, else an error text.
    Respond,
    /// `[which, what]`: cancel an in-flight call (`what` even) or message (odd).
    Cancel,
    /// `[len_hi, len_lo, how]`: publish a pattern body; acknowledged if `how & 1`, with a
    /// timeout of `50 ms × (how >> 1)` if non-zero.
    Publish,
    /// `[which, how]`: take a message; unless `how & 2`, acknowledge a taken one: done if
    /// `how & 1 == 0`, else an error.
    Ack,
    /// `[how]`: run the clock timer by timer for up to a second or a minute, or jump it.
    Advance,
    /// `[how]`: deliver whole, in fixed chunks, or in random chunks.
    Chunking,
    /// One round of the pair.
    Step,
    /// Rounds until nothing moves.
    Drive,
    /// Send a PING.
    Ping,
    /// `[how]`: graceful GOAWAY, or close at once with `how` as the code if `how & 1`.
    GoAway,
    /// Stop or resume delivering to this side.
    Stall,
}

impl PairOp {
    /// Every operation, in code order.
    pub const ALL: [PairOp; 19] = [
        PairOp::Open,
        PairOp::Write,
        PairOp::Read,
        PairOp::Finish,
        PairOp::Reset,
        PairOp::Stop,
        PairOp::Accept,
        PairOp::Call,
        PairOp::Respond,
        PairOp::Cancel,
        PairOp::Publish,
        PairOp::Ack,
        PairOp::Advance,
        PairOp::Chunking,
        PairOp::Step,
        PairOp::Drive,
        PairOp::Ping,
        PairOp::GoAway,
        PairOp::Stall,
    ];
}

/// Bytes of the deterministic test pattern: a mix-up of streams, directions, bodies or
/// offsets shows up as a mismatch.
fn pattern(tag: u64, offset: u64) -> u8 {
    let x = offset
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(tag.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    (x >> 56) as u8
}

fn pattern_bytes(tag: u64, offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern(tag, offset + i)).collect()
}

fn end(pair: &mut Pair, side: usize) -> &mut End {
    if side == 0 {
        &mut pair.client
    } else {
        &mut pair.server
    }
}

fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(index) % items.len()])
}

/// One direction of a stream: what the writer's side handed the core, and what the reader
/// got back.
#[derive(Debug, Default)]
struct Flow {
    written: u64,
    read: u64,
    fin: bool,
    /// The reader saw the end.
    eof: bool,
}

/// What each side has done, to check everything the other side observes. Sides are indexed
/// 0 (client) and 1 (server); ids are per sending side.
#[derive(Debug, Default)]
struct Model {
    /// By (stream id, writing side).
    flows: BTreeMap<(u64, usize), Flow>,
    /// Streams each side opened or accepted.
    handles: [Vec<StreamId>; 2],
    /// Call and message bodies by (sending side, id), with the message's ack flag.
    bodies: BTreeMap<(usize, u64, bool), (Bytes, bool)>,
    calls: BTreeSet<(usize, u64)>,
    published: BTreeSet<(usize, u64)>,
    /// Replies sent, by (side that receives them, id).
    responses: BTreeMap<(usize, u64), (ErrorCode, Bytes)>,
    acks: BTreeMap<(usize, u64), (ErrorCode, String)>,
    requests_taken: [Vec<RequestId>; 2],
    messages_taken: [Vec<MessageId>; 2],
    lost: [bool; 2],
    next_tag: u64,
    /// Calls (`true`) and messages we cancelled or that timed out, by (sending side, id).
    abandoned: BTreeSet<(usize, bool, u64)>,
    /// Streams reset, stopped or refused: bytes written may never arrive.
    broken: BTreeSet<u64>,

    /// Payload bytes the input may still generate: byte-by-byte delivery of many megabytes
    /// would make one run take seconds.
    budget: usize,
    /// Most bytes one stream may hold unread (its largest possible window).
    window: usize,
    connection_window: usize,
}

/// Configs for [`pair_ops`], picked by its first byte: default with auto-tuning off (windows
/// stay at the initial size), small windows and limits, small with auto-tuning, and the
/// default with auto-tuning up to 16 MiB. Budgets keep their defaults: a correct peer must
/// never trip them.
pub(super) fn pair_config(which: u8) -> Config {
    let mut c = Config::default();
    if which & 1 == 1 {
        let s = &mut c.settings;
        s.max_frame_size = MIN_MAX_FRAME_SIZE;
        s.initial_stream_window = 16 * 1024;
        s.connection_window = 48 * 1024;
        s.max_message_size = 32 * 1024;
        s.message_window = 48 * 1024;
        s.max_concurrent_streams = 4;
        s.max_inflight_requests = 3;
        s.max_inflight_messages = 3;
        c.max_pending_accept = 2;
        c.stream_send_buffer = 8 * 1024;
        c.exchange_send_buffer = 16 * 1024;
        c.max_pending_events = 16;
        c.max_pending_control = 1024;
        c.max_handshake_size = MIN_MAX_FRAME_SIZE;
        c.max_input_buffer = MIN_MAX_FRAME_SIZE + HEADER_LEN as u32;
    }
    c.max_stream_window = match which % 4 {
        0 | 1 => c.settings.initial_stream_window,
        2 => 4 * c.settings.initial_stream_window,
        _ => c.max_stream_window,
    };
    c
}

/// A connected [`Pair`] driven by an operation sequence (see [`PairOp`]): at most 200
/// operations, each moving at most 256 KiB and all together 1 MiB.
///
/// Invariants after every operation: neither side ends with a `ProtocolViolation` (two
/// correct cores never accuse each other); every stream byte read is the byte the peer wrote
/// at that offset, and the end of a stream comes after all of them; a write takes exactly
/// what `writable()` promised; bodies arrive intact and every response or acknowledgement
/// is the one sent, for a call or message still in flight; no stream holds more unread bytes
/// than its largest window, nor all streams more than the connection window; one
/// `ConnectionLost` per side, last; `drive` settles (the pair panics otherwise).
pub fn pair_ops(data: &[u8]) {
    let mut g = Gen(data);
    let config = pair_config(g.u8());
    let mut pair =
        Pair::connected_with(config.clone(), config.clone(), ClientInfo::new(Role::Edge));
    let mut m = Model {
        window: config.max_stream_window as usize,
        connection_window: config.settings.connection_window as usize,
        budget: 1 << 20,
        ..Model::default()
    };
    for _ in 0..200 {
        if g.0.is_empty() {
            break;
        }
        let byte = g.u8();
        let side = usize::from(byte >> 7);
        let op = PairOp::ALL[usize::from(byte & 0x1f) % PairOp::ALL.len()];
        m.apply(&mut pair, &mut g, side, op);
        m.check(&mut pair);
    }
    m.settle(&mut pair);
}

impl Model {
    fn spend(&mut self, len: usize) -> usize {
        let len = len.min(self.budget);
        self.budget -= len;
        len
    }

    fn apply(&mut self, pair: &mut Pair, g: &mut Gen<'_>, side: usize, op: PairOp) {
        let now = pair.now;
        let handle = |m: &Model, g: &mut Gen<'_>| pick(&m.handles[side], g.u8());
        match op {
            PairOp::Open => {
                if let Ok(id) = end(pair, side).conn.open_stream(OpenStream::default()) {
                    self.handles[side].push(id);
                }
            }
            PairOp::Write => {
                let id = handle(self, g);
                let len = self.spend(usize::from(g.u16()) << (g.u8() % 3));
                let Some(id) = id else { return };
                let Ok(mut stream) = end(pair, side).conn.stream(id) else {
                    return;
                };
                // Generate only what can be taken, plus one byte to see `Blocked`.
                let room = stream.writable() as usize;
                let flow = self.flows.entry((id.raw(), side)).or_default();
                let data =
                    pattern_bytes(id.raw() * 2 + side as u64, flow.written, len.min(room + 1));
                if let Ok(n) = stream.write(&data) {
                    assert_eq!(n, data.len().min(room), "write took other than writable()");
                    flow.written += n as u64;
                }
            }
            PairOp::Read => {
                let id = handle(self, g);
                let max = usize::from(g.u16()).max(1);
                if let Some(id) = id {
                    self.read(pair, side, id, max);
                }
            }
            PairOp::Finish => {
                let Some(id) = handle(self, g) else { return };
                if end(pair, side)
                    .conn
                    .stream(id)
                    .is_ok_and(|mut s| s.finish().is_ok())
                {
                    self.flows.entry((id.raw(), side)).or_default().fin = true;
                }
            }
            PairOp::Reset | PairOp::Stop => {
                let Some(id) = handle(self, g) else { return };
                self.broken.insert(id.raw());
                if let Ok(mut stream) = end(pair, side).conn.stream(id) {
                    if op == PairOp::Reset {
                        let _ = stream.reset(ErrorCode::CANCELLED, "fuzz");
                    } else {
                        let _ = stream.stop(ErrorCode::CANCELLED);
                    }
                }
            }
            PairOp::Accept => {
                let how = g.u8();
                let conn = &mut end(pair, side).conn;
                if let Some(s) = conn.next_incoming_stream() {
                    if how % 4 == 3 {
                        conn.refuse_stream(s.id, ErrorCode::REFUSED, "fuzz")
                            .expect("refuse");
                    } else {
                        conn.accept_stream(s.id, Bytes::new()).expect("accept");
                        self.handles[side].push(s.id);
                    }
                }
            }
            PairOp::Call | PairOp::Publish => {
                let len = self.spend(usize::from(g.u16()));
                let how = u64::from(g.u8());
                let is_call = op == PairOp::Call;
                let ack = is_call || how & 1 == 1;
                let millis = if is_call { how } else { how >> 1 };
                let timeout = (millis > 0).then(|| Duration::from_millis(50 * millis));
                self.next_tag += 1;
                let body = pattern_bytes(1 << 40 | self.next_tag, 0, len);
                let conn = &mut end(pair, side).conn;
                let name = Name::from_static("m").expect("name");
                let id = if is_call {
                    let call = Call {
                        timeout,
                        ..Call::new(name, body.clone())
                    };
                    conn.rpc().call(now, call).map(RequestId::raw)
                } else {
                    let publish = Publish {
                        ack,
                        timeout,
                        ..Publish::new(name, body.clone())
                    };
                    conn.messages().publish(now, publish).map(MessageId::raw)
                };
                let Ok(id) = id else { return };
                self.bodies.insert((side, id, is_call), (body, ack));
                if is_call {
                    self.calls.insert((side, id));
                } else if ack {
                    self.published.insert((side, id));
                }
            }
            PairOp::Respond => _ = self.reply(pair, g, side, true),
            PairOp::Ack => _ = self.reply(pair, g, side, false),
            PairOp::Cancel => {
                let (which, what) = (g.u8(), g.u8());
                let conn = &mut end(pair, side).conn;
                if what % 2 == 0 {
                    let ids: Vec<u64> = self
                        .calls
                        .iter()
                        .filter(|k| k.0 == side)
                        .map(|k| k.1)
                        .collect();
                    if let Some(id) = pick(&ids, which) {
                        let cancelled = conn.rpc().cancel(RequestId::from_raw(id));
                        assert!(cancelled || conn.is_closed(), "{id} was in flight");
                        self.calls.remove(&(side, id));
                        self.abandoned.insert((side, true, id));
                    }
                } else {
                    let ids: Vec<u64> = self
                        .published
                        .iter()
                        .filter(|k| k.0 == side)
                        .map(|k| k.1)
                        .collect();
                    if let Some(id) = pick(&ids, which) {
                        let cancelled = conn.messages().cancel(MessageId::from_raw(id));
                        assert!(cancelled || conn.is_closed(), "{id} was in flight");
                        self.published.remove(&(side, id));
                        self.abandoned.insert((side, false, id));
                    }
                }
            }
            PairOp::Advance => {
                let how = g.u8();
                match how % 3 {
                    0 => pair.run_for(Duration::from_millis(u64::from(how) * 4 + 1)),
                    1 => pair.run_for(Duration::from_secs(u64::from(how % 64))),
                    _ => pair.advance(Duration::from_secs(u64::from(how % 32))),
                }
            }
            PairOp::Chunking => {
                let how = g.u8();
                pair.chunking = match how % 3 {
                    0 => Chunking::Whole,
                    1 => Chunking::Fixed([1, 3, 64, 1500][usize::from(how >> 2) % 4]),
                    _ => Chunking::Random {
                        max: usize::from(how) * 64 + 1,
                    },
                };
                pair.seed(u64::from(how));
            }
            PairOp::Step => {
                pair.step();
            }
            PairOp::Drive => pair.drive(),
            PairOp::Ping => {
                let _ = end(pair, side).conn.ping(now);
            }
            PairOp::GoAway => {
                let how = g.u8();
                let conn = &mut end(pair, side).conn;
                if how & 1 == 1 {
                    conn.close(now, ErrorCode(u16::from(how >> 1)), "fuzz");
                } else {
                    conn.go_away(now, ErrorCode::OK, "fuzz");
                }
            }
            PairOp::Stall => {
                let e = end(pair, side);
                e.stalled = !e.stalled;
            }
        }
    }

    /// Reads up to `max` bytes of `id` on `side`, checking each; returns how many.
    fn read(&mut self, pair: &mut Pair, side: usize, id: StreamId, max: usize) -> usize {
        let peer = 1 - side;
        let flow = self.flows.entry((id.raw(), peer)).or_default();
        let tag = id.raw() * 2 + peer as u64;
        let mut left = max;
        while left > 0 {
            let Ok(mut stream) = end(pair, side).conn.stream(id) else {
                break;
            };
            match stream.read(left) {
                Ok(Some(chunk)) => {
                    assert!(!chunk.is_empty() && chunk.len() <= left, "read size");
                    let end_at = flow.read + chunk.len() as u64;
                    assert!(end_at <= flow.written, "{id:?} read past what was written");
                    for (i, b) in chunk.iter().enumerate() {
                        let at = flow.read + i as u64;
                        assert_eq!(*b, pattern(tag, at), "{id:?} byte {at} corrupted");
                    }
                    flow.read = end_at;
                    left -= chunk.len();
                }
                Ok(None) => {
                    assert!(flow.fin, "{id:?} ended but the peer never finished");
                    assert_eq!(flow.read, flow.written, "{id:?} ended early");
                    flow.eof = true;
                    break;
                }
                Err(_) => break,
            }
        }
        max - left
    }

    /// Lets both applications do all they owe: accept every stream, read every stream, answer
    /// every request and message, until nothing moves. Unless a connection ended, nothing may
    /// then be left in flight: a pair that stops moving with work pending is deadlocked.
    fn settle(&mut self, pair: &mut Pair) {
        pair.client.stalled = false;
        pair.server.stalled = false;
        for _ in 0..100_000 {
            let mut moved = pair.step();
            for side in 0..2 {
                while let Some(s) = end(pair, side).conn.next_incoming_stream() {
                    let conn = &mut end(pair, side).conn;
                    conn.accept_stream(s.id, Bytes::new()).expect("accept");
                    self.handles[side].push(s.id);
                    moved = true;
                }
                for id in self.handles[side].clone() {
                    moved |= self.read(pair, side, id, usize::MAX) > 0;
                }
                for rpc in [true, false] {
                    while self.reply(pair, &mut Gen(&[0, 0]), side, rpc) {
                        moved = true;
                    }
                }
            }
            self.check(pair);
            if !moved {
                break;
            }
        }
        if self.lost.contains(&true) {
            return;
        }
        assert!(
            self.calls.is_empty(),
            "calls never answered: {:?}",
            self.calls
        );
        assert!(
            self.published.is_empty(),
            "never acknowledged: {:?}",
            self.published
        );
        for ((id, writer), flow) in &self.flows {
            if !self.broken.contains(id) {
                let (read, written) = (flow.read, flow.written);
                assert_eq!(read, written, "stream {id} from side {writer}: bytes stuck");
                assert!(
                    flow.eof || !flow.fin,
                    "stream {id} from side {writer}: no end"
                );
            }
        }
    }

    /// Takes the next request (or message) and maybe answers one taken earlier; returns
    /// whether it did either.
    fn reply(&mut self, pair: &mut Pair, g: &mut Gen<'_>, side: usize, rpc: bool) -> bool {
        let (which, how) = (g.u8(), g.u8());
        let peer = 1 - side;
        let conn = &mut end(pair, side).conn;
        let mut took = false;
        if rpc {
            if let Some(req) = conn.rpc().next_request() {
                let sent = &self
                    .bodies
                    .get(&(peer, req.id.raw(), true))
                    .expect("never sent")
                    .0;
                assert_eq!(&req.body, sent, "request body corrupted");
                self.requests_taken[side].push(req.id);
                took = true;
            }
        } else if let Some(msg) = conn.messages().next_message() {
            let (sent, ack) = self
                .bodies
                .get(&(peer, msg.id.raw(), false))
                .expect("never sent");
            assert_eq!(
                (&msg.body, msg.ack_wanted),
                (sent, *ack),
                "message corrupted"
            );
            if msg.ack_wanted {
                self.messages_taken[side].push(msg.id);
            }
            took = true;
        }
        if how & 2 != 0 {
            return took;
        }
        let ok = how & 1 == 0;
        let code = if ok {
            ErrorCode::OK
        } else {
            ErrorCode::APPLICATION_ERROR
        };
        if rpc {
            let Some(id) = pick(&self.requests_taken[side], which) else {
                return took;
            };
            let body = if ok {
                self.bodies[&(peer, id.raw(), true)].0.clone()
            } else {
                Bytes::from_static(b"no such thing")
            };
            self.requests_taken[side].retain(|r| *r != id);
            if conn.rpc().respond(id, code, body.clone()).is_ok() {
                self.responses.insert((peer, id.raw()), (code, body));
            }
        } else {
            let Some(id) = pick(&self.messages_taken[side], which) else {
                return took;
            };
            let text = if ok { "" } else { "failed" };
            self.messages_taken[side].retain(|m| *m != id);
            if conn.messages().ack(id, code, text).is_ok() {
                self.acks
                    .insert((peer, id.raw()), (code, String::from(text)));
            }
        }
        true
    }

    /// A side failed with `v`: two correct cores must never accuse each other.
    fn accused(&mut self, side: usize, v: &ProtocolViolation) {
        panic!("side {side} accused a correct peer: {v}");
    }

    fn check(&mut self, pair: &mut Pair) {
        // Both sides' events first, so the model is current when the invariants are checked.
        for side in 0..2 {
            for event in end(pair, side).take_events() {
                self.on_event(side, event);
            }
        }
        for side in 0..2 {
            let e = end(pair, side);
            if let Some(ConnectionError::ProtocolViolation(v)) = e.conn.error() {
                let v = v.clone();
                self.accused(side, &v);
            }
            let conn = &mut e.conn;
            let ids: Vec<StreamId> = conn.stream_ids().collect();
            let mut total = 0;
            for id in ids {
                let unread = conn.stream(id).map_or(0, |s| s.readable());
                assert!(unread <= self.window, "{id:?} holds {unread} unread bytes");
                total += unread;
            }
            assert!(
                total <= self.connection_window,
                "{total} unread bytes in all"
            );
        }
    }

    fn on_event(&mut self, side: usize, event: Event) {
        assert!(
            !self.lost[side],
            "side {side}: {event:?} after ConnectionLost"
        );
        let going_away = |code: ErrorCode| code == ErrorCode::GOING_AWAY;
        match event {
            Event::ConnectionLost(_) => {
                // Why is checked in `check`, from `error()`.
                self.lost[side] = true;
                // Everything in flight failed with the connection, without events of its own.
                self.calls.retain(|k| k.0 != side);
                self.published.retain(|k| k.0 != side);
            }
            Event::Rpc(RpcEvent::Response { id, status, body }) => {
                let key = (side, id.raw());
                assert!(
                    self.calls.remove(&key),
                    "response for {id:?}, not in flight"
                );
                match self.responses.get(&key) {
                    Some(sent) => assert_eq!((status, &body), (sent.0, &sent.1), "response"),
                    None => assert!(going_away(status) && body.is_empty(), "unsent response"),
                }
            }
            Event::Rpc(RpcEvent::Failed { id, code }) => {
                self.abandoned.insert((side, true, id.raw()));
                assert!(
                    self.calls.remove(&(side, id.raw())),
                    "{id:?} failed, not in flight"
                );
                assert!(
                    code == ErrorCode::TIMEOUT || going_away(code),
                    "failed with {code}"
                );
            }
            Event::Rpc(RpcEvent::Cancelled { id, .. }) => {
                self.requests_taken[side].retain(|r| *r != id);
            }
            Event::Message(MessageEvent::Acked { id, code, text }) => {
                let key = (side, id.raw());
                assert!(self.published.remove(&key), "ack for {id:?}, not in flight");
                match self.acks.get(&key) {
                    Some(sent) => assert_eq!((code, &text), (sent.0, &sent.1), "ack"),
                    None => assert!(going_away(code), "unsent ack {code}"),
                }
            }
            Event::Message(MessageEvent::Failed { id, code }) => {
                self.abandoned.insert((side, false, id.raw()));
                assert!(
                    self.published.remove(&(side, id.raw())),
                    "{id:?} not in flight"
                );
                assert!(
                    code == ErrorCode::TIMEOUT || going_away(code),
                    "failed with {code}"
                );
            }
            Event::Message(MessageEvent::Cancelled { id, .. }) => {
                self.messages_taken[side].retain(|m| *m != id);
            }
            Event::Stream(StreamEvent::Refused { id, .. }) => {
                self.handles[side].retain(|h| *h != id);
                self.broken.insert(id.raw());
            }
            Event::Stream(StreamEvent::Reset { id, .. } | StreamEvent::Stopped { id, .. }) => {
                self.broken.insert(id.raw());
            }
            _ => {}
        }
    }
}
