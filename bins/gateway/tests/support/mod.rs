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
    /// The control plane (`--control-listen`, by default `127.0.0.1:0` here).
    pub(crate) control_addr: SocketAddr,
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
        GatewayProcess::spawn(listen, args, &[]).await
    }

    /// Starts the gateway with `listen`, `args` and extra environment variables, and waits
    /// for its two `listening` lines.
    async fn spawn(listen: &[&str], args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-gateway"))
            .args(listen)
            .args(args)
            .env("RUST_LOG", "info")
            // A free port unless a test sets its own (flags override the variable).
            .env("TETHER_CONTROL_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
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
        let (mut service_addr, mut edge_addr, mut control_addr) = (None, None, None);
        let started = async {
            while service_addr.is_none() || edge_addr.is_none() || control_addr.is_none() {
                let line = logs
                    .recv()
                    .await
                    .expect("the gateway exited before listening");
                service_addr = service_addr.or_else(|| listening(&line, "service"));
                edge_addr = edge_addr.or_else(|| listening(&line, "edge"));
                control_addr = control_addr.or_else(|| listening(&line, "control"));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), started)
            .await
            .expect("the gateway did not start listening within 20 s");
        GatewayProcess {
            child,
            service_addr: service_addr.expect("service address"),
            edge_addr: edge_addr.expect("edge address"),
            control_addr: control_addr.expect("control address"),
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

// ===== Helpers for presence.rs, lifecycle.rs and config.rs (gw2) =====

/// A YAML configuration file under the temp dir, removed on drop.
pub(crate) struct YamlFile(pub(crate) std::path::PathBuf);

impl YamlFile {
    /// Writes `yaml` to a fresh file.
    pub(crate) fn new(yaml: &str) -> YamlFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tether-gateway-e2e-{}-{n}.yaml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, yaml).expect("the config file is written");
        YamlFile(path)
    }

    /// The path, as a flag value.
    pub(crate) fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for YamlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Client options that reconnect quickly (the default backoff grows to 30 s).
pub(crate) fn quick_backoff(options: &mut tether_tokio::Options) {
    options.backoff = tether_tokio::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
}

/// What a gateway run that ends by itself (bad flags, `--print-config`) produced.
pub(crate) struct Finished {
    /// The exit code (`None`: killed by a signal).
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the gateway with `args` and extra `env` until it exits (at most 20 s).
pub(crate) async fn run_gateway_to_exit(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let run = Command::new(env!("CARGO_BIN_EXE_tether-gateway"))
        .args(args)
        .env("TETHER_CONTROL_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the gateway did not exit within 20 s")
        .expect("the gateway binary runs");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl GatewayProcess {
    /// Like [`GatewayProcess::start`], with extra environment variables.
    pub(crate) async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        let listen = [
            "--service-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ];
        GatewayProcess::spawn(&listen, args, env).await
    }

    /// Waits until the gateway logged that each of the services `services` and each of the
    /// edges `edges` connected, in any order (they are then in the gateway's table: the
    /// services' hooks and methods are used, the edges are routable). Log lines before the
    /// last one needed are consumed.
    pub(crate) async fn joined(&mut self, services: &[&str], edges: &[u64]) {
        let services = services
            .iter()
            .map(|name| format!(" connected role=\"service\" id=* name={name} "));
        let edges = edges
            .iter()
            .map(|id| format!(" connected role=\"edge\" id={id} "));
        let mut missing: Vec<String> = services.chain(edges).collect();
        let find = async {
            while !missing.is_empty() {
                let line = self.logs.recv().await.expect("the gateway's log ended");
                missing.retain(|wanted| !logged(&line, wanted));
            }
        };
        if tokio::time::timeout(Duration::from_secs(20), find)
            .await
            .is_err()
        {
            panic!("not logged within 20 s: {missing:?}");
        }
    }

    /// [`GatewayProcess::joined`] for services only.
    pub(crate) async fn services_joined(&mut self, names: &[&str]) {
        self.joined(names, &[]).await;
    }

    /// [`GatewayProcess::joined`] for one edge.
    pub(crate) async fn edge_joined(&mut self, id: u64) {
        self.joined(&[], &[id]).await;
    }
}

/// Whether `line` matches `pattern`, where `*` in the pattern stands for one word.
fn logged(line: &str, pattern: &str) -> bool {
    match pattern.split_once('*') {
        None => line.contains(pattern),
        Some((head, tail)) => line.match_indices(head).any(|(at, _)| {
            let rest = &line[at + head.len()..];
            let word = rest.find(' ').unwrap_or(rest.len());
            rest[word..].starts_with(tail)
        }),
    }
}

// ===== End of the gw2 helpers =====

// ===== Helpers for ingress.rs =====

impl GatewayProcess {
    /// The address of the next `listening role="<role>" addr=...` line: the ingress
    /// listeners (`http-ingress`, `tcp-mapping`) are logged after the service and edge ones,
    /// each mapping in the order of the configuration.
    pub(crate) async fn listening_addr(&mut self, role: &str) -> SocketAddr {
        let line = self.log_line(&format!("role=\"{role}\"")).await;
        listening(&line, role).unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}

// ===== End of the ingress helpers =====

// ===== Helpers for control.rs and metrics.rs =====

/// An answer of the control plane.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `method path` to the control plane at `addr`, with `token` as a bearer token.
pub(crate) async fn control(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Answer {
    use http_body_util::BodyExt as _;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let answer = sender.send_request(request).await.expect("an answer");
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = answer
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    within(&format!("{method} {path}"), exchange).await
}

// ===== End of the control helpers =====
