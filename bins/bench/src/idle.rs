//! `idle`: many idle edges with keepalive on. Each edge is a bare protocol connection
//! (`Connection::connect` over TCP), not a full `Edge` client, to keep the bench light;
//! client sockets are bound to successive loopback source addresses to get past the
//! ephemeral port range of one address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use proto_core::{ClientInfo, Config, Role};
use serde_json::{Map, Value, json};
use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{IdleArgs, Transport};
use crate::gateway::{Listener, Target};
use crate::measure::Progress;
use crate::procfs;

pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<Map<String, Value>> {
    let common = &args.common;
    if common.transport != Transport::Tcp {
        anyhow::bail!(
            "idle: the idle edges are bare protocol connections over TCP; --transport {} is \
             not supported here",
            common.transport.as_str()
        );
    }
    // Before a started gateway, which inherits the limit.
    let nofile = raise_nofile(args.edges + 4096);
    let target = Target::new(common).await?;
    let edge_addr = target.addr(Listener::Edge);
    let gateway: SocketAddr = tokio::net::lookup_host(edge_addr)
        .await
        .with_context(|| format!("resolving {edge_addr}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{edge_addr} has no IPv4 address"))?;
    let pid = target.pid().or(common.gateway_pid);
    let rss_before = pid.map(|p| procfs::rss_bytes(Some(p))).transpose()?;

    let progress = Progress::start(format!("idle connect {}", args.edges), "edges");
    let connected_count = progress.counter();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.connect_timeout);
    let mut tasks = JoinSet::new();
    let mut connections = Vec::with_capacity(args.edges as usize);
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut collect = |result: Result<anyhow::Result<Connection>, tokio::task::JoinError>,
                       connections: &mut Vec<Connection>| {
        match result {
            Ok(Ok(conn)) => connections.push(conn),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    };
    for i in 0..args.edges {
        if Instant::now() >= deadline {
            break;
        }
        while tasks.len() as u64 >= args.connect_concurrency {
            if let Some(result) = tasks.join_next().await {
                collect(result, &mut connections);
            }
        }
        let source = source_addr(i / args.per_source_addr);
        let counter = Arc::clone(&connected_count);
        tasks.spawn(async move {
            let attempt = connect_one(source, gateway);
            let conn = tokio::time::timeout_at(deadline, attempt)
                .await
                .map_err(|_| anyhow::anyhow!("connect phase timed out"))??;
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(conn)
        });
    }
    while let Some(result) = tasks.join_next().await {
        collect(result, &mut connections);
    }
    let connect_secs = start.elapsed().as_secs_f64();
    progress.finish();
    let connected = connections.len() as u64;
    if connected == 0 {
        anyhow::bail!(
            "idle: no edge connected ({errors} errors; first: {})",
            first_error.as_deref().unwrap_or("none")
        );
    }

    // Let the gateway settle (handshake tasks end, presence is recorded).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = pid.map(|p| procfs::rss_bytes(Some(p))).transpose()?;
    let idle = common.duration();
    let cpu_before = pid.map(procfs::cpu_secs).transpose()?;
    let idle_progress = Progress::start(format!("idle {connected} edges"), "s");
    let tick = idle_progress.counter();
    let idle_end = Instant::now() + idle;
    while Instant::now() < idle_end {
        tokio::time::sleep(Duration::from_secs(1).min(idle_end - Instant::now())).await;
        tick.fetch_add(1, Ordering::Relaxed);
    }
    idle_progress.finish();
    let cpu_after = pid.map(procfs::cpu_secs).transpose()?;
    let alive = connections.iter().filter(|c| !c.is_closed()).count();

    let mut report = common.params("idle");
    report.insert("edges".into(), json!(args.edges));
    report.insert("edges_connected".into(), json!(connected));
    report.insert("connect_errors".into(), json!(errors));
    if let Some(e) = first_error {
        report.insert("first_error".into(), json!(e));
    }
    report.insert("connect_secs".into(), json!(connect_secs));
    report.insert("ops_per_sec".into(), json!(connected as f64 / connect_secs));
    report.insert(
        "ops_note".into(),
        json!("ops_per_sec is the connect rate: edges connected (handshake done) per second"),
    );
    report.insert("edges_alive_after_idle".into(), json!(alive));
    report.insert("nofile_limit".into(), json!(nofile));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.insert("gateway_rss_before_bytes".into(), json!(before));
        report.insert("gateway_rss_after_bytes".into(), json!(after));
        report.insert(
            "rss_bytes_per_edge".into(),
            json!(after.saturating_sub(before) as f64 / connected as f64),
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.insert("idle_secs".into(), json!(idle.as_secs_f64()));
        report.insert(
            "idle_cpu_percent".into(),
            json!((after - before) / idle.as_secs_f64() * 100.0),
        );
    }
    if let Ok(own) = procfs::rss_bytes(None) {
        report.insert("bench_rss_bytes".into(), json!(own));
    }
    Ok(report)
}

/// The `n`-th loopback source address: 127.0.0.1, 127.0.0.2, ... 127.0.0.250, 127.0.1.1...
fn source_addr(n: u64) -> IpAddr {
    let (hi, lo) = ((n / 250) as u8, (n % 250) as u8 + 1);
    IpAddr::V4(Ipv4Addr::new(127, 0, hi, lo))
}

/// One edge: a TCP socket bound to `source`, then the Tether handshake.
async fn connect_one(source: IpAddr, gateway: SocketAddr) -> anyhow::Result<Connection> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding to {source}"))?;
    let stream = socket
        .connect(gateway)
        .await
        .with_context(|| format!("connecting from {source} to {gateway}"))?;
    // Default config: keepalive on (a PING after 15 s of silence).
    let conn = Connection::connect(
        runtime(),
        tcp_transport(stream),
        Config::default(),
        ClientInfo::new(Role::Edge),
        DriverConfig::default(),
    )
    .await
    .context("handshake")?;
    Ok(conn)
}

/// Raises RLIMIT_NOFILE towards `want` (the hard limit too, where permitted); returns the
/// soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && hard < want
    {
        // Only a privileged process may raise the hard limit; ignore a refusal.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, soft.max(want), want);
    }
    match rlimit::increase_nofile_limit(want) {
        Ok(limit) => {
            if limit < want {
                eprintln!(
                    "tether-bench: the open-file limit is {limit}, below the {want} wanted; \
                     some edges may fail to connect"
                );
            }
            limit
        }
        Err(e) => {
            eprintln!("tether-bench: cannot raise the open-file limit: {e}");
            0
        }
    }
}
