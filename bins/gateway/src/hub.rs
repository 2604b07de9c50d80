//! Who is connected: services by id, edges by id, and the lookups routing needs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use proto_core::RegistrationKind;
use tether_tokio::Connection;

use crate::config::GatewayConfig;
use crate::metrics::{Metrics, PeerRole};
use crate::routing::{RouteKey, choose_by};

/// A connected service.
#[derive(Debug)]
pub(crate) struct ServiceLink {
    /// The id the gateway gave it.
    pub(crate) id: u64,
    /// Its name (edges open streams to it by name).
    pub(crate) name: String,
    /// Its connection.
    pub(crate) conn: Connection,
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// When it was admitted.
    pub(crate) connected_at: SystemTime,
}

impl ServiceLink {
    /// Whether it takes new work: connected, and neither side has sent GOAWAY (a draining
    /// service refuses new calls, messages and streams with `GOING_AWAY`).
    pub(crate) fn is_available(&self) -> bool {
        self.conn.accepts_work()
    }

    /// Whether it registered `name` as `kind` (whether or not it takes new work).
    pub(crate) fn has(&self, kind: RegistrationKind, name: &str) -> bool {
        self.conn
            .peer_registrations()
            .iter()
            .any(|r| r.kind == kind && r.name.as_str() == name)
    }
}

/// One session of a connected edge.
#[derive(Debug)]
pub(crate) struct EdgeSession {
    /// The edge id.
    pub(crate) id: u64,
    /// Distinguishes sessions of the same edge id (a replaced one from its successor).
    pub(crate) session: u64,
    /// Its connection.
    pub(crate) conn: Connection,
    /// Its address.
    pub(crate) addr: Option<SocketAddr>,
    /// The metadata of its HELLO.
    pub(crate) metadata: Bytes,
    /// Its offline event was sent (exactly once per session).
    pub(crate) offline_sent: AtomicBool,
    /// When it was admitted.
    pub(crate) connected_at: SystemTime,
}

/// The gateway's shared state.
#[derive(Debug)]
pub(crate) struct Hub {
    /// The configuration it runs with.
    pub(crate) config: GatewayConfig,
    /// The protocol configuration of every connection.
    pub(crate) core: proto_core::Config,
    /// The Prometheus metrics.
    pub(crate) metrics: Arc<Metrics>,
    services: Mutex<BTreeMap<u64, Arc<ServiceLink>>>,
    edges: Mutex<HashMap<u64, Arc<EdgeSession>>>,
    next_service: AtomicU64,
    next_edge: AtomicU64,
    next_session: AtomicU64,
    /// Set when shutdown starts: peers admitted after the GOAWAY sweep are told to go away
    /// by their admission instead.
    shutting_down: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// An empty hub.
    pub(crate) fn new(config: GatewayConfig) -> Hub {
        Hub {
            core: config.core_config(),
            config,
            metrics: Arc::new(Metrics::new()),
            services: Mutex::new(BTreeMap::new()),
            edges: Mutex::new(HashMap::new()),
            next_service: AtomicU64::new(1),
            next_edge: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Marks the start of shutdown (before the GOAWAY sweep over the connected peers).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has started: a peer admitted now may have missed the GOAWAY sweep.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A new service id.
    pub(crate) fn service_id(&self) -> u64 {
        self.next_service.fetch_add(1, Ordering::Relaxed)
    }

    /// A new session number.
    pub(crate) fn session_number(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// An edge id no online edge has.
    pub(crate) fn allocate_edge_id(&self) -> u64 {
        let edges = lock(&self.edges);
        loop {
            let id = self.next_edge.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !edges.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a service.
    pub(crate) fn add_service(&self, link: Arc<ServiceLink>) {
        lock(&self.services).insert(link.id, link);
    }

    /// Removes a service.
    pub(crate) fn remove_service(&self, id: u64) {
        lock(&self.services).remove(&id);
    }

    /// Every connected service.
    pub(crate) fn services(&self) -> Vec<Arc<ServiceLink>> {
        lock(&self.services).values().cloned().collect()
    }

    /// The services that registered `name` as `kind`.
    pub(crate) fn services_with(
        &self,
        kind: RegistrationKind,
        name: &str,
    ) -> Vec<Arc<ServiceLink>> {
        self.services()
            .into_iter()
            .filter(|s| s.conn.accepts_work_for(kind, name))
            .collect()
    }

    /// The services called `name`.
    pub(crate) fn services_named(&self, name: &str) -> Vec<Arc<ServiceLink>> {
        self.services()
            .into_iter()
            .filter(|s| s.is_available() && s.name == name)
            .collect()
    }

    /// The candidate `key` maps to.
    pub(crate) fn pick(
        &self,
        candidates: &[Arc<ServiceLink>],
        key: RouteKey,
    ) -> Option<Arc<ServiceLink>> {
        choose_by(key, candidates, |s| s.id).cloned()
    }

    /// The online edge `id`.
    pub(crate) fn edge(&self, id: u64) -> Option<Arc<EdgeSession>> {
        lock(&self.edges).get(&id).cloned()
    }

    /// Every online edge.
    pub(crate) fn edges(&self) -> Vec<Arc<EdgeSession>> {
        lock(&self.edges).values().cloned().collect()
    }

    /// Makes `session` the online session of its edge id; returns the one it replaces.
    pub(crate) fn put_edge(&self, session: Arc<EdgeSession>) -> Option<Arc<EdgeSession>> {
        lock(&self.edges).insert(session.id, session)
    }

    /// Removes edge `id` if `session` is still its online session.
    pub(crate) fn remove_edge(&self, id: u64, session: u64) {
        let mut edges = lock(&self.edges);
        if edges.get(&id).is_some_and(|s| s.session == session) {
            edges.remove(&id);
        }
    }
}

/// The text a kicked peer's connection is closed with.
pub(crate) const KICK_REASON: &str = "kicked by the operator";

impl Hub {
    /// The connected service `id`, unless its connection is already ending.
    pub(crate) fn service(&self, id: u64) -> Option<Arc<ServiceLink>> {
        let service = lock(&self.services).get(&id).cloned()?;
        (!service.conn.is_closed()).then_some(service)
    }

    /// Closes the connection of service `id` with `KICKED`; whether a live one was closed.
    pub(crate) fn kick_service(&self, id: u64) -> bool {
        let Some(service) = self.service(id) else {
            return false;
        };
        service
            .conn
            .close(proto_core::ErrorCode::KICKED, KICK_REASON);
        self.metrics.kick(PeerRole::Service);
        true
    }

    /// Closes the connection of edge `id` with `KICKED`; whether a live one was closed.
    pub(crate) fn kick_edge(&self, id: u64) -> bool {
        let Some(edge) = self.edge(id).filter(|e| !e.conn.is_closed()) else {
            return false;
        };
        edge.conn.close(proto_core::ErrorCode::KICKED, KICK_REASON);
        self.metrics.kick(PeerRole::Edge);
        true
    }
}
