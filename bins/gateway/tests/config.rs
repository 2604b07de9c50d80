//! Configuring the real gateway binary: `--print-config`, YAML files (good and bad), flags
//! over the file, environment variables, and a missing file.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use support::*;
use tether_tokio::{ConnectExt, Edge, Service};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Every key of the configuration file, dotted for the `protocol` section.
const KEYS: [&str; 19] = [
    "service_listen",
    "edge_listen",
    "hashby",
    "edgeid_alloc_when_no_idservice_on",
    "presence",
    "hook_timeout_ms",
    "drain_timeout_ms",
    "log_format",
    "protocol",
    "protocol.max_message_size",
    "protocol.initial_stream_window",
    "protocol.connection_window",
    "protocol.max_concurrent_streams",
    "protocol.max_inflight_requests",
    "protocol.max_inflight_messages",
    "protocol.idle_timeout_ms",
    "protocol.keepalive_interval_ms",
    "protocol.keepalive_timeout_ms",
    "protocol.handshake_timeout_ms",
];

/// The line that sets `key` (`protocol.x` is `  x:` under `protocol:`).
fn sets_key(yaml: &str, key: &str) -> bool {
    match key.split_once('.') {
        None => yaml.lines().any(|l| l.starts_with(&format!("{key}:"))),
        Some((_, nested)) => yaml
            .lines()
            .skip_while(|l| !l.starts_with("protocol:"))
            .any(|l| l.starts_with("  ") && l.trim_start().starts_with(&format!("{nested}:"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_config_shows_every_key_and_is_a_usable_file() {
    let run = run_gateway_to_exit(&["--print-config"], &[]).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    for key in KEYS {
        assert!(sets_key(&run.stdout, key), "{key} missing:\n{}", run.stdout);
    }
    // The printed file is itself a valid configuration (with loopback listen flags, as it
    // binds 0.0.0.0 by default).
    let file = YamlFile::new(&run.stdout);
    let gw = GatewayProcess::start(&["--config", file.arg()]).await;
    assert!(gw.service_addr.ip().is_loopback() && gw.edge_addr.ip().is_loopback());
}

/// Runs the gateway on `yaml` and expects it to refuse to start with a message holding
/// `mentions` (and, for a file that does not parse, the file's name).
async fn assert_rejected(yaml: &str, mentions: &[&str], unparsable: bool) {
    let file = YamlFile::new(yaml);
    let run = run_gateway_to_exit(
        &[
            "--config",
            file.arg(),
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    assert!(
        run.code.is_some_and(|c| c != 0),
        "{yaml:?} was accepted: {:?}\n{}",
        run.code,
        run.stderr
    );
    assert!(
        !run.stderr.contains("listening"),
        "it started: {}",
        run.stderr
    );
    for part in mentions {
        assert!(run.stderr.contains(part), "{part:?} not in: {}", run.stderr);
    }
    if unparsable {
        assert!(
            run.stderr.contains(file.arg()),
            "no file name: {}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_stops_the_gateway_naming_the_key() {
    let yaml = "servce_listen: 127.0.0.1:0\n";
    assert_rejected(yaml, &["servce_listen", "unknown"], true).await;
    let yaml = "hashby: random\nprotocol:\n  keepalive_interval: 300\n";
    assert_rejected(yaml, &["protocol.keepalive_interval", "line 3"], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_stops_the_gateway_naming_the_key() {
    assert_rejected("hashby: sideways\n", &["hashby", "sideways"], true).await;
    // Parses, but cannot work.
    let yaml = "protocol:\n  connection_window: 10\n";
    assert_rejected(yaml, &["protocol.connection_window"], false).await;
}

/// Two free loopback ports (bound, then released).
fn free_addrs() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_listen_addresses_are_used() {
    let (service, edge) = free_addrs();
    let file = YamlFile::new(&format!("service_listen: {service}\nedge_listen: {edge}\n"));
    let gw = GatewayProcess::start_with(&[], &["--config", file.arg()]).await;
    assert_eq!((gw.service_addr, gw.edge_addr), (service, edge));
    // And they work.
    let echo = Service::builder("echo")
        .method("echo", |req| async move { Ok(req.body) })
        .connect(service)
        .unwrap();
    let client = Edge::builder().connect(edge).unwrap();
    within("service up", echo.wait_connected()).await.unwrap();
    within("edge up", client.wait_connected()).await.unwrap();
    let mut gw = gw;
    gw.services_joined(&["echo"]).await;
    let answer = within("call", client.call("echo", Bytes::from_static(b"x"))).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_the_file() {
    // The file's addresses are taken: only the flags let the gateway start.
    let taken_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_edge = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = YamlFile::new(&format!(
        "service_listen: {}\nedge_listen: {}\nlog_format: json\n",
        taken_service.local_addr().unwrap(),
        taken_edge.local_addr().unwrap(),
    ));
    // `start` adds the loopback listen flags; `--log-format human` overrides the file's
    // json (the start-up lines are parsed as human-readable lines).
    let gw = GatewayProcess::start(&["--config", file.arg(), "--log-format", "human"]).await;
    assert_ne!(gw.service_addr, taken_service.local_addr().unwrap());
    assert_ne!(gw.edge_addr, taken_edge.local_addr().unwrap());

    // Without the flag, the file's json format is used.
    let json = YamlFile::new("log_format: json\n");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether-gateway"))
        .args(["--config", json.arg()])
        .args([
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env("TETHER_CONTROL_LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = within("first log line", lines.next_line())
        .await
        .unwrap()
        .expect("a log line");
    assert!(
        first.starts_with('{') && first.contains("listening"),
        "{first}"
    );
    child.kill().await.unwrap();
}

/// Which of two services ("a", "b", both registering `which`) 40 calls from one edge
/// reach, on a gateway started with `env`.
async fn spread_of_calls(env: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut gw = GatewayProcess::start_with_env(&[], env).await;
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut services = Vec::new();
    for name in ["a", "b"] {
        let hits = Arc::clone(&hits);
        let service = Service::builder(name)
            .method("which", move |_| {
                *hits.lock().unwrap().entry(name.to_owned()).or_default() += 1;
                async { Ok(Bytes::new()) }
            })
            .connect(gw.service_addr)
            .unwrap();
        within("service up", service.wait_connected())
            .await
            .unwrap();
        services.push(service);
    }
    gw.services_joined(&["a", "b"]).await;
    let edge = Edge::builder().connect(gw.edge_addr).unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    for _ in 0..40 {
        within("call", edge.call("which", Bytes::new()))
            .await
            .unwrap();
    }
    hits.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hashby_environment_variable_is_honoured() {
    // Default (edgeid): one edge always reaches the same service.
    let stable = spread_of_calls(&[]).await;
    assert_eq!(stable.len(), 1, "{stable:?}");
    // TETHER_HASHBY=random: 40 calls all landing on one of two services has odds 2^-39.
    let random = spread_of_calls(&[("TETHER_HASHBY", "random")]).await;
    assert_eq!(random.len(), 2, "{random:?}");
    assert_eq!(random.values().sum::<usize>(), 40);

    // A bad value in the variable is refused, naming it.
    let run = run_gateway_to_exit(
        &[
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        &[("TETHER_HASHBY", "sideways")],
    )
    .await;
    assert!(run.code.is_some_and(|c| c != 0), "{:?}", run.code);
    assert!(
        run.stderr.contains("sideways") && run.stderr.contains("hashby"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_fails_clearly() {
    let missing = "/nonexistent/tether-gateway.yaml";
    let run = run_gateway_to_exit(
        &[
            "--config",
            missing,
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    assert!(run.code.is_some_and(|c| c != 0), "{:?}", run.code);
    assert!(!run.stderr.contains("listening"), "{}", run.stderr);
    assert!(run.stderr.contains(missing), "{}", run.stderr);
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
    // The same through the environment.
    let run = run_gateway_to_exit(
        &[
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        &[("TETHER_CONFIG", missing)],
    )
    .await;
    assert!(run.code.is_some_and(|c| c != 0), "{:?}", run.code);
    assert!(run.stderr.contains(missing), "{}", run.stderr);
}
