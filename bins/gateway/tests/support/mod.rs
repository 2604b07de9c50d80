//! Starts the real `tether-gateway` binary on loopback with ephemeral ports, the way a
//! user runs it, and stops it by PID.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running gateway process.
pub(crate) struct GatewayProcess {
    pub(crate) child: Child,
    pub(crate) service_addr: SocketAddr,
    pub(crate) edge_addr: SocketAddr,
    /// Log lines (stderr) after the listening lines.
    pub(crate) logs: mpsc::UnboundedReceiver<String>,
}

/// The address in a log line such as `... listening role="service" addr=127.0.0.1:4000`.
fn listening(line: &str, role: &str) -> Option<SocketAddr> {
    if !line.contains("listening") || !line.contains(&format!("role=\"{role}\"")) {
        return None;
    }
    let at = line.find("addr=")? + "addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

impl GatewayProcess {
    /// Starts the gateway with `args` added to the loopback listen flags.
    pub(crate) async fn start(args: &[&str]) -> GatewayProcess {
        GatewayProcess::start_with(
            &[
                "--service-listen",
                "127.0.0.1:0",
                "--edge-listen",
                "127.0.0.1:0",
            ],
            args,
        )
        .await
    }

    /// Starts the gateway with exactly `listen` then `args`.
    pub(crate) async fn start_with(listen: &[&str], args: &[&str]) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-gateway"))
            .args(listen)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut service_addr, mut edge_addr) = (None, None);
        let started = async {
            while service_addr.is_none() || edge_addr.is_none() {
                let line = logs
                    .recv()
                    .await
                    .expect("the gateway exited before listening");
                service_addr = service_addr.or_else(|| listening(&line, "service"));
                edge_addr = edge_addr.or_else(|| listening(&line, "edge"));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), started)
            .await
            .expect("the gateway did not start listening within 20 s");
        GatewayProcess {
            child,
            service_addr: service_addr.expect("service address"),
            edge_addr: edge_addr.expect("edge address"),
            logs,
        }
    }

    /// Sends SIGTERM (by PID).
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub(crate) async fn wait(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the gateway did not exit in time")
            .expect("wait")
            .code()
    }

    /// Waits for a log line containing `needle`.
    pub(crate) async fn log_line(&mut self, needle: &str) -> String {
        let find = async {
            loop {
                let line = self.logs.recv().await.expect("the gateway's log ended");
                if line.contains(needle) {
                    return line;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), find)
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 20 s"))
    }
}

/// Bounds a test step so a bug shows up as a failure, not a hang.
pub(crate) async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within 30 s"))
}
