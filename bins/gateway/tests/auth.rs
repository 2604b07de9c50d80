//! Static tokens per role, checked in the handshake before any service hook runs.

mod support;

use bytes::Bytes;
use support::*;
use tether_testkit::pki::TempDir;
use tether_tokio::{ConnectExt, Edge, Error, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_needs_one_of_its_tokens() {
    let dir = TempDir::new("tokens");
    let yaml = "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\n\
                auth:\n  service_tokens: [svc-secret]\n  edge_tokens: [dev-a, dev-b]\n";
    let config = dir.write("gateway.yaml", yaml);
    let gw = GatewayProcess::start_with(&["--config", &config.display().to_string()], &[]).await;

    let refused_service = |token: &'static str| {
        Service::builder("echo")
            .reconnect(false)
            .token(token)
            .connect(gw.service_addr)
            .unwrap()
    };
    for (token, reason) in [("", "a token is required"), ("dev-a", "invalid token")] {
        let service = refused_service(token);
        let e = within("refused", service.wait_connected())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthorized(_)), "{token:?}: {e:?}");
        assert!(e.to_string().contains(reason), "{token:?}: {e}");
    }
    let service = Service::builder("echo")
        .token("svc-secret")
        .method("echo", |req| async move { Ok(req.body) })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();

    for token in ["", "svc-secret", "dev-"] {
        let edge = Edge::builder()
            .reconnect(false)
            .token(token)
            .connect(gw.edge_addr)
            .unwrap();
        let e = within("refused", edge.wait_connected()).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized(_)), "{token:?}: {e:?}");
    }
    for token in ["dev-a", "dev-b"] {
        let edge = Edge::builder().token(token).connect(gw.edge_addr).unwrap();
        within("edge up", edge.wait_connected()).await.unwrap();
        let answer = within("rpc", edge.call("echo", Bytes::from_static(b"ok"))).await;
        assert_eq!(answer.unwrap(), Bytes::from_static(b"ok"));
    }
}
