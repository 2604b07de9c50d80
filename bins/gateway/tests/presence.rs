//! Edge identity and presence against the real gateway process: the `$edge_id` hook, the
//! requested id, allocation, the online/offline hooks and their fan-out, and the
//! replacement of a stale session by a newer one with the same id.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{ClientInfo, Config, ErrorCode, Registration, RegistrationKind, Role};
use support::*;
use tether_tokio::{
    ConnectExt, Connection, DriverConfig, Edge, EdgeBuilder, EdgeInfo, Error, Service,
    ServiceBuilder, runtime, tcp_transport,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A presence event a service saw.
#[derive(Clone, Debug)]
struct Seen {
    service: &'static str,
    online: bool,
    edge: EdgeInfo,
}

type Events = mpsc::UnboundedReceiver<Seen>;

/// Adds online/offline hooks to `builder` that report to `events` as `service`.
fn recording(
    builder: ServiceBuilder,
    service: &'static str,
    events: mpsc::UnboundedSender<Seen>,
) -> ServiceBuilder {
    let offline = events.clone();
    builder
        .on_edge_online(move |edge| {
            let _ = events.send(Seen {
                service,
                online: true,
                edge,
            });
            async { Ok(()) }
        })
        .on_edge_offline(move |edge| {
            let _ = offline.send(Seen {
                service,
                online: false,
                edge,
            });
            async { Ok(()) }
        })
}

/// The next presence event (at most 10 s away).
async fn next_event(events: &mut Events) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no presence event within 10 s")
        .expect("the event channel is open")
}

/// Lets `settle` pass, then expects no further event.
async fn assert_no_more_events(events: &mut Events, settle: Duration) {
    tokio::time::sleep(settle).await;
    if let Ok(extra) = events.try_recv() {
        panic!("unexpected presence event: {extra:?}");
    }
}

/// Starts `builder` on a TCP dialer that records the local address of each connection.
fn connect_recording_addr(builder: EdgeBuilder, gateway: SocketAddr) -> (Edge, SharedAddr) {
    let seen: SharedAddr = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    let dialer = tether_tokio::runtime::dialer(move || {
        let record = Arc::clone(&record);
        async move {
            let socket = TcpStream::connect(gateway).await?;
            *record.lock().unwrap() = Some(socket.local_addr()?);
            Ok(tcp_transport(socket))
        }
    });
    (builder.connect_with(dialer).unwrap(), seen)
}

type SharedAddr = Arc<Mutex<Option<SocketAddr>>>;

fn addr_of(seen: &SharedAddr) -> String {
    seen.lock().unwrap().expect("the edge dialled").to_string()
}

/// An edge that answers `whoami` with `answer`.
fn answering(answer: &'static str) -> EdgeBuilder {
    Edge::builder().method("whoami", move |_| async move { Ok(Bytes::from(answer)) })
}

/// A low-level edge connection asking for `id`; it answers every call with `answer`.
async fn raw_edge(gateway: SocketAddr, id: u64, answer: &'static str) -> Connection {
    let mut info = ClientInfo::new(Role::Edge);
    info.requested_id = Some(id);
    info.registrations = vec![Registration {
        kind: RegistrationKind::Method,
        name: Name::from_static("whoami").unwrap(),
    }];
    let socket = TcpStream::connect(gateway).await.unwrap();
    let conn = Connection::connect(
        runtime(),
        tcp_transport(socket),
        Config::default(),
        info,
        DriverConfig::default(),
    )
    .await
    .unwrap();
    let serving = conn.clone();
    tokio::spawn(async move {
        while let Some(request) = serving.next_request().await {
            request.respond(Ok(Bytes::from(answer)));
        }
    });
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_id_hook_assigns_ids_from_metadata() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (asked_tx, mut asked) = mpsc::unbounded_channel();
    let service = Service::builder("registry")
        .edge_id_hook(move |edge: EdgeInfo| {
            let _ = asked_tx.send(edge.clone());
            async move {
                match edge.metadata.as_ref() {
                    b"sn-0042" => Ok(42),
                    b"sn-0043" => Ok(43),
                    _ => Err(Error::Unauthorized("unknown device".into())),
                }
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["registry"]).await;

    let (edge42, addr42) =
        connect_recording_addr(answering("i am 42").metadata("sn-0042"), gw.edge_addr);
    within("edge 42 up", edge42.wait_connected()).await.unwrap();
    assert_eq!(edge42.edge_id(), Some(42));
    // The hook saw what the edge sent: no requested id, its address, its metadata.
    let seen = within("hook call", asked.recv()).await.unwrap();
    assert_eq!(seen.id, 0);
    assert_eq!(seen.addr, addr_of(&addr42));
    assert_eq!(seen.metadata, Bytes::from_static(b"sn-0042"));

    // A requested id reaches the hook, which still decides.
    let edge43 = answering("i am 43")
        .metadata("sn-0043")
        .edge_id(7)
        .connect(gw.edge_addr)
        .unwrap();
    within("edge 43 up", edge43.wait_connected()).await.unwrap();
    assert_eq!(edge43.edge_id(), Some(43));
    let seen = within("hook call", asked.recv()).await.unwrap();
    assert_eq!((seen.id, seen.metadata.as_ref()), (7, &b"sn-0043"[..]));

    // The service reaches each edge by the id the hook gave it.
    gw.joined(&[], &[42, 43]).await;
    let answer = within("call 42", service.call(42, "whoami", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"i am 42"));
    let answer = within("call 43", service.call(43, "whoami", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"i am 43"));
    let missing = within("call 7", service.call(7, "whoami", Bytes::new())).await;
    assert!(
        matches!(missing, Err(Error::EdgeNotOnline(_))),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_id_hook_refusing_rejects_the_edge_with_its_reason() {
    let mut gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("registry")
        .edge_id_hook(|edge: EdgeInfo| async move {
            match edge.metadata.as_ref() {
                b"sn-0042" => Ok(42),
                _ => Err(Error::Unauthorized("unknown device".into())),
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["registry"]).await;

    let edge = Edge::builder()
        .metadata("stolen")
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    let refused = within("refusal", edge.wait_connected()).await;
    match refused {
        Err(Error::Unauthorized(reason)) => {
            assert!(reason.contains("unknown device"), "{reason:?}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(edge.edge_id(), None);
    // The refusal is final for this client; a known device still gets in.
    let good = Edge::builder()
        .metadata("sn-0042")
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("good edge", good.wait_connected()).await.unwrap();
    assert_eq!(good.edge_id(), Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hook_service_the_requested_id_is_used_else_one_is_allocated() {
    let mut gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("plain").connect(gw.service_addr).unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["plain"]).await;

    let asked = answering("asked")
        .edge_id(77)
        .connect(gw.edge_addr)
        .unwrap();
    within("edge 77", asked.wait_connected()).await.unwrap();
    assert_eq!(asked.edge_id(), Some(77));

    let first = answering("first").connect(gw.edge_addr).unwrap();
    let second = answering("second").connect(gw.edge_addr).unwrap();
    within("first", first.wait_connected()).await.unwrap();
    within("second", second.wait_connected()).await.unwrap();
    let (a, b) = (first.edge_id().unwrap(), second.edge_id().unwrap());
    assert!(a != 0 && b != 0 && a != b, "allocated ids {a} and {b}");
    assert!(
        a != 77 && b != 77,
        "an allocated id collides with 77: {a}, {b}"
    );

    gw.joined(&[], &[77, a, b]).await;
    for (id, expected) in [(77, "asked"), (a, "first"), (b, "second")] {
        let answer = within("call", service.call(id, "whoami", Bytes::new())).await;
        assert_eq!(answer.unwrap(), Bytes::from(expected), "edge {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allocation_an_edge_needs_a_hook_service_or_a_requested_id() {
    let mut gw = GatewayProcess::start(&["--edgeid-alloc-when-no-idservice-on", "false"]).await;

    let anonymous = Edge::builder()
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    let refused = within("refusal", anonymous.wait_connected()).await;
    assert!(
        matches!(refused, Err(Error::ServiceNotOnline(_))),
        "{refused:?}"
    );
    assert_eq!(anonymous.edge_id(), None);

    // A requested id is still honoured.
    let asked = Edge::builder()
        .edge_id(5)
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("edge 5", asked.wait_connected()).await.unwrap();
    assert_eq!(asked.edge_id(), Some(5));

    // Once a service assigns ids, an edge without one gets in.
    let service = Service::builder("registry")
        .edge_id_hook(|_| async { Ok(900) })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["registry"]).await;
    let later = Edge::builder()
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("edge via hook", later.wait_connected())
        .await
        .unwrap();
    assert_eq!(later.edge_id(), Some(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_edge_id_hook_does_not_hold_up_other_handshakes() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let service = Service::builder("registry")
        .edge_id_hook(move |edge: EdgeInfo| {
            let mut released = released.clone();
            let entered = entered_tx.clone();
            async move {
                if edge.metadata.as_ref() == b"slow" {
                    let _ = entered.send(());
                    // Held until the test lets go (well within the 5 s hook timeout).
                    let _ = released.wait_for(|go| *go).await;
                    Ok(1)
                } else {
                    Ok(2)
                }
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["registry"]).await;

    let slow = Edge::builder()
        .metadata("slow")
        .connect(gw.edge_addr)
        .unwrap();
    within("the slow hook runs", entered.recv()).await.unwrap();
    let quick = Edge::builder()
        .metadata("quick")
        .connect(gw.edge_addr)
        .unwrap();
    // Edge B's handshake completes while edge A's hook is still held.
    tokio::time::timeout(Duration::from_secs(4), quick.wait_connected())
        .await
        .expect("edge B waited behind edge A's edge-id hook")
        .unwrap();
    assert_eq!(quick.edge_id(), Some(2));
    assert_eq!(
        slow.edge_id(),
        None,
        "edge A got in before its hook answered"
    );

    release.send(true).unwrap();
    within("edge A up", slow.wait_connected()).await.unwrap();
    assert_eq!(slow.edge_id(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_reach_every_registered_service_once_per_session() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let s1 = recording(Service::builder("one"), "one", tx.clone())
        .connect(gw.service_addr)
        .unwrap();
    let s2 = recording(Service::builder("two"), "two", tx)
        .connect(gw.service_addr)
        .unwrap();
    // A service without the hooks gets nothing (it has no way to, and must not fail).
    let s3 = Service::builder("three").connect(gw.service_addr).unwrap();
    for s in [&s1, &s2, &s3] {
        within("service up", s.wait_connected()).await.unwrap();
    }
    gw.services_joined(&["one", "two", "three"]).await;

    let (edge, addr) =
        connect_recording_addr(Edge::builder().edge_id(5).metadata("model-x"), gw.edge_addr);
    within("edge up", edge.wait_connected()).await.unwrap();
    let addr = addr_of(&addr);
    let expected = EdgeInfo {
        id: 5,
        addr: addr.clone(),
        metadata: Bytes::from_static(b"model-x"),
    };
    let mut online: Vec<&str> = Vec::new();
    for _ in 0..2 {
        let seen = next_event(&mut events).await;
        assert!(seen.online, "{seen:?}");
        assert_eq!(seen.edge, expected);
        online.push(seen.service);
    }
    online.sort_unstable();
    assert_eq!(online, ["one", "two"]);
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;

    within("edge close", edge.close()).await;
    let mut offline: Vec<&str> = Vec::new();
    for _ in 0..2 {
        let seen = next_event(&mut events).await;
        assert!(!seen.online, "{seen:?}");
        assert_eq!(seen.edge, expected);
        offline.push(seen.service);
    }
    offline.sort_unstable();
    assert_eq!(offline, ["one", "two"]);
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;

    // A new session of the same edge id: one more online event per service.
    let again = Edge::builder()
        .edge_id(5)
        .metadata("model-x")
        .connect(gw.edge_addr)
        .unwrap();
    within("edge again", again.wait_connected()).await.unwrap();
    let mut online: Vec<&str> = Vec::new();
    for _ in 0..2 {
        let seen = next_event(&mut events).await;
        assert!(seen.online && seen.edge.id == 5, "{seen:?}");
        assert_ne!(seen.edge.addr, addr, "the new session has a new address");
        online.push(seen.service);
    }
    online.sort_unstable();
    assert_eq!(online, ["one", "two"]);
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_one_delivers_each_event_to_exactly_one_service() {
    // There is no --presence flag: the YAML file sets it (the listen flags still apply).
    let file = YamlFile::new("presence: one\n");
    let mut gw = GatewayProcess::start(&["--config", file.arg()]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let s1 = recording(Service::builder("one"), "one", tx.clone())
        .connect(gw.service_addr)
        .unwrap();
    let s2 = recording(Service::builder("two"), "two", tx)
        .connect(gw.service_addr)
        .unwrap();
    for s in [&s1, &s2] {
        within("service up", s.wait_connected()).await.unwrap();
    }
    gw.services_joined(&["one", "two"]).await;

    let mut edges = Vec::new();
    let mut told = std::collections::HashMap::new();
    for id in 1..=6 {
        let edge = Edge::builder().edge_id(id).connect(gw.edge_addr).unwrap();
        within("edge up", edge.wait_connected()).await.unwrap();
        let seen = next_event(&mut events).await;
        assert!(seen.online && seen.edge.id == id, "{seen:?}");
        told.insert(id, seen.service);
        edges.push(edge);
    }
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;
    for (edge, id) in edges.iter().zip(1..) {
        within("edge close", edge.close()).await;
        let seen = next_event(&mut events).await;
        assert!(!seen.online && seen.edge.id == id, "{seen:?}");
        // The offline event goes where the online one went (the set did not change).
        assert_eq!(seen.service, told[&id], "edge {id}");
    }
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;
}

/// Services "judge" (refuses quarantined devices when they come online) and "watcher"
/// (records presence events), both in the gateway's table.
async fn judge_and_watcher(gw: &mut GatewayProcess) -> (Service, Service, Events) {
    let (tx, events) = mpsc::unbounded_channel();
    let judge = Service::builder("judge")
        .on_edge_online(|edge: EdgeInfo| async move {
            match edge.metadata.as_ref() {
                b"quarantined" => Err(Error::Refused("quarantined device".into())),
                _ => Ok(()),
            }
        })
        .connect(gw.service_addr)
        .unwrap();
    let watcher = recording(Service::builder("watcher"), "watcher", tx)
        .connect(gw.service_addr)
        .unwrap();
    within("judge up", judge.wait_connected()).await.unwrap();
    within("watcher up", watcher.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["judge", "watcher"]).await;
    (judge, watcher, events)
}

/// A low-level edge connection asking for `id` with `metadata`.
async fn raw_edge_with_metadata(
    gateway: SocketAddr,
    id: u64,
    metadata: &'static [u8],
) -> Connection {
    let mut info = ClientInfo::new(Role::Edge);
    info.requested_id = Some(id);
    info.metadata = Bytes::from_static(metadata);
    let socket = TcpStream::connect(gateway).await.unwrap();
    within(
        "handshake",
        Connection::connect(
            runtime(),
            tcp_transport(socket),
            Config::default(),
            info,
            DriverConfig::default(),
        ),
    )
    .await
    .expect("the handshake itself is accepted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_hook_error_disconnects_the_edge() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (_judge, watcher, mut events) = judge_and_watcher(&mut gw).await;

    // A low-level connection: its end is observed directly, without reconnects.
    let conn = raw_edge_with_metadata(gw.edge_addr, 13, b"quarantined").await;
    let why = within("disconnect", conn.closed()).await;
    assert_eq!(why.code(), ErrorCode::REFUSED, "{why:?}");
    assert!(why.to_string().contains("quarantined device"), "{why}");
    let gone = within("call", watcher.call(13, "whoami", Bytes::new())).await;
    assert!(matches!(gone, Err(Error::EdgeNotOnline(_))), "{gone:?}");

    // Through the SDK with reconnect off: the client ends with the refusal.
    let edge = Edge::builder()
        .edge_id(14)
        .metadata("quarantined")
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    let ended = within("sdk edge ends", async {
        loop {
            if let Err(e) = edge.wait_connected().await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(ended.code(), ErrorCode::REFUSED, "{ended:?}");

    // A healthy edge is not affected.
    let fine = answering("fine").edge_id(15).connect(gw.edge_addr).unwrap();
    within("fine edge", fine.wait_connected()).await.unwrap();
    loop {
        let seen = next_event(&mut events).await;
        if seen.online && seen.edge.id == 15 {
            break;
        }
    }
    let answer = within("call 15", watcher.call(15, "whoami", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"fine"));
    assert!(!fine.connection().unwrap().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_saw_a_refused_edge_online_are_told_it_went_offline() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (_judge, _watcher, mut events) = judge_and_watcher(&mut gw).await;
    let conn = raw_edge_with_metadata(gw.edge_addr, 13, b"quarantined").await;
    let why = within("disconnect", conn.closed()).await;
    assert_eq!(why.code(), ErrorCode::REFUSED, "{why:?}");
    // The watcher accepted the edge (its online hook ran at the same time as the judge's):
    // it must not be left believing the edge is still online.
    let seen = next_event(&mut events).await;
    assert!(seen.online && seen.edge.id == 13, "{seen:?}");
    let seen = next_event(&mut events).await;
    assert!(!seen.online && seen.edge.id == 13, "{seen:?}");
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_session_with_the_same_id_replaces_the_stale_one() {
    let mut gw = GatewayProcess::start(&[]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let service = recording(Service::builder("watcher"), "watcher", tx)
        .connect(gw.service_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    gw.services_joined(&["watcher"]).await;

    let first = within("first edge", raw_edge(gw.edge_addr, 9, "first")).await;
    assert_eq!(first.assigned_id(), 9);
    let online = next_event(&mut events).await;
    assert!(online.online && online.edge.id == 9, "{online:?}");
    let old_addr = online.edge.addr.clone();
    let answer = within("call first", service.call(9, "whoami", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"first"));

    // The same id again, while the first connection is still up.
    let (second, new_addr) = connect_recording_addr(answering("second").edge_id(9), gw.edge_addr);
    within("second edge", second.wait_connected())
        .await
        .unwrap();
    assert_eq!(second.edge_id(), Some(9));
    let why = within("the first is cut off", first.closed()).await;
    assert_eq!(why.code(), ErrorCode::REPLACED, "{why:?}");

    // Offline for the old session, then online for the new one, each once.
    let seen = next_event(&mut events).await;
    assert!(!seen.online && seen.edge.id == 9, "{seen:?}");
    assert_eq!(seen.edge.addr, old_addr);
    let seen = next_event(&mut events).await;
    assert!(seen.online && seen.edge.id == 9, "{seen:?}");
    assert_eq!(seen.edge.addr, addr_of(&new_addr));
    assert_no_more_events(&mut events, Duration::from_millis(300)).await;

    let answer = within("call second", service.call(9, "whoami", Bytes::new())).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"second"));
    assert!(!second.connection().unwrap().is_closed());
}
