//! `chat-edge`: the edge half of the chatroom example, a terminal chat client.
//!
//! It connects to the gateway's edge port (sending `--name` as its metadata), publishes
//! every line typed on stdin to the topic `chat`, and prints every message the chat
//! service sends it: the room's lines and its join/leave announcements. End of input
//! (ctrl-d) closes the connection gracefully and exits.
//!
//! ```sh
//! cargo run -p tether-chatroom --bin chat-edge -- --gateway 127.0.0.1:30012 --name alice
//! ```

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use tether_tokio::{ConnectExt, Edge};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The topic the chat service reads.
const TOPIC: &str = "chat";

/// A terminal chat client: lines from stdin go to the room, the room's lines are printed.
#[derive(Debug, Parser)]
#[command(name = "chat-edge", version)]
struct Args {
    /// The gateway's edge address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:30012")]
    gateway: String,
    /// The name shown to the room (sent to the gateway as this edge's metadata).
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = Edge::builder();
    if let Some(name) = &args.name {
        builder = builder.metadata(name.clone());
    }
    let edge = builder
        .connect(args.gateway.clone())
        .context("cannot start the edge")?;
    println!("connecting to the gateway at {}", args.gateway);

    tokio::spawn({
        let edge = edge.clone();
        async move {
            match edge.wait_connected().await {
                Ok(()) => println!(
                    "connected as edge {}; type lines to chat, ctrl-d to leave",
                    edge.edge_id().unwrap_or_default()
                ),
                Err(e) => println!("cannot connect: {e}"),
            }
        }
    });

    // Everything the service sends: print it, then acknowledge it.
    let printer = tokio::spawn({
        let edge = edge.clone();
        async move {
            while let Some(mut message) = edge.receive().await {
                let body = message.take_body();
                message.done();
                println!("{}", String::from_utf8_lossy(&body));
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        // Resolves once the chat service has acknowledged the line.
        if let Err(e) = edge.publish(TOPIC, Bytes::from(line)).await {
            println!("! not sent: {e}");
        }
    }

    edge.close().await;
    printer.await.context("the printer task failed")?;
    Ok(())
}
