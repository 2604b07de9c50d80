//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same entry points
//! the cargo-fuzz targets call, so every input the fuzzers kept is a regression test on
//! stable. The seeds themselves are written by the ignored `write_seed_corpus` test:
//! `cargo test -p proto-core --test fuzz_corpus -- --ignored` (then run `cargo fuzz cmin`).

use std::boxed::Box;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;

use bytes::Bytes;
use proto_core::codec::*;
use proto_core::testing::fuzz::{self, PairOp};
use proto_core::*;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs every file of one corpus; a missing or empty corpus fails, so the replay can never
/// silently test nothing.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = corpus_dir(target);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in files {
        let data = fs::read(&file).expect("corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            eprintln!("{target}: {} failed", file.display());
            resume_unwind(panic);
        }
    }
}

#[test]
fn decode_frame_corpus() {
    replay("decode_frame", fuzz::decode_frames);
}

#[test]
fn server_handshake_corpus() {
    replay("server_handshake", fuzz::server_handshake);
}

#[test]
fn client_handshake_corpus() {
    replay("client_handshake", fuzz::client_handshake);
}

#[test]
fn connection_chunks_corpus() {
    replay("connection_chunks", fuzz::connection_chunks);
}

#[test]
fn pair_ops_corpus() {
    replay("pair_ops", fuzz::pair_ops);
}

// ---- seeds ---------------------------------------------------------------------------------

fn name(s: &'static str) -> Name {
    Name::from_static(s).unwrap()
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode(&mut out).unwrap();
    }
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn hello(info: ClientInfo, settings: Settings) -> Frame {
    Frame::Hello(Box::new(Hello { info, settings }))
}

fn client_preface(versions: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    ClientPreface {
        versions: versions.to_vec(),
    }
    .encode(&mut out);
    out
}

fn server_preface(selected: u16) -> Vec<u8> {
    let mut out = Vec::new();
    ServerPreface {
        selected,
        supported: vec![1],
    }
    .encode(&mut out);
    out
}

fn welcome(settings: Settings) -> Frame {
    Frame::Welcome(Welcome {
        assigned_id: 7,
        settings,
        metadata: Bytes::from_static(b"gw"),
    })
}

fn request(id: u64, more: bool, head: bool, total: u32, body: &'static [u8]) -> Frame {
    Frame::Request {
        id: RequestId::from_raw(id),
        more,
        head: head.then(|| {
            Box::new(RequestHead {
                address: Address::default(),
                method: name("echo"),
                timeout_ms: 500,
                total_len: total,
            })
        }),
        body: Bytes::from_static(body),
    }
}

fn message(id: u64, ack: bool, body: &'static [u8]) -> Frame {
    Frame::Message {
        id: MessageId::from_raw(id),
        more: false,
        head: Some(Box::new(MessageHead {
            address: Address::default(),
            topic: name("t"),
            ack_wanted: ack,
            timeout_ms: 0,
            total_len: body.len() as u32,
        })),
        body: Bytes::from_static(body),
    }
}

/// Valid frames a connected peer may send; `ours` / `theirs` are the first stream ids the
/// fuzzed side and its peer open.
fn peer_frames(ours: u64, theirs: u64) -> Vec<Frame> {
    let sid = StreamId::from_raw;
    let reg = |kind, n| Registration {
        kind,
        name: name(n),
    };
    vec![
        Frame::Ping {
            ack: false,
            opaque: 9,
        },
        Frame::Ping {
            ack: true,
            opaque: 1,
        },
        Frame::Register {
            remove: false,
            entries: vec![reg(RegistrationKind::Method, "echo")],
        },
        Frame::Register {
            remove: true,
            entries: vec![reg(RegistrationKind::Topic, "t")],
        },
        Frame::MaxStreams { max: 2048 },
        Frame::Window {
            stream: None,
            increment: 65536,
        },
        Frame::Window {
            stream: Some(sid(ours)),
            increment: 4096,
        },
        Frame::MessageWindow { increment: 8192 },
        Frame::Open {
            id: sid(theirs),
            address: Address::default(),
            metadata: Bytes::from_static(b"ssh"),
        },
        Frame::Data {
            id: sid(theirs),
            fin: true,
            payload: Bytes::from_static(b"hello"),
        },
        Frame::Accept {
            id: sid(ours),
            metadata: Bytes::new(),
        },
        Frame::Data {
            id: sid(ours),
            fin: false,
            payload: Bytes::from(vec![3u8; 3000]),
        },
        Frame::Stop {
            id: sid(ours),
            code: ErrorCode::CANCELLED,
        },
        Frame::Reset {
            id: sid(ours),
            code: ErrorCode::CANCELLED,
            reason: String::from("bye"),
        },
        request(1, false, true, 4, b"ping"),
        request(2, true, true, 6, b"abc"),
        request(2, false, false, 0, b"def"),
        Frame::Cancel {
            id: RequestId::from_raw(1),
        },
        Frame::Response {
            id: RequestId::from_raw(1),
            more: false,
            head: Some(ResponseHead {
                status: ErrorCode::OK,
                total_len: 1,
            }),
            body: Bytes::from_static(b"q"),
        },
        message(1, true, b"m1"),
        message(2, false, b""),
        Frame::MessageCancel {
            id: MessageId::from_raw(1),
        },
        Frame::Ack {
            id: MessageId::from_raw(1),
            code: ErrorCode::OK,
            text: String::new(),
        },
        Frame::GoAway(GoAway {
            code: ErrorCode::OK,
            last_stream: 0,
            last_request: 0,
            last_message: 0,
            reason: String::from("drain"),
        }),
    ]
}

fn every_frame() -> Vec<Frame> {
    let mut frames = vec![
        hello(ClientInfo::new(Role::Edge), Settings::DEFAULT),
        welcome(Settings::DEFAULT),
        Frame::Refuse {
            code: ErrorCode::UNAUTHORIZED,
            reason: String::from("bad token"),
        },
    ];
    frames.extend(peer_frames(1, 2));
    frames
}

fn op(side: usize, op: PairOp, args: &[u8]) -> Vec<u8> {
    let mut out = vec![(side as u8) << 7 | op as u8];
    out.extend_from_slice(args);
    out
}

fn ops(config: u8, list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![config];
    for o in list {
        out.extend_from_slice(o);
    }
    out
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        out.push((target, format!("seed-{name}"), data));
    };
    // decode_frame: each frame alone under the default limits, all together under the
    // largest, prefaces, and a header the tiny limits refuse.
    for (i, frame) in every_frame().iter().enumerate() {
        add(
            "decode_frame",
            &format!("{i:02}-{:?}", frame.frame_type()),
            cat(&[&[0], &wire(std::slice::from_ref(frame))]),
        );
    }
    add("decode_frame", "all", cat(&[&[3], &wire(&every_frame())]));
    add(
        "decode_frame",
        "all-tiny",
        cat(&[&[1], &wire(&every_frame())]),
    );
    add(
        "decode_frame",
        "client-preface",
        cat(&[&[0], &client_preface(&[1, 2])]),
    );
    add(
        "decode_frame",
        "server-preface",
        cat(&[&[0], &server_preface(1)]),
    );

    // server_handshake: [mode, chunking, time] then what the client sends.
    let opening = cat(&[
        &client_preface(&[1]),
        &wire(&[hello(ClientInfo::new(Role::Edge), Settings::DEFAULT)]),
    ]);
    add("server_handshake", "hello", cat(&[&[0, 7, 0], &opening]));
    add(
        "server_handshake",
        "hello-bytewise",
        cat(&[&[0, 8, 0], &opening]),
    );
    add(
        "server_handshake",
        "hello-reject",
        cat(&[&[8, 7, 1], &opening]),
    );
    add(
        "server_handshake",
        "hello-undecided",
        cat(&[&[12, 7, 3], &opening]),
    );
    add(
        "server_handshake",
        "hello-tight",
        cat(&[&[0, 5, 6], &opening]),
    );
    add(
        "server_handshake",
        "http",
        cat(&[&[0, 7, 0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]),
    );
    add(
        "server_handshake",
        "wrong-version",
        cat(&[&[0, 7, 0], &client_preface(&[2, 3])]),
    );
    add(
        "server_handshake",
        "no-version",
        cat(&[&[0, 7, 0], &client_preface(&[])]),
    );
    let mut info = ClientInfo::new(Role::Service);
    info.name = name("billing");
    info.token = Bytes::from(vec![1u8; 100]);
    info.registrations = vec![Registration {
        kind: RegistrationKind::Method,
        name: name("charge"),
    }];
    let bad = Settings {
        max_frame_size: 100,
        ..Settings::DEFAULT
    };
    add(
        "server_handshake",
        "hello-service-tight",
        cat(&[&[1, 7, 4], &wire(&[hello(info.clone(), Settings::DEFAULT)])]),
    );
    add(
        "server_handshake",
        "hello-bad-settings",
        cat(&[&[1, 7, 0], &wire(&[hello(info, bad)])]),
    );
    add(
        "server_handshake",
        "frames-after-hello",
        cat(&[&[2, 6, 1], &wire(&peer_frames(2, 1))]),
    );
    add(
        "server_handshake",
        "ping-before-hello",
        cat(&[&[1, 7, 0], &wire(&peer_frames(2, 1)[..1])]),
    );

    // client_handshake: [mode, chunking, time] then what the server sends.
    let welcome_wire = cat(&[&server_preface(1), &wire(&[welcome(Settings::DEFAULT)])]);
    add(
        "client_handshake",
        "welcome",
        cat(&[&[0, 7, 0], &welcome_wire]),
    );
    add(
        "client_handshake",
        "welcome-bytewise",
        cat(&[&[0, 8, 0], &welcome_wire]),
    );
    add(
        "client_handshake",
        "welcome-timers",
        cat(&[&[0, 3, 3], &welcome_wire]),
    );
    add(
        "client_handshake",
        "no-common-version",
        cat(&[&[0, 7, 0], &server_preface(0)]),
    );
    add(
        "client_handshake",
        "http",
        cat(&[&[0, 7, 0], b"HTTP/1.1 400 Bad Request\r\n\r\n"]),
    );
    add(
        "client_handshake",
        "refuse",
        cat(&[&[1, 7, 0], &wire(&every_frame()[2..3])]),
    );
    add(
        "client_handshake",
        "bad-welcome",
        cat(&[&[1, 7, 0], &wire(&[welcome(bad)])]),
    );
    add(
        "client_handshake",
        "goaway",
        cat(&[&[1, 7, 0], &wire(&peer_frames(1, 2)[23..])]),
    );
    add(
        "client_handshake",
        "frames-after-welcome",
        cat(&[&[2, 6, 1], &wire(&peer_frames(1, 2))]),
    );

    // connection_chunks: every frame alone and all in a row, to a server (local streams 2, 4;
    // the peer's 1, 3) and to a client, with local work started (b0 bit 4).
    for (side, ours, theirs) in [(0u8, 2, 1), (1, 1, 2)] {
        let frames = peer_frames(ours, theirs);
        for (i, frame) in frames.iter().enumerate() {
            let open_first = if matches!(frame, Frame::Data { id, .. } if id.raw() == theirs) {
                wire(&frames[8..9])
            } else {
                Vec::new()
            };
            let data = cat(&[
                &[16 | side, 7, 0],
                &open_first,
                &wire(std::slice::from_ref(frame)),
            ]);
            add(
                "connection_chunks",
                &format!("{side}-{i:02}-{:?}", frame.frame_type()),
                data,
            );
        }
        add(
            "connection_chunks",
            &format!("{side}-all"),
            cat(&[&[16 | side, 7, 1], &wire(&frames)]),
        );
        add(
            "connection_chunks",
            &format!("{side}-all-tight"),
            cat(&[&[16 | side, 4, 6], &wire(&frames)]),
        );
        add(
            "connection_chunks",
            &format!("{side}-all-passive"),
            cat(&[&[14 | side, 6, 2], &wire(&frames)]),
        );
    }

    // pair_ops: [config] then operations (side 0 = client, 1 = server).
    use PairOp::*;
    let transfer = [
        op(0, Open, &[]),
        op(0, Write, &[0, 0x40, 0, 1]),
        op(0, Drive, &[]),
        op(1, Accept, &[0]),
        op(1, Read, &[0, 0xff, 0xff]),
        op(1, Write, &[0, 0x10, 0, 0]),
        op(0, Finish, &[0]),
        op(1, Finish, &[0]),
        op(0, Drive, &[]),
        op(1, Read, &[0, 0xff, 0xff]),
        op(0, Read, &[0, 0xff, 0xff]),
        op(0, Drive, &[]),
    ];
    add("pair_ops", "stream-transfer", ops(0, &transfer));
    add("pair_ops", "stream-transfer-small", ops(1, &transfer));
    let mut bytewise = vec![op(0, Chunking, &[1])];
    bytewise.extend_from_slice(&transfer);
    add("pair_ops", "stream-transfer-bytewise", ops(2, &bytewise));
    add(
        "pair_ops",
        "stream-reset-stop",
        ops(
            3,
            &[
                op(1, Open, &[]),
                op(1, Write, &[0, 0x20, 0, 0]),
                op(0, Drive, &[]),
                op(0, Accept, &[0]),
                op(0, Stop, &[0]),
                op(0, Open, &[]),
                op(0, Drive, &[]),
                op(1, Accept, &[3]),
                op(1, Open, &[]),
                op(1, Reset, &[1]),
                op(0, Drive, &[]),
            ],
        ),
    );
    add(
        "pair_ops",
        "rpc",
        ops(
            0,
            &[
                op(0, Call, &[0, 100, 0]),
                op(1, Call, &[0x10, 0, 4]),
                op(0, Drive, &[]),
                op(1, Respond, &[0, 0]),
                op(0, Respond, &[0, 1]),
                op(0, Drive, &[]),
                op(0, Call, &[1, 0, 2]),
                op(0, Drive, &[]),
                op(1, Respond, &[0, 2]),
                op(0, Advance, &[30]),
                op(1, Respond, &[0, 0]),
                op(0, Call, &[0, 10, 0]),
                op(0, Cancel, &[0, 0]),
                op(0, Drive, &[]),
            ],
        ),
    );
    add(
        "pair_ops",
        "messages",
        ops(
            1,
            &[
                op(0, Publish, &[0, 50, 1]),
                op(0, Publish, &[0, 5, 0]),
                op(1, Publish, &[0x40, 0, 3]),
                op(0, Drive, &[]),
                op(1, Ack, &[0, 0]),
                op(1, Ack, &[0, 0]),
                op(0, Ack, &[0, 1]),
                op(0, Drive, &[]),
                op(0, Publish, &[0, 1, 1]),
                op(0, Cancel, &[0, 1]),
                op(0, Drive, &[]),
            ],
        ),
    );
    add(
        "pair_ops",
        "goaway-drain",
        ops(
            0,
            &[
                op(0, Open, &[]),
                op(0, Call, &[0, 8, 0]),
                op(0, Drive, &[]),
                op(1, GoAway, &[0]),
                op(0, Call, &[0, 8, 0]),
                op(0, Drive, &[]),
                op(1, Respond, &[0, 0]),
                op(1, Accept, &[0]),
                op(0, Finish, &[0]),
                op(1, Finish, &[0]),
                op(0, Drive, &[]),
                op(0, Read, &[0, 1, 0]),
                op(1, Read, &[0, 1, 0]),
                op(0, Drive, &[]),
            ],
        ),
    );
    add(
        "pair_ops",
        "stall-ping-time",
        ops(
            2,
            &[
                op(1, Stall, &[]),
                op(0, Ping, &[]),
                op(0, Step, &[]),
                op(0, Advance, &[3 * 10 + 1]),
                op(1, Stall, &[]),
                op(0, Drive, &[]),
                op(1, Ping, &[]),
                op(0, Advance, &[4]),
                op(0, Chunking, &[2 + 3 * 20]),
                op(0, Open, &[]),
                op(0, Write, &[0, 0xff, 0xff, 2]),
                op(0, Drive, &[]),
                op(0, GoAway, &[0x81]),
                op(0, Drive, &[]),
            ],
        ),
    );
    // Regression seeds: a call or message abandoned before it was sent leaves a gap in the
    // ids, which the receiver once rejected as out of order.
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    add(
        "pair_ops",
        "id-gap-cancelled-message",
        hex("000a0001010900010a0001000f"),
    );
    add(
        "pair_ops",
        "id-gap-cancelled-call",
        hex("0007000100090000070001000f"),
    );
    add(
        "pair_ops",
        "id-gap-timed-out-call",
        hex("01078000000f073e80020f0c1e070001000f"),
    );
    out
}

/// Writes the hand-made seeds into `fuzz/corpus/<target>/seed-*`.
#[test]
#[ignore = "writes files; run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    for (target, file, data) in seeds() {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file), data).unwrap();
    }
}

/// The seeds pass too, before any fuzzing (and whether or not they were written).
#[test]
fn seeds_pass() {
    for (target, file, data) in seeds() {
        let entry: fn(&[u8]) = match target {
            "decode_frame" => fuzz::decode_frames,
            "server_handshake" => fuzz::server_handshake,
            "client_handshake" => fuzz::client_handshake,
            "connection_chunks" => fuzz::connection_chunks,
            _ => fuzz::pair_ops,
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            eprintln!("{target}/{file} failed");
            resume_unwind(panic);
        }
    }
}
