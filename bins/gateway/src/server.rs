//! The listeners, and graceful shutdown: on a signal, stop accepting, send GOAWAY to every
//! peer, let in-flight work drain up to `drain_timeout_ms`, then return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto_core::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admit::{admit_edge, admit_service};
use crate::config::{GatewayConfig, TcpMapping};
use crate::control::ControlPlane;
use crate::hub::Hub;
use crate::ingress::Ingress;
use crate::metrics::{HandshakeResult, PeerRole};
use crate::transport::admission::Admission;
use crate::transport::tls::{self, ReloadableTls};
use crate::transport::{OnRefused, Pipeline, Refusal, accept_loop};

/// A gateway whose listeners are bound.
#[derive(Debug)]
pub struct Gateway {
    hub: Arc<Hub>,
    services: TcpListener,
    edges: TcpListener,
    service_pipeline: Pipeline,
    edge_pipeline: Pipeline,
    hangup: tls::Hangup,
    ingress: Ingress,
    control: ControlPlane,
}

/// Loads a listener's TLS section, if any.
fn load_tls(
    role: &'static str,
    section: Option<&crate::transport::tls::TlsConfig>,
) -> std::io::Result<Option<Arc<ReloadableTls>>> {
    let Some(section) = section else {
        return Ok(None);
    };
    let loaded = ReloadableTls::load(role, section.clone())
        .map_err(|e| std::io::Error::other(format!("{role}_tls: {e}")))?;
    Ok(Some(Arc::new(loaded)))
}

impl Gateway {
    /// Binds the listeners of `config`.
    pub async fn bind(config: GatewayConfig) -> std::io::Result<Gateway> {
        let admission = Admission::new(&config.admission);
        let deadline = Duration::from_millis(config.admission.transport_handshake_timeout_ms);
        let websocket = Arc::new(config.websocket.clone());
        let service_pipeline = Pipeline {
            role: PeerRole::Service,
            tls: load_tls("service", config.service_tls.as_ref())?,
            websocket: config.websocket.service.then(|| Arc::clone(&websocket)),
            admission: Arc::clone(&admission),
            transport_deadline: deadline,
        };
        let edge_pipeline = Pipeline {
            role: PeerRole::Edge,
            tls: load_tls("edge", config.edge_tls.as_ref())?,
            websocket: config.websocket.edge.then_some(websocket),
            admission,
            transport_deadline: deadline,
        };
        let services = TcpListener::bind(config.service_listen).await?;
        let edges = TcpListener::bind(config.edge_listen).await?;
        let ingress = Ingress::bind(&config).await?;
        let control_tls = load_tls("control", config.control_tls.as_ref())?;
        let control = ControlPlane::bind(&config, control_tls).await?;
        Ok(Gateway {
            hub: Arc::new(Hub::new(config)),
            services,
            edges,
            service_pipeline,
            edge_pipeline,
            hangup: tls::Hangup::listen(),
            ingress,
            control,
        })
    }

    /// The bound service address.
    pub fn service_addr(&self) -> std::io::Result<SocketAddr> {
        self.services.local_addr()
    }

    /// The bound edge address.
    pub fn edge_addr(&self) -> std::io::Result<SocketAddr> {
        self.edges.local_addr()
    }

    /// The bound HTTP ingress address, if `http_ingress` is set.
    pub fn http_ingress_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.ingress.http_addr()
    }

    /// The bound address of each TCP port mapping, with the mapping.
    pub fn tcp_mapping_addrs(&self) -> Vec<(std::io::Result<SocketAddr>, &TcpMapping)> {
        self.ingress.tcp_addrs()
    }

    /// The bound control-plane address (loopback when no control token is set).
    pub fn control_addr(&self) -> std::io::Result<SocketAddr> {
        self.control.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains and returns. The control plane serves
    /// until the end (`/readyz` answers 503 while draining).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            hub,
            services,
            edges,
            service_pipeline,
            edge_pipeline,
            hangup,
            ingress,
            control,
        } = self;
        let (stop_control, control_stopped) = watch::channel(false);
        let reloadable = [&service_pipeline.tls, &edge_pipeline.tls, &control.tls()];
        let reloadable: Vec<_> = reloadable.into_iter().flatten().cloned().collect();
        let control = tokio::spawn(control.run(Arc::clone(&hub), control_stopped));
        let (stop, stopped) = watch::channel(false);
        let ingress = tokio::spawn(ingress.run(Arc::clone(&hub), stopped.clone()));
        tokio::spawn(tls::watch(reloadable, hangup, stopped.clone()));
        let metrics = Arc::clone(&hub.metrics);
        let refused: OnRefused = Arc::new(move |role, why| {
            let result = match why {
                Refusal::Overloaded => HandshakeResult::Overloaded,
                Refusal::Tls => HandshakeResult::TlsFailed,
                Refusal::Timeout => HandshakeResult::Timeout,
                Refusal::WebSocket => HandshakeResult::ProtocolError,
                Refusal::Io => HandshakeResult::Abandoned,
            };
            metrics.handshake(role, result);
        });
        let service_loop = {
            let (hub, stopped, refused) = (Arc::clone(&hub), stopped.clone(), refused.clone());
            async move {
                let mut tasks = JoinSet::new();
                let admit = move |e| admit_service(Arc::clone(&hub), e);
                accept_loop(
                    services,
                    service_pipeline,
                    &mut tasks,
                    stopped,
                    refused,
                    admit,
                )
                .await;
                tasks
            }
        };
        let edge_loop = {
            let hub = Arc::clone(&hub);
            let binding = edge_pipeline.tls.as_ref().map(|t| t.identity().clone());
            let binding = binding.unwrap_or_default();
            async move {
                let mut tasks = JoinSet::new();
                let admit = move |e| admit_edge(Arc::clone(&hub), e, binding.clone());
                accept_loop(edges, edge_pipeline, &mut tasks, stopped, refused, admit).await;
                tasks
            }
        };
        let mut loops = std::pin::pin!(async { tokio::join!(service_loop, edge_loop) });
        let mut shutdown = std::pin::pin!(shutdown);
        let ended = tokio::select! {
            () = &mut shutdown => None,
            // The loops only end when told to.
            tasks = &mut loops => Some(tasks),
        };
        // The accept loops close their listeners; the ingress closes its listeners and
        // lets its connections finish.
        let _ = stop.send(true);
        let (mut service_tasks, mut edge_tasks) = match ended {
            Some(tasks) => tasks,
            None => loops.await,
        };
        // Peers whose handshake completes from now on are sent GOAWAY by their admission
        // (the sweep below only sees those already in the tables).
        hub.begin_shutdown();
        let drain = Duration::from_millis(hub.config.drain_timeout_ms);
        tracing::info!(
            services = hub.services().len(),
            edges = hub.edges().len(),
            drain_ms = hub.config.drain_timeout_ms,
            "shutting down: GOAWAY to every peer"
        );
        for service in hub.services() {
            service
                .conn
                .go_away(ErrorCode::GOING_AWAY, "the gateway is shutting down");
            hub.metrics.goaway(PeerRole::Service);
        }
        for edge in hub.edges() {
            edge.conn
                .go_away(ErrorCode::GOING_AWAY, "the gateway is shutting down");
            hub.metrics.goaway(PeerRole::Edge);
        }
        // Connections close themselves once drained (or at their drain deadline).
        let all = async {
            while service_tasks.join_next().await.is_some() {}
            while edge_tasks.join_next().await.is_some() {}
        };
        let deadline = drain + Duration::from_secs(2);
        let (peers, _) = tokio::join!(tokio::time::timeout(deadline, all), async {
            // Ends by itself within the drain timeout.
            let _ = tokio::time::timeout(deadline, ingress).await;
        });
        if peers.is_err() {
            tracing::warn!("some connections did not finish draining in time");
        }
        let _ = stop_control.send(true);
        let _ = control.await;
        tracing::info!("stopped");
    }
}
