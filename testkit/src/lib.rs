//! Test support shared by the end-to-end tests of the binaries and examples: starting
//! processes with their output captured line by line, waiting for log lines, and finding
//! (or building) the `tether-gateway` binary of the current target directory; and [`pki`],
//! certificates made at test time; [`net`], loopback peers.

pub mod net;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Starts `program` with `args`, stdin piped, killed when the `Child` is dropped; its
/// stdout and stderr lines are collected in the `Output`.
pub fn start(name: &'static str, program: &Path, args: &[&str]) -> (Child, Output) {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Each gateway's control plane on a free port (the default, 30010, is one per host).
        .env("TETHER_CONTROL_LISTEN", "127.0.0.1:0")
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

/// Sends each line `reader` produces, with `prefix`, to `tx`.
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
pub struct Output {
    name: &'static str,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// Keeps reading the rest of the output in the background and throws it away, so the
    /// child never blocks on a full pipe.
    pub fn discard_rest(mut self) {
        tokio::spawn(async move { while self.lines.recv().await.is_some() {} });
    }

    /// The first line, printed so far or before `deadline`, that contains `needle`.
    pub async fn expect(&mut self, needle: &str, deadline: Instant) -> String {
        self.find(
            |line| line.contains(needle).then(|| line.to_owned()),
            needle,
            deadline,
        )
        .await
    }

    /// The address in the gateway's `listening role="<role>" addr=...` log line.
    pub async fn listening(&mut self, role: &str, deadline: Instant) -> SocketAddr {
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

    /// The first line, printed so far or before `deadline`, that `matches` accepts.
    pub async fn find<T>(
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

    /// Panics saying what was awaited, why it did not come, and everything printed.
    pub fn fail(&self, what: &str, why: &str) -> ! {
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
pub fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join(format!("tether-gateway{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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

/// Builds the gateway binary into `profile_dir`'s target directory with the same profile.
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
