//! The `mio` driver: `tether-mio`'s single-threaded event loop, no async runtime.
//!
//! Addresses are resolved once, at start. SIGTERM and SIGINT set the loop's stop flag,
//! which it checks at least every 100 ms.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use tether_mio::{AgentConfig, AgentEvent};
use tether_smol::endpoint::Scheme;

use crate::config::EdgeConfig;

/// Runs until SIGTERM or ctrl-c.
pub(crate) fn run(config: EdgeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    // `Cli::resolve` refuses these already; the driver says so again rather than
    // connecting in the clear.
    if config.gateway.scheme() != Scheme::Tcp || config.tls.is_set() {
        return Err(format!(
            "the mio driver speaks plain TCP only; {} and TLS settings need --driver smol",
            config.gateway
        )
        .into());
    }
    let gateway = config.gateway.authority();
    let mut agent = AgentConfig::new(resolve("gateway", &gateway)?);
    agent.requested_id = config.id;
    agent.metadata = Bytes::from(config.metadata);
    agent.token = Bytes::from(config.token);
    for expose in &config.exposes {
        let address = resolve(&format!("expose {}", expose.name), &expose.address)?;
        agent.exposes.insert(expose.name.clone(), address);
    }
    tether_mio::run(agent, &stop, &mut log)?;
    tracing::info!("closed");
    Ok(())
}

/// The first address `address` resolves to.
fn resolve(what: &str, address: &str) -> Result<SocketAddr, String> {
    let mut addresses = address
        .to_socket_addrs()
        .map_err(|e| format!("{what}: cannot resolve {address}: {e}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{what}: {address} resolves to no address"))
}

fn log(event: AgentEvent) {
    match event {
        AgentEvent::Connected { edge_id } => {
            tracing::info!(id = edge_id, "connected to the gateway");
        }
        AgentEvent::Disconnected { reason } => {
            tracing::warn!(reason = %reason, "disconnected from the gateway");
        }
        AgentEvent::StreamOpened { service, local } => {
            tracing::info!(service = %service, local = %local, "stream opened");
        }
        AgentEvent::StreamRefused { service, reason } => {
            tracing::warn!(service = %service, reason = %reason, "stream refused");
        }
        AgentEvent::StreamClosed { service } => {
            tracing::info!(service = %service, "stream closed");
        }
        other => tracing::debug!("{other:?}"),
    }
}
