//! `interference`: edge → service RPC latency (one call in flight) on an edge connection
//! that a bulk stream from the service saturates, against the same RPC on a quiet
//! connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_tokio::{Edge, Service};
use tokio::time::Instant;

use crate::cli::InterferenceArgs;
use crate::gateway::Target;
use crate::measure::{self, Measured, Op, Progress};
use crate::setup;

pub(crate) async fn run(args: InterferenceArgs) -> anyhow::Result<Map<String, Value>> {
    let common = &args.common;
    let target = Target::new(common).await?;
    let service = setup::service(&target, None).await?;
    let edges = setup::edges(&target, 1).await?;
    let edge = edges[0].clone();
    let id = setup::edge_id(&edge)?;
    setup::sink_streams(&edge);
    let body = setup::body(args.payload);
    // Each phase gets half the duration (at least a second).
    let phase = Duration::from_secs((common.duration / 2).max(1));

    let quiet = rpc_phase(&edge, &body, common.warmup(), phase, "interference quiet").await;
    quiet.check("interference (quiet)")?;

    let bulk_bytes = Arc::new(AtomicU64::new(0));
    let bulk = {
        let (service, counter) = (service.clone(), Arc::clone(&bulk_bytes));
        tokio::spawn(async move { saturate(&service, id, &counter).await })
    };
    // Let the bulk stream fill the windows before measuring.
    let warmup = common.warmup().max(Duration::from_millis(500));
    let before = Instant::now();
    let loaded = rpc_phase(&edge, &body, warmup, phase, "interference loaded").await;
    let bulk_secs = before.elapsed().as_secs_f64();
    let bulk_total = bulk_bytes.load(Ordering::Relaxed);
    bulk.abort();
    loaded.check("interference (loaded)")?;
    if bulk_total == 0 {
        anyhow::bail!("interference: the bulk stream moved no bytes");
    }

    let mut report = common.params("interference");
    report.insert("payload".into(), json!(args.payload));
    report.insert("phase_secs".into(), json!(phase.as_secs()));
    loaded.fields(&mut report, false);
    let mut baseline = Map::new();
    quiet.fields(&mut baseline, false);
    for (field, name) in [("p50_us", "p50_ratio"), ("p99_us", "p99_ratio")] {
        if let (Some(l), Some(q)) = (
            report.get(field).and_then(Value::as_f64),
            baseline.get(field).and_then(Value::as_f64),
        ) {
            report.insert(name.into(), json!(l / q));
        }
    }
    report.insert("baseline".into(), Value::Object(baseline));
    report.insert(
        "ratio_note".into(),
        json!(
            "p50_ratio and p99_ratio are loaded / baseline latency (1 = no interference); \
             the top-level figures are under load"
        ),
    );
    report.insert(
        "bulk_bytes_per_sec".into(),
        json!(bulk_total as f64 / bulk_secs),
    );
    edge.close().await;
    service.close().await;
    Ok(report)
}

async fn rpc_phase(
    edge: &Edge,
    body: &Bytes,
    warmup: Duration,
    phase: Duration,
    label: &str,
) -> Measured {
    let (edge, body, name) = (edge.clone(), body.clone(), setup::service_name());
    let op: Op = Box::new(move || {
        let (edge, body, name) = (edge.clone(), body.clone(), name.clone());
        Box::pin(async move {
            let n = body.len() as u64;
            match edge
                .call_service(Some(&name), setup::ECHO, body, None)
                .await
            {
                Ok(answer) => Ok(n + answer.len() as u64),
                Err(e) => Err(e.to_string()),
            }
        })
    });
    let progress = Progress::start(label.to_owned(), "calls");
    let measured = measure::run_workers(vec![op], warmup, phase, &progress).await;
    progress.finish();
    measured
}

/// Writes to one stream to the edge as fast as it takes, until aborted.
async fn saturate(service: &Service, id: u64, counter: &AtomicU64) -> anyhow::Result<()> {
    let mut stream = service.open_stream(id, Bytes::new()).await?;
    let chunk = setup::body(64 * 1024);
    loop {
        stream.write_all_bytes(chunk.clone()).await?;
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}
