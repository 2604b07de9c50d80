//! The edge agent end to end: the real `tether-gateway` binary and the `tether-edge` binary
//! on loopback, a local TCP echo server the agent exposes, and a service in this test that
//! opens streams to the agent. Each scenario runs with both drivers of the binary, and with
//! the same agent logic on the tokio SDK in this process, so all three drivers pass the
//! same suite against the real gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use proto_core::ErrorCode;
use tether_testkit::net::{dead_address, echo_server, pattern};
use tether_testkit::{Output, gateway_binary, start};
use tether_tokio::{ConnectExt as _, Edge, Service, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout_at};

/// A whole scenario, gateway start included, must finish within this.
const BUDGET: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_driver_pipes_refuses_and_stops_cleanly() {
    scenario("smol", 4201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mio_driver_pipes_refuses_and_stops_cleanly() {
    scenario("mio", 4202).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_driver_pipes_refuses_and_stops_cleanly() {
    scenario("tokio", 4203).await;
}

/// The agent's logic on the tokio SDK: each stream is piped to the exposed address, or
/// refused the way `tether-edge` refuses it.
fn tokio_agent(
    edge_addr: SocketAddr,
    edge_id: u64,
    exposes: Vec<(&'static str, SocketAddr)>,
) -> Edge {
    let edge = Edge::builder()
        .edge_id(edge_id)
        .metadata("test-edge")
        .connect(edge_addr)
        .expect("the tokio agent starts");
    let serving = edge.clone();
    tokio::spawn(async move {
        while let Some(incoming) = serving.incoming_stream().await {
            let name = String::from_utf8_lossy(incoming.metadata()).into_owned();
            let Some(&(_, addr)) = exposes.iter().find(|(n, _)| *n == name) else {
                incoming.refuse(ErrorCode::NOT_FOUND, &format!("no exposed service {name}"));
                continue;
            };
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) => incoming.refuse(
                    ErrorCode::REFUSED,
                    &format!("{name}: cannot connect to {addr}: {e}"),
                ),
                Ok(mut socket) => {
                    let Ok(mut stream) = incoming.accept(Bytes::new()) else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
                    });
                }
            }
        }
    });
    edge
}

async fn scenario(driver: &str, edge_id: u64) {
    let deadline = Instant::now() + BUDGET;
    let gateway = gateway_binary();
    let (_gateway, mut gateway_log) = start(
        "gateway",
        &gateway,
        &[
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
    );
    let service_addr = gateway_log.listening("service", deadline).await;
    let edge_addr = gateway_log.listening("edge", deadline).await;
    gateway_log.discard_rest();

    let echo = echo_server().await;
    let dead = dead_address().await;
    let mut agent = if driver == "tokio" {
        Agent::InProcess(tokio_agent(
            edge_addr,
            edge_id,
            vec![("echo", echo), ("dead", dead)],
        ))
    } else {
        let (edge, mut edge_log) = start(
            "tether-edge",
            Path::new(env!("CARGO_BIN_EXE_tether-edge")),
            &[
                "--gateway",
                &edge_addr.to_string(),
                "--id",
                &edge_id.to_string(),
                "--metadata",
                "test-edge",
                "--expose",
                &format!("echo={echo}"),
                "--expose",
                &format!("dead={dead}"),
                "--driver",
                driver,
            ],
        );
        edge_log
            .expect(&format!("exposing name=echo address={echo}"), deadline)
            .await;
        edge_log.expect("connected to the gateway", deadline).await;
        Agent::Process(Box::new((edge, edge_log)))
    };

    let service = Service::builder("tester")
        .connect(service_addr)
        .expect("service starts");
    timeout_at(deadline, service.wait_connected())
        .await
        .expect("the service connects in time")
        .expect("the service connects");

    // Echo with half-close: our FIN reaches the echo server, whose FIN comes back.
    let mut stream = open(&service, edge_id, "echo", deadline).await;
    stream.write_all(b"hello, edge").await.expect("write");
    stream.shutdown().await.expect("finish");
    let mut back = Vec::new();
    timeout_at(deadline, stream.read_to_end(&mut back))
        .await
        .expect("the echo ends in time")
        .expect("read the echo");
    assert_eq!(back, b"hello, edge");
    agent.expect_log("stream opened", deadline).await;
    agent.expect_log("stream closed", deadline).await;

    // 16 MiB both ways at once, byte for byte.
    let stream = open(&service, edge_id, "echo", deadline).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let size = 16 << 20;
    let data = pattern(size);
    let sent = data.clone();
    let write = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            writer.write_all(chunk).await.expect("write a chunk");
        }
        writer.shutdown().await.expect("finish");
    });
    let mut back = Vec::with_capacity(size);
    timeout_at(deadline, reader.read_to_end(&mut back))
        .await
        .expect("16 MiB echo in time")
        .expect("read 16 MiB back");
    write.await.expect("the writer");
    assert_eq!(back.len(), size);
    assert!(back == data, "the 16 MiB came back altered");

    // An unknown name is refused with NOT_FOUND, a dead local address with REFUSED.
    let error = open_error(&service, edge_id, "nope", deadline).await;
    assert_eq!(error.code(), ErrorCode::NOT_FOUND, "{error}");
    assert!(error.text().contains("no exposed service nope"), "{error}");
    let error = open_error(&service, edge_id, "dead", deadline).await;
    assert_eq!(error.code(), ErrorCode::REFUSED, "{error}");
    assert!(error.text().contains(&dead.to_string()), "{error}");
    let expected = format!("dead: cannot connect to {dead}: ");
    assert!(error.text().contains(&expected), "{error}");
    agent.expect_log("no exposed service nope", deadline).await;

    // SIGTERM (or, in process, close): a clean exit.
    agent.stop(deadline).await;
    timeout_at(deadline, service.close())
        .await
        .expect("the service closes in time");
}

/// The agent under test: a `tether-edge` process, or the tokio agent in this process.
enum Agent {
    Process(Box<(Child, Output)>),
    InProcess(Edge),
}

impl Agent {
    /// Waits for a log line of the agent process (the in-process agent logs nothing).
    async fn expect_log(&mut self, needle: &str, deadline: Instant) {
        if let Agent::Process(process) = self {
            process.1.expect(needle, deadline).await;
        }
    }

    /// Stops the agent: SIGTERM must give exit status 0; the in-process agent closes.
    async fn stop(self, deadline: Instant) {
        match self {
            Agent::Process(process) => {
                let (mut child, _log) = *process;
                let pid = child.id().expect("the agent's pid").to_string();
                let kill = Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .await
                    .expect("run kill");
                assert!(kill.success());
                let status = timeout_at(deadline, child.wait())
                    .await
                    .expect("the agent exits in time after SIGTERM")
                    .expect("wait for the agent");
                assert!(status.success(), "the agent exited with {status}");
            }
            Agent::InProcess(edge) => timeout_at(deadline, edge.close())
                .await
                .expect("the tokio agent closes in time"),
        }
    }
}

/// Not a test but a measurement: the agent's resident memory idle (connected) and while
/// relaying 100 MiB through a local echo server, for both drivers. Run it on an optimized
/// build of the agent, e.g.:
///
/// ```sh
/// cargo build --profile release-small -p tether-edge
/// TETHER_EDGE_BIN=target/release-small/tether-edge \
///     cargo test --release -p tether-edge --test agent -- --ignored --nocapture rss
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn rss_idle_and_relaying() {
    let agent = std::env::var_os("TETHER_EDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tether-edge")));
    println!("agent: {}", agent.display());
    for (driver, edge_id) in [("smol", 4301), ("mio", 4302)] {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (_gateway, mut gateway_log) = start(
            "gateway",
            &gateway_binary(),
            &[
                "--service-listen",
                "127.0.0.1:0",
                "--edge-listen",
                "127.0.0.1:0",
            ],
        );
        let service_addr = gateway_log.listening("service", deadline).await;
        let edge_addr = gateway_log.listening("edge", deadline).await;
        gateway_log.discard_rest();
        let echo = echo_server().await;
        let (edge, mut edge_log) = start(
            "tether-edge",
            &agent,
            &[
                "--gateway",
                &edge_addr.to_string(),
                "--id",
                &edge_id.to_string(),
                "--expose",
                &format!("echo={echo}"),
                "--driver",
                driver,
            ],
        );
        edge_log.expect("connected to the gateway", deadline).await;
        edge_log.discard_rest();
        let pid = edge.id().expect("the agent's pid");
        let service = Service::builder("meter")
            .connect(service_addr)
            .expect("service starts");
        let stream = open(&service, edge_id, "echo", deadline).await;
        let mut probe = stream;
        probe.write_all(b"warm-up").await.expect("write");
        let mut buf = [0u8; 7];
        probe.read_exact(&mut buf).await.expect("read");
        drop(probe);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = status_kib(pid, "VmRSS");

        let stream = open(&service, edge_id, "echo", deadline).await;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let size: u64 = 100 << 20;
        let started = Instant::now();
        let write = tokio::spawn(async move {
            let chunk = vec![0x5Au8; 256 << 10];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                writer.write_all(&chunk[..n]).await.expect("write");
                left -= n as u64;
            }
            writer.shutdown().await.expect("finish");
        });
        let mut received = 0u64;
        let mut midway = 0;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = timeout_at(deadline, reader.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            if n == 0 {
                break;
            }
            if received < size / 2 && received + n as u64 >= size / 2 {
                midway = status_kib(pid, "VmRSS");
            }
            received += n as u64;
        }
        let elapsed = started.elapsed();
        write.await.expect("writer");
        assert_eq!(received, size);
        let peak = status_kib(pid, "VmHWM");
        println!(
            "driver={driver} idle_rss={idle} KiB relaying_rss={midway} KiB peak_rss(VmHWM)={peak} KiB \
             relayed=100 MiB each way in {elapsed:.2?} ({:.0} MiB/s)",
            100.0 / elapsed.as_secs_f64()
        );
        service.close().await;
    }
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Opens a stream to the edge's service `name`, retrying while the gateway does not list
/// the edge yet.
async fn open(service: &Service, edge_id: u64, name: &str, deadline: Instant) -> Stream {
    loop {
        let open = service.open_stream(edge_id, Bytes::from(name.to_owned()));
        match timeout_at(deadline, open).await.expect("open in time") {
            Ok(stream) => return stream,
            Err(e) if e.code() == ErrorCode::EDGE_NOT_ONLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open {name}: {e}"),
        }
    }
}

/// The error opening `name` fails with.
async fn open_error(
    service: &Service,
    edge_id: u64,
    name: &str,
    deadline: Instant,
) -> tether_tokio::Error {
    let open = service.open_stream(edge_id, Bytes::from(name.to_owned()));
    match timeout_at(deadline, open).await.expect("open in time") {
        Ok(_) => panic!("opening {name} succeeded"),
        Err(e) => e,
    }
}
