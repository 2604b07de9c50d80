//! Through the gateway, in one process over loopback TCP: a service and an edge (SDK
//! clients) and a `tether_gateway::Gateway` between them, all on one tokio runtime with two
//! workers, so every figure includes two hops, the gateway's routing and forwarding tasks,
//! and its stream splice.
//!
//! - `rpc`: edge → service calls with a 64 B body (1 in flight, and 64 tasks calling);
//! - `stream`: 64 MiB from the service to the edge over one relayed stream.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_gateway::Gateway;
use tether_gateway::config::GatewayConfig;
use tether_tokio::{ConnectExt, Edge, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A gateway on ephemeral loopback ports, a service and edge 1 connected through it.
async fn setup() -> (Service, Edge) {
    let config = GatewayConfig {
        service_listen: "127.0.0.1:0".parse().expect("addr"),
        edge_listen: "127.0.0.1:0".parse().expect("addr"),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(config).await.expect("bind");
    let (service_addr, edge_addr) = (
        gateway.service_addr().expect("addr"),
        gateway.edge_addr().expect("addr"),
    );
    tokio::spawn(gateway.run(std::future::pending()));
    let service = Service::builder("bench")
        .method("echo", |req| async move { Ok(req.body) })
        .connect(service_addr)
        .expect("service");
    let edge = Edge::builder().edge_id(1).connect(edge_addr).expect("edge");
    service.wait_connected().await.expect("service up");
    edge.wait_connected().await.expect("edge up");
    (service, edge)
}

fn bench(c: &mut Criterion) {
    let rt = rt();
    let (service, edge) = rt.block_on(setup());
    let edge = Arc::new(edge);
    let body = Bytes::from(vec![7u8; 64]);
    let mut group = c.benchmark_group("gateway_rpc");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 64] {
        group.bench_function(format!("64B_{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                let (edge, body) = (Arc::clone(&edge), body.clone());
                rt.block_on(async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..in_flight)
                        .map(|t| {
                            let (edge, body) = (Arc::clone(&edge), body.clone());
                            let n = iters / in_flight + u64::from(t < iters % in_flight);
                            tokio::spawn(async move {
                                for _ in 0..n {
                                    let answer =
                                        edge.call("echo", body.clone()).await.expect("call");
                                    assert_eq!(answer.len(), 64);
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("caller");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    const TOTAL: usize = 64 * 1024 * 1024;
    let reader_edge = Arc::clone(&edge);
    rt.spawn(async move {
        while let Some(mut stream) = reader_edge.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while stream.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
                let _ = stream.write_all(b"done").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let chunk = vec![0x5au8; 64 * 1024];
    let mut group = c.benchmark_group("gateway_stream");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("64MiB_service_to_edge", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut stream = service.open_stream(1, Bytes::new()).await.expect("open");
                for _ in 0..TOTAL / chunk.len() {
                    stream.write_all(&chunk).await.expect("write");
                }
                stream.shutdown().await.expect("fin");
                let mut done = Vec::new();
                stream.read_to_end(&mut done).await.expect("read");
                assert_eq!(done, b"done");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
