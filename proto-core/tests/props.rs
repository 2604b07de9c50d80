//! Property tests: the codec round-trips every valid frame of every type; decoding arbitrary
//! bytes never panics, consumes exactly one frame or nothing, and answers the same for every
//! prefix; a server fed arbitrary valid frames ends only in a protocol verdict; and random
//! operation sequences on a connected pair keep every flow-control invariant, deliver every
//! byte intact, and finish every transfer.

mod common;
#[path = "support/strategies.rs"]
mod strategies;

use std::time::Duration;

use bytes::BytesMut;
use common::{accept_all, pattern, pattern_bytes};
use proptest::prelude::*;
use proto_core::codec::{
    ClientPreface, DecodeLimits, Frame, FrameHeader, HEADER_LEN, MAX_HANDSHAKE_PAYLOAD,
    MAX_MAX_FRAME_SIZE, ServerPreface, decode_frame,
};
use proto_core::testing::{Chunking, End, Pair};
use proto_core::*;
use strategies::frame;

const WIDE: DecodeLimits = DecodeLimits {
    max_frame_size: MAX_MAX_FRAME_SIZE,
    max_handshake_size: MAX_HANDSHAKE_PAYLOAD,
};

// ---- 1 and 2: the codec -------------------------------------------------------------------

/// What `decode_frame` answers for `input`, and how many bytes it consumed.
fn decode(input: &[u8]) -> (Result<Option<Frame>, codec::DecodeError>, usize) {
    let mut buf = BytesMut::from(input);
    let result = decode_frame(&mut buf, WIDE);
    let consumed = input.len() - buf.len();
    (result, consumed)
}

/// The decoder's contract on one input, checked against every prefix: nothing consumed
/// until a whole frame is there, an error as soon as the header proves one, then exactly
/// the frame consumed; a prefix never answers differently from the whole once it holds the
/// bytes that decided the answer.
fn check_decoder(input: &[u8]) {
    let (whole, consumed) = decode(input);
    let header = FrameHeader::peek(input);
    match (&whole, header) {
        (Ok(None), _) => assert_eq!(consumed, 0),
        (Ok(Some(_)), Some(h)) => assert_eq!(consumed, HEADER_LEN + h.len as usize),
        (Ok(Some(_)), None) => panic!("a frame without a header"),
        (Err(_), _) => assert!(consumed <= input.len()),
    }
    for cut in 0..input.len() {
        let (answer, used) = decode(&input[..cut]);
        match answer {
            Ok(None) => assert_eq!(used, 0, "cut {cut}: consumed while waiting"),
            Ok(Some(_)) | Err(_) => {
                // A prefix may only decide once it holds the header, and then decides as
                // the whole input does (the same error, or the same frame).
                assert!(cut >= HEADER_LEN, "cut {cut}: decided without a header");
                assert_eq!(answer, whole, "cut {cut}");
                assert_eq!(used, consumed, "cut {cut}");
            }
        }
    }
}

/// A frame header with a known type and a small length, followed by random bytes: reaches
/// the payload parsers instead of failing at the first byte.
fn plausible_input() -> impl Strategy<Value = Vec<u8>> {
    let ty = proptest::sample::select(
        codec::FrameType::ALL
            .iter()
            .map(|t| *t as u8)
            .collect::<Vec<_>>(),
    );
    (
        ty,
        0u8..8,
        0u64..4,
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(ty, flags, id, rest)| {
            let len = rest.len() as u32;
            let mut bytes = FrameHeader { len, ty, flags, id }.to_bytes().to_vec();
            bytes.extend(rest);
            bytes
        })
}

/// A valid frame with a few bytes overwritten.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        frame(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(frame, edits)| {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes).unwrap();
            for (at, value) in edits {
                let i = at.index(bytes.len().min(600));
                bytes[i] = value;
            }
            bytes.truncate(600);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_frame_round_trips(
        frame in frame(),
        trailing in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let mut flat = Vec::new();
        let n = frame.encode(&mut flat).unwrap();
        prop_assert_eq!(n, flat.len());
        prop_assert_eq!(n, frame.encoded_len());
        // The vectored sink references large payloads instead of copying them; the bytes
        // on the wire must be the same.
        let mut vectored = TransmitBuf::new();
        prop_assert_eq!(frame.encode(&mut vectored).unwrap(), n);
        let mut gathered = Vec::new();
        vectored.drain_into(&mut gathered);
        prop_assert_eq!(&gathered, &flat);
        // Decoding gives the frame back and consumes exactly its bytes.
        let mut buf = BytesMut::from(&flat[..]);
        buf.extend_from_slice(&trailing);
        let decoded = decode_frame(&mut buf, WIDE).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&frame));
        prop_assert_eq!(&buf[..], &trailing[..]);
        // Every strict prefix waits and consumes nothing (checked at the edges and in
        // the header; all cuts of a 17 KiB frame would be slow).
        for cut in (0..n.min(HEADER_LEN + 2)).chain([n / 2, n - 1]) {
            prop_assert_eq!(decode(&flat[..cut]), (Ok(None), 0), "cut {}", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_prefixes_agree(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            plausible_input(),
            mutated_frame(),
        ],
    ) {
        check_decoder(&input);
        // The prefaces are parsed from the same untrusted bytes.
        if let Ok(Some((_, used))) = ClientPreface::decode(&input) {
            prop_assert!(used <= input.len());
        }
        if let Ok(Some((_, used))) = ServerPreface::decode(&input) {
            prop_assert!(used <= input.len());
        }
    }
}

// ---- a server fed arbitrary valid frames --------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever valid frames a peer sends after the handshake, in whatever pieces, the
    /// server never panics, never buffers more than its input limit, only ever sends valid
    /// frames, and ends (if it ends) with a protocol violation or the peer's own GOAWAY.
    #[test]
    fn a_server_fed_arbitrary_frames_ends_only_in_a_protocol_verdict(
        frames in proptest::collection::vec(frame(), 1..24),
        piece in 1usize..2000,
    ) {
        let now = Timestamp::from_millis(1000);
        let mut server = Connection::server(Config::default(), now).unwrap();
        let mut wire = Vec::new();
        ClientPreface { versions: vec![1] }.encode(&mut wire);
        Frame::Hello(Box::new(Hello {
            info: ClientInfo::new(Role::Edge),
            settings: Settings::DEFAULT,
        }))
        .encode(&mut wire)
        .unwrap();
        server.handle_input(now, &wire);
        while server.poll_event().is_some() {}
        server.accept_handshake(now, HandshakeAccept::default()).unwrap();
        let mut attack = Vec::new();
        for frame in &frames {
            frame.encode(&mut attack).unwrap();
        }
        let mut out = TransmitBuf::new();
        let mut output = Vec::new();
        let mut at = 0;
        while at < attack.len() && !server.is_closed() {
            let end = (at + piece).min(attack.len());
            let n = server.handle_input(now, &attack[at..end]);
            prop_assert!(server.buffered_input() <= Config::default().max_input_buffer as usize);
            at += n;
            let _ = server.poll_transmit(now, &mut out);
            out.drain_into(&mut output);
            while server.poll_event().is_some() {}
        }
        match server.error() {
            None
            | Some(ConnectionError::ProtocolViolation(_))
            | Some(ConnectionError::PeerClosed { .. }) => {}
            Some(other) => prop_assert!(false, "unexpected end: {other:?}"),
        }
        // Our output: the preface, then valid frames only (nothing at all if the peer's
        // GOAWAY closed us before we flushed).
        let used = match ServerPreface::decode(&output).unwrap() {
            Some((_, used)) => used,
            None => {
                prop_assert!(output.is_empty());
                0
            }
        };
        let mut ours = BytesMut::from(&output[used..]);
        while decode_frame(&mut ours, WIDE).unwrap().is_some() {}
        prop_assert!(ours.is_empty());
    }
}

// ---- 3: flow control on a connected pair ---------------------------------------------------

const WINDOW: u32 = 16 * 1024;
const CONN_WINDOW: u32 = 40 * 1024;
/// The largest a stream window may auto-tune to when auto-tuning is on.
const MAX_TUNED: u32 = 4 * WINDOW;

/// Small windows, so a few writes exhaust them; the connection window is smaller than three
/// streams'. With `autotune` off the stream window cannot grow, so it is exactly `WINDOW`
/// at all times; with it on, it may grow up to `MAX_TUNED`.
fn flow_config(autotune: bool) -> Config {
    Config {
        settings: Settings {
            initial_stream_window: WINDOW,
            connection_window: CONN_WINDOW,
            max_frame_size: 16 * 1024,
            ..Settings::DEFAULT
        },
        max_stream_window: if autotune { MAX_TUNED } else { WINDOW },
        ..Config::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Open {
        by_server: bool,
    },
    Write {
        stream: usize,
        from_server: bool,
        len: usize,
    },
    Read {
        stream: usize,
        by_server: bool,
        max: usize,
    },
    Finish {
        stream: usize,
        from_server: bool,
    },
    Reset {
        stream: usize,
        from_server: bool,
    },
    Stop {
        stream: usize,
        by_server: bool,
    },
    Step,
    Drive,
    Advance {
        ms: u64,
    },
    Chunking(Chunking),
}

fn op() -> impl Strategy<Value = Op> {
    let s = || any::<prop::sample::Index>().prop_map(|i| i.index(1 << 16));
    prop_oneof![
        2 => any::<bool>().prop_map(|by_server| Op::Open { by_server }),
        6 => (s(), any::<bool>(), 0usize..48 * 1024)
            .prop_map(|(stream, from_server, len)| Op::Write { stream, from_server, len }),
        5 => (s(), any::<bool>(), 1usize..40 * 1024)
            .prop_map(|(stream, by_server, max)| Op::Read { stream, by_server, max }),
        1 => (s(), any::<bool>()).prop_map(|(stream, from_server)| Op::Finish { stream, from_server }),
        1 => (s(), any::<bool>()).prop_map(|(stream, from_server)| Op::Reset { stream, from_server }),
        1 => (s(), any::<bool>()).prop_map(|(stream, by_server)| Op::Stop { stream, by_server }),
        4 => Just(Op::Step),
        2 => Just(Op::Drive),
        1 => (0u64..5000).prop_map(|ms| Op::Advance { ms }),
        1 => prop_oneof![
            Just(Chunking::Whole),
            (13usize..1024).prop_map(Chunking::Fixed),
            (16usize..8192).prop_map(|max| Chunking::Random { max }),
        ]
        .prop_map(Op::Chunking),
    ]
}

/// One direction of one stream as the test knows it.
#[derive(Clone, Copy, Debug, Default)]
struct Half {
    written: u64,
    read: u64,
    finished: bool,
    eof: bool,
    /// The writer reset it or the reader stopped it: it may end without EOF.
    killed: bool,
}

#[derive(Debug)]
struct Model {
    /// Each stream with its client→server and server→client halves.
    streams: Vec<(StreamId, [Half; 2])>,
    /// Streams the accepting side has taken (before that, it does not know them).
    accepted: Vec<StreamId>,
}

impl Model {
    /// Whether the side `server` knows stream `id`: it opened it or accepted it.
    fn knows(&self, id: StreamId, server: bool) -> bool {
        let opened_by_server = id.raw().is_multiple_of(2);
        opened_by_server == server || self.accepted.contains(&id)
    }
}

fn end(pair: &mut Pair, server: bool) -> &mut End {
    if server {
        &mut pair.server
    } else {
        &mut pair.client
    }
}

/// The half written by `from_server`'s side.
fn half_index(from_server: bool) -> usize {
    usize::from(from_server)
}

fn write(pair: &mut Pair, id: StreamId, from_server: bool, half: &mut Half, len: usize) {
    if half.finished || half.killed || len == 0 {
        return;
    }
    let Ok(mut stream) = end(pair, from_server).conn.stream(id) else {
        return; // not arrived yet on the accepting side
    };
    let mut data = pattern_bytes(id.raw(), half.written, len);
    match stream.write_bytes(&mut data) {
        Ok(n) => half.written += n as u64,
        Err(WriteError::Blocked) => {}
        Err(e) => panic!("write on {id:?} failed: {e}"),
    }
}

/// Reads up to `max` bytes, checking each against the pattern. `known`: the reader opened
/// or accepted the stream, so it must exist until its halves end.
fn read(pair: &mut Pair, id: StreamId, by_server: bool, half: &mut Half, max: usize, known: bool) {
    let mut left = max;
    while left > 0 && !half.eof {
        let Ok(mut stream) = end(pair, by_server).conn.stream(id) else {
            assert!(half.killed || !known, "{id:?} vanished before EOF");
            return;
        };
        match stream.read(left) {
            Ok(Some(chunk)) => {
                for (i, b) in chunk.iter().enumerate() {
                    let at = half.read + i as u64;
                    assert_eq!(*b, pattern(id.raw(), at), "{id:?} byte {at} corrupted");
                }
                half.read += chunk.len() as u64;
                left = left.saturating_sub(chunk.len());
                assert!(half.read <= half.written, "{id:?}: read more than written");
            }
            Ok(None) => {
                assert!(half.finished, "{id:?}: EOF without finish");
                assert_eq!(half.read, half.written, "{id:?}: EOF before every byte");
                half.eof = true;
            }
            Err(ReadError::Blocked) => return,
            Err(ReadError::Reset { .. } | ReadError::Stopped) if half.killed => return,
            Err(e) => panic!("read on {id:?} failed: {e}"),
        }
    }
}

fn apply(pair: &mut Pair, model: &mut Model, op: &Op) {
    let pick =
        |model: &Model, i: usize| (!model.streams.is_empty()).then(|| i % model.streams.len());
    match *op {
        Op::Open { by_server } => {
            if let Ok(id) = end(pair, by_server).conn.open_stream(OpenStream::default()) {
                model.streams.push((id, [Half::default(); 2]));
            }
        }
        Op::Write {
            stream,
            from_server,
            len,
        } => {
            if let Some(i) = pick(model, stream) {
                let (id, halves) = &mut model.streams[i];
                write(
                    pair,
                    *id,
                    from_server,
                    &mut halves[half_index(from_server)],
                    len,
                );
            }
        }
        Op::Read {
            stream,
            by_server,
            max,
        } => {
            if let Some(i) = pick(model, stream) {
                let known = model.knows(model.streams[i].0, by_server);
                let (id, halves) = &mut model.streams[i];
                // The server reads what the client wrote, and vice versa.
                read(
                    pair,
                    *id,
                    by_server,
                    &mut halves[half_index(!by_server)],
                    max,
                    known,
                );
            }
        }
        Op::Finish {
            stream,
            from_server,
        } => {
            if let Some(i) = pick(model, stream) {
                let (id, halves) = &mut model.streams[i];
                let half = &mut halves[half_index(from_server)];
                if !half.finished
                    && !half.killed
                    && let Ok(mut s) = end(pair, from_server).conn.stream(*id)
                {
                    s.finish().unwrap();
                    half.finished = true;
                }
            }
        }
        Op::Reset {
            stream,
            from_server,
        } => {
            if let Some(i) = pick(model, stream) {
                let (id, halves) = &mut model.streams[i];
                let id = *id;
                // An opener that resets before the other side took the stream withdraws it
                // whole (rapid reset): the other direction dies with it.
                let opened_by_server = id.raw().is_multiple_of(2);
                let withdrawn = from_server == opened_by_server
                    && end(pair, !opened_by_server).conn.stream(id).is_err();
                if let Ok(mut s) = end(pair, from_server).conn.stream(id)
                    && s.reset(ErrorCode::CANCELLED, "").is_ok()
                {
                    halves[half_index(from_server)].killed = true;
                    if withdrawn {
                        halves[half_index(!from_server)].killed = true;
                    }
                }
            }
        }
        Op::Stop { stream, by_server } => {
            if let Some(i) = pick(model, stream) {
                let (id, halves) = &mut model.streams[i];
                let id = *id;
                // The opener stopping before the other side accepted withdraws the stream
                // whole: the other direction dies with it.
                let opened_by_server = id.raw().is_multiple_of(2);
                let withdrawn = by_server == opened_by_server && !model.accepted.contains(&id);
                if !halves[half_index(!by_server)].eof
                    && let Ok(mut s) = end(pair, by_server).conn.stream(id)
                {
                    s.stop(ErrorCode::CANCELLED).unwrap();
                    halves[half_index(!by_server)].killed = true;
                    if withdrawn {
                        halves[half_index(by_server)].killed = true;
                    }
                }
            }
        }
        Op::Step => {
            pair.step();
        }
        Op::Drive => pair.drive(),
        Op::Advance { ms } => pair.advance(Duration::from_millis(ms)),
        Op::Chunking(c) => pair.chunking = c,
    }
    settle(pair, model);
    // A writer hears `Stopped` only after its reader called stop.
    for server in [false, true] {
        for event in end(pair, server).take_events() {
            if let Event::Stream(StreamEvent::Stopped { id, .. }) = event
                && let Some((_, halves)) = model.streams.iter().find(|(s, _)| *s == id)
            {
                assert!(
                    halves[half_index(server)].killed,
                    "{id:?} stopped without a stop"
                );
            }
        }
    }
}

/// Gives both sides a round-trip time of `ms` (the pair has no latency of its own), so
/// window auto-tuning, which compares update intervals with the RTT, can kick in.
fn set_rtt(pair: &mut Pair, ms: u64) {
    for server in [false, true] {
        let now = pair.now;
        end(pair, server).conn.ping(now).unwrap();
        end(pair, server).stalled = true;
        pair.drive();
        pair.now = pair.now.saturating_add(Duration::from_millis(ms));
        end(pair, server).stalled = false;
        pair.drive();
        assert_eq!(
            end(pair, server).conn.rtt(),
            Some(Duration::from_millis(ms))
        );
        end(pair, server).take_events();
    }
}

/// The applications accept every stream as soon as it arrives.
fn settle(pair: &mut Pair, model: &mut Model) {
    model.accepted.extend(accept_all(&mut pair.client));
    model.accepted.extend(accept_all(&mut pair.server));
}

/// The invariants that must hold after every operation.
fn check_invariants(pair: &mut Pair, max_window: u32) -> Result<(), TestCaseError> {
    for (side, end) in [("client", &mut pair.client), ("server", &mut pair.server)] {
        prop_assert!(
            end.conn.error().is_none(),
            "{} closed: {:?}",
            side,
            end.conn.error()
        );
        let ids: Vec<StreamId> = end.conn.stream_ids().collect();
        let mut total = 0usize;
        for id in ids {
            let readable = end.conn.stream(id).unwrap().readable();
            prop_assert!(
                readable <= max_window as usize,
                "{} {:?} buffers {} > window {}",
                side,
                id,
                readable,
                max_window
            );
            total += readable;
        }
        prop_assert!(
            total <= CONN_WINDOW as usize,
            "{} buffers {} > connection window {}",
            side,
            total,
            CONN_WINDOW
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn flow_control_holds_under_random_operations(
        ops in proptest::collection::vec(op(), 1..40),
        top_up in 0usize..128 * 1024,
        seed in any::<u64>(),
        autotune in any::<bool>(),
    ) {
        let config = flow_config(autotune);
        let max_window = config.max_stream_window;
        let mut pair = Pair::connected_with(config.clone(), config, ClientInfo::new(Role::Edge));
        pair.seed(seed);
        if autotune {
            set_rtt(&mut pair, 50);
        }
        let mut model = Model { streams: Vec::new(), accepted: Vec::new() };
        for op in &ops {
            apply(&mut pair, &mut model, op);
            check_invariants(&mut pair, max_window)?;
        }
        // Liveness: writers top up and finish, readers read everything; every transfer that
        // was not reset or stopped completes.
        let mut rounds = 0;
        loop {
            let mut done = true;
            for i in 0..model.streams.len() {
                for from_server in [false, true] {
                    let known = model.knows(model.streams[i].0, !from_server);
                    let (id, halves) = &mut model.streams[i];
                    let half = &mut halves[half_index(from_server)];
                    if half.killed || half.eof {
                        continue;
                    }
                    done = false;
                    if !half.finished {
                        let target = (top_up as u64).saturating_sub(half.written) as usize;
                        write(&mut pair, *id, from_server, half, target.max(1));
                        if half.written >= top_up as u64
                            && end(&mut pair, from_server).conn.stream(*id).is_ok()
                        {
                            end(&mut pair, from_server).conn.stream(*id).unwrap().finish().unwrap();
                            half.finished = true;
                        }
                    }
                    read(&mut pair, *id, !from_server, half, usize::MAX, known);
                }
            }
            if done {
                break;
            }
            pair.step();
            settle(&mut pair, &mut model);
            check_invariants(&mut pair, max_window)?;
            rounds += 1;
            prop_assert!(rounds < 200_000, "transfers stalled: {:?}", model.streams);
        }
        pair.drive();
        check_invariants(&mut pair, max_window)?;
        prop_assert_eq!(pair.client.conn.stream_ids().count(), 0, "client streams leaked");
        prop_assert_eq!(pair.server.conn.stream_ids().count(), 0, "server streams leaked");
    }
}

// ---- regressions found by the flow-control property ---------------------------------------

/// The opener may stop reading before the peer accepted. The stream is then dropped on both
/// sides, as if refused: nobody accuses anybody, and no side keeps a zombie stream.
#[test]
fn stop_before_accept_by_the_opener_drops_the_stream_on_both_sides() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.client
        .conn
        .stream(id)
        .unwrap()
        .stop(ErrorCode::CANCELLED)
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.conn.next_incoming_stream(), None);
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
    assert_eq!(pair.client.conn.error(), None);
    assert_eq!(pair.server.conn.error(), None);
}

/// The accepting application may stop reading a stream it has not accepted yet: that
/// refuses it, and must not make its correct peer accuse it of a protocol violation.
#[test]
fn stop_before_accept_by_the_acceptor_refuses_the_stream() {
    let mut pair = Pair::connected();
    let id = pair.client.conn.open_stream(OpenStream::default()).unwrap();
    pair.drive();
    let incoming = pair.server.conn.next_incoming_stream().unwrap();
    pair.server
        .conn
        .stream(incoming.id)
        .unwrap()
        .stop(ErrorCode::CANCELLED)
        .unwrap();
    pair.drive();
    assert_eq!(pair.client.conn.error(), None);
    assert_eq!(pair.server.conn.error(), None);
    assert!(matches!(
        pair.client
            .take_event(|e| matches!(e, Event::Stream(StreamEvent::Refused { .. }))),
        Some(Event::Stream(StreamEvent::Refused { id: got, .. })) if got == id
    ));
    assert_eq!(pair.client.conn.stream_ids().count(), 0);
    assert_eq!(pair.server.conn.stream_ids().count(), 0);
}
