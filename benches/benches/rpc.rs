//! In-memory RPC and acknowledged-message round trips per second, pure CPU: both
//! connections run on this thread, on a frozen clock, joined by `tether_benches::Link`
//! with socket-like 64 KiB reads.
//!
//! A round trip is the whole application-visible cycle: `call` → client `poll_transmit` →
//! server `handle_input` → `IncomingRequests` → `next_request` → `respond` (echoing the
//! body) → server `poll_transmit` → client `handle_input` → `RpcEvent::Response`. With one
//! call in flight every step runs once per call (latency-bound: per-call fixed costs);
//! with 64 in flight the frames of many calls share each transmit and input call (the
//! batching a busy gateway link sees). Bodies of 64 B (control-plane calls) and 4 KiB
//! (at and above the 1 KiB threshold where `TransmitBuf` references payloads instead of
//! copying them).
//!
//! `messages` is the same cycle for `publish` (acknowledgement wanted) → `next_message` →
//! `ack` → `MessageEvent::Acked`, with 64 B bodies.
//!
//! `iter_custom` runs exactly `iters` round trips per sample, so the 64-in-flight window
//! stays full for all but the last 63 of them.

// criterion_group!/criterion_main! expand to undocumented public items; the workspace
// denies missing_docs under clippy -D warnings.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use proto_core::Config;
use tether_benches::{Feed, Link, message_round_trips, payload, rpc_round_trips};

fn link() -> Link {
    Link::connected(Config::default(), Feed::Reads(64 * 1024))
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    // A round trip takes microseconds: 3 s per variant gives millions of them, plenty for
    // stable figures, and keeps this file at about half a minute.
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group
}

fn rpc(c: &mut Criterion) {
    let mut group = configure(c, "rpc");
    for body_len in [64usize, 4096] {
        let body = payload(body_len);
        for in_flight in [1usize, 64] {
            let mut link = link();
            group.bench_function(format!("in_flight_{in_flight}/body_{body_len}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let received = rpc_round_trips(&mut link, iters, in_flight, &body);
                    let elapsed = start.elapsed();
                    assert_eq!(received, iters * body_len as u64);
                    elapsed
                })
            });
        }
    }
    group.finish();
}

fn messages(c: &mut Criterion) {
    let mut group = configure(c, "messages");
    let body = payload(64);
    for in_flight in [1usize, 64] {
        let mut link = link();
        group.bench_function(format!("in_flight_{in_flight}/body_64"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let acked = message_round_trips(&mut link, iters, in_flight, &body);
                let elapsed = start.elapsed();
                assert_eq!(acked, iters);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rpc, messages);
criterion_main!(benches);
