//! The edge agent over TLS and WebSocket, end to end: the real `tether-gateway` binary with
//! mTLS on its edge listener (the edge id bound to the device certificate's CN), WebSocket
//! upgrades on the same port, a TCP port mapping and the HTTP ingress; the `tether-edge`
//! binary dialing it with `wss://` and `tls://` URLs and certificates made at test time;
//! local echo and HTTP servers the agent exposes. Also what the agent does when the
//! gateway refuses its identity or it does not trust the gateway, and the start-up checks
//! of transports and drivers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tether_testkit::net::{dead_address, echo_server, pattern};
use tether_testkit::pki::{Ca, Leaf, TempDir, Validity, yaml_path};
use tether_testkit::{Output, gateway_binary, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout_at};

/// A whole scenario, gateway start included, must finish within this.
const BUDGET: Duration = Duration::from_secs(60);

/// The device id in the device certificate's CN.
const DEVICE: u64 = 1001;

/// The certificates of one test and the gateway configured with them.
struct Pki {
    dir: TempDir,
    /// The CA that signed the gateway's certificate (for `localhost` and `gw.internal`).
    server_ca: PathBuf,
    /// A device certificate with CN `1001`, signed by the devices CA the gateway trusts.
    device: Leaf,
    config: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let server_ca = Ca::new("Tether test server CA");
        let server = server_ca.server(
            &dir,
            "server",
            &["localhost", "gw.internal"],
            Validity::Current,
        );
        let server_ca = server_ca.write(&dir, "server-ca.pem");
        let device_ca = Ca::new("devices");
        let devices = device_ca.write(&dir, "devices-ca.pem");
        let device = device_ca.client(&dir, "device", &DEVICE.to_string(), &[], Validity::Current);
        let yaml = format!(
            "service_listen: 127.0.0.1:0\n\
             edge_listen: 127.0.0.1:0\n\
             http_ingress: 127.0.0.1:0\n\
             edge_tls:\n  \
               certs: [{{cert: {cert}, key: {key}}}]\n  \
               client_ca: [{devices}]\n  \
               identity: {{bind: id}}\n\
             websocket:\n  edge: true\n  path: /tether\n\
             tcp_mappings:\n  \
               - listen: 127.0.0.1:0\n    edge: {DEVICE}\n    service: echo\n",
            cert = yaml_path(&server.cert),
            key = yaml_path(&server.key),
            devices = yaml_path(&devices),
        );
        let config = dir.write("gateway.yaml", &yaml);
        Pki {
            dir,
            server_ca,
            device,
            config,
        }
    }

    /// A CA file of a CA that signed nothing the gateway uses.
    fn stranger_ca(&self) -> PathBuf {
        Ca::new("someone else").write(&self.dir, "stranger-ca.pem")
    }
}

/// The gateway process and the addresses it listens on.
struct Gateway {
    _child: Child,
    log: Output,
    edge: SocketAddr,
    mapping: SocketAddr,
    http: SocketAddr,
}

impl Gateway {
    async fn start(config: &Path, deadline: Instant) -> Gateway {
        let config = config.display().to_string();
        let (child, mut log) = start("gateway", &gateway_binary(), &["--config", &config]);
        let edge = log.listening("edge", deadline).await;
        let mapping = log.listening("tcp-mapping", deadline).await;
        let http = log.listening("http-ingress", deadline).await;
        Gateway {
            _child: child,
            log,
            edge,
            mapping,
            http,
        }
    }

    fn wss(&self) -> String {
        format!("wss://localhost:{}/tether", self.edge.port())
    }

    fn tls(&self) -> String {
        format!("tls://localhost:{}", self.edge.port())
    }
}

/// Starts `tether-edge` with `args`.
fn agent(args: &[&str]) -> (Child, Output) {
    start(
        "tether-edge",
        Path::new(env!("CARGO_BIN_EXE_tether-edge")),
        args,
    )
}

/// The agent's arguments for `gateway` with the CA `ca`, the device certificate, the edge
/// id `id` and `expose`.
fn agent_args(gateway: &str, ca: &Path, device: &Leaf, id: u64, expose: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--gateway",
        gateway,
        "--ca",
        &ca.display().to_string(),
        "--cert",
        &device.cert.display().to_string(),
        "--key",
        &device.key.display().to_string(),
        "--id",
        &id.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for e in expose {
        args.extend(["--expose".to_owned(), e.clone()]);
    }
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits for the first of "connected to the gateway" or "cannot connect to the gateway"
/// and returns that line.
async fn first_outcome(log: &mut Output, deadline: Instant) -> String {
    let either = |line: &str| {
        (line.contains("connected to the gateway") || line.contains("cannot connect"))
            .then(|| line.to_owned())
    };
    log.find(either, "the outcome of the first connection", deadline)
        .await
}

/// SIGTERM, then the exit status, which must come before `deadline`.
async fn terminate(child: &mut Child, deadline: Instant) -> ExitStatus {
    let pid = child.id().expect("the agent is still running").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(kill.success());
    timeout_at(deadline, child.wait())
        .await
        .expect("the agent exits in time after SIGTERM")
        .expect("wait for the agent")
}

/// The full secure path: the agent connects with `url`, and bytes round-trip through the
/// gateway's TCP port mapping and HTTP ingress to the local servers it exposes.
async fn relays_through(
    url: impl Fn(&Gateway) -> String,
    transport: &str,
    extra: &[&str],
    name: &str,
) {
    let deadline = Instant::now() + BUDGET;
    let pki = Pki::new(name);
    let mut gateway = Gateway::start(&pki.config, deadline).await;
    let echo = echo_server().await;
    let web = http_server().await;
    let mut args = agent_args(
        &url(&gateway),
        &pki.server_ca,
        &pki.device,
        DEVICE,
        &[format!("echo={echo}"), format!("web={web}")],
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let (mut edge, mut edge_log) = agent(&as_strs(&args));
    let outcome = first_outcome(&mut edge_log, deadline).await;
    assert!(
        outcome.contains("connected to the gateway") && outcome.contains(&format!("id={DEVICE}")),
        "the agent did not connect as {DEVICE}: {outcome}"
    );
    // The gateway saw the transport the URL asks for (WebSocket and TLS share the port).
    let expected = format!("transport=\"{transport}\"");
    let admitted = |line: &str| {
        (line.contains("role=\"edge\"") && line.contains(&expected)).then(|| line.to_owned())
    };
    let line = gateway.log.find(admitted, &expected, deadline).await;
    assert!(line.contains(&format!("id={DEVICE}")), "{line}");

    // A small echo through the port mapping (retried while the gateway does not list the
    // edge yet), then 4 MiB both ways at once.
    let probe = b"hello over the secure edge";
    echo_once(gateway.mapping, probe, deadline).await;
    let data = pattern(4 << 20);
    let back = echo_concurrently(gateway.mapping, &data, deadline).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the 4 MiB came back altered");
    edge_log.expect("stream opened", deadline).await;
    edge_log.expect("stream closed", deadline).await;

    // The HTTP ingress reaches the exposed web server, path rewritten.
    let (head, body) = http_get(
        gateway.http,
        &format!("/edge/{DEVICE}/web/hello?x=1"),
        deadline,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "GET /hello?x=1");

    let status = terminate(&mut edge, deadline).await;
    assert!(status.success(), "the agent exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_mtls_relays_a_port_mapping_and_http_ingress() {
    relays_through(Gateway::wss, "wss", &[], "wss").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_mtls_relays_a_port_mapping_and_http_ingress() {
    relays_through(Gateway::tls, "tls", &[], "tls").await;
}

/// `--server-name`: a gateway dialed by IP address (its certificate names no IP) is checked
/// against the given name, which is also sent as SNI; without it, or with a name the
/// certificate does not have, the agent does not trust the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_is_the_name_checked_for_a_gateway_dialed_by_ip() {
    let by_ip = |gw: &Gateway| format!("wss://127.0.0.1:{}/tether", gw.edge.port());
    relays_through(
        by_ip,
        "wss",
        &["--server-name", "gw.internal"],
        "server-name",
    )
    .await;

    let deadline = Instant::now() + BUDGET;
    let pki = Pki::new("server-name-wrong");
    let gateway = Gateway::start(&pki.config, deadline).await;
    let echo = echo_server().await;
    let base = agent_args(
        &by_ip(&gateway),
        &pki.server_ca,
        &pki.device,
        DEVICE,
        &[format!("echo={echo}")],
    );
    for extra in [&[][..], &["--server-name", "other.test"][..]] {
        let mut args = base.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        let (mut edge, mut edge_log) = agent(&as_strs(&args));
        let outcome = first_outcome(&mut edge_log, deadline).await;
        println!("{outcome}");
        assert!(
            outcome.contains("cannot connect to the gateway")
                && outcome.contains("invalid peer certificate")
                && outcome.contains("certificate not valid for name"),
            "{extra:?}: no clear certificate error: {outcome}"
        );
        let status = terminate(&mut edge, deadline).await;
        assert!(
            status.success(),
            "{extra:?}: the agent exited with {status}"
        );
    }
    drop(gateway);
}

/// Identity bound to the certificate: id 1002 with the CN=1001 certificate is refused,
/// the agent logs the gateway's reason and retries (without crashing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_does_not_match_the_certificate_is_refused_with_the_reason() {
    for (name, url) in [
        ("mismatch-wss", Gateway::wss as fn(&Gateway) -> String),
        ("mismatch-tls", Gateway::tls),
    ] {
        let deadline = Instant::now() + BUDGET;
        let pki = Pki::new(name);
        let mut gateway = Gateway::start(&pki.config, deadline).await;
        let echo = echo_server().await;
        let args = agent_args(
            &url(&gateway),
            &pki.server_ca,
            &pki.device,
            1002,
            &[format!("echo={echo}")],
        );
        let (mut edge, mut edge_log) = agent(&as_strs(&args));
        let outcome = first_outcome(&mut edge_log, deadline).await;
        println!("{outcome}");
        assert!(
            outcome.contains("cannot connect to the gateway")
                && outcome.contains("edge id 1002 does not match the client certificate"),
            "{name}: the agent did not log the refusal reason: {outcome}"
        );
        let retry = |line: &str| {
            (line.contains("cannot connect to the gateway") && line.contains("attempt=1"))
                .then(|| line.to_owned())
        };
        let again = edge_log.find(retry, "a second refusal", deadline).await;
        assert!(
            again.contains("does not match the client certificate"),
            "{again}"
        );
        gateway
            .log
            .expect(
                "edge id 1002 does not match the client certificate",
                deadline,
            )
            .await;
        assert!(
            edge.try_wait().expect("poll the agent").is_none(),
            "{name}: the agent exited after a refusal"
        );
        let status = terminate(&mut edge, deadline).await;
        assert!(status.success(), "{name}: the agent exited with {status}");
    }
}

/// A gateway certificate the agent does not trust: a clear certificate error, retried with
/// backoff, no crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_gateway_certificate_is_logged_and_retried() {
    for (name, url) in [
        ("wrong-ca-wss", Gateway::wss as fn(&Gateway) -> String),
        ("wrong-ca-tls", Gateway::tls),
    ] {
        let deadline = Instant::now() + BUDGET;
        let pki = Pki::new(name);
        let gateway = Gateway::start(&pki.config, deadline).await;
        let echo = echo_server().await;
        let args = agent_args(
            &url(&gateway),
            &pki.stranger_ca(),
            &pki.device,
            DEVICE,
            &[format!("echo={echo}")],
        );
        let (mut edge, mut edge_log) = agent(&as_strs(&args));
        let outcome = first_outcome(&mut edge_log, deadline).await;
        println!("{outcome}");
        assert!(
            outcome.contains("cannot connect to the gateway")
                && outcome.contains("invalid peer certificate")
                && outcome.contains("UnknownIssuer"),
            "{name}: no clear certificate error: {outcome}"
        );
        let retry = |line: &str| {
            (line.contains("cannot connect to the gateway") && line.contains("attempt=2"))
                .then(|| line.to_owned())
        };
        let again = edge_log.find(retry, "a third failure", deadline).await;
        assert!(again.contains("UnknownIssuer"), "{again}");
        assert!(
            edge.try_wait().expect("poll the agent").is_none(),
            "{name}: the agent exited after a certificate error"
        );
        let status = terminate(&mut edge, deadline).await;
        assert!(status.success(), "{name}: the agent exited with {status}");
        drop(gateway);
    }
}

/// Runs the agent with `args` and returns its exit status and the line containing
/// `needle`; it must stop on its own before `deadline`.
async fn refused_at_start(args: &[&str], needle: &str, deadline: Instant) -> (ExitStatus, String) {
    let (mut edge, mut log) = agent(args);
    let status = timeout_at(deadline, edge.wait())
        .await
        .expect("the agent stops at start")
        .expect("wait for the agent");
    (status, log.expect(needle, deadline).await)
}

/// The mio driver speaks plain TCP only: with a `wss://` (or `tls://`, `ws://`) gateway it
/// refuses to start, with or without TLS settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mio_driver_refuses_tls_and_websocket_gateways() {
    let deadline = Instant::now() + BUDGET;
    let pki = Pki::new("mio");
    let echo = echo_server().await;
    let expose = format!("echo={echo}");
    // Loopback ports nothing listens on: had the agent started, it would only retry.
    let dead = dead_address().await;
    let wss = format!("wss://localhost:{}/tether", dead.port());
    let mut with_tls = agent_args(
        &wss,
        &pki.server_ca,
        &pki.device,
        DEVICE,
        std::slice::from_ref(&expose),
    );
    with_tls.extend(["--driver".to_owned(), "mio".to_owned()]);
    let cases = [
        with_tls,
        ["--gateway", &wss, "--driver", "mio", "--expose", &expose]
            .map(str::to_owned)
            .to_vec(),
        [
            "--gateway",
            &format!("ws://127.0.0.1:{}/tether", dead.port()),
            "--driver",
            "mio",
            "--expose",
            &expose,
        ]
        .map(str::to_owned)
        .to_vec(),
        [
            "--gateway",
            &format!("tls://localhost:{}", dead.port()),
            "--driver",
            "mio",
            "--expose",
            &expose,
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for args in &cases {
        let (status, line) = refused_at_start(
            &as_strs(args),
            "the mio driver speaks plain TCP only",
            deadline,
        )
        .await;
        assert!(!status.success(), "{args:?}: exited with {status}");
        assert_eq!(status.code(), Some(2), "{args:?}: {line}");
        assert!(line.contains("needs --driver smol"), "{args:?}: {line}");
    }
}

/// TLS settings with a gateway URL that does not use TLS stop the agent at start rather
/// than be ignored; so does a missing certificate file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_settings_stop_the_agent_at_start() {
    let deadline = Instant::now() + BUDGET;
    let pki = Pki::new("settings");
    let echo = echo_server().await;
    let dead = dead_address().await;
    let expose = format!("echo={echo}");
    for gateway in [
        format!("tcp://127.0.0.1:{}", dead.port()),
        format!("ws://127.0.0.1:{}/tether", dead.port()),
    ] {
        let args = agent_args(
            &gateway,
            &pki.server_ca,
            &pki.device,
            DEVICE,
            std::slice::from_ref(&expose),
        );
        let (status, line) =
            refused_at_start(&as_strs(&args), "TLS settings given", deadline).await;
        assert_eq!(status.code(), Some(2), "{gateway}: {line}");
        assert!(line.contains("does not use TLS"), "{gateway}: {line}");
    }
    let missing = pki.dir.path("missing.pem");
    let wss = format!("wss://localhost:{}/tether", dead.port());
    let args = [
        "--gateway",
        &wss,
        "--ca",
        &missing.display().to_string(),
        "--expose",
        &expose,
    ]
    .map(str::to_owned);
    let (status, line) = refused_at_start(&as_strs(&args), "missing.pem", deadline).await;
    assert!(
        !status.success(),
        "a missing CA file: exited with {status}: {line}"
    );
}

/// Writes `data`, half-closes, and reads the echo to its end; retried (small `data` only)
/// while the connection is closed without an answer, which is what a port mapping does
/// while its edge is not online.
async fn echo_once(mapping: SocketAddr, data: &[u8], deadline: Instant) {
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let mut socket = TcpStream::connect(mapping).await?;
            socket.write_all(data).await?;
            socket.shutdown().await?;
            let mut back = Vec::new();
            socket.read_to_end(&mut back).await?;
            Ok::<_, std::io::Error>(back)
        };
        match timeout_at(deadline, attempt).await {
            Ok(Ok(back)) if back == data => return,
            Ok(Ok(back)) if !back.is_empty() => {
                panic!(
                    "the echo came back altered: {:?}",
                    String::from_utf8_lossy(&back)
                )
            }
            Ok(Ok(_)) => last = "closed without an answer".into(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no echo through the port mapping in time (last attempt: {last})");
}

/// Writes `data` while reading its echo; returns what came back.
async fn echo_concurrently(mapping: SocketAddr, data: &[u8], deadline: Instant) -> Vec<u8> {
    let socket = timeout_at(deadline, TcpStream::connect(mapping))
        .await
        .expect("connect in time")
        .expect("connect to the port mapping");
    let (mut reader, mut writer) = socket.into_split();
    let sent = data.to_vec();
    let write = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            writer.write_all(chunk).await.expect("write a chunk");
        }
        writer.shutdown().await.expect("half-close");
    });
    let mut back = Vec::with_capacity(data.len());
    timeout_at(deadline, reader.read_to_end(&mut back))
        .await
        .expect("the echo ends in time")
        .expect("read the echo");
    timeout_at(deadline, write)
        .await
        .expect("the writer ends in time")
        .expect("the writer");
    back
}

/// An HTTP/1.1 server that answers every request with its method and target as the body.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind web");
    let addr = listener.local_addr().expect("web address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let request_line = head.lines().next().unwrap_or_default();
                let body = request_line.rsplit_once(' ').map_or("", |(b, _)| b);
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// `GET target` on the HTTP ingress; the response head and body.
async fn http_get(ingress: SocketAddr, target: &str, deadline: Instant) -> (String, String) {
    let exchange = async {
        let mut socket = TcpStream::connect(ingress).await.expect("connect ingress");
        let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .expect("write the request");
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("a Content-Length");
                if body.len() >= length {
                    return (head.to_owned(), body[..length].to_owned());
                }
            }
            let n = socket.read(&mut buf).await.expect("read the response");
            assert!(
                n > 0,
                "the ingress closed before a full response: {:?}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&buf[..n]);
        }
    };
    timeout_at(deadline, exchange)
        .await
        .expect("the HTTP exchange in time")
}
