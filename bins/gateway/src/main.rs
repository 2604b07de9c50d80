//! `tether-gateway`: runs the gateway with embedded defaults; `--config FILE`, flags and
//! `TETHER_*` environment variables override them (`--print-config` shows every key).
//! `tether-gateway ctl ...` talks to a running gateway's control plane;
//! `tether-gateway openapi` prints the control plane's OpenAPI description.

use anyhow::Context;
use clap::Parser;
use tether_gateway::Gateway;
use tether_gateway::config::{Cli, DEFAULT_CONFIG_YAML, LogFormat};

/// The command line: the gateway's flags, or a subcommand.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tether-gateway",
    version,
    about = "The Tether gateway: routes RPC, messages and streams between services and edges",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    run: Cli,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Talks to a running gateway's control plane.
    Ctl(Box<tether_gateway::ctl::Ctl>),
    /// Prints the control plane's OpenAPI description (JSON).
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Ctl(ctl)) => return tether_gateway::ctl::run(&ctl),
        Some(Command::Openapi) => {
            print!("{}", tether_gateway::control::openapi::to_json());
            return Ok(());
        }
        None => {}
    }
    let cli = args.run;
    if cli.print_config {
        print!("{DEFAULT_CONFIG_YAML}");
        return Ok(());
    }
    let config = cli.resolve().context("invalid configuration")?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let gateway = Gateway::bind(config.clone())
            .await
            .context("cannot bind the listeners")?;
        tracing::info!(role = "service", addr = %gateway.service_addr()?, "listening");
        tracing::info!(role = "edge", addr = %gateway.edge_addr()?, "listening");
        tracing::info!(role = "control", addr = %gateway.control_addr()?, "listening");
        if let Some(addr) = gateway.http_ingress_addr() {
            tracing::info!(role = "http-ingress", addr = %addr?, "listening");
        }
        for (addr, mapping) in gateway.tcp_mapping_addrs() {
            let (edge, service) = (mapping.edge, mapping.service.as_str());
            tracing::info!(role = "tcp-mapping", addr = %addr?, edge, service, "listening");
        }
        gateway.run(shutdown_signal()).await;
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
