//! The default driver: the async SDK (`tether-smol`) on one smol executor run by the main
//! thread, with a task per stream.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_core::ErrorCode;
use smol::future::FutureExt as _;
use smol::io::AsyncReadExt as _;
use smol::net::TcpStream;
use smol::{Async, Executor, Timer};
use tether_smol::tls::ClientTls;
use tether_smol::{Edge, IncomingStream, SmolRuntime, endpoint_dialer, runtime};

use crate::config::{EdgeConfig, Expose, TlsOptions};
use crate::pipe::pipe;

/// How long a local connect may take before the stream is refused (the gateway gives the
/// edge 30 s to answer).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful close may take after SIGTERM / ctrl-c.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until SIGTERM or ctrl-c, then closes the edge gracefully.
pub(crate) fn run(config: EdgeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let dialer = gateway_dialer(&config)?;
    let signals = Signals::install()?;
    let executor = Arc::new(Executor::new());
    let runtime = Arc::new(SmolRuntime::with_executor(Arc::clone(&executor)));
    let mut builder = Edge::builder()
        .metadata(config.metadata)
        .token(config.token)
        .version(env!("CARGO_PKG_VERSION"));
    if let Some(id) = config.id {
        builder = builder.edge_id(id);
    }
    let exposes: Arc<BTreeMap<String, Expose>> = Arc::new(
        config
            .exposes
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect(),
    );
    smol::block_on(executor.run(async {
        // Started inside the executor so its first tasks run at once.
        let edge = builder.start(runtime, dialer)?;
        let serve = async {
            while let Some(incoming) = edge.incoming_stream().await {
                dispatch(&executor, &exposes, incoming);
            }
        };
        let stop = async {
            signals.wait().await;
        };
        serve.or(stop).await;
        tracing::info!("shutting down");
        let closed = async {
            edge.close().await;
            tracing::info!("closed");
        };
        let cut_short = async {
            Timer::after(CLOSE_TIMEOUT).await;
            tracing::warn!("the graceful close took too long; exiting");
        };
        let again = async {
            signals.wait().await;
            tracing::warn!("second signal; exiting");
        };
        closed.or(cut_short).or(again).await;
        Ok(())
    }))
}

/// The dialer for the configured gateway URL: TLS files are read here, so a missing or
/// malformed one stops the agent at start.
fn gateway_dialer(config: &EdgeConfig) -> Result<runtime::Dialer, tether_smol::Error> {
    let mut endpoint = config.gateway.clone();
    let mut tls = None;
    if endpoint.uses_tls() {
        let TlsOptions {
            ca,
            cert,
            key,
            server_name,
        } = &config.tls;
        let mut client = ClientTls::new();
        if let Some(ca) = ca {
            client = client.ca_pem_file(ca);
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            client = client.client_cert_pem_files(cert, key);
        }
        if let Some(name) = server_name {
            client = client.server_name(name.clone());
        }
        endpoint = client.apply_server_name(endpoint);
        tls = Some(client.build()?);
    }
    endpoint_dialer(endpoint, tls)
}

/// Refuses a stream for an unknown service at once; otherwise serves it on its own task.
fn dispatch(
    executor: &Arc<Executor<'static>>,
    exposes: &Arc<BTreeMap<String, Expose>>,
    incoming: IncomingStream,
) {
    let name = String::from_utf8_lossy(incoming.metadata()).into_owned();
    match exposes.get(&name) {
        None => {
            let reason = format!("no exposed service {name}");
            tracing::warn!(service = %name, reason = %reason, "stream refused");
            incoming.refuse(ErrorCode::NOT_FOUND, &reason);
        }
        Some(expose) => {
            let expose = expose.clone();
            executor.spawn(serve(incoming, expose)).detach();
        }
    }
}

/// Connects to the local service, accepts the stream and pipes it.
async fn serve(incoming: IncomingStream, expose: Expose) {
    let connect = async { TcpStream::connect(expose.address.as_str()).await };
    let timeout = async {
        Timer::after(LOCAL_CONNECT_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ))
    };
    let local = match connect.or(timeout).await {
        Ok(local) => local,
        Err(e) => {
            let reason = format!("{}: cannot connect to {}: {e}", expose.name, expose.address);
            tracing::warn!(service = %expose.name, reason = %reason, "stream refused");
            incoming.refuse(ErrorCode::REFUSED, &reason);
            return;
        }
    };
    let _ = local.set_nodelay(true);
    let stream = match incoming.accept(Bytes::new()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(service = %expose.name, "stream withdrawn before it was accepted: {e}");
            return;
        }
    };
    let id = stream.id();
    let peer = local
        .peer_addr()
        .map_or_else(|_| expose.address.clone(), |a| a.to_string());
    tracing::info!(service = %expose.name, stream = %id, local = %peer, "stream opened");
    let outcome = pipe(stream, local).await;
    tracing::info!(service = %expose.name, stream = %id, reason = %outcome, "stream closed");
}

/// SIGTERM and SIGINT, delivered through a socket pair the reactor watches.
struct Signals {
    reader: Async<UnixStream>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let (reader, writer) = UnixStream::pair()?;
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }
        Ok(Signals {
            reader: Async::new(reader)?,
        })
    }

    /// Waits for the next signal.
    async fn wait(&self) {
        let mut byte = [0u8; 1];
        let mut reader = &self.reader;
        loop {
            match reader.read(&mut byte).await {
                Ok(1) => return,
                // Cannot happen while the writer is registered; wait forever rather than spin.
                Ok(_) => std::future::pending::<()>().await,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
}
