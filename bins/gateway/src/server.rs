//! The listeners, and graceful shutdown: on a signal, stop accepting, send GOAWAY to every
//! peer, let in-flight work drain up to `drain_timeout_ms`, then return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto_core::ErrorCode;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::admit::{admit_edge, admit_service};
use crate::config::GatewayConfig;
use crate::hub::Hub;

/// A gateway whose listeners are bound.
#[derive(Debug)]
pub struct Gateway {
    hub: Arc<Hub>,
    services: TcpListener,
    edges: TcpListener,
}

impl Gateway {
    /// Binds the listeners of `config`.
    pub async fn bind(config: GatewayConfig) -> std::io::Result<Gateway> {
        let services = TcpListener::bind(config.service_listen).await?;
        let edges = TcpListener::bind(config.edge_listen).await?;
        Ok(Gateway {
            hub: Arc::new(Hub::new(config)),
            services,
            edges,
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

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            hub,
            services,
            edges,
        } = self;
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
        }
        for edge in hub.edges() {
            edge.conn
                .go_away(ErrorCode::GOING_AWAY, "the gateway is shutting down");
        }
        // Connections close themselves once drained (or at their drain deadline).
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(drain + Duration::from_secs(2), all)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish draining in time");
        }
        tracing::info!("stopped");
    }
}
