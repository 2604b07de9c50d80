//! The real gateway process routing between SDK services and edges.

mod support;

use bytes::Bytes;
use support::*;
use tether_tokio::{ConnectExt, Edge, Error, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_route_both_ways() {
    let gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("echo")
        .method("echo", |req| async move {
            Ok(Bytes::from(format!(
                "{}:{}",
                req.edge_id.unwrap_or(0),
                String::from_utf8_lossy(&req.body)
            )))
        })
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(42)
        .method("whoami", |req| async move {
            Ok(Bytes::from(req.service.unwrap_or_default()))
        })
        .connect(gw.edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    assert_eq!(edge.edge_id(), Some(42));
    let answer = within(
        "edge → service",
        edge.call("echo", Bytes::from_static(b"hi")),
    )
    .await
    .unwrap();
    assert_eq!(answer, Bytes::from_static(b"42:hi"));
    let answer = within("service → edge", service.call(42, "whoami", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(answer, Bytes::from_static(b"echo"));
    let missing = within("missing edge", service.call(7, "whoami", Bytes::new())).await;
    assert!(
        matches!(missing, Err(Error::EdgeNotOnline(_))),
        "{missing:?}"
    );
    let missing = within("missing method", edge.call("nope", Bytes::new())).await;
    assert!(
        matches!(missing, Err(Error::MethodNotFound(_))),
        "{missing:?}"
    );
}
