//! Presence and identity: a service's gateway hooks (edge-id assignment, online and
//! offline callbacks) invoked by the gateway stand-in, and what edges and services send in
//! their HELLO and learn from the WELCOME.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use proto_core::{ErrorCode, RegistrationKind, Role};
use support::*;
use tether_tokio::hooks::{self, EdgeInfo, decode_edge_id};
use tether_tokio::{ConnectExt, Edge, Error, Service};
use tokio::sync::mpsc;

/// The hooks' bodies as the gateway encodes them.
fn edge(id: u64, addr: &str, metadata: &'static [u8]) -> EdgeInfo {
    EdgeInfo {
        id,
        addr: addr.to_owned(),
        metadata: Bytes::from_static(metadata),
    }
}

/// A service whose three hooks report what they see on `seen`: the edge-id hook grants the
/// requested id, or 500 for an edge that asked for none, and rejects metadata `banned`;
/// `on_edge_online` refuses metadata `quarantined`.
fn hooked_service(
    seen: mpsc::UnboundedSender<(&'static str, EdgeInfo)>,
) -> tether_tokio::ServiceBuilder {
    let (id_seen, online_seen, offline_seen) = (seen.clone(), seen.clone(), seen);
    Service::builder("registry")
        .method("m", |r| async move { Ok(r.body) })
        .edge_id_hook(move |edge: EdgeInfo| {
            let _ = id_seen.send(("id", edge.clone()));
            async move {
                match &edge.metadata[..] {
                    b"banned" => Err(Error::Unauthorized("unknown device".into())),
                    b"odd" => Err(Error::application("try later")),
                    _ if edge.id == 0 => Ok(500),
                    _ => Ok(edge.id),
                }
            }
        })
        .on_edge_online(move |edge: EdgeInfo| {
            let _ = online_seen.send(("online", edge.clone()));
            async move {
                match &edge.metadata[..] {
                    b"quarantined" => Err(Error::Refused("quarantined".into())),
                    _ => Ok(()),
                }
            }
        })
        .on_edge_offline(move |edge: EdgeInfo| {
            let _ = offline_seen.send(("offline", edge));
            async { Ok(()) }
        })
}

// The hooks are registered in the HELLO under their `$` names, as hooks.
#[tokio::test]
async fn hooks_are_registered_in_the_hello() {
    let mut gw = MockGateway::start().await;
    let (seen, _rx) = mpsc::unbounded_channel();
    let _service = hooked_service(seen).connect(gw.addr).unwrap();
    let session = gw.session().await;
    assert_eq!(
        (
            hooks::EDGE_ID_HOOK,
            hooks::EDGE_ONLINE_HOOK,
            hooks::EDGE_OFFLINE_HOOK
        ),
        ("$edge_id", "$edge_online", "$edge_offline")
    );
    let regs = &session.hello.info.registrations;
    for hook in ["$edge_id", "$edge_online", "$edge_offline"] {
        let found = regs.iter().find(|r| r.name.as_str() == hook);
        assert_eq!(
            found.map(|r| r.kind),
            Some(RegistrationKind::Hook),
            "{hook}: {regs:?}"
        );
    }
    assert!(
        regs.iter()
            .any(|r| r.kind == RegistrationKind::Method && r.name.as_str() == "m")
    );
    assert_eq!(regs.len(), 4, "{regs:?}");
}

// The gateway invokes `$edge_id` with the encoded edge; the hook sees the id asked for,
// the address and the metadata, and its answer decodes to the id it chose.
#[tokio::test]
async fn the_edge_id_hook_assigns_ids() {
    let mut gw = MockGateway::start().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let _service = hooked_service(seen_tx).connect(gw.addr).unwrap();
    let session = gw.session().await;
    for (info, expected) in [
        (edge(0, "10.0.0.7:5555", b"sn=A1"), 500),
        (edge(7, "[::1]:40000", b""), 7),
        (edge(u64::MAX - 1, "", b"\x00\xffbinary"), u64::MAX - 1),
    ] {
        let call = call_from_edge(0, hooks::EDGE_ID_HOOK, info.encode());
        let answer = within("$edge_id", session.conn.call(call)).await.unwrap();
        assert_eq!(answer.len(), 8);
        assert_eq!(decode_edge_id(&answer).unwrap(), expected);
        assert_eq!(seen.recv().await.unwrap(), ("id", info));
    }
}

// An error from the edge-id hook reaches the gateway with its code (so it can reject the
// edge with it); a malformed body is rejected as BAD_REQUEST without calling the hook.
#[tokio::test]
async fn edge_id_hook_errors_reach_the_gateway() {
    let mut gw = MockGateway::start().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let _service = hooked_service(seen_tx).connect(gw.addr).unwrap();
    let session = gw.session().await;
    let call = |body| {
        session
            .conn
            .call(call_from_edge(0, hooks::EDGE_ID_HOOK, body))
    };

    let err = within("banned", call(edge(3, "a", b"banned").encode()))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Unauthorized("unknown device".into()));
    assert_eq!(err.code(), ErrorCode::UNAUTHORIZED);
    let err = within("odd", call(edge(3, "a", b"odd").encode()))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Application("try later".into()));
    assert_eq!(seen.recv().await.unwrap().0, "id");
    assert_eq!(seen.recv().await.unwrap().0, "id");

    let err = within("malformed", call(Bytes::from_static(b"short")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BAD_REQUEST, "{err:?}");
    assert!(seen.try_recv().is_err(), "the hook ran on a malformed body");
}

// `$edge_online` and `$edge_offline` reach the callbacks with id, address and metadata,
// and answer with an empty body; an online callback's error reaches the gateway.
#[tokio::test]
async fn presence_callbacks_see_the_edge() {
    let mut gw = MockGateway::start().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let _service = hooked_service(seen_tx).connect(gw.addr).unwrap();
    let session = gw.session().await;
    let call = |hook, info: &EdgeInfo| session.conn.call(call_from_edge(0, hook, info.encode()));

    let info = edge(42, "192.0.2.10:61000", b"{\"model\":\"X1\"}");
    let answer = within("online", call(hooks::EDGE_ONLINE_HOOK, &info))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert_eq!(seen.recv().await.unwrap(), ("online", info.clone()));
    let answer = within("offline", call(hooks::EDGE_OFFLINE_HOOK, &info))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert_eq!(seen.recv().await.unwrap(), ("offline", info));

    let sick = edge(43, "192.0.2.11:61000", b"quarantined");
    let err = within("refused", call(hooks::EDGE_ONLINE_HOOK, &sick))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Refused("quarantined".into()));
    assert_eq!(seen.recv().await.unwrap(), ("online", sick));
}

// An edge's metadata, token, version and requested id travel in its HELLO, and
// `edge_id()` reports the id the gateway granted.
#[tokio::test]
async fn the_edge_hello_carries_its_identity() {
    let mut gw = MockGateway::start().await;
    let edge = Edge::builder()
        .metadata(Bytes::from_static(b"sn=A1"))
        .token(Bytes::from_static(b"secret"))
        .version("1.4.2")
        .edge_id(7)
        .method("m", |r| async move { Ok(r.body) })
        .connect(gw.addr)
        .unwrap();
    assert_eq!(edge.edge_id(), None, "no session yet");
    let session = gw.session().await;
    let info = &session.hello.info;
    assert_eq!(info.role, Role::Edge);
    assert!(info.name.is_empty());
    assert_eq!(
        (&info.metadata[..], &info.token[..]),
        (&b"sn=A1"[..], &b"secret"[..])
    );
    assert_eq!(info.version.as_str(), "1.4.2");
    assert_eq!(info.requested_id, Some(7));
    assert_eq!(info.registrations.len(), 1);
    within("connected", edge.wait_connected()).await.unwrap();
    assert_eq!(edge.edge_id(), Some(7));
    assert_eq!(session.conn.assigned_id(), 7);
}

// The gateway decides: an edge that asked for 7 but is given 99 reports 99, and an edge
// that asked for nothing sends no requested id.
#[tokio::test]
async fn the_gateway_decides_the_edge_id() {
    let gw = MockGateway::with_policy(
        proto_core::Config::default(),
        Arc::new(|hello: &proto_core::Hello| match hello.info.requested_id {
            Some(_) => Decision::Accept(99),
            None => Decision::Accept(100),
        }),
    )
    .await;
    let asked = Edge::builder().edge_id(7).connect(gw.addr).unwrap();
    within("connected", asked.wait_connected()).await.unwrap();
    assert_eq!(asked.edge_id(), Some(99));
    let anonymous = Edge::builder().connect(gw.addr).unwrap();
    within("connected", anonymous.wait_connected())
        .await
        .unwrap();
    assert_eq!(anonymous.edge_id(), Some(100));
    let hellos = gw.hellos();
    assert_eq!(
        hellos
            .iter()
            .map(|h| h.info.requested_id)
            .collect::<Vec<_>>(),
        [Some(7), None]
    );
}

// A service's name, token and version travel in its HELLO; `service_id()` reports what
// the gateway assigned.
#[tokio::test]
async fn the_service_hello_carries_its_identity() {
    let mut gw = MockGateway::with_policy(
        proto_core::Config::default(),
        Arc::new(|_: &proto_core::Hello| Decision::Accept(31)),
    )
    .await;
    let service = Service::builder("billing")
        .token(Bytes::from_static(b"svc-token"))
        .version("2.0.0")
        .connect(gw.addr)
        .unwrap();
    let session = gw.session().await;
    let info = &session.hello.info;
    assert_eq!(info.role, Role::Service);
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("billing", "2.0.0")
    );
    assert_eq!(
        (&info.token[..], info.requested_id),
        (&b"svc-token"[..], None)
    );
    within("connected", service.wait_connected()).await.unwrap();
    assert_eq!(service.service_id(), Some(31));
    assert!(service.connection().is_some());
    assert_eq!(service.last_error(), None);
}
