//! The chatroom example end to end: the real `tether-gateway` binary, `chat-service` and
//! two `chat-edge` processes on loopback, driven through their stdin and stdout.

use std::path::Path;
use std::time::Duration;

use tether_testkit::{gateway_binary, start};
use tokio::io::AsyncWriteExt;
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
    gateway_log.discard_rest();

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
