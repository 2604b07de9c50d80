//! `stream`: bulk bytes service → edge on N concurrent relayed streams, or stream opens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_tokio::Service;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::cli::StreamArgs;
use crate::gateway::Target;
use crate::measure::{self, Op, Progress};
use crate::setup;

const CHUNK: usize = 64 * 1024;

pub(crate) async fn run(args: StreamArgs) -> anyhow::Result<Map<String, Value>> {
    let common = &args.common;
    let target = Target::new(common).await?;
    let service = setup::service(&target, None).await?;
    let edges = setup::edges(&target, 1).await?;
    let edge = edges[0].clone();
    let id = setup::edge_id(&edge)?;
    setup::sink_streams(&edge);
    let mut report = common.params("stream");
    if args.opens {
        report.insert("opens".into(), json!(true));
        report.insert("concurrency".into(), json!(args.concurrency));
        let ops: Vec<Op> = (0..args.concurrency)
            .map(|_| {
                let service = service.clone();
                let op: Op = Box::new(move || {
                    let service = service.clone();
                    Box::pin(
                        async move { open_once(&service, id).await.map_err(|e| e.to_string()) },
                    )
                });
                op
            })
            .collect();
        let progress = Progress::start(format!("stream opens c={}", args.concurrency), "opens");
        let measured =
            measure::run_workers(ops, common.warmup(), common.duration(), &progress).await;
        progress.finish();
        measured.check("stream opens")?;
        measured.fields(&mut report, false);
    } else {
        report.insert("streams".into(), json!(args.streams));
        report.insert("payload_mib".into(), json!(args.payload_mib));
        bulk(&service, id, &args, &mut report).await?;
    }
    edge.close().await;
    service.close().await;
    Ok(report)
}

/// Open, write one byte, finish, wait for the edge's answer and its end.
async fn open_once(service: &Service, id: u64) -> anyhow::Result<u64> {
    let mut stream = service.open_stream(id, Bytes::new()).await?;
    stream.write_all(b"x").await?;
    stream.shutdown().await?;
    while stream.read_chunk(64).await?.is_some() {}
    Ok(1)
}

/// Rounds of `payload_mib` split over the streams: warm-up rounds, then measured rounds
/// until the duration has passed (at least one).
async fn bulk(
    service: &Service,
    id: u64,
    args: &StreamArgs,
    report: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let common = &args.common;
    let total = args.payload_mib * 1024 * 1024;
    let per_stream = (total / args.streams).max(1);
    let chunk = setup::body(CHUNK);
    let progress = Progress::start(format!("stream x{}", args.streams), "bytes");
    let counter = progress.counter();
    // A round that takes much longer than the whole run is a stuck gateway.
    let round_limit = Duration::from_secs(common.duration.max(10) * 3 + 30);
    let warm_end = Instant::now() + common.warmup();
    while Instant::now() < warm_end {
        round(
            service,
            id,
            args.streams,
            per_stream,
            &chunk,
            &counter,
            round_limit,
        )
        .await?;
    }
    let start = Instant::now();
    let end = start + common.duration();
    let mut rates = Vec::new();
    let mut bytes = 0u64;
    let mut rounds = 0u64;
    loop {
        let per = round(
            service,
            id,
            args.streams,
            per_stream,
            &chunk,
            &counter,
            round_limit,
        )
        .await?;
        bytes += per_stream * args.streams;
        rounds += 1;
        rates.extend(per);
        if Instant::now() >= end {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    progress.finish();
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let fastest = rates.iter().copied().fold(0.0, f64::max);
    report.insert("bytes_per_sec".into(), json!(bytes as f64 / secs));
    report.insert("rounds".into(), json!(rounds));
    report.insert("measured_secs".into(), json!(secs));
    report.insert("slowest_stream_bytes_per_sec".into(), json!(slowest));
    report.insert("fastest_stream_bytes_per_sec".into(), json!(fastest));
    report.insert("spread".into(), json!(slowest / fastest));
    report.insert(
        "spread_note".into(),
        json!("slowest / fastest per-stream throughput (1 = perfectly fair)"),
    );
    Ok(())
}

/// One round: `streams` streams of `per_stream` bytes each, concurrently. Returns each
/// stream's throughput (bytes/s, from open to the edge's answer).
async fn round(
    service: &Service,
    id: u64,
    streams: u64,
    per_stream: u64,
    chunk: &Bytes,
    counter: &Arc<AtomicU64>,
    limit: Duration,
) -> anyhow::Result<Vec<f64>> {
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (service, chunk, counter) = (service.clone(), chunk.clone(), Arc::clone(counter));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let mut stream = service.open_stream(id, Bytes::new()).await?;
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(chunk.len() as u64);
                    stream.write_all_bytes(chunk.slice(..n as usize)).await?;
                    counter.fetch_add(n, Ordering::Relaxed);
                    left -= n;
                }
                stream.shutdown().await?;
                let mut answer = Vec::new();
                while let Some(part) = stream.read_chunk(64).await? {
                    answer.extend_from_slice(&part);
                }
                anyhow::ensure!(answer == b"done", "the edge did not confirm the stream");
                anyhow::Ok(per_stream as f64 / t0.elapsed().as_secs_f64())
            })
        })
        .collect();
    let all = async {
        let mut rates = Vec::new();
        for task in tasks {
            rates.push(task.await.context("stream task")??);
        }
        anyhow::Ok(rates)
    };
    tokio::time::timeout(limit, all)
        .await
        .map_err(|_| anyhow::anyhow!("a stream round took over {}s", limit.as_secs()))?
}
