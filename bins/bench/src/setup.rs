//! The bench's own service and edges, connected to the gateway under test.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tether_tokio::{ConnectExt, Edge, Service};
use tokio::io::AsyncWriteExt;

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

/// A service serving `echo` and receiving `topic` (if any), connected to `addr`.
pub(crate) async fn service(addr: &str, topic: Option<&str>) -> anyhow::Result<Service> {
    let mut builder =
        Service::builder(&service_name()).method(ECHO, |req| async move { Ok(req.body) });
    if let Some(topic) = topic {
        builder = builder.topic(topic);
    }
    let service = builder
        .connect(addr.to_owned())
        .context("starting the service client")?;
    tokio::time::timeout(CONNECT_TIMEOUT, service.wait_connected())
        .await
        .map_err(|_| unreachable_gateway(addr, "service", service.last_error()))?
        .with_context(|| format!("connecting the service to {addr}"))?;
    Ok(service)
}

/// `n` edges serving `echo`, connected to `addr`; the gateway assigns their ids.
pub(crate) async fn edges(addr: &str, n: u64) -> anyhow::Result<Vec<Edge>> {
    let mut edges = Vec::new();
    for _ in 0..n {
        let edge = Edge::builder()
            .method(ECHO, |req| async move { Ok(req.body) })
            .connect(addr.to_owned())
            .context("starting an edge client")?;
        edges.push(edge);
    }
    for edge in &edges {
        tokio::time::timeout(CONNECT_TIMEOUT, edge.wait_connected())
            .await
            .map_err(|_| unreachable_gateway(addr, "edge", edge.last_error()))?
            .with_context(|| format!("connecting an edge to {addr}"))?;
    }
    Ok(edges)
}

/// The id the gateway gave `edge`.
pub(crate) fn edge_id(edge: &Edge) -> anyhow::Result<u64> {
    edge.edge_id()
        .context("the edge has no id after connecting")
}

fn unreachable_gateway(addr: &str, role: &str, last: Option<tether_tokio::Error>) -> anyhow::Error {
    anyhow::anyhow!(
        "the gateway's {role} listener at {addr} did not answer within {}s (last error: {}); \
         is tether-gateway running?",
        CONNECT_TIMEOUT.as_secs(),
        last.map_or_else(|| "none".to_owned(), |e| e.to_string())
    )
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
