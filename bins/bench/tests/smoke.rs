//! Runs `tether-bench rpc` and `stream` for a second each against an in-process gateway
//! and checks that the JSON they print parses and holds positive figures.

use std::process::Command;

use serde_json::Value;
use tether_gateway::Gateway;
use tether_gateway::config::GatewayConfig;

/// Starts a gateway on ephemeral loopback ports on its own runtime; returns its addresses
/// and the runtime that keeps it alive.
fn gateway() -> (String, String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (service, edge) = rt.block_on(async {
        let config = GatewayConfig {
            service_listen: "127.0.0.1:0".parse().expect("addr"),
            edge_listen: "127.0.0.1:0".parse().expect("addr"),
            ..GatewayConfig::default()
        };
        let gateway = Gateway::bind(config).await.expect("bind");
        let addrs = (
            gateway.service_addr().expect("addr").to_string(),
            gateway.edge_addr().expect("addr").to_string(),
        );
        tokio::spawn(gateway.run(std::future::pending()));
        addrs
    });
    (service, edge, rt)
}

fn bench(args: &[&str], service: &str, edge: &str) -> serde_json::Map<String, Value> {
    run(args, &["--service-addr", service, "--edge-addr", edge])
}

fn run(args: &[&str], target: &[&str]) -> serde_json::Map<String, Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_tether-bench"))
        .args(args)
        .args(target)
        .args(["--duration", "1", "--warmup", "0"])
        .output()
        .expect("run tether-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tether-bench {args:?} failed: {stderr}"
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per run: {stdout}");
    match serde_json::from_str(lines[0]).expect("JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn positive(report: &serde_json::Map<String, Value>, field: &str) {
    let value = report
        .get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no numeric {field} in {report:?}"));
    assert!(value > 0.0, "{field} = {value} in {report:?}");
}

#[test]
fn rpc_and_stream_report_positive_figures() {
    let (service, edge, _rt) = gateway();

    let rpc = bench(&["rpc", "--concurrency", "4"], &service, &edge);
    assert_eq!(rpc["scenario"], "rpc");
    assert_eq!(rpc["concurrency"], 4);
    assert_eq!(rpc["transport"], "tcp");
    assert_eq!(rpc["gateway"], "external");
    for field in ["ops_per_sec", "p50_us", "p99_us", "p999_us"] {
        positive(&rpc, field);
    }
    assert_eq!(rpc["errors"], 0);

    let stream = bench(
        &["stream", "--streams", "2", "--payload-mib", "8"],
        &service,
        &edge,
    );
    assert_eq!(stream["scenario"], "stream");
    for field in [
        "bytes_per_sec",
        "slowest_stream_bytes_per_sec",
        "fastest_stream_bytes_per_sec",
        "spread",
    ] {
        positive(&stream, field);
    }
}

#[test]
fn other_transports_need_the_started_gateway() {
    let output = Command::new(env!("CARGO_BIN_EXE_tether-bench"))
        .args(["rpc", "--transport", "tls"])
        .args([
            "--service-addr",
            "127.0.0.1:1",
            "--edge-addr",
            "127.0.0.1:2",
        ])
        .args(["--duration", "1", "--warmup", "0"])
        .output()
        .expect("run tether-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "tether-bench accepted it: {stderr}"
    );
    assert!(
        stderr.contains("--transport tls needs the gateway tether-bench starts")
            && stderr.contains("--gateway-bin"),
        "{stderr}"
    );
}

#[test]
fn tls_and_websocket_through_a_started_gateway() {
    // Cargo builds no binary of a dependency for a test: the testkit finds (or builds) the
    // gateway of this target directory.
    let bin = tether_testkit::gateway_binary();
    let bin = bin.to_str().expect("a UTF-8 path");
    for transport in ["tls", "ws", "wss"] {
        let rpc = run(
            &["rpc", "--concurrency", "4", "--transport", transport],
            &["--gateway-bin", bin],
        );
        assert_eq!(rpc["transport"], transport);
        assert_eq!(rpc["gateway"], "started");
        positive(&rpc, "ops_per_sec");
        assert_eq!(rpc["errors"], 0);
    }
    let stream = run(
        &["stream", "--payload-mib", "8", "--transport", "wss"],
        &["--gateway-bin", bin],
    );
    assert_eq!(stream["transport"], "wss");
    positive(&stream, "bytes_per_sec");
}
