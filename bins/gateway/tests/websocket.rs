//! The protocol over WebSocket: through a real nginx reverse proxy (the Debian package,
//! started by the test on loopback and stopped by PID), directly over `ws://` and `wss://`,
//! and on the service listener.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tether_testkit::pki::{Ca, TempDir, Validity, yaml_path};
use tether_tokio::tls::ClientTls;
use tether_tokio::{ConnectExt, Edge, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not on every PATH).
fn nginx_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.exists() {
        return sbin;
    }
    PathBuf::from("nginx")
}

/// nginx proxying `ws://127.0.0.1:<port>/tether` to `upstream`, the way an operator puts
/// it in front of the edge listener.
struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    async fn start(upstream: SocketAddr) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let d = dir.0.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 128; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    location /tether {{\n      \
             proxy_pass http://{upstream};\n      proxy_http_version 1.1;\n      \
             proxy_set_header Upgrade $http_upgrade;\n      \
             proxy_set_header Connection $connection_upgrade;\n      \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
             proxy_buffering off;\n      proxy_read_timeout 3600s;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.write("nginx.conf", &conf);
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.path("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts (install the Debian package nginx; scripts/test.sh does)");
        let up = async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        within("nginx listening", up).await;
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers on SIGQUIT/SIGTERM; kill_on_drop sends SIGKILL,
        // which would leave the worker behind.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// A service answering `echo`, and an edge (connected with `edge_url`) answering `whoami`
/// and echoing every stream; checks RPC both ways and a 2 MiB stream round trip.
async fn round_trips(service: &Service, edge: &Edge) {
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    let id = edge.edge_id().expect("an edge id");
    let answer = within(
        "edge → service",
        edge.call("echo", Bytes::from_static(b"hi")),
    );
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"hi"));
    let answer = within("service → edge", service.call(id, "whoami", Bytes::new()));
    assert_eq!(answer.await.unwrap(), Bytes::from(id.to_string()));

    let data: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let stream = within("open", service.open_stream(id, Bytes::from_static(b"echo")))
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sent = data.clone();
    let write = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    within("echo", reader.read_to_end(&mut back)).await.unwrap();
    write.await.unwrap();
    assert!(
        back == data,
        "the stream came back altered ({} bytes)",
        back.len()
    );
}

fn echo_service() -> tether_tokio::ServiceBuilder {
    Service::builder("echo").method("echo", |req| async move { Ok(req.body) })
}

/// An edge builder that answers `whoami` and echoes each stream it is offered.
fn echoing_edge(id: u64) -> tether_tokio::EdgeBuilder {
    Edge::builder().edge_id(id).method(
        "whoami",
        move |_| async move { Ok(Bytes::from(id.to_string())) },
    )
}

fn serve_echo_streams(edge: &Edge) {
    let edge = edge.clone();
    tokio::spawn(async move {
        while let Some(stream) = edge.accept_stream().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_reach_the_gateway_through_nginx_over_websocket() {
    let mut gw = GatewayProcess::start(&[]).await;
    let nginx = Nginx::start(gw.edge_addr).await;
    let service = echo_service().connect(gw.service_addr).unwrap();
    let url = format!("ws://127.0.0.1:{}/tether", nginx.port);
    let edge = echoing_edge(11).connect_url(&url, None).unwrap();
    serve_echo_streams(&edge);
    round_trips(&service, &edge).await;
    let line = gw.log_line("role=\"edge\" id=11").await;
    assert!(
        line.contains("transport=\"ws\"") || line.contains("transport=ws"),
        "{line}"
    );

    // A wrong path is answered by nginx (404) and never reaches the gateway.
    let wrong = format!("ws://127.0.0.1:{}/elsewhere", nginx.port);
    let lost = Edge::builder()
        .reconnect(false)
        .connect_url(&wrong, None)
        .unwrap();
    assert!(within("wrong path", lost.wait_connected()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_ws_directly_on_both_listeners() {
    let dir = TempDir::new("wss");
    let ca = Ca::new("server CA");
    let server = ca.server(&dir, "server", &["localhost"], Validity::Current);
    let ca_file = ca.write(&dir, "ca.pem");
    let yaml = format!(
        "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
         edge_tls:\n  certs: [{{cert: {}, key: {}}}]\n\
         websocket: {{service: true, path: /t}}\n",
        yaml_path(&server.cert),
        yaml_path(&server.key)
    );
    let config = dir.write("gateway.yaml", &yaml);
    let gw = GatewayProcess::start_with(&["--config", &config.display().to_string()], &[]).await;
    let service_url = format!("ws://127.0.0.1:{}/t", gw.service_addr.port());
    let service = echo_service().connect_url(&service_url, None).unwrap();
    let tls = ClientTls::new().ca_pem_file(&ca_file).build().unwrap();
    let edge_url = format!("wss://localhost:{}/t", gw.edge_addr.port());
    let edge = echoing_edge(12)
        .connect_url(&edge_url, Some(tls.clone()))
        .unwrap();
    serve_echo_streams(&edge);
    round_trips(&service, &edge).await;

    // The bare protocol still works on a WebSocket-enabled listener, and a wrong path is
    // refused by the gateway itself.
    let wrong = format!("wss://localhost:{}/tether", gw.edge_addr.port());
    let lost = Edge::builder()
        .reconnect(false)
        .connect_url(&wrong, Some(tls))
        .unwrap();
    let e = within("wrong path", lost.wait_connected())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    let direct = echo_service().connect(gw.service_addr).unwrap();
    within("bare protocol", direct.wait_connected())
        .await
        .unwrap();
}
