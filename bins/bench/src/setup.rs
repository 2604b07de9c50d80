//! The bench's own service and edges, connected to the gateway under test.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tether_tokio::{Edge, Service};
use tokio::io::AsyncWriteExt;

use crate::gateway::{Listener, Target};

/// How long the first connection may take before the gateway is declared unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A name unique to this process, so concurrent or lingering runs do not mix.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// The service name of this run (edges call it by name).
pub(crate) fn service_name() -> String {
    unique("tether-bench")
}

/// The echo method's name.
pub(crate) const ECHO: &str = "echo";

/// A service serving `echo` and receiving `topic` (if any), connected to `target`.
pub(crate) async fn service(target: &Target, topic: Option<&str>) -> anyhow::Result<Service> {
    let mut builder =
        Service::builder(&service_name()).method(ECHO, |req| async move { Ok(req.body) });
    if let Some(topic) = topic {
        builder = builder.topic(topic);
    }
    let service = target
        .connect(builder, Listener::Service)
        .context("starting the service client")?;
    tokio::time::timeout(CONNECT_TIMEOUT, service.wait_connected())
        .await
        .map_err(|_| unreachable_gateway(target, Listener::Service, service.last_error()))?
        .with_context(|| {
            format!(
                "connecting the service to {}",
                target.url(Listener::Service)
            )
        })?;
    Ok(service)
}

/// `n` edges serving `echo`, connected to `target`; the gateway assigns their ids.
pub(crate) async fn edges(target: &Target, n: u64) -> anyhow::Result<Vec<Edge>> {
    let mut edges = Vec::new();
    for _ in 0..n {
        let builder = Edge::builder().method(ECHO, |req| async move { Ok(req.body) });
        let edge = target
            .connect(builder, Listener::Edge)
            .context("starting an edge client")?;
        edges.push(edge);
    }
    for edge in &edges {
        tokio::time::timeout(CONNECT_TIMEOUT, edge.wait_connected())
            .await
            .map_err(|_| unreachable_gateway(target, Listener::Edge, edge.last_error()))?
            .with_context(|| format!("connecting an edge to {}", target.url(Listener::Edge)))?;
    }
    Ok(edges)
}

/// The id the gateway gave `edge`.
pub(crate) fn edge_id(edge: &Edge) -> anyhow::Result<u64> {
    edge.edge_id()
        .context("the edge has no id after connecting")
}

fn unreachable_gateway(
    target: &Target,
    role: Listener,
    last: Option<tether_tokio::Error>,
) -> anyhow::Error {
    let last = last.map_or_else(|| "none".to_owned(), |e| e.to_string());
    let (secs, url) = (CONNECT_TIMEOUT.as_secs(), target.url(role));
    let role = match role {
        Listener::Service => "service",
        Listener::Edge => "edge",
    };
    match target.log_excerpt() {
        None => anyhow::anyhow!(
            "the gateway's {role} listener at {url} did not answer within {secs}s \
             (last error: {last}); is tether-gateway running?"
        ),
        Some(log) => anyhow::anyhow!(
            "the started gateway's {role} listener at {url} did not answer within {secs}s \
             (last error: {last}); the gateway's log:\n{log}"
        ),
    }
}

/// Serves every stream services open to `edge`: reads to the end as fast as it can
/// (without copying), then answers `done` and closes. Returns at once; runs in the
/// background.
pub(crate) fn sink_streams(edge: &Edge) {
    let edge = edge.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = edge.accept_stream().await {
            tokio::spawn(async move {
                loop {
                    match stream.read_chunk(1 << 20).await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                let _ = stream.write_all(b"done").await;
                let _ = stream.shutdown().await;
            });
        }
    });
}

/// A body of `n` bytes.
pub(crate) fn body(n: usize) -> Bytes {
    Bytes::from(vec![0x5a; n])
}
