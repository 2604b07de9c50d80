//! `publish`: edge → service messages, acknowledged with a window, or fire-and-forget.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cli::{Common, PublishArgs};
use crate::gateway::Target;
use crate::measure::{self, Op, Progress};
use crate::{anchor, setup};

pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<Map<String, Value>> {
    let common = &args.common;
    let nats = if common.anchor {
        Some(anchor::connect(&common.nats_url).await?)
    } else {
        None
    };
    let topic = setup::unique("tether-bench.topic");
    let target = Target::new(common).await?;
    let service = setup::service(&target, Some(&topic)).await?;
    let edges = setup::edges(&target, 1).await?;
    let edge = edges[0].clone();
    // The service takes every message and acknowledges it at once.
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (service, received) = (service.clone(), Arc::clone(&received));
        tokio::spawn(async move {
            while let Some(message) = service.receive().await {
                received.fetch_add(1, Ordering::Relaxed);
                message.done();
            }
        })
    };
    let body = setup::body(args.payload);
    let mut report = common.params("publish");
    report.insert("payload".into(), json!(args.payload));
    if args.fire_and_forget {
        report.insert("fire_and_forget".into(), json!(true));
        let progress = Progress::start(
            format!("publish fire-and-forget {}B", args.payload),
            "received",
        );
        let shown = progress.counter();
        let sender = edge.clone();
        let topic2 = topic.clone();
        let (before, after, sent) = timed_flood(
            &received,
            &shown,
            common,
            move |body: Bytes| {
                let (edge, topic) = (sender.clone(), topic2.clone());
                async move {
                    edge.publish_fire_and_forget(&topic, body)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
            &body,
        )
        .await;
        progress.finish();
        let secs = common.duration().as_secs_f64();
        if after == before {
            anyhow::bail!("publish: the service received no fire-and-forget message");
        }
        report.insert("ops_per_sec".into(), json!((after - before) as f64 / secs));
        report.insert("sent_per_sec".into(), json!(sent as f64 / secs));
        report.insert(
            "bytes_per_sec".into(),
            json!((after - before) as f64 * args.payload as f64 / secs),
        );
    } else {
        report.insert("window".into(), json!(args.window));
        let ops: Vec<Op> = (0..args.window)
            .map(|_| {
                let (edge, body, topic) = (edge.clone(), body.clone(), topic.clone());
                let op: Op = Box::new(move || {
                    let (edge, body, topic) = (edge.clone(), body.clone(), topic.clone());
                    Box::pin(async move {
                        let n = body.len() as u64;
                        match edge.publish(&topic, body).await {
                            Ok(()) => Ok(n),
                            Err(e) => Err(e.to_string()),
                        }
                    })
                });
                op
            })
            .collect();
        let progress = Progress::start(
            format!("publish window={} {}B", args.window, args.payload),
            "msgs",
        );
        let measured =
            measure::run_workers(ops, common.warmup(), common.duration(), &progress).await;
        progress.finish();
        measured.check("publish")?;
        measured.fields(&mut report, false);
    }
    receiver.abort();
    edge.close().await;
    service.close().await;
    drop(target);
    if let Some(nats) = nats {
        let anchor = if args.fire_and_forget {
            anchor::fire_and_forget(&nats, &common.nats_url, &body, common).await?
        } else {
            // The acknowledged-publish analogue: request/reply with an empty reply.
            anchor::rpc(
                &nats,
                &common.nats_url,
                1,
                args.window,
                &body,
                false,
                common,
            )
            .await?
        };
        measure::add_anchor(&mut report, anchor);
    }
    Ok(report)
}

/// Sends `body` with `send` back to back for the warm-up and the duration, while
/// mirroring `received` into the progress counter `shown`. Returns `received` at the
/// start and at the end of the measurement, and how many were sent during it.
pub(crate) async fn timed_flood<F, Fut>(
    received: &Arc<AtomicU64>,
    shown: &Arc<AtomicU64>,
    common: &Common,
    mut send: F,
    body: &Bytes,
) -> (u64, u64, u64)
where
    F: FnMut(Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let measure_from = start + common.warmup();
    let end = measure_from + common.duration();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (sent, body) = (Arc::clone(&sent), body.clone());
        tokio::spawn(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if send(body.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if now >= measure_from {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mirror = |until: Instant| async move {
        while Instant::now() < until {
            shown.store(received.load(Ordering::Relaxed), Ordering::Relaxed);
            tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(100))).await;
        }
    };
    mirror(measure_from).await;
    let before = received.load(Ordering::Relaxed);
    mirror(end).await;
    let after = received.load(Ordering::Relaxed);
    sender.abort();
    (before, after, sent.load(Ordering::Relaxed))
}
