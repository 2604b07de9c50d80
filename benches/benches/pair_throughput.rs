//! In-memory bulk stream throughput, client to server, pure CPU: both connections run on
//! this thread, on a frozen clock, joined by `tether_benches::Link` (no sockets, no pair
//! harness in the way).
//!
//! One iteration opens the streams, writes 32 MiB split evenly over them (zero-copy
//! `write_bytes` of disjoint slices of one 32 MiB buffer, so the sender touches the same
//! memory whatever the stream count), has the server accept and read everything as soon
//! as `Readable` says so (`read` hands out `Bytes`, no copy), closes both halves of every
//! stream, and waits until all are reaped. Opening and closing 64 streams is noise next to
//! 32 MiB, so the figure is the data path: DATA framing, flow-control accounting and window
//! updates, input buffering and decoding. Default configs, so 256 KiB stream windows and a
//! 16 MiB connection window; without PING traffic there is no RTT and no auto-tuning.
//!
//! Two feeds: `chunks` hands each `TransmitBuf` chunk straight to `handle_input` (frames
//! arrive aligned, nothing copied outside the core); `reads_64k` first copies into a 64 KiB
//! read buffer, as a socket driver does, so frames straddle reads (one extra memcpy in the
//! driver, and the core's input buffer sees realistic partial frames).

// criterion_group!/criterion_main! expand to undocumented public items; the workspace
// denies missing_docs under clippy -D warnings.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use proto_core::Config;
use tether_benches::{Feed, Link, bulk_transfer, payload};

/// Bytes moved per iteration: tens of milliseconds of work, so per-iteration setup and
/// timer resolution do not matter, while 20 samples still fit a 5-second budget.
const VOLUME: usize = 32 << 20;

fn pair_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair_throughput");
    // Iterations take tens of milliseconds: flat sampling with few samples keeps the whole
    // group under half a minute on a 2-core VM.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(VOLUME as u64));
    let data = payload(VOLUME);

    for (feed_label, feed) in [
        ("chunks", Feed::Chunks),
        ("reads_64k", Feed::Reads(64 * 1024)),
    ] {
        for streams in [1usize, 64] {
            let mut link = Link::connected(Config::default(), feed);
            group.bench_function(format!("{feed_label}/streams_{streams}"), |b| {
                b.iter(|| {
                    let read = bulk_transfer(&mut link, streams, &data);
                    assert_eq!(read, VOLUME as u64);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pair_throughput);
criterion_main!(benches);
