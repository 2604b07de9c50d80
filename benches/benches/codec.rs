//! Frame encode and decode throughput, per frame kind.
//!
//! - `encode_vec`: one frame into a reused `Vec<u8>` (every payload byte is copied).
//! - `encode_transmit_buf`: one frame into a reused `TransmitBuf`, then `advance` past it, as
//!   `poll_transmit` and a driver do; payloads of 1 KiB and more are referenced, not
//!   copied, so for DATA the byte rate is not a copy rate: read the frame rate.
//! - `decode`: every frame out of a `BytesMut` holding ~256 KiB of back-to-back frames of
//!   one kind (filling the buffer is not timed; dropping the decoded frames is, since a
//!   receiver drops them too). Payloads under 16 KiB are copied out of the input buffer by
//!   design (`ZERO_COPY_MIN`), larger ones split off without a copy.
//!
//! Each result reports frames/s and bytes/s (whole encoded frames, header included).

// criterion_group!/criterion_main! expand to undocumented public items; the workspace
// denies missing_docs under clippy -D warnings.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use proto_core::TransmitBuf;
use proto_core::codec::{DecodeLimits, decode_frame};
use tether_benches::sample_frames;

/// Decode input per iteration: large enough to hold several 64 KiB frames and to make the
/// per-iteration setup negligible, small enough to stay in L2/L3 on a small VM.
const DECODE_BUF: usize = 256 * 1024;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    // Single frames take nanoseconds and a decode pass well under a millisecond: short
    // runs of 50 samples are enough for stable figures and keep the 21 benchmarks of this
    // group to about a minute.
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(50);

    for (label, frame) in sample_frames() {
        let len = frame.encoded_len();
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: len as u64,
        });

        let mut vec = Vec::with_capacity(len);
        group.bench_function(format!("encode_vec/{label}"), |b| {
            b.iter(|| {
                vec.clear();
                black_box(&frame).encode(&mut vec).unwrap();
                black_box(&vec);
            })
        });

        let mut buf = TransmitBuf::new();
        group.bench_function(format!("encode_transmit_buf/{label}"), |b| {
            b.iter(|| {
                let n = black_box(&frame).encode(&mut buf).unwrap();
                black_box(&buf);
                buf.advance(n);
            })
        });

        let count = (DECODE_BUF / len).max(1);
        let mut wire = Vec::with_capacity(count * len);
        for _ in 0..count {
            frame.encode(&mut wire).unwrap();
        }
        group.throughput(Throughput::ElementsAndBytes {
            elements: count as u64,
            bytes: wire.len() as u64,
        });
        let limits = DecodeLimits::default();
        group.bench_function(format!("decode/{label}"), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut input| {
                    let mut frames = 0;
                    while let Some(frame) = decode_frame(&mut input, limits).unwrap() {
                        black_box(frame);
                        frames += 1;
                    }
                    assert_eq!(frames, count);
                    input
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
