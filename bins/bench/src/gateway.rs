//! The gateway under test and how the bench's clients reach it: a running gateway at
//! `--service-addr` / `--edge-addr`, over plain TCP; or one tether-bench starts from
//! `--gateway-bin` for the run, with the listeners `--transport` needs (TLS with a
//! throwaway CA and a certificate for `localhost`, WebSocket), stopped at the end.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tether_tokio::ConnectExt;
use tether_tokio::tls::ClientTls;
use tokio::time::Instant;

use crate::cli::{Common, Transport};

/// The WebSocket path of the started gateway (its default).
const WS_PATH: &str = "/tether";

/// The name the server certificate carries; the clients check it (and send it as SNI)
/// whatever host the addresses name.
const SERVER_NAME: &str = "localhost";

/// How long the started gateway may take to open its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    Service,
    Edge,
}

/// The gateway under test.
pub(crate) struct Target {
    transport: Transport,
    service_addr: String,
    edge_addr: String,
    /// What the clients trust for tls and wss.
    tls: Option<ClientTls>,
    /// The gateway process, if tether-bench started it.
    started: Option<Started>,
}

impl Target {
    /// The running gateway of `--service-addr` / `--edge-addr`, or with `--gateway-bin`
    /// a gateway started (and ready) for `--transport`.
    pub(crate) async fn new(common: &Common) -> anyhow::Result<Target> {
        let Some(bin) = &common.gateway_bin else {
            if common.transport != Transport::Tcp {
                anyhow::bail!(
                    "--transport {} needs the gateway tether-bench starts, configured with the \
                     certificates it makes: add --gateway-bin PATH (e.g. \
                     --gateway-bin target/release/tether-gateway)",
                    common.transport.as_str()
                );
            }
            let (Some(service_addr), Some(edge_addr)) = (&common.service_addr, &common.edge_addr)
            else {
                anyhow::bail!("--service-addr and --edge-addr are required without --gateway-bin");
            };
            return Ok(Target {
                transport: Transport::Tcp,
                service_addr: service_addr.clone(),
                edge_addr: edge_addr.clone(),
                tls: None,
                started: None,
            });
        };
        start(bin, common).await
    }

    /// The `host:port` of a listener.
    pub(crate) fn addr(&self, role: Listener) -> &str {
        match role {
            Listener::Service => &self.service_addr,
            Listener::Edge => &self.edge_addr,
        }
    }

    /// The URL the clients dial for a listener.
    pub(crate) fn url(&self, role: Listener) -> String {
        let addr = self.addr(role);
        match self.transport {
            Transport::Tcp => format!("tcp://{addr}"),
            Transport::Tls => format!("tls://{addr}"),
            Transport::Ws => format!("ws://{addr}{WS_PATH}"),
            Transport::Wss => format!("wss://{addr}{WS_PATH}"),
        }
    }

    /// Starts a service or edge client connecting to the `role` listener.
    pub(crate) fn connect<B: ConnectExt>(
        &self,
        builder: B,
        role: Listener,
    ) -> Result<B::Client, tether_tokio::Error> {
        match (self.transport, &self.tls) {
            // Exactly the dialer the figures before `--transport` were measured with.
            (Transport::Tcp, _) => builder.connect(self.addr(role).to_owned()),
            (_, Some(tls)) => builder.connect_tls(&self.url(role), tls),
            (_, None) => builder.connect_url(&self.url(role), None),
        }
    }

    /// The started gateway's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.started.as_ref().map(|s| s.child.id())
    }

    /// The started gateway's log (its first and last lines), for an error message.
    pub(crate) fn log_excerpt(&self) -> Option<String> {
        self.started.as_ref().map(|s| excerpt(&s.dir.join(LOG), 10))
    }
}

/// The started gateway: killed on drop, then its files removed.
struct Started {
    child: Child,
    dir: TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        // A throwaway gateway: no graceful drain needed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("tether-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const LOG: &str = "gateway.log";

async fn start(bin: &Path, common: &Common) -> anyhow::Result<Target> {
    let transport = common.transport;
    let (service_addr, edge_addr) = match (&common.service_addr, &common.edge_addr) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        (s, e) => {
            let (free_s, free_e) = free_ports().context("finding free loopback ports")?;
            (s.clone().unwrap_or(free_s), e.clone().unwrap_or(free_e))
        }
    };
    let dir = TempDir::new()?;
    let log = std::fs::File::create(dir.join(LOG)).context("creating the gateway's log")?;
    let mut yaml = String::from(
        "# Written by tether-bench for one run.\n\
         control_listen: 127.0.0.1:0\n",
    );
    let tls = if transport.uses_tls() {
        let (ca_pem, cert, key) = certificates(&dir)?;
        for section in ["service_tls", "edge_tls"] {
            yaml.push_str(&format!(
                "{section}:\n  certs:\n    - {{cert: {}, key: {}}}\n",
                quoted(&cert),
                quoted(&key)
            ));
        }
        Some(ClientTls::new().ca_pem(ca_pem).server_name(SERVER_NAME))
    } else {
        None
    };
    if transport.is_websocket() {
        yaml.push_str(&format!(
            "websocket:\n  edge: true\n  service: true\n  path: {WS_PATH}\n"
        ));
    }
    let config = dir.join("gateway.yaml");
    std::fs::write(&config, yaml).context("writing the gateway's configuration")?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["--service-listen", &service_addr])
        .args(["--edge-listen", &edge_addr])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("the gateway's log")?)
        .stderr(log)
        .spawn();
    let child = child.with_context(|| format!("starting the gateway {}", bin.display()))?;
    let mut target = Target {
        transport,
        service_addr,
        edge_addr,
        tls,
        started: Some(Started { child, dir }),
    };
    wait_ready(&mut target).await?;
    Ok(target)
}

/// Waits until both listeners accept TCP connections, or the gateway exits.
async fn wait_ready(target: &mut Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for role in [Listener::Service, Listener::Edge] {
        loop {
            let started = target.started.as_mut().context("no started gateway")?;
            if let Some(status) = started.child.try_wait().context("the started gateway")? {
                anyhow::bail!(
                    "the started gateway exited ({status}); its log:\n{}",
                    target.log_excerpt().unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(target.addr(role))
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the started gateway did not listen on {} within {}s; its log:\n{}",
                    target.addr(role),
                    START_TIMEOUT.as_secs(),
                    target.log_excerpt().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Two free loopback ports (free when asked; the gateway binds them right after).
fn free_ports() -> std::io::Result<(String, String)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.to_string(), b.local_addr()?.to_string()))
}

/// A throwaway CA and a server certificate for [`SERVER_NAME`] signed by it, written to
/// `dir`. Returns the CA certificate (PEM) and the paths of the server's certificate and
/// key.
fn certificates(dir: &TempDir) -> anyhow::Result<(String, PathBuf, PathBuf)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tether-bench throwaway CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut server = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).context("writing the server certificate")?;
    std::fs::write(&key_path, key.serialize_pem()).context("writing the server key")?;
    Ok((issuer.pem(), cert_path, key_path))
}

/// `path` as a double-quoted YAML scalar.
fn quoted(path: &Path) -> String {
    serde_json::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// The file at `path`, or its first and last `n` lines if it is longer than `2 n`.
fn excerpt(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() <= 2 * n {
                return lines.join("\n");
            }
            let skipped = lines.len() - 2 * n;
            format!(
                "{}\n[... {skipped} lines ...]\n{}",
                lines[..n].join("\n"),
                lines[lines.len() - n..].join("\n")
            )
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
