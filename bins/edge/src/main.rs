//! `tether-edge`: the Tether edge agent. It connects to a gateway as an edge and exposes
//! local TCP services: every stream the gateway opens to it names a service in its open
//! metadata, and the agent connects to that service's local address and pipes the bytes
//! both ways (with half-close). Unknown names are refused with `NOT_FOUND`, local connect
//! failures with `REFUSED`. It reconnects forever with backoff and exits with status 0 on
//! SIGTERM or ctrl-c.
//!
//! ```sh
//! tether-edge --gateway gw.example.net:30012 --id 42 --expose ssh=127.0.0.1:22
//! tether-edge --gateway wss://gw.example.net/tether --ca ca.pem --cert edge.pem --key edge.key \
//!     --expose web=127.0.0.1:8080
//! tether-edge --config edge.yaml --driver mio
//! ```
//!
//! Two drivers: `smol` (default; the async SDK on a single-threaded smol executor; plain
//! TCP, TLS, WebSocket and WebSocket over TLS gateways) and `mio` (`tether-mio`'s raw event
//! loop; plain TCP only). For constrained devices, build with
//! `cargo build --profile release-small -p tether-edge`.

mod config;
mod mio_agent;
mod pipe;
mod smol_agent;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Cli, Driver};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match cli.resolve() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    for expose in &config.exposes {
        tracing::info!(
            name = %expose.name,
            address = %expose.address,
            kind = %expose.kind,
            "exposing"
        );
    }
    tracing::info!(gateway = %config.gateway, driver = %config.driver, "starting");
    let result = match config.driver {
        Driver::Smol => smol_agent::run(config),
        Driver::Mio => mio_agent::run(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable lines on stderr, filtered by `RUST_LOG` (`info` by default) read as
/// `tracing_subscriber::filter::Targets` (`warn`, `info,tether_sdk=debug`, ...).
fn init_logging() {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => text.parse().unwrap_or_else(|e| {
            eprintln!("tether-edge: ignoring RUST_LOG={text:?}: {e}");
            default()
        }),
        _ => default(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    tracing_subscriber::registry().with(fmt).with(filter).init();
}
