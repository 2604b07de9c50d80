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
use crate::metrics::PeerRole;

/// A gateway whose listeners are bound.
#[derive(Debug)]
pub struct Gateway {
    hub: Arc<Hub>,
    services: TcpListener,
    edges: TcpListener,
    ingress: Ingress,
    control: ControlPlane,
}

impl Gateway {
    /// Binds the listeners of `config`.
    pub async fn bind(config: GatewayConfig) -> std::io::Result<Gateway> {
        let services = TcpListener::bind(config.service_listen).await?;
        let edges = TcpListener::bind(config.edge_listen).await?;
        let ingress = Ingress::bind(&config).await?;
        let control = ControlPlane::bind(&config).await?;
        Ok(Gateway {
            hub: Arc::new(Hub::new(config)),
            services,
            edges,
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
            ingress,
            control,
        } = self;
        let (stop_control, control_stopped) = watch::channel(false);
        let control = tokio::spawn(control.run(Arc::clone(&hub), control_stopped));
        let (stop_ingress, stopped) = watch::channel(false);
        let ingress = tokio::spawn(ingress.run(Arc::clone(&hub), stopped));
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = services.accept() => {
                    if let Ok((socket, addr)) = accepted {
                        tasks.spawn(admit_service(Arc::clone(&hub), socket, addr));
                    }
                }
                accepted = edges.accept() => {
                    if let Ok((socket, addr)) = accepted {
                        tasks.spawn(admit_edge(Arc::clone(&hub), socket, addr));
                    }
                }
                // Reap finished connection tasks so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        drop((services, edges));
        // The ingress closes its listeners and lets its connections finish.
        let _ = stop_ingress.send(true);
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
        let all = async { while tasks.join_next().await.is_some() {} };
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
