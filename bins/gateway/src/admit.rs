//! Admitting connections: handshakes on the service and edge ports, edge-id decisions
//! (a service's `$edge_id` hook, the requested id, or allocation), replacement of a stale
//! session, and the presence hooks (`docs/PROTOCOL.md#gateway-hooks`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{
    Address, Call, ConnectionError, ErrorCode, HandshakeAccept, RegistrationKind, Role,
};
use tether_tokio::hooks::{
    EDGE_ID_HOOK, EDGE_OFFLINE_HOOK, EDGE_ONLINE_HOOK, EdgeInfo, decode_edge_id,
};
use tether_tokio::{Connection, DriverConfig, Error, Handshake, runtime};

use crate::auth::check_token;
use crate::config::PresenceFanout;
use crate::hub::{EdgeSession, Hub, ServiceLink};
use crate::links;
use crate::metrics::{HandshakeResult, PeerRole};
use crate::routing::RouteKey;
use crate::transport::Established;
use crate::transport::identity::IdentityBinding;

fn hook_timeout(hub: &Hub) -> Duration {
    Duration::from_millis(hub.config.hook_timeout_ms)
}

/// Runs the handshake of a connection on the service port, then serves it.
pub(crate) async fn admit_service(hub: Arc<Hub>, established: Established) {
    let Established {
        transport,
        peer,
        permit,
    } = established;
    let addr = peer.addr;
    let Some(handshake) = greet(&hub, transport, addr, PeerRole::Service).await else {
        return;
    };
    let info = &handshake.hello().info;
    if info.name.is_empty() {
        let (result, code) = (HandshakeResult::Rejected, ErrorCode::BAD_REQUEST);
        let refusal = Refusal::new(PeerRole::Service, addr, result, code);
        return refusal.send(&hub, handshake, "a service needs a name");
    }
    let name = info.name.as_str().to_owned();
    let id = hub.service_id();
    let accept = HandshakeAccept {
        assigned_id: id,
        metadata: Bytes::new(),
    };
    let Ok(conn) = handshake.accept(accept) else {
        return;
    };
    drop(permit);
    hub.metrics
        .handshake(PeerRole::Service, HandshakeResult::Accepted);
    let _live = hub.metrics.connected(PeerRole::Service);
    tracing::info!(role = "service", id, name = %name, %addr, transport = peer.transport, "connected");
    let link = Arc::new(ServiceLink {
        id,
        name,
        conn: conn.clone(),
        addr,
        connected_at: std::time::SystemTime::now(),
    });
    hub.add_service(Arc::clone(&link));
    if hub.is_shutting_down() {
        conn.go_away(ErrorCode::GOING_AWAY, "the gateway is shutting down");
        hub.metrics.goaway(PeerRole::Service);
    }
    links::serve_service(Arc::clone(&hub), Arc::clone(&link)).await;
    hub.remove_service(id);
    let why = conn.closed().await;
    hub.metrics.closed(&why);
    tracing::info!(role = "service", id, name = %link.name, %addr, reason = %why, "disconnected");
}

/// Runs the handshake of a connection on the edge port, decides its id, then serves it.
/// The auth chain runs in the order docs/GATEWAY.md#auth-chain gives.
pub(crate) async fn admit_edge(hub: Arc<Hub>, established: Established, binding: IdentityBinding) {
    let Established {
        transport,
        peer,
        permit,
    } = established;
    let addr = peer.addr;
    let Some(handshake) = greet(&hub, transport, addr, PeerRole::Edge).await else {
        return;
    };
    let info = handshake.hello().info.clone();
    let certificate = peer.certificate.as_ref();
    let mismatch = Refusal::new(
        PeerRole::Edge,
        addr,
        HandshakeResult::IdentityMismatch,
        ErrorCode::UNAUTHORIZED,
    );
    if let Err(why) = binding.check_metadata(certificate, &info.metadata) {
        return mismatch.send(&hub, handshake, &why);
    }
    let id = match decide_edge_id(&hub, info.requested_id, addr, &info.metadata).await {
        Ok(id) => id,
        Err(e) => {
            let refusal = Refusal::new(PeerRole::Edge, addr, HandshakeResult::Rejected, e.code());
            return refusal.send(&hub, handshake, &e.text());
        }
    };
    if let Err(why) = binding.check_id(certificate, id) {
        return mismatch.send(&hub, handshake, &why);
    }
    let Ok(conn) = handshake.accept(HandshakeAccept {
        assigned_id: id,
        metadata: Bytes::new(),
    }) else {
        return;
    };
    drop(permit);
    hub.metrics
        .handshake(PeerRole::Edge, HandshakeResult::Accepted);
    let _live = hub.metrics.connected(PeerRole::Edge);
    let session = Arc::new(EdgeSession {
        id,
        session: hub.session_number(),
        conn: conn.clone(),
        addr: Some(addr),
        metadata: info.metadata.clone(),
        offline_sent: Default::default(),
        connected_at: std::time::SystemTime::now(),
    });
    if let Some(old) = hub.put_edge(Arc::clone(&session)) {
        // A reconnecting edge must never be refused because a stale session lingers.
        tracing::info!(role = "edge", id, old_addr = ?old.addr, "replaced by a newer session");
        old.conn.close(
            ErrorCode::REPLACED,
            "a newer connection with this edge id replaced it",
        );
        offline(&hub, &old).await;
    }
    if hub.is_shutting_down() {
        conn.go_away(ErrorCode::GOING_AWAY, "the gateway is shutting down");
        hub.metrics.goaway(PeerRole::Edge);
    }
    tracing::info!(role = "edge", id, %addr, transport = peer.transport, "connected");
    if let Err((e, told)) = online(&hub, &session).await {
        tracing::info!(role = "edge", id, reason = %e, "the online hook refused the edge");
        conn.close(e.code(), &e.text());
        // It never counted as online for the service that refused it, but the services
        // whose online hook accepted it must hear that it is gone: offline goes to them only.
        if !session.offline_sent.swap(true, Ordering::AcqRel) {
            let told: Vec<_> = told
                .into_iter()
                .filter(|s| s.has(RegistrationKind::Hook, EDGE_OFFLINE_HOOK))
                .collect();
            send_offline(&hub, &session, &told).await;
        }
    }
    links::serve_edge(Arc::clone(&hub), Arc::clone(&session)).await;
    hub.remove_edge(id, session.session);
    let why = conn.closed().await;
    hub.metrics.closed(&why);
    offline(&hub, &session).await;
    tracing::info!(role = "edge", id, %addr, reason = %why, "disconnected");
}

/// A refusal of a handshake: who, and how it is counted and answered.
struct Refusal {
    role: PeerRole,
    addr: SocketAddr,
    result: HandshakeResult,
    code: ErrorCode,
}

impl Refusal {
    fn new(role: PeerRole, addr: SocketAddr, result: HandshakeResult, code: ErrorCode) -> Self {
        Refusal {
            role,
            addr,
            result,
            code,
        }
    }

    /// Logs it, counts it, and sends REFUSE with its code and `reason`.
    fn send(&self, hub: &Hub, handshake: Handshake, reason: &str) {
        let (role, addr) = (self.role.as_str(), self.addr);
        tracing::info!(role, %addr, code = %self.code, reason, "refused");
        hub.metrics.handshake(self.role, self.result);
        handshake.reject(self.code, reason);
    }
}

/// The first checks of the auth chain, the same on both ports: the protocol handshake,
/// the role (an edge on the service port, or the reverse), and the role's static token.
async fn greet(
    hub: &Hub,
    transport: tether_tokio::runtime::BoxTransport,
    addr: SocketAddr,
    role: PeerRole,
) -> Option<Handshake> {
    let handshake = handshake(hub, transport, addr, role).await?;
    let (expected, tokens, wrong_port) = match role {
        PeerRole::Service => (
            Role::Service,
            &hub.config.auth.service_tokens,
            "this port is for services",
        ),
        PeerRole::Edge => (
            Role::Edge,
            &hub.config.auth.edge_tokens,
            "this port is for edges",
        ),
    };
    let info = &handshake.hello().info;
    let refusal = if info.role != expected {
        let code = ErrorCode::BAD_REQUEST;
        Some((HandshakeResult::Rejected, code, String::from(wrong_port)))
    } else {
        let token = check_token(tokens, &info.token);
        token.err().map(|e| {
            (
                HandshakeResult::Unauthorized,
                ErrorCode::UNAUTHORIZED,
                e.to_string(),
            )
        })
    };
    match refusal {
        None => Some(handshake),
        Some((result, code, reason)) => {
            Refusal::new(role, addr, result, code).send(hub, handshake, &reason);
            None
        }
    }
}

/// Waits for the peer's HELLO (under `protocol.handshake_timeout_ms`); a failure is logged
/// and counted by cause.
async fn handshake(
    hub: &Hub,
    transport: tether_tokio::runtime::BoxTransport,
    addr: SocketAddr,
    role: PeerRole,
) -> Option<Handshake> {
    match Connection::accept(
        runtime(),
        transport,
        hub.core.clone(),
        DriverConfig::default(),
    )
    .await
    {
        Ok(handshake) => Some(handshake),
        Err(e) => {
            tracing::debug!(%addr, reason = %e, "handshake failed");
            let result = match &e {
                Error::ConnectionLost(ConnectionError::TimedOut(_)) => HandshakeResult::Timeout,
                Error::ConnectionLost(
                    ConnectionError::ProtocolViolation(_) | ConnectionError::Incompatible(_),
                ) => HandshakeResult::ProtocolError,
                _ => HandshakeResult::Abandoned,
            };
            hub.metrics.handshake(role, result);
            None
        }
    }
}

/// Calls `hook` on `service` with `edge`'s description.
async fn call_hook(
    hub: &Hub,
    service: &ServiceLink,
    hook: &'static str,
    edge: &EdgeInfo,
) -> Result<Bytes, Error> {
    let call = Call {
        address: Address {
            peer_id: edge.id,
            peer_name: Name::EMPTY,
        },
        method: Name::from_static(hook).map_err(|e| Error::InvalidArgument(e.to_string()))?,
        body: edge.encode(),
        timeout: Some(hook_timeout(hub)),
    };
    service.conn.call(call).await
}

/// The id an edge gets: from a service's `$edge_id` hook if one registered it, else the
/// id it asked for, else a fresh one when allocation is on.
async fn decide_edge_id(
    hub: &Hub,
    requested: Option<u64>,
    addr: SocketAddr,
    metadata: &Bytes,
) -> Result<u64, Error> {
    let hooks = hub.services_with(RegistrationKind::Hook, EDGE_ID_HOOK);
    let edge = EdgeInfo {
        id: requested.unwrap_or(0),
        addr: addr.to_string(),
        metadata: metadata.clone(),
    };
    let key = RouteKey::Stable(requested.unwrap_or_else(|| addr.port().into()));
    if let Some(service) = hub.pick(&hooks, key) {
        let answer = call_hook(hub, &service, EDGE_ID_HOOK, &edge).await?;
        let id = decode_edge_id(&answer)?;
        if id == 0 {
            return Err(Error::Status {
                code: ErrorCode::INTERNAL,
                text: String::from("the edge-id hook returned 0"),
            });
        }
        return Ok(id);
    }
    match requested {
        Some(id) if id != 0 => Ok(id),
        _ if hub.config.edgeid_alloc_when_no_idservice_on => Ok(hub.allocate_edge_id()),
        _ => Err(Error::ServiceNotOnline(String::from(
            "no service assigns edge ids and the gateway does not allocate them",
        ))),
    }
}

fn description(session: &EdgeSession) -> EdgeInfo {
    EdgeInfo {
        id: session.id,
        addr: session.addr.map(|a| a.to_string()).unwrap_or_default(),
        metadata: session.metadata.clone(),
    }
}

/// The services a presence event for `session` goes to.
fn presence_targets(hub: &Hub, hook: &'static str, session: &EdgeSession) -> Vec<Arc<ServiceLink>> {
    let all = hub.services_with(RegistrationKind::Hook, hook);
    match hub.config.presence {
        PresenceFanout::All => all,
        PresenceFanout::One => hub
            .pick(&all, RouteKey::Stable(session.id))
            .into_iter()
            .collect(),
    }
}

/// Tells the interested services that `session` is online. The first refusal refuses it;
/// it comes with the services that did not refuse (they may have taken it as online).
async fn online(hub: &Hub, session: &EdgeSession) -> Result<(), (Error, Vec<Arc<ServiceLink>>)> {
    let edge = description(session);
    let targets = presence_targets(hub, EDGE_ONLINE_HOOK, session);
    let calls = targets
        .iter()
        .map(|service| call_hook(hub, service, EDGE_ONLINE_HOOK, &edge));
    let mut refusal = None;
    let mut told = Vec::new();
    for (service, result) in targets.iter().zip(join_all(calls).await) {
        match result {
            Ok(_) => told.push(Arc::clone(service)),
            // A service that went away or timed out does not get to refuse the edge.
            Err(
                Error::Timeout(_)
                | Error::ConnectionLost(_)
                | Error::TransportFailed(_)
                | Error::Closed
                | Error::GoingAway(_),
            ) => told.push(Arc::clone(service)),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    match refusal {
        None => Ok(()),
        Some(e) => Err((e, told)),
    }
}

/// Tells the interested services that `session` went offline, once per session.
async fn offline(hub: &Hub, session: &EdgeSession) {
    if session.offline_sent.swap(true, Ordering::AcqRel) {
        return;
    }
    let targets = presence_targets(hub, EDGE_OFFLINE_HOOK, session);
    send_offline(hub, session, &targets).await;
}

/// Calls the offline hook of `targets` for `session`; failures are only logged.
async fn send_offline(hub: &Hub, session: &EdgeSession, targets: &[Arc<ServiceLink>]) {
    let edge = description(session);
    let calls = targets
        .iter()
        .map(|service| call_hook(hub, service, EDGE_OFFLINE_HOOK, &edge));
    for result in join_all(calls).await {
        if let Err(e) = result {
            tracing::debug!(id = session.id, reason = %e, "offline hook failed");
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
