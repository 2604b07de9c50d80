//! The SDK on tokio over loopback TCP: what an application sees end to end, including the
//! driver task, the shared-state lock, the kernel's loopback and task wake-ups.
//!
//! Two `tether_tokio::Connection`s (client and server side) in one multi-threaded runtime
//! with two workers, joined by a real 127.0.0.1 TCP connection:
//!
//! - `rpc`: call round trips with a 64 B body echoed by a server task, with 1 call in
//!   flight (latency-bound) and 64 in flight (64 tasks calling concurrently);
//! - `stream`: one stream carrying 64 MiB from client to server (`write_all` in 64 KiB
//!   pieces, the server reading into a 64 KiB buffer).

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto_core::name::Name;
use proto_core::{Call, ClientInfo, Config, HandshakeAccept, Role};
use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A connected client and a server that echoes requests and drains streams.
async fn pair() -> Connection {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let cfg = (Config::default(), DriverConfig::default());
        let hs = Connection::accept(runtime(), tcp_transport(socket), cfg.0, cfg.1)
            .await
            .expect("handshake");
        let server = hs.accept(HandshakeAccept::default()).expect("accept");
        let streams = server.clone();
        tokio::spawn(async move {
            while let Some(mut stream) = streams.accept_stream().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while stream.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
                    let _ = stream.write_all(b"done").await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        while let Some(mut request) = server.next_request().await {
            let body = request.take_body();
            request.respond(Ok(body));
        }
    });
    let socket = TcpStream::connect(addr).await.expect("connect");
    Connection::connect(
        runtime(),
        tcp_transport(socket),
        Config::default(),
        ClientInfo::new(Role::Service),
        DriverConfig::default(),
    )
    .await
    .expect("client handshake")
}

fn rpc(c: &mut Criterion) {
    let rt = rt();
    let client = Arc::new(rt.block_on(pair()));
    let body = Bytes::from(vec![7u8; 64]);
    let mut group = c.benchmark_group("sdk_tokio_rpc");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 64] {
        group.bench_function(format!("64B_{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                let (client, body) = (Arc::clone(&client), body.clone());
                rt.block_on(async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..in_flight)
                        .map(|t| {
                            let (client, body) = (Arc::clone(&client), body.clone());
                            let n = iters / in_flight + u64::from(t < iters % in_flight);
                            tokio::spawn(async move {
                                for _ in 0..n {
                                    let call = Call::new(
                                        Name::from_static("echo").expect("name"),
                                        body.clone(),
                                    );
                                    let answer = client.call(call).await.expect("call");
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
}

fn stream(c: &mut Criterion) {
    const TOTAL: usize = 64 * 1024 * 1024;
    let rt = rt();
    let client = Arc::new(rt.block_on(pair()));
    let chunk = vec![0x5au8; 64 * 1024];
    let mut group = c.benchmark_group("sdk_tokio_stream");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("64MiB_one_stream", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut stream, _) = client
                    .open_stream(Default::default(), None)
                    .await
                    .expect("open");
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

criterion_group!(benches, rpc, stream);
criterion_main!(benches);
