//! Streams through the real gateway process: opening both ways with metadata and the
//! source address, half-close, refusal, reset and stop codes across the splice, a large
//! checksummed transfer, backpressure from a slow reader with the gateway's memory
//! bounded, and many concurrent streams.

mod plug;
mod support;

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plug::Plug;
use proto_core::name::Name;
use proto_core::{Address, ErrorCode, OpenStream};
use support::*;
use tether_tokio::{ConnectExt, Edge, Error, Service, Stream};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The size of the writes: the gateway's splice moves at most 64 KiB at a time.
const CHUNK: usize = 64 * KIB;

/// FNV-1a, 64-bit: a cheap running hash that does not depend on how the bytes are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fnv {
    hash: u64,
    len: u64,
}

impl Fnv {
    fn new() -> Fnv {
        Fnv {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.len += data.len() as u64;
    }
}

/// Source data: a pseudo-random block of odd length stored twice, so any window of up to
/// `PERIOD` bytes starting anywhere in the first copy is one zero-copy slice, and chunks do
/// not repeat at a chunk-size period.
#[derive(Clone)]
struct Source(Bytes);

const PERIOD: usize = MIB + 13;

impl Source {
    fn new(seed: u64) -> Source {
        let mut x = seed | 1;
        let mut block: Vec<u8> = (0..PERIOD)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        block.extend_from_within(..);
        Source(block.into())
    }

    /// The `len` bytes at stream offset `at` (`len` ≤ `PERIOD`).
    fn at(&self, at: u64, len: usize) -> Bytes {
        let start = (at % PERIOD as u64) as usize;
        self.0.slice(start..start + len)
    }
}

/// Writes `total` bytes of `source` (starting at stream offset `skew`) in 64 KiB chunks,
/// then FIN; the hash of what was written.
async fn send(stream: &mut Stream, source: &Source, skew: u64, total: usize) -> io::Result<Fnv> {
    let mut sent = Fnv::new();
    while (sent.len as usize) < total {
        let len = CHUNK.min(total - sent.len as usize);
        let chunk = source.at(skew + sent.len, len);
        sent.update(&chunk);
        stream.write_all_bytes(chunk).await?;
    }
    stream.finish()?;
    Ok(sent)
}

/// Reads to the end of the stream; the hash of what arrived.
async fn receive(stream: &mut Stream) -> io::Result<Fnv> {
    receive_into(stream, Fnv::new()).await
}

/// Reads to the end of the stream, continuing the hash `received`.
async fn receive_into(stream: &mut Stream, mut received: Fnv) -> io::Result<Fnv> {
    while let Some(chunk) = stream.read_chunk(CHUNK).await? {
        received.update(&chunk);
    }
    Ok(received)
}

/// Reads to the end of the stream.
async fn read_to_end(stream: &mut Stream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(chunk) = stream.read_chunk(CHUNK).await? {
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// The SDK error inside an I/O error of a `Stream`.
fn sdk_error(e: &io::Error) -> Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not an SDK error: {e:?}"))
}

async fn connect(gw: &GatewayProcess, name: &str, edge_id: u64) -> (Service, Edge) {
    let service = Service::builder(name).connect(gw.service_addr).unwrap();
    let edge = Edge::builder()
        .edge_id(edge_id)
        .connect(gw.edge_addr)
        .unwrap();
    within("service connects", service.wait_connected())
        .await
        .unwrap();
    within("edge connects", edge.wait_connected())
        .await
        .unwrap();
    (service, edge)
}

/// Opens a stream from the service to the edge and accepts it.
async fn open_pair(service: &Service, edge: &Edge, edge_id: u64, tag: &[u8]) -> (Stream, Stream) {
    let metadata = Bytes::copy_from_slice(tag);
    let (opened, accepted) = within("open a stream", async {
        tokio::join!(service.open_stream(edge_id, metadata), edge.accept_stream())
    })
    .await;
    (opened.unwrap(), accepted.expect("the edge accepts"))
}

/// The gateway process's resident set size, in bytes (`VmRSS` in `/proc/<pid>/status`).
fn gateway_rss(gw: &GatewayProcess) -> u64 {
    let pid = gw.child.id().expect("the gateway runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS value in kB");
    kib * 1024
}

fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_opens_a_stream_to_an_edge_and_both_halves_close_independently() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "shell", 31).await;

    let edge_side = async {
        let incoming = edge.incoming_stream().await.expect("an incoming stream");
        assert_eq!(incoming.metadata(), &Bytes::from_static(b"port=22"));
        let source = incoming.address().expect("a source address");
        assert_eq!(source.peer_name.as_str(), "shell");
        assert_eq!(source.peer_id, 0);
        incoming.accept(Bytes::new()).unwrap()
    };
    let (opened, mut at_edge) = within("open service → edge", async {
        tokio::join!(
            service.open_stream(31, Bytes::from_static(b"port=22")),
            edge_side
        )
    })
    .await;
    let mut at_service = opened.unwrap();
    assert_eq!(at_service.address().peer_id, 31);

    // The service finishes its half first; the edge reads to the FIN, then still answers
    // on its own half.
    within("service → edge half", async {
        at_service
            .write_all_bytes(Bytes::from_static(b"ls -l"))
            .await
            .unwrap();
        at_service.finish().unwrap();
        assert_eq!(read_to_end(&mut at_edge).await.unwrap(), b"ls -l");
    })
    .await;
    within("edge → service half", async {
        at_edge
            .write_all_bytes(Bytes::from_static(b"total 0\n"))
            .await
            .unwrap();
        at_edge
            .write_all_bytes(Bytes::from_static(b"done\n"))
            .await
            .unwrap();
        at_edge.finish().unwrap();
        assert_eq!(
            read_to_end(&mut at_service).await.unwrap(),
            b"total 0\ndone\n"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_opens_a_stream_to_a_service_by_name_with_its_id_as_source() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "uploads", 32).await;

    let service_side = async {
        let incoming = service.incoming_stream().await.expect("an incoming stream");
        assert_eq!(incoming.metadata(), &Bytes::from_static(b"file=a.log"));
        let source = incoming.address().expect("a source address");
        assert_eq!(source.peer_id, 32);
        assert!(source.peer_name.is_empty());
        incoming.accept(Bytes::new()).unwrap()
    };
    let (opened, mut at_service) = within("open edge → service", async {
        tokio::join!(
            edge.open_stream("uploads", Bytes::from_static(b"file=a.log")),
            service_side
        )
    })
    .await;
    let mut at_edge = opened.unwrap();
    assert_eq!(at_edge.address().peer_name.as_str(), "uploads");

    within("edge → service, then the answer", async {
        at_edge
            .write_all_bytes(Bytes::from_static(b"line 1\nline 2\n"))
            .await
            .unwrap();
        at_edge.finish().unwrap();
        assert_eq!(
            read_to_end(&mut at_service).await.unwrap(),
            b"line 1\nline 2\n"
        );
        at_service
            .write_all_bytes(Bytes::from_static(b"stored"))
            .await
            .unwrap();
        at_service.finish().unwrap();
        assert_eq!(read_to_end(&mut at_edge).await.unwrap(), b"stored");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_metadata_crosses_the_gateway_both_ways() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "meta", 43).await;
    let timeout = Some(Duration::from_secs(20));

    // Through the connections, whose open returns the acceptor's metadata.
    let to_edge = OpenStream {
        address: Address {
            peer_id: 43,
            peer_name: Name::EMPTY,
        },
        metadata: Bytes::from_static(b"want=shell"),
    };
    let service_conn = service.connection().expect("a session");
    let (opened, ()) = within("service → edge", async {
        tokio::join!(service_conn.open_stream(to_edge, timeout), async {
            let incoming = edge.incoming_stream().await.unwrap();
            assert_eq!(incoming.metadata(), &Bytes::from_static(b"want=shell"));
            drop(incoming.accept(Bytes::from_static(b"pty=80x24")).unwrap());
        })
    })
    .await;
    assert_eq!(opened.unwrap().1, Bytes::from_static(b"pty=80x24"));

    let to_service = OpenStream {
        address: Address {
            peer_id: 0,
            peer_name: Name::new("meta").unwrap(),
        },
        metadata: Bytes::from_static(b"want=upload"),
    };
    let edge_conn = edge.connection().expect("a session");
    let (opened, ()) = within("edge → service", async {
        tokio::join!(edge_conn.open_stream(to_service, timeout), async {
            let incoming = service.incoming_stream().await.unwrap();
            assert_eq!(incoming.metadata(), &Bytes::from_static(b"want=upload"));
            drop(incoming.accept(Bytes::from_static(b"slot=7")).unwrap());
        })
    })
    .await;
    assert_eq!(opened.unwrap().1, Bytes::from_static(b"slot=7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_codes_cross_the_gateway() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "tunnels", 33).await;

    let (opened, ()) = within("edge refuses", async {
        tokio::join!(
            service.open_stream(33, Bytes::from_static(b"port=9")),
            async {
                let incoming = edge.incoming_stream().await.unwrap();
                incoming.refuse(ErrorCode::NOT_FOUND, "no service on port 9");
            }
        )
    })
    .await;
    assert_eq!(
        opened.err(),
        Some(Error::Status {
            code: ErrorCode::NOT_FOUND,
            text: String::from("no service on port 9"),
        })
    );

    let (opened, ()) = within("service refuses", async {
        tokio::join!(edge.open_stream("tunnels", Bytes::new()), async {
            let incoming = service.incoming_stream().await.unwrap();
            incoming.refuse(ErrorCode::UNAUTHORIZED, "no tunnel for you");
        })
    })
    .await;
    assert_eq!(
        opened.err(),
        Some(Error::Unauthorized(String::from("no tunnel for you")))
    );

    // An incoming stream dropped undecided is refused with REFUSED.
    let (opened, ()) = within("edge drops it", async {
        tokio::join!(service.open_stream(33, Bytes::new()), async {
            drop(edge.incoming_stream().await.unwrap());
        })
    })
    .await;
    assert!(matches!(opened, Err(Error::Refused(_))), "{opened:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_stop_codes_cross_the_gateway() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "resets", 34).await;

    // The edge resets its half: the service's reads fail with that code and text, and the
    // other direction still works.
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 34, b"reset-edge").await;
    at_edge.reset(ErrorCode::NOT_FOUND, "the file vanished");
    let e = within("service reads the reset", read_to_end(&mut at_service))
        .await
        .unwrap_err();
    assert_eq!(
        sdk_error(&e),
        Error::Status {
            code: ErrorCode::NOT_FOUND,
            text: String::from("the file vanished"),
        }
    );
    within("the other half still flows", async {
        at_service
            .write_all_bytes(Bytes::from_static(b"still here"))
            .await
            .unwrap();
        at_service.finish().unwrap();
        assert_eq!(read_to_end(&mut at_edge).await.unwrap(), b"still here");
    })
    .await;

    // The service resets its half: the edge's reads fail with that code.
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 34, b"reset-service").await;
    at_service
        .write_all_bytes(Bytes::from_static(b"partial"))
        .await
        .unwrap();
    at_service.reset(ErrorCode::UNAUTHORIZED, "session revoked");
    let e = within("edge reads the reset", read_to_end(&mut at_edge))
        .await
        .unwrap_err();
    assert_eq!(
        sdk_error(&e),
        Error::Unauthorized(String::from("session revoked"))
    );

    // The edge stops reading with a code: the service's writes fail with that code (the
    // gateway learns of the STOP when it next relays data, then stops the service's half).
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 34, b"stop").await;
    at_edge.stop(ErrorCode::BAD_REQUEST);
    let e = within("service's writes fail", async {
        loop {
            if let Err(e) = at_service
                .write_all_bytes(Bytes::from(vec![7u8; KIB]))
                .await
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(sdk_error(&e).code(), ErrorCode::BAD_REQUEST, "{e:?}");
    drop(at_edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_transfer_arrives_intact() {
    const TOTAL: usize = 256 * MIB;
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "bulk", 35).await;
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 35, b"bulk").await;
    let source = Source::new(0xb0b);

    let started = Instant::now();
    let transfer = async {
        tokio::try_join!(
            send(&mut at_service, &source, 0, TOTAL),
            receive(&mut at_edge)
        )
    };
    let (sent, received) = tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .expect("256 MiB did not cross within 120 s")
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "256 MiB service → edge through the gateway: {elapsed:?}, {:.1} MiB/s",
        mib_per_s(TOTAL, elapsed)
    );
    assert_eq!(sent.len, TOTAL as u64);
    assert_eq!(received, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_edge_reader_blocks_the_service_writer_with_bounded_gateway_memory() {
    // The writer offers far more than the windows allow, so a gateway that buffered what
    // it is offered would hold (and grow its RSS by) tens of MiB.
    const OFFERED: usize = 64 * MIB;
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "firehose", 36).await;
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 36, b"slow").await;
    let source = Source::new(0x51_0e);
    // Warm the path (allocator arenas, buffers) before the baseline.
    within(
        "warm-up write",
        at_service.write_all_bytes(source.at(0, CHUNK)),
    )
    .await
    .unwrap();
    let warm = within("warm-up read", at_edge.read_chunk(CHUNK)).await;
    let mut received = Fnv::new();
    received.update(&warm.unwrap().expect("warm-up bytes"));
    while received.len < CHUNK as u64 {
        let more = within("warm-up read", at_edge.read_chunk(CHUNK)).await;
        received.update(&more.unwrap().expect("warm-up bytes"));
    }
    let rss_before = gateway_rss(&gw);

    // The service writes while the edge reads nothing; count what the writes accept
    // (after the warm-up chunk, which the edge did read).
    let accepted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (accepted, source) = (Arc::clone(&accepted), source.clone());
        tokio::spawn(async move {
            let mut sent = Fnv::new();
            sent.update(&source.at(0, CHUNK));
            while (sent.len as usize) < OFFERED {
                let mut chunk = source.at(sent.len, CHUNK.min(OFFERED - sent.len as usize));
                sent.update(&chunk);
                while !chunk.is_empty() {
                    let n = poll_fn(|cx| at_service.poll_write_bytes(cx, &mut chunk))
                        .await
                        .unwrap();
                    accepted.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
            at_service.finish().unwrap();
            sent
        })
    };

    // Blocked: the count stops moving (unchanged for 500 ms in a row).
    let blocked_at = within("the writer blocks", async {
        let mut last = accepted.load(Ordering::SeqCst);
        let mut still = 0;
        while still < 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = accepted.load(Ordering::SeqCst);
            if now == last {
                still += 1;
            } else {
                (last, still) = (now, 0);
            }
        }
        last
    })
    .await;
    let rss_blocked = gateway_rss(&gw);
    assert!(!writer.is_finished(), "the writer was never blocked");
    eprintln!(
        "slow reader: the writer blocked after {} KiB; gateway RSS {} KiB → {} KiB",
        blocked_at / 1024,
        rss_before / 1024,
        rss_blocked / 1024
    );
    // What the service can get accepted: its send buffer up to the gateway's credit for
    // the stream (initial_stream_window 256 KiB, auto-tuning may grow it), the one 64 KiB
    // chunk the splice holds, and what is left of the edge's 256 KiB window, which the
    // gateway's send buffer for the edge's stream fills (about 450-600 KiB in all). More
    // than one hop's window shows the gateway relayed; under 2 MiB shows it stopped
    // reading once the edge stopped taking.
    assert!(
        blocked_at > 256 * KIB as u64,
        "only {blocked_at} bytes accepted"
    );
    assert!(
        blocked_at < 2 * MIB as u64,
        "{blocked_at} bytes accepted with a reader that reads nothing"
    );
    // The gateway holds at most the service-side receive window of this stream (≤ 4 MiB
    // even after auto-tuning), one chunk, and the edge-side send buffer (≤ the edge's
    // window), about 4.3 MiB in the worst case; allocator slack and the debug build's
    // bookkeeping add some. 32 MiB leaves room for that noise yet is half of what the
    // writer offers, so buffering the offered data in the gateway would fail it.
    let grown = rss_blocked.saturating_sub(rss_before);
    assert!(
        grown < 32 * MIB as u64,
        "the gateway's RSS grew by {} KiB while the writer was blocked",
        grown / 1024
    );

    // The stalled stream holds only its own windows: another stream between the same
    // service and edge still flows, in full.
    let (mut other_at_service, mut other_at_edge) =
        open_pair(&service, &edge, 36, b"meanwhile").await;
    let other = Source::new(0x07e4);
    let (sent_other, received_other) = within("another stream flows meanwhile", async {
        tokio::try_join!(
            send(&mut other_at_service, &other, 0, 4 * MIB),
            receive(&mut other_at_edge)
        )
    })
    .await
    .unwrap();
    assert_eq!(received_other, sent_other);
    assert!(!writer.is_finished(), "the stalled stream moved meanwhile");

    // The edge now reads: everything arrives, intact, and the writer completes.
    let (read, sent) = tokio::time::timeout(Duration::from_secs(60), async {
        let read = receive_into(&mut at_edge, received).await.unwrap();
        (read, writer.await.unwrap())
    })
    .await
    .expect("the slow reader's data did not arrive within 60 s");
    assert_eq!(sent.len, OFFERED as u64);
    assert_eq!(read, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_8_mib_streams_both_ways() {
    const STREAMS: u64 = 16;
    const EACH: usize = 8 * MIB;
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "parallel", 37).await;
    let source = Source::new(0x16);

    // Acceptors: read everything the opener sends, answer with its length and hash.
    async fn acceptor(mut stream: Stream) {
        let got = receive(&mut stream).await.unwrap();
        let mut answer = got.len.to_le_bytes().to_vec();
        answer.extend_from_slice(&got.hash.to_le_bytes());
        stream.write_all_bytes(answer.into()).await.unwrap();
        stream.finish().unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    // Each side accepts its half of the streams, each on its own task.
    {
        let service = service.clone();
        tasks.spawn(async move {
            let mut each = tokio::task::JoinSet::new();
            for _ in 0..STREAMS / 2 {
                each.spawn(acceptor(service.accept_stream().await.unwrap()));
            }
            each.join_all().await;
        });
        let edge = edge.clone();
        tasks.spawn(async move {
            let mut each = tokio::task::JoinSet::new();
            for _ in 0..STREAMS / 2 {
                each.spawn(acceptor(edge.accept_stream().await.unwrap()));
            }
            each.join_all().await;
        });
    }
    // Openers: even streams from the service, odd ones from the edge; each sends its own
    // 8 MiB (a different offset into the source) and checks the acceptor's answer.
    for i in 0..STREAMS {
        let (service, edge, source) = (service.clone(), edge.clone(), source.clone());
        tasks.spawn(async move {
            let tag = Bytes::from(format!("stream-{i}"));
            let mut stream = if i % 2 == 0 {
                service.open_stream(37, tag).await.unwrap()
            } else {
                edge.open_stream("parallel", tag).await.unwrap()
            };
            let sent = send(&mut stream, &source, i * 7919, EACH).await.unwrap();
            let answer = read_to_end(&mut stream).await.unwrap();
            assert_eq!(answer.len(), 16, "stream {i}");
            let len = u64::from_le_bytes(answer[..8].try_into().unwrap());
            let hash = u64::from_le_bytes(answer[8..].try_into().unwrap());
            assert_eq!((len, hash), (sent.len, sent.hash), "stream {i}");
        });
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("16 × 8 MiB did not cross within 60 s");
    let elapsed = started.elapsed();
    eprintln!(
        "16 × 8 MiB through the gateway: {elapsed:?}, {:.1} MiB/s in total",
        mib_per_s(STREAMS as usize * EACH, elapsed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_reader_fails_a_blocked_writer_with_its_code() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "stopper", 38).await;
    let (mut at_service, mut at_edge) = open_pair(&service, &edge, 38, b"stop").await;
    // The edge reads nothing until the service's writes block on both hops' windows...
    let accepted = Arc::new(AtomicU64::new(0));
    let writer = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![1u8; CHUNK]);
            loop {
                if let Err(e) = at_service.write_all_bytes(chunk.clone()).await {
                    return e;
                }
                accepted.fetch_add(CHUNK as u64, Ordering::SeqCst);
            }
        })
    };
    within("the writer blocks", async {
        let mut last = u64::MAX;
        while accepted.load(Ordering::SeqCst) != last {
            last = accepted.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(!writer.is_finished());
    // ...then stops reading: the blocked write fails with the edge's code.
    at_edge.stop(ErrorCode::BAD_REQUEST);
    let e = within("the blocked write fails", writer).await.unwrap();
    assert_eq!(sdk_error(&e).code(), ErrorCode::BAD_REQUEST, "{e:?}");
}

/// Reads until the stream fails; the error (a FIN or a timeout fails the test).
async fn read_failure(stream: &mut Stream) -> Error {
    let read = within("the read fails", read_to_end(stream)).await;
    sdk_error(&read.expect_err("the stream ended cleanly although its peer was lost"))
}

/// Writes until the stream fails; the error.
async fn write_failure(stream: &mut Stream) -> Error {
    let failed = within("a write fails", async {
        loop {
            if let Err(e) = stream.write_all_bytes(Bytes::from(vec![2u8; KIB])).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    sdk_error(&failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_ends_its_relayed_streams_with_not_online() {
    let gw = GatewayProcess::start(&[]).await;
    let (service_plug, edge_plug) = (Plug::default(), Plug::default());
    let service = Service::builder("crashy")
        .reconnect(false)
        .connect_with(service_plug.dialer(gw.service_addr))
        .unwrap();
    let edge = Edge::builder()
        .edge_id(39)
        .reconnect(false)
        .connect_with(edge_plug.dialer(gw.edge_addr))
        .unwrap();
    let steady_service = Service::builder("steady").connect(gw.service_addr).unwrap();
    let steady_edge = Edge::builder().edge_id(40).connect(gw.edge_addr).unwrap();
    for s in [&service, &steady_service] {
        within("service connects", s.wait_connected())
            .await
            .unwrap();
    }
    for e in [&edge, &steady_edge] {
        within("edge connects", e.wait_connected()).await.unwrap();
    }

    // The edge's process dies mid-stream: the service's reads and writes on the relayed
    // stream fail as for any work in flight to a lost edge (docs/GATEWAY.md), not with
    // the code of a connection the service never had.
    let (mut at_service, _at_edge) = open_pair(&steady_service, &edge, 39, b"crash").await;
    edge_plug.pull();
    let read = read_failure(&mut at_service).await;
    assert!(matches!(read, Error::EdgeNotOnline(_)), "read: {read:?}");
    let write = write_failure(&mut at_service).await;
    assert!(matches!(write, Error::EdgeNotOnline(_)), "write: {write:?}");

    // The service's process dies mid-stream: the edge's side fails with SERVICE_NOT_ONLINE.
    let (opened, accepted) = within("open edge → service", async {
        tokio::join!(
            steady_edge.open_stream("crashy", Bytes::new()),
            service.accept_stream()
        )
    })
    .await;
    let (mut at_edge, _at_service) = (opened.unwrap(), accepted.unwrap());
    service_plug.pull();
    let read = read_failure(&mut at_edge).await;
    assert!(matches!(read, Error::ServiceNotOnline(_)), "read: {read:?}");
    let write = write_failure(&mut at_edge).await;
    assert!(
        matches!(write, Error::ServiceNotOnline(_)),
        "write: {write:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_with_ok_never_yields_a_reset_with_code_ok() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "closer", 41).await;
    let (mut at_service, _at_edge) = open_pair(&service, &edge, 41, b"close").await;
    // The edge closes its connection at once with OK (no drain).
    edge.connection()
        .expect("a session")
        .close(ErrorCode::OK, "bye");
    let read = read_failure(&mut at_service).await;
    assert_ne!(
        read.code(),
        ErrorCode::OK,
        "an error with code OK: {read:?}"
    );
    assert!(matches!(read, Error::EdgeNotOnline(_)), "read: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_open_never_reaches_the_acceptor_as_a_clean_empty_stream() {
    let gw = GatewayProcess::start(&[]).await;
    let (service, edge) = connect(&gw, "firmware", 42).await;
    // The service gives up on the open (its future is dropped) before the edge decides.
    let open = tokio::time::timeout(
        Duration::from_millis(200),
        service.open_stream(42, Bytes::from_static(b"image=v2")),
    )
    .await;
    assert!(
        open.is_err(),
        "the edge accepted although it did not look yet"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The edge may still see the stream (the gateway took it before the withdrawal), but
    // must then learn it was cancelled: a clean FIN after zero bytes would read as an
    // empty, complete upload.
    let incoming = within("the edge sees the open", edge.incoming_stream())
        .await
        .expect("an incoming stream");
    if let Ok(mut stream) = incoming.accept(Bytes::new()) {
        let read = within("the edge reads", read_to_end(&mut stream)).await;
        match read {
            Ok(bytes) => panic!(
                "a withdrawn stream read as complete ({} bytes)",
                bytes.len()
            ),
            Err(e) => assert_eq!(sdk_error(&e).code(), ErrorCode::CANCELLED, "{e:?}"),
        }
    }
}
