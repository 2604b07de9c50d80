//! `chat-service`: the service half of the chatroom example.
//!
//! It connects to the gateway's service port, subscribes to the topic `chat`, and keeps the
//! set of online edges from the gateway's presence hooks. Every line an edge publishes on
//! `chat` is acknowledged and sent to every online edge as `<edge N (name)> text`; edges
//! coming and going are announced as `* edge N (name) joined` / `left`.
//!
//! ```sh
//! cargo run -p tether-chatroom --bin chat-service -- --gateway 127.0.0.1:30011
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use tether_tokio::{ConnectExt, EdgeInfo, Service};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The topic edges publish their lines on.
const TOPIC: &str = "chat";

/// How long one delivery may take before the edge is skipped for that line (a stuck edge
/// must not hold up the room for the SDK's default 30 s).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The chatroom service: fans every line published on `chat` out to every online edge.
#[derive(Debug, Parser)]
#[command(name = "chat-service", version)]
struct Args {
    /// The gateway's service address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:30011")]
    gateway: String,
}

/// The online edges: id → the name it sent as metadata (empty if none).
#[derive(Clone, Debug, Default)]
struct Roster(Arc<Mutex<BTreeMap<u64, String>>>);

impl Roster {
    /// The ids of the online edges.
    fn ids(&self) -> Vec<u64> {
        let edges = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        edges.keys().copied().collect()
    }

    fn join(&self, id: u64, name: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name);
    }

    /// Adds an edge that was online before this service connected (the gateway announced
    /// it to no one) when it first speaks.
    fn seen(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default();
    }

    fn leave(&self, id: u64) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    /// How edge `id` is shown in the room.
    fn label(&self, id: u64) -> String {
        let name = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .unwrap_or_default();
        label(id, &name)
    }
}

fn label(id: u64, name: &str) -> String {
    if name.is_empty() {
        format!("edge {id}")
    } else {
        format!("edge {id} ({name})")
    }
}

/// The name an edge sent as its metadata, made printable.
fn name_of(edge: &EdgeInfo) -> String {
    String::from_utf8_lossy(&edge.metadata)
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let roster = Roster::default();
    // The hooks run while the gateway admits or drops an edge: they update the roster at
    // once and queue the announcement, so admission is never held up by the fan-out.
    let (announce, mut announcements) = mpsc::unbounded_channel::<String>();

    let service = Service::builder("chatroom")
        .topic(TOPIC)
        .on_edge_online({
            let roster = roster.clone();
            let announce = announce.clone();
            move |edge: EdgeInfo| {
                let name = name_of(&edge);
                let announcement = format!("* {} joined", label(edge.id, &name));
                // Into the roster first, so the edge hears its own arrival too.
                roster.join(edge.id, name);
                let _ = announce.send(announcement);
                async { Ok(()) }
            }
        })
        .on_edge_offline({
            let roster = roster.clone();
            move |edge: EdgeInfo| {
                let name = roster.leave(edge.id).unwrap_or_else(|| name_of(&edge));
                let _ = announce.send(format!("* {} left", label(edge.id, &name)));
                async { Ok(()) }
            }
        })
        .connect(args.gateway.clone())
        .context("cannot start the service")?;
    println!("connecting to the gateway at {}", args.gateway);

    tokio::spawn({
        let service = service.clone();
        async move {
            match service.wait_connected().await {
                Ok(()) => println!(
                    "connected as service {}; waiting for edges",
                    service.service_id().unwrap_or_default()
                ),
                Err(e) => println!("cannot connect: {e}"),
            }
        }
    });

    // One line at a time, announcements and chat alike, so every edge sees (and this
    // prints) the room in one order; each line goes to all edges at once.
    let room = async {
        loop {
            let line = tokio::select! {
                Some(announcement) = announcements.recv() => announcement,
                message = service.receive() => {
                    let Some(mut message) = message else { break };
                    let from = message.address().peer_id;
                    let body = message.take_body();
                    message.done();
                    roster.seen(from);
                    let text = String::from_utf8_lossy(&body);
                    format!("<{}> {}", roster.label(from), text.trim_end())
                }
            };
            println!("{line}");
            fan_out(&service, &roster, Bytes::from(line)).await;
        }
    };
    tokio::select! {
        () = room => println!("the service was closed"),
        result = tokio::signal::ctrl_c() => {
            result.context("cannot listen for ctrl-c")?;
            println!("ctrl-c: closing");
            service.close().await;
        }
    }
    Ok(())
}

/// Sends `body` to every online edge at once and waits for their acknowledgements; an edge
/// that left in the meantime (or is too slow) is logged and skipped.
async fn fan_out(service: &Service, roster: &Roster, body: Bytes) {
    let mut deliveries = JoinSet::new();
    for id in roster.ids() {
        let service = service.clone();
        let body = body.clone();
        deliveries.spawn(async move {
            let result = tokio::time::timeout(DELIVERY_TIMEOUT, service.publish(id, body)).await;
            (id, result)
        });
    }
    let total = deliveries.len();
    let mut delivered = 0;
    while let Some(joined) = deliveries.join_next().await {
        match joined {
            Ok((_, Ok(Ok(())))) => delivered += 1,
            // Typically `EdgeNotOnline`: it left, and its offline hook removes it.
            Ok((id, Ok(Err(e)))) => println!("  could not deliver to edge {id}: {e}"),
            Ok((id, Err(_))) => {
                println!("  edge {id} did not acknowledge within {DELIVERY_TIMEOUT:?}")
            }
            Err(e) => println!("  a delivery task failed: {e}"),
        }
    }
    println!("  delivered to {delivered} of {total} edges");
}
