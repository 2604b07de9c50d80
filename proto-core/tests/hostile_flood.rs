//! Floods of frames that are cheap for a peer and cost us work or memory: rapid reset,
//! request and message cancel floods, pings while never reading, empty DATA, credit
//! dribble, REGISTER churn, streams we must refuse, a peer that stops reading while we have
//! plenty to send, and unread stream data. Each flood runs at "line rate" (one instant of
//! the virtual clock) against a real server [`Connection`] and must end in the documented
//! budget violation and GOAWAY(`ENHANCE_YOUR_CALM`), or stall the attacker, with the heap
//! measured throughout. Run with `--nocapture` for the figures.

mod support;

use bytes::Bytes;
use proto_core::codec::Frame;
use proto_core::*;
use support::*;

fn budget(kind: BudgetKind) -> ProtocolViolation {
    ProtocolViolation::Budget(kind)
}

/// Figures a flood test prints (run with `--nocapture`) and the lead reports.
fn report(name: &str, accepted: u64, peak_heap: i64) {
    println!("{name}: {accepted} accepted before the close, peak heap delta {peak_heap} B");
}

#[test]
fn rapid_reset_is_cut_off_at_the_peer_resets_budget_and_never_reaches_the_application() {
    let _serial = serial();
    let limit = Budgets::default().peer_resets as u64;
    let baseline = live_heap();
    let mut v = Victim::connected(Config::default());
    // The attacker never reads: our RESET replies stay queued.
    v.stall();
    let heap0 = live_heap();
    let (mut pairs, mut peak) = (0u64, 0i64);
    loop {
        let id = 2 * pairs + 1;
        let bytes = encode_all(&[open(id), reset(id)]);
        assert_eq!(v.feed(&bytes), bytes.len(), "the victim kept reading");
        // However the application reacts to `IncomingStreams`, there is nothing to take.
        assert_eq!(v.conn.next_incoming_stream(), None);
        v.events.retain(|e| !matches!(e, Event::IncomingStreams));
        if v.conn.is_closed() {
            break;
        }
        pairs += 1;
        assert_eq!(
            v.conn.stream_ids().count(),
            0,
            "reset streams are forgotten"
        );
        peak = peak.max(live_heap() - heap0);
    }
    assert_eq!(pairs, limit);
    assert!(
        !v.events.iter().any(|e| matches!(e, Event::Stream(_))),
        "no stream event for a stream the application never took"
    );
    // One queued RESET per stream at most: ~17 B each, plus bookkeeping.
    assert!(peak < 64 * 1024, "peak heap delta {peak}");
    v.unstall();
    let goaway = {
        assert_eq!(v.violation(), budget(BudgetKind::PeerResets));
        // The queued replies were dropped: the attacker gets exactly one GOAWAY.
        v.assert_final_goaway(ErrorCode::ENHANCE_YOUR_CALM)
    };
    assert_eq!(goaway.last_stream, 2 * limit + 1);
    // The closed connection keeps only its queues' spare capacity until it is dropped.
    let after_close = live_heap() - heap0;
    assert!(after_close < 32 * 1024, "after close: {after_close}");
    drop(v);
    let leaked = settled_heap() - baseline;
    // Slack for libtest's own thread, which records other tests' results meanwhile. A real
    // leak of the reset streams would be at least ~100 B for each of the 100 pairs.
    assert!(
        leaked < 4096,
        "{leaked} B outlived the connection (after close: {after_close})"
    );
    report("rapid reset", pairs, peak);
    println!("rapid reset: {after_close} B still held by the closed connection until dropped");
}

#[test]
fn the_reset_budget_is_a_rate_not_a_lifetime_count() {
    let _serial = serial();
    let budgets = Budgets::default();
    let mut v = Victim::connected(Config::default());
    let mut next = 1u64;
    let mut pair = |v: &mut Victim| {
        let bytes = encode_all(&[open(next), reset(next)]);
        next += 2;
        v.feed_all(&bytes);
    };
    // A long-lived peer that resets at the budget rate is never cut off.
    for _ in 0..3 {
        for _ in 0..budgets.peer_resets {
            pair(&mut v);
        }
        assert_eq!(v.conn.error(), None);
        v.read_frames();
        v.advance(budgets.window);
    }
    for _ in 0..budgets.peer_resets {
        pair(&mut v);
    }
    pair(&mut v);
    assert_eq!(v.violation(), budget(BudgetKind::PeerResets));
}

#[test]
fn request_and_message_cancel_floods_are_cut_off_and_never_surface() {
    let _serial = serial();
    let limit = Budgets::default().peer_resets as u64;
    for messages in [false, true] {
        let mut v = Victim::connected(Config::default());
        v.stall();
        let heap0 = live_heap();
        let (mut pairs, mut peak) = (0u64, 0i64);
        loop {
            let id = pairs + 1;
            let frames = if messages {
                let cancel = Frame::MessageCancel {
                    id: MessageId::from_raw(id),
                };
                [message(id, true, 100), cancel]
            } else {
                let cancel = Frame::Cancel {
                    id: RequestId::from_raw(id),
                };
                [request(id, 100), cancel]
            };
            let bytes = encode_all(&frames);
            assert_eq!(v.feed(&bytes), bytes.len());
            assert_eq!(v.conn.rpc().next_request(), None);
            assert_eq!(v.conn.messages().next_message(), None);
            if v.conn.is_closed() {
                break;
            }
            pairs += 1;
            assert_eq!(v.conn.rpc().requests_pending(), 0);
            assert_eq!(v.conn.messages().pending(), 0);
            peak = peak.max(live_heap() - heap0);
        }
        assert_eq!(pairs, limit);
        assert!(peak < 64 * 1024, "peak heap delta {peak}");
        assert_eq!(v.violation(), budget(BudgetKind::PeerResets));
        let goaway = v.assert_final_goaway(ErrorCode::ENHANCE_YOUR_CALM);
        let last = if messages {
            goaway.last_message
        } else {
            goaway.last_request
        };
        assert_eq!(last, limit + 1);
        let kind = if messages { "message" } else { "request" };
        report(&format!("{kind}+cancel flood"), pairs, peak);
    }
}

#[test]
fn a_ping_flood_while_never_reading_is_cut_off_at_the_ping_budget() {
    let _serial = serial();
    let limit = Budgets::default().pings as u64;
    let mut v = Victim::connected(Config::default());
    v.stall();
    let mut pings = 0u64;
    while !v.conn.is_closed() {
        let ping = Frame::Ping {
            ack: false,
            opaque: pings + 100,
        };
        assert_eq!(v.send(&ping), 13);
        // Replies to pings take one slot, so they never make us stop reading.
        assert!(v.conn.is_closed() || v.conn.input_capacity() > 0);
        pings += 1;
    }
    assert_eq!(pings, limit + 1, "the ping over the budget closes");
    assert_eq!(v.conn.input_capacity(), 0);
    v.assert_closed_with(budget(BudgetKind::Pings));
}

#[test]
fn unread_ping_replies_take_one_slot_and_the_heap_stays_flat() {
    let _serial = serial();
    let config = Config {
        budgets: Budgets {
            pings: u32::MAX,
            ..Budgets::default()
        },
        ..Config::default()
    };
    let max_input = config.max_input_buffer as usize;
    let mut v = Victim::connected(config);
    v.stall();
    let batch = |first: u64| -> Vec<u8> {
        let pings: Vec<Frame> = (first..first + 1000)
            .map(|opaque| Frame::Ping { ack: false, opaque })
            .collect();
        encode_all(&pings)
    };
    // Warm up (the input buffer's first allocation), then measure 100 000 pings.
    v.feed_all(&batch(0));
    let heap0 = live_heap();
    let mut peak = 0i64;
    for round in 1..=100u64 {
        let bytes = batch(round * 1000);
        assert_eq!(v.feed(&bytes), bytes.len(), "never stops reading");
        assert_eq!(v.conn.input_capacity(), max_input, "no backlog of any kind");
        drop(bytes);
        peak = peak.max(live_heap() - heap0);
    }
    assert!(
        peak < 4 * 1024,
        "heap grew by {peak} B over 100k unread pings"
    );
    assert_eq!(v.conn.error(), None);
    v.unstall();
    let frames = v.read_frames();
    assert_eq!(
        frames,
        vec![Frame::Ping {
            ack: true,
            opaque: 100 * 1000 + 999
        }],
        "only the latest ping is answered"
    );
    report("unread pings (no budget)", 100_000, peak);
}

#[test]
fn an_empty_data_flood_is_cut_off_at_the_empty_frames_budget() {
    let _serial = serial();
    let limit = Budgets::default().empty_frames as usize;
    let mut v = Victim::connected(Config::default());
    // A FIN carries something: an empty DATA with FIN is not an empty frame.
    v.feed_all(&encode_all(&[open(1), open(3), data(3, true, 0)]));
    let flood = (0..limit + 10).map(|_| data(1, false, 0));
    let accepted = v.send_while_open(flood);
    assert_eq!(accepted, limit);
    v.assert_closed_with(budget(BudgetKind::EmptyFrames));
    report("empty DATA", accepted as u64, 0);
}

/// What a credit dribble achieved before the victim closed (or the attacker gave up).
#[derive(Debug)]
struct Dribble {
    grants: u32,
    data_frames: u64,
    data_bytes: u64,
}

/// The attacker advertises `initial_stream_window`, lets the victim's application fill it,
/// then grants one byte at a time, each time making us send a one-byte DATA frame. Gives up
/// after `max_grants` grants.
fn dribble(limit: u32, initial_stream_window: u32, max_grants: u32) -> (Victim, Dribble) {
    let config = Config {
        budgets: Budgets {
            wasted_frames: limit,
            ..Budgets::default()
        },
        ..Config::default()
    };
    let settings = Settings {
        initial_stream_window,
        ..Settings::DEFAULT
    };
    let mut v = Victim::connected_with(config, settings);
    let id = v.conn.open_stream(OpenStream::default()).unwrap();
    let mut payload = Bytes::from(vec![1u8; initial_stream_window as usize + 64 * 1024]);
    let write = |v: &mut Victim, payload: &mut Bytes| {
        let _ = v.conn.stream(id).unwrap().write_bytes(payload);
        v.pump();
    };
    write(&mut v, &mut payload);
    v.read_frames();
    assert_eq!(payload.len(), 64 * 1024, "exactly the window was taken");
    let mut d = Dribble {
        grants: 0,
        data_frames: 0,
        data_bytes: 0,
    };
    while !v.conn.is_closed() && d.grants < max_grants {
        v.feed_all(&encode(&window(Some(id.raw()), 1)));
        d.grants += 1;
        if v.take_event(|e| matches!(e, Event::Stream(StreamEvent::Writable { .. })))
            .is_some()
        {
            write(&mut v, &mut payload);
        }
        if v.conn.is_closed() {
            break;
        }
        for frame in v.read_frames() {
            if let Frame::Data { payload, .. } = frame {
                d.data_frames += 1;
                d.data_bytes += payload.len() as u64;
            }
        }
    }
    (v, d)
}

#[test]
fn a_credit_dribble_is_cut_off_at_the_wasted_frames_budget() {
    let _serial = serial();
    let limit = 200;
    let window = Settings::DEFAULT.initial_stream_window;
    let (mut v, d) = dribble(limit, window, 10 * limit);
    assert_eq!(d.grants, limit + 1, "{d:?}");
    assert_eq!(
        d.data_bytes,
        u64::from(limit),
        "one byte per grant, never more"
    );
    assert!(d.data_frames <= u64::from(limit));
    v.assert_closed_with(budget(BudgetKind::WastedFrames));
    println!("credit dribble: {d:?}");
}

/// A peer cannot dodge the dribble budget by advertising a tiny window (whose half-window
/// grants would be tiny too): windows under 1 KiB are refused at the handshake, and from the
/// smallest allowed window on, 1-byte grants count as tiny.
#[test]
fn a_credit_dribble_after_a_tiny_initial_window_is_cut_off_too() {
    let _serial = serial();
    for tiny in [0, 7, 1023] {
        let mut v = Victim::server(Config::default());
        let settings = Settings {
            initial_stream_window: tiny,
            ..Settings::DEFAULT
        };
        let hello = Hello {
            info: ClientInfo::new(Role::Edge),
            settings,
        };
        let mut bytes = client_preface(&[1]);
        Frame::Hello(Box::new(hello)).encode(&mut bytes).unwrap();
        v.feed_all(&bytes);
        assert!(
            v.take_event(|e| matches!(e, Event::HandshakeRequest(_)))
                .is_none()
        );
        let refused = v.read_frames();
        assert!(
            matches!(
                refused.last(),
                Some(Frame::Refuse {
                    code: ErrorCode::INCOMPATIBLE,
                    ..
                })
            ),
            "window {tiny}: {refused:?}"
        );
    }
    let limit = 200;
    let (mut v, d) = dribble(limit, proto_core::config::MIN_WINDOW, 10 * limit);
    assert!(
        v.conn.is_closed(),
        "still open after {d:?}: every grant made us send a 1-byte frame"
    );
    v.assert_closed_with(budget(BudgetKind::WastedFrames));
}

#[test]
fn connection_credit_dribble_counts_against_the_same_budget() {
    let _serial = serial();
    let config = Config {
        budgets: Budgets {
            wasted_frames: 50,
            ..Budgets::default()
        },
        ..Config::default()
    };
    let mut v = Victim::connected(config);
    let accepted = v.send_while_open((0..100).map(|_| window(None, 1)));
    assert_eq!(accepted, 50);
    v.assert_closed_with(budget(BudgetKind::WastedFrames));
}

#[test]
fn register_churn_is_cut_off_at_the_registrations_budget() {
    let _serial = serial();
    let limit = Budgets::default().registrations as usize;
    let mut v = Victim::connected(Config::default());
    let entry = Registration {
        kind: RegistrationKind::Method,
        name: Name::from_static("churn").unwrap(),
    };
    let churn = (0..limit + 10).map(|i| Frame::Register {
        remove: i % 2 == 1,
        entries: vec![entry.clone()],
    });
    let mut accepted = 0;
    for frame in churn {
        if v.send_while_open([frame]) == 0 {
            break;
        }
        accepted += 1;
        assert!(v.conn.peer_registrations().count() <= 1);
        v.events.clear();
    }
    assert_eq!(accepted, limit);
    v.assert_closed_with(budget(BudgetKind::Registrations));
}

#[test]
fn streams_we_must_refuse_are_cut_off_at_the_local_resets_budget() {
    let _serial = serial();
    let limit = Budgets::default().local_resets as u64;
    let pending = 4;
    let config = Config {
        max_pending_accept: pending,
        ..Config::default()
    };
    let mut v = Victim::connected(config);
    v.stall();
    let heap0 = live_heap();
    let mut peak = 0;
    let mut opened = 0u64;
    while !v.conn.is_closed() {
        opened += 1;
        v.feed_all(&encode(&open(2 * opened - 1)));
        assert!(v.conn.stream_ids().count() <= pending as usize);
        peak = peak.max(live_heap() - heap0);
    }
    // Four wait for the application; the rest are refused until the budget runs out.
    assert_eq!(opened, u64::from(pending) + limit + 1);
    assert!(peak < 64 * 1024, "peak heap delta {peak}");
    v.assert_closed_with(budget(BudgetKind::LocalResets));
    report("refused opens", opened - 1, peak);
}

/// The attacker never reads while flooding frames that each make us queue a reply. We must
/// stop reading once `max_pending_control` bytes of replies wait, instead of queueing more;
/// the check runs between frames, so the backlog stops within one reply of that threshold
/// and the rest of the attacker's bytes stay unread in its own send path.
#[test]
fn a_peer_that_stops_reading_stalls_itself_not_our_memory() {
    let _serial = serial();
    let config = Config {
        // Stream credit would stop a stalled attacker after 1024 streams otherwise: it only
        // grows when the attacker reads our MAX_STREAMS.
        settings: Settings {
            max_concurrent_streams: u32::MAX,
            ..Settings::DEFAULT
        },
        max_pending_control: 1024,
        budgets: Budgets {
            peer_resets: u32::MAX,
            ..Budgets::default()
        },
        ..Config::default()
    };
    let max_control = 1024usize;
    let mut v = Victim::connected(config);
    v.stall();
    // We have plenty to send: a stream's worth of data and a few calls.
    let ours = v.conn.open_stream(OpenStream::default()).unwrap();
    let mut big = Bytes::from(vec![3u8; 1 << 20]);
    let queued = v.conn.stream(ours).unwrap().write_bytes(&mut big).unwrap();
    for _ in 0..4 {
        let call = Call::new(
            Name::from_static("m").unwrap(),
            Bytes::from(vec![4; 60_000]),
        );
        let now = v.now;
        v.conn.rpc().call(now, call).unwrap();
    }
    // The attacker has an endless supply of open+reset pairs; the driver reads as much as
    // the victim takes each time, like a real one.
    let mut flood = Vec::new();
    for i in 0..20_000u64 {
        let id = 2 * i + 1;
        flood.extend(encode_all(&[open(id), reset(id)]));
    }
    let heap0 = live_heap();
    let pair_len = encode_all(&[open(1), reset(1)]).len();
    let mut at = 0;
    let mut reads = 0;
    loop {
        let n = v.feed(&flood[at..]);
        if n == 0 {
            break;
        }
        at += n;
        reads += 1;
        assert!(at < flood.len(), "the victim read the whole flood");
    }
    assert_eq!(v.conn.input_capacity(), 0, "we stopped reading");
    assert_eq!(v.conn.error(), None, "stalling is not an error");
    let heap = live_heap() - heap0;
    // The attacker reads again: the backlog drains and reading resumes.
    v.unstall();
    let frames = v.read_frames();
    let resets = frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                Frame::Reset {
                    code: ErrorCode::CANCELLED,
                    ..
                }
            )
        })
        .count();
    let backlog: usize = frames
        .iter()
        .filter(|f| matches!(f, Frame::Reset { .. }))
        .map(Frame::encoded_len)
        .sum();
    let data: usize = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .sum();
    assert_eq!(resets, at / pair_len, "one reply per reset stream");
    // The check runs between frames, so the replies stop within one reply of the
    // threshold (other control frames, like our OPEN, share it).
    let one_reply = encode_all(&[reset(1)]).len();
    assert!(
        backlog + 64 >= max_control,
        "the backlog reached the threshold"
    );
    assert!(
        backlog <= max_control + one_reply,
        "backlog {backlog} B exceeds the threshold plus one reply"
    );
    assert_eq!(data, queued, "our data went out once the peer read");
    assert!(v.conn.input_capacity() > 0, "reading resumed");
    assert_eq!(v.conn.error(), None);
    drop(frames);
    let drained = live_heap() - heap0;
    println!(
        "stalled reader: {reads} reads, {} pairs taken, reply backlog {backlog} B \
         (threshold {max_control} B), heap delta while stalled {heap} B, after draining \
         {drained} B",
        at / pair_len
    );
}

/// Stream data the application has not read yet is bounded by the windows. Its heap cost
/// must be too: payloads of 16 KiB and more are kept as zero-copy slices of the input chunk
/// they arrived in, so one retained payload per chunk must not keep every chunk alive.
#[test]
fn unread_stream_data_costs_about_its_own_size_in_heap() {
    let _serial = serial();
    let mut worst = Vec::new();
    for chunk in [16 * 1024 + 64, 64 * 1024, 128 * 1024] {
        let (retained, heap) = pin_chunks(chunk, 32);
        println!(
            "{} B reads: {retained} B unread stream data held {heap} B of heap ({:.1}x)",
            chunk,
            heap as f64 / retained as f64
        );
        if heap > 2 * retained + 64 * 1024 {
            worst.push((chunk, retained, heap));
        }
    }
    assert!(
        worst.is_empty(),
        "(read size, unread bytes, heap): {worst:?}"
    );
}

/// Sends `reads` reads of `chunk` bytes, each with one 16 KiB DATA frame on a new stream
/// that the application leaves unread and filler the victim drops at once (late DATA on a
/// closed stream). Returns the unread bytes and the heap they cost.
fn pin_chunks(chunk: usize, reads: u64) -> (i64, i64) {
    let mut v = Victim::connected(Config::default());
    // Stream 1 lives and dies first: DATA on it afterwards is dropped on arrival.
    v.feed_all(&encode_all(&[open(1), reset(1)]));
    let payload = 16 * 1024;
    let heap0 = live_heap();
    for k in 1..=reads {
        let id = 2 * k + 1;
        let mut bytes = encode_all(&[open(id), data(id, false, payload)]);
        // Filler frames under the zero-copy size, up to exactly one chunk.
        while bytes.len() < chunk {
            let room = chunk - bytes.len() - 13;
            bytes.extend(encode(&data(1, false, room.min(payload - 1))));
        }
        assert_eq!(bytes.len(), chunk);
        assert_eq!(v.feed(&bytes), chunk, "one read of {chunk} B");
        v.events.clear();
        v.read_frames();
    }
    assert_eq!(v.conn.error(), None);
    let retained: usize = v
        .conn
        .stream_ids()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|id| v.conn.stream(id).unwrap().readable())
        .sum();
    assert_eq!(retained as u64, reads * payload as u64);
    (retained as i64, live_heap() - heap0)
}
