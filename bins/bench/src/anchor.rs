//! The NATS anchor: the same workloads as request/reply (and plain publish) against a
//! NATS server, for a reference figure measured on the same machine in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use crate::cli::Common;
use crate::measure::{self, Op, Progress};
use crate::setup;

/// Connects to NATS at `url`, or fails saying how to start it.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    let attempt = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url);
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(nats_unreachable(url, &e.to_string())),
        Err(_) => Err(nats_unreachable(url, "timed out")),
    }
}

fn nats_unreachable(url: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--anchor needs a NATS server at {url}, which is unreachable ({why}); start one with \
         `nats-server -a 127.0.0.1 -p 4222` (Debian/Ubuntu: `apt-get install -y nats-server`), \
         or pass --nats-url"
    )
}

/// Request/reply: a responder on `responder` answers each request with its body (`echo`)
/// or an empty body (an acknowledgement); `clients` requester connections carry
/// `concurrency` requesters.
pub(crate) async fn rpc(
    responder: &Client,
    url: &str,
    clients: u64,
    concurrency: u64,
    body: &Bytes,
    echo: bool,
    common: &Common,
) -> anyhow::Result<Map<String, Value>> {
    let subject = setup::unique("tether-bench.req");
    let mut subscriber = responder
        .subscribe(subject.clone())
        .await
        .context("subscribing on NATS")?;
    let replier = responder.clone();
    let responder_task = tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            if let Some(reply) = message.reply {
                let answer = if echo { message.payload } else { Bytes::new() };
                if replier.publish(reply, answer).await.is_err() {
                    break;
                }
            }
        }
    });
    responder.flush().await.context("flushing NATS")?;
    let mut requesters = Vec::new();
    for _ in 0..clients {
        requesters.push(connect(url).await?);
    }
    let ops: Vec<Op> = (0..concurrency as usize)
        .map(|i| {
            let client = requesters[i % requesters.len()].clone();
            let (body, subject) = (body.clone(), subject.clone());
            let op: Op = Box::new(move || {
                let (client, body, subject) = (client.clone(), body.clone(), subject.clone());
                Box::pin(async move {
                    let n = body.len() as u64;
                    match client.request(subject, body).await {
                        Ok(answer) => Ok(n + answer.payload.len() as u64),
                        Err(e) => Err(e.to_string()),
                    }
                })
            });
            op
        })
        .collect();
    let progress = Progress::start(format!("nats anchor c={concurrency}"), "requests");
    let measured = measure::run_workers(ops, common.warmup(), common.duration(), &progress).await;
    progress.finish();
    responder_task.abort();
    measured.check("nats anchor")?;
    let mut map = Map::new();
    map.insert("system".into(), json!("nats request/reply"));
    measured.fields(&mut map, false);
    Ok(map)
}

/// Plain NATS publish as fast as the client takes it; the rate is what the subscriber
/// received.
pub(crate) async fn fire_and_forget(
    subscriber_client: &Client,
    url: &str,
    body: &Bytes,
    common: &Common,
) -> anyhow::Result<Map<String, Value>> {
    let subject = setup::unique("tether-bench.pub");
    let mut subscriber = subscriber_client
        .subscribe(subject.clone())
        .await
        .context("subscribing on NATS")?;
    subscriber_client.flush().await.context("flushing NATS")?;
    let received = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&received);
    let counter_task = tokio::spawn(async move {
        while subscriber.next().await.is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let publisher = connect(url).await?;
    let progress = Progress::start("nats anchor fire-and-forget".into(), "received");
    let shown = progress.counter();
    let (before, after, sent) = crate::publish::timed_flood(
        &received,
        &shown,
        common,
        move |body: Bytes| {
            let (publisher, subject) = (publisher.clone(), subject.clone());
            async move {
                publisher
                    .publish(subject, body)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
        body,
    )
    .await;
    progress.finish();
    counter_task.abort();
    let secs = common.duration().as_secs_f64();
    let mut map = Map::new();
    map.insert("system".into(), json!("nats publish (no ack)"));
    map.insert("ops_per_sec".into(), json!((after - before) as f64 / secs));
    map.insert("sent_per_sec".into(), json!(sent as f64 / secs));
    Ok(map)
}
