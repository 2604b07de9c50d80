//! The chatroom example end to end: the real `tether-gateway` binary, `chat-service` and
//! two `chat-edge` processes on loopback, driven through their stdin and stdout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The whole scenario, gateway start included, must finish within this.
const BUDGET: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_fan_out_and_presence_is_announced() {
    let gateway = gateway_binary();
    let deadline = Instant::now() + BUDGET;

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
    // Keep reading its log so the gateway never blocks on a full pipe.
    tokio::spawn(async move { while gateway_log.lines.recv().await.is_some() {} });

    let service_addr = service_addr.to_string();
    let edge_addr = edge_addr.to_string();
    let (_service, mut service_out) = start(
        "chat-service",
        Path::new(env!("CARGO_BIN_EXE_chat-service")),
        &["--gateway", &service_addr],
    );
    service_out.expect("connected as service", deadline).await;

    let chat_edge = Path::new(env!("CARGO_BIN_EXE_chat-edge"));
    let edge_args = |name| ["--gateway", edge_addr.as_str(), "--name", name];
    let (mut alice, mut alice_out) = start("alice", chat_edge, &edge_args("alice"));
    alice_out.expect("connected as edge", deadline).await;
    alice_out.expect("(alice) joined", deadline).await;

    let (_bob, mut bob_out) = start("bob", chat_edge, &edge_args("bob"));
    bob_out.expect("connected as edge", deadline).await;
    let joined = bob_out.expect("(bob) joined", deadline).await;
    assert!(joined.starts_with("* edge "), "{joined:?}");
    alice_out.expect("(bob) joined", deadline).await;

    // A line from alice reaches bob, and alice too, attributed to her.
    let mut alice_stdin = alice.stdin.take().expect("alice's stdin");
    alice_stdin
        .write_all(b"hello from alice\n")
        .await
        .expect("write to alice");
    alice_stdin.flush().await.expect("flush alice's stdin");
    let line = bob_out.expect("hello from alice", deadline).await;
    assert!(
        line.starts_with("<edge ") && line.contains("(alice)> "),
        "{line:?}"
    );
    alice_out.expect("hello from alice", deadline).await;
    service_out.expect("hello from alice", deadline).await;

    // End of input: alice closes gracefully and exits 0; bob hears that she left.
    drop(alice_stdin);
    let status = tokio::time::timeout_at(deadline, alice.wait())
        .await
        .expect("alice did not exit after the end of her input")
        .expect("wait for alice");
    assert!(status.success(), "alice exited with {status}");
    bob_out.expect("(alice) left", deadline).await;
    // The other processes are killed on drop.
}

/// Starts `program` with `args`, stdin piped, killed when the `Child` is dropped; its
/// stdout and stderr lines are collected in the `Output`.
fn start(name: &'static str, program: &Path, args: &[&str]) -> (Child, Output) {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
    let (tx, lines) = mpsc::unbounded_channel();
    forward(child.stdout.take().expect("stdout"), "", tx.clone());
    forward(child.stderr.take().expect("stderr"), "stderr: ", tx);
    (
        child,
        Output {
            name,
            lines,
            seen: Vec::new(),
        },
    )
}

fn forward(
    reader: impl AsyncRead + Unpin + Send + 'static,
    prefix: &'static str,
    tx: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(format!("{prefix}{line}")).is_err() {
                break;
            }
        }
    });
}

/// What a child printed, so far and to come.
struct Output {
    name: &'static str,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// The first line, printed so far or before `deadline`, that contains `needle`.
    async fn expect(&mut self, needle: &str, deadline: Instant) -> String {
        self.find(
            |line| line.contains(needle).then(|| line.to_owned()),
            needle,
            deadline,
        )
        .await
    }

    /// The address in the gateway's `listening role="<role>" addr=...` log line.
    async fn listening(&mut self, role: &str, deadline: Instant) -> SocketAddr {
        let role_field = format!("role=\"{role}\"");
        let parse = |line: &str| {
            if !line.contains("listening") || !line.contains(&role_field) {
                return None;
            }
            let at = line.find("addr=")? + "addr=".len();
            line[at..].split_whitespace().next()?.parse().ok()
        };
        self.find(parse, &format!("listening {role_field}"), deadline)
            .await
    }

    async fn find<T>(
        &mut self,
        matches: impl Fn(&str) -> Option<T>,
        what: &str,
        deadline: Instant,
    ) -> T {
        if let Some(found) = self.seen.iter().find_map(|line| matches(line)) {
            return found;
        }
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = matches(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Ok(None) => self.fail(what, "it exited first"),
                Err(_) => self.fail(what, "the time is up"),
            }
        }
    }

    fn fail(&self, what: &str, why: &str) -> ! {
        panic!(
            "{} did not print {what:?} ({why}); it printed:\n{}",
            self.name,
            self.seen.join("\n")
        )
    }
}

/// `target/<profile>/tether-gateway`, next to this test's own `target/<profile>/deps/`;
/// built first (with the cargo running this test) when it is missing or older than the
/// sources it is built from.
fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join(format!("tether-gateway{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !binary.exists() || stale(&binary, &workspace) {
        build_gateway(profile_dir, &workspace);
    }
    assert!(
        binary.exists(),
        "no gateway binary at {} after building it",
        binary.display()
    );
    binary
}

/// Whether a source of the gateway or of the crates it depends on is newer than `binary`.
fn stale(binary: &Path, workspace: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    [
        "bins/gateway/src",
        "bins/gateway/Cargo.toml",
        "runtime-tokio/src",
        "sdk/src",
        "proto-core/src",
        "Cargo.lock",
    ]
    .iter()
    .any(|path| newest(&workspace.join(path)).is_some_and(|newest| newest > built))
}

/// The latest modification time of `path`, or of a file under it.
fn newest(path: &Path) -> Option<SystemTime> {
    if !path.is_dir() {
        return path.metadata().and_then(|m| m.modified()).ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

fn build_gateway(profile_dir: &Path, workspace: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", "tether-gateway"])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p tether-gateway: {status}");
}
