//! TLS and mTLS end to end against the real gateway process, with certificates made at
//! test time: RPC both ways under mTLS, the edge id bound to the certificate, every kind
//! of bad certificate, SNI with several pairs, and reloading certificates while
//! connections stay up.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tether_testkit::pki::{Ca, Leaf, TempDir, Validity, yaml_path};
use tether_tokio::tls::ClientTls;
use tether_tokio::{ConnectExt, Edge, Error, Service};

type ClientConfig = Arc<tether_tokio::tls::rustls::ClientConfig>;

/// The certificates of one test: a server CA, a CA for devices, a CA for services.
struct Pki {
    dir: TempDir,
    server_ca: Ca,
    device_ca: Ca,
    service_ca: Ca,
    server: Leaf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let server_ca = Ca::new("Tether test server CA");
        let server = server_ca.server(&dir, "server", &["localhost"], Validity::Current);
        server_ca.write(&dir, "server-ca.pem");
        let (device_ca, service_ca) = (Ca::new("devices"), Ca::new("services"));
        device_ca.write(&dir, "devices-ca.pem");
        service_ca.write(&dir, "services-ca.pem");
        Pki {
            dir,
            server_ca,
            device_ca,
            service_ca,
            server,
        }
    }

    /// A gateway config with mTLS on both listeners (the edge id bound to the device
    /// certificate), plus `extra` YAML.
    fn config(&self, extra: &str) -> std::path::PathBuf {
        self.config_reloading(200, extra)
    }

    /// Like `config`, looking for changed files every `reload_ms` (0: only on SIGHUP).
    fn config_reloading(&self, reload_ms: u64, extra: &str) -> std::path::PathBuf {
        let (cert, key) = (yaml_path(&self.server.cert), yaml_path(&self.server.key));
        let devices = yaml_path(&self.dir.path("devices-ca.pem"));
        let services = yaml_path(&self.dir.path("services-ca.pem"));
        let yaml = format!(
            "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
             service_tls:\n  certs: [{{cert: {cert}, key: {key}}}]\n  client_ca: [{services}]\n\
             edge_tls:\n  certs: [{{cert: {cert}, key: {key}}}]\n  client_ca: [{devices}]\n  \
             identity: {{bind: id}}\n  reload_interval_ms: {reload_ms}\n{extra}"
        );
        self.dir.write("gateway.yaml", &yaml)
    }

    /// A client configuration trusting `ca_file`, presenting `leaf` if any.
    fn client(&self, ca_file: &Path, leaf: Option<&Leaf>) -> ClientConfig {
        let mut tls = ClientTls::new().ca_pem_file(ca_file);
        if let Some(leaf) = leaf {
            tls = tls.client_cert_pem_files(&leaf.cert, &leaf.key);
        }
        tls.build().expect("client TLS configuration")
    }

    fn trusting_server(&self, leaf: Option<&Leaf>) -> ClientConfig {
        self.client(&self.dir.path("server-ca.pem"), leaf)
    }
}

async fn start(config: &Path) -> GatewayProcess {
    GatewayProcess::start_with(&["--config", &config.display().to_string()], &[]).await
}

fn tls_url(addr: std::net::SocketAddr) -> String {
    format!("tls://localhost:{}", addr.port())
}

/// An edge with id `id` that answers `whoami`, without reconnection (so a refusal shows).
fn edge(gw: &GatewayProcess, id: u64, tls: ClientConfig) -> Edge {
    Edge::builder()
        .edge_id(id)
        .reconnect(false)
        .method(
            "whoami",
            move |_| async move { Ok(Bytes::from(id.to_string())) },
        )
        .connect_url(&tls_url(gw.edge_addr), Some(tls))
        .unwrap()
}

fn echo_service(gw: &GatewayProcess, tls: ClientConfig) -> Service {
    Service::builder("echo")
        .reconnect(false)
        .method("echo", |req| async move { Ok(req.body) })
        .connect_url(&tls_url(gw.service_addr), Some(tls))
        .unwrap()
}

/// The error an edge (without reconnection) ends with.
async fn refusal(gw: &GatewayProcess, id: u64, tls: ClientConfig) -> Error {
    let edge = edge(gw, id, tls);
    let outcome = within("refusal", edge.wait_connected()).await;
    outcome.expect_err("the connection should have been refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_carries_rpc_both_ways_and_binds_the_edge_id_to_the_certificate() {
    let pki = Pki::new("mtls");
    let gw = start(&pki.config("")).await;
    let service_leaf = pki
        .service_ca
        .client(&pki.dir, "svc", "echo", &[], Validity::Current);
    let service = echo_service(&gw, pki.trusting_server(Some(&service_leaf)));
    within("service up", service.wait_connected())
        .await
        .unwrap();
    let device = pki
        .device_ca
        .client(&pki.dir, "dev", "1001", &["sensor-1001"], Validity::Current);
    let edge = edge(&gw, 1001, pki.trusting_server(Some(&device)));
    within("edge up", edge.wait_connected()).await.unwrap();
    let answer = within(
        "edge → service",
        edge.call("echo", Bytes::from_static(b"hi")),
    );
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"hi"));
    let answer = within("service → edge", service.call(1001, "whoami", Bytes::new()));
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"1001"));

    // The same certificate cannot claim another device's id.
    let e = refusal(&gw, 1002, pki.trusting_server(Some(&device))).await;
    assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
    assert!(e.to_string().contains("does not match"), "{e}");
    // The first device is undisturbed.
    let answer = within("still up", service.call(1001, "whoami", Bytes::new()));
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused() {
    let pki = Pki::new("refusals");
    let gw = start(&pki.config("")).await;
    let device = pki
        .device_ca
        .client(&pki.dir, "dev", "7", &[], Validity::Current);

    // The client does not trust the gateway's CA.
    let other = Ca::new("someone else");
    let other_file = other.write(&pki.dir, "other-ca.pem");
    let e = refusal(&gw, 7, pki.client(&other_file, Some(&device))).await;
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // mTLS without a client certificate.
    let e = refusal(&gw, 7, pki.trusting_server(None)).await;
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // An expired client certificate.
    let expired = pki
        .device_ca
        .client(&pki.dir, "old", "7", &[], Validity::Expired);
    let e = refusal(&gw, 7, pki.trusting_server(Some(&expired))).await;
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // A client certificate from an unknown CA.
    let stranger = other.client(&pki.dir, "stranger", "7", &[], Validity::Current);
    let e = refusal(&gw, 7, pki.trusting_server(Some(&stranger))).await;
    assert!(e.to_string().contains("UnknownCA"), "{e}");

    // A device certificate on the service listener (services have their own CA).
    let service = Service::builder("echo")
        .reconnect(false)
        .connect_url(
            &tls_url(gw.service_addr),
            Some(pki.trusting_server(Some(&device))),
        )
        .unwrap();
    let e = within("service refused", service.wait_connected()).await;
    let e = e.expect_err("a device certificate must not admit a service");
    assert!(e.to_string().contains("UnknownCA"), "{e}");

    // Plain TCP on a TLS listener gets nowhere.
    let plain = Edge::builder()
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    assert!(within("plain", plain.wait_connected()).await.is_err());

    // After all that, a good device still connects.
    let edge = edge(&gw, 7, pki.trusting_server(Some(&device)));
    within("good edge", edge.wait_connected()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_by_the_client() {
    let pki = Pki::new("expired-server");
    let old = pki
        .server_ca
        .server(&pki.dir, "old-server", &["localhost"], Validity::Expired);
    let yaml = format!(
        "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
         edge_tls:\n  certs: [{{cert: {}, key: {}}}]\n",
        yaml_path(&old.cert),
        yaml_path(&old.key)
    );
    let gw = start(&pki.dir.write("gateway.yaml", &yaml)).await;
    let e = refusal(&gw, 1, pki.trusting_server(None)).await;
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_among_several_certificate_pairs() {
    let pki = Pki::new("sni");
    let (ca_a, ca_b) = (Ca::new("a"), Ca::new("b"));
    let a = ca_a.server(&pki.dir, "a", &["a.test"], Validity::Current);
    let b = ca_b.server(&pki.dir, "b", &["b.test", "*.b.test"], Validity::Current);
    let yaml = format!(
        "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
         edge_tls:\n  certs:\n    - {{cert: {}, key: {}}}\n    - {{cert: {}, key: {}}}\n",
        yaml_path(&a.cert),
        yaml_path(&a.key),
        yaml_path(&b.cert),
        yaml_path(&b.key)
    );
    let gw = start(&pki.dir.write("gateway.yaml", &yaml)).await;
    let (a_file, b_file) = (
        ca_a.write(&pki.dir, "a-ca.pem"),
        ca_b.write(&pki.dir, "b-ca.pem"),
    );
    let url = format!("tls://127.0.0.1:{}", gw.edge_addr.port());
    let connect = |ca: &Path, name: &str| {
        let tls = ClientTls::new().ca_pem_file(ca).server_name(name);
        Edge::builder()
            .reconnect(false)
            .connect_tls(&url, &tls)
            .unwrap()
    };
    for (ca, name) in [
        (&a_file, "a.test"),
        (&b_file, "b.test"),
        (&b_file, "x.b.test"),
    ] {
        let edge = connect(ca, name);
        let up = within(name, edge.wait_connected()).await;
        up.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // An unknown name gets the first pair, which the b CA does not trust.
    let edge = connect(&b_file, "c.test");
    assert!(within("unknown name", edge.wait_connected()).await.is_err());
}

/// Replaces the gateway's server certificate with one from a new CA, then waits until a
/// client trusting only the new CA gets in.
async fn rotate_and_wait(pki: &Pki, gw: &GatewayProcess, trigger: impl Fn()) -> Ca {
    let new_ca = Ca::new("rotated server CA");
    let fresh = new_ca.server(&pki.dir, "fresh", &["localhost"], Validity::Current);
    let new_ca_file = new_ca.write(&pki.dir, "new-ca.pem");
    // Key first, then certificate: the reload must not see a mismatched pair for good.
    std::fs::write(&pki.server.key, &fresh.key_pem).unwrap();
    std::fs::write(&pki.server.cert, &fresh.cert_pem).unwrap();
    trigger();
    let device = pki
        .device_ca
        .client(&pki.dir, "rot", "5", &[], Validity::Current);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let edge = edge(gw, 5, pki.client(&new_ca_file, Some(&device)));
        if within("rotated", edge.wait_connected()).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new_ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_file_change_while_connections_stay() {
    let pki = Pki::new("reload");
    let gw = start(&pki.config("")).await;
    let device = pki
        .device_ca
        .client(&pki.dir, "dev", "3", &[], Validity::Current);
    let old_edge = edge(&gw, 3, pki.trusting_server(Some(&device)));
    within("edge up", old_edge.wait_connected()).await.unwrap();
    let service_leaf = pki
        .service_ca
        .client(&pki.dir, "svc", "echo", &[], Validity::Current);
    let service = echo_service(&gw, pki.trusting_server(Some(&service_leaf)));
    within("service up", service.wait_connected())
        .await
        .unwrap();

    // A file change is picked up by polling (reload_interval_ms: 200).
    rotate_and_wait(&pki, &gw, || {}).await;
    // New clients that trust only the old CA are refused now...
    let e = refusal(&gw, 4, pki.trusting_server(Some(&device))).await;
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // ...while the connections made before the reload carry on.
    let answer = within(
        "old edge",
        old_edge.call("echo", Bytes::from_static(b"still")),
    );
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"still"));
    let answer = within("old edge", service.call(3, "whoami", Bytes::new()));
    assert_eq!(answer.await.unwrap(), Bytes::from_static(b"3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup() {
    let pki = Pki::new("sighup");
    // No polling: only the signal can reload.
    let gw = start(&pki.config_reloading(0, "")).await;
    let device = pki
        .device_ca
        .client(&pki.dir, "dev", "3", &[], Validity::Current);
    let old_edge = edge(&gw, 3, pki.trusting_server(Some(&device)));
    within("edge up", old_edge.wait_connected()).await.unwrap();
    let pid = gw.child.id().expect("running").to_string();
    rotate_and_wait(&pki, &gw, || {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status();
        assert!(hup.expect("kill runs").success());
    })
    .await;
    assert!(
        old_edge.connection().is_some(),
        "the old session survives a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_file_keeps_the_previous_certificates() {
    let pki = Pki::new("broken");
    let mut gw = start(&pki.config("")).await;
    std::fs::write(&pki.server.cert, "not a certificate").unwrap();
    gw.log_line("TLS reload failed").await;
    let device = pki
        .device_ca
        .client(&pki.dir, "dev", "9", &[], Validity::Current);
    let edge = edge(&gw, 9, pki.trusting_server(Some(&device)));
    within("edge up", edge.wait_connected()).await.unwrap();
}

/// Runs `tether-gateway ctl` against `url` with `args` (the token in the environment).
async fn ctl(url: &str, args: &[&str]) -> Finished {
    let mut all = vec!["ctl", "--control", url];
    all.extend_from_slice(args);
    run_gateway_to_exit(&all, &[("TETHER_CONTROL_TOKEN", "ops")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_serves_https_and_ctl_speaks_it() {
    let pki = Pki::new("control");
    let (cert, key) = (yaml_path(&pki.server.cert), yaml_path(&pki.server.key));
    let yaml = format!(
        "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\ncontrol_token: ops\n\
         control_tls:\n  certs: [{{cert: {cert}, key: {key}}}]\n"
    );
    let config = pki.dir.write("gateway.yaml", &yaml);
    let gw = start(&config).await;
    let url = format!("https://localhost:{}", gw.control_addr.port());
    let ca = pki.dir.path("server-ca.pem").display().to_string();

    let health = ctl(&url, &["--ca", &ca, "health"]).await;
    assert_eq!(health.code, Some(0), "{}", health.stderr);
    assert!(health.stdout.contains("ok"), "{}", health.stdout);
    let edges = ctl(&url, &["--ca", &ca, "edges", "list"]).await;
    assert_eq!(edges.code, Some(0), "{}", edges.stderr);
    assert!(edges.stdout.contains("\"total\": 0"), "{}", edges.stdout);

    // Without the private CA the certificate is not trusted; plain HTTP gets nowhere.
    let untrusted = ctl(&url, &["health"]).await;
    assert_ne!(untrusted.code, Some(0));
    assert!(untrusted.stderr.contains("TLS"), "{}", untrusted.stderr);
    let plain = ctl(&format!("http://{}", gw.control_addr), &["health"]).await;
    assert_ne!(plain.code, Some(0));
}
