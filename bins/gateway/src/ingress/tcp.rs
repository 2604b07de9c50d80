//! TCP port mappings: every connection accepted on a mapping's address is relayed over a
//! stream to the exposed service of the mapping's edge, bytes and half-close both ways.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use super::{Ctx, TCP_SOURCE, open_to_edge};
use crate::config::TcpMapping;

/// Accepts connections on `listener` for `mapping` until the task is aborted.
pub(super) async fn accept_loop(listener: TcpListener, mapping: TcpMapping, ctx: Ctx) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let (mapping, task_ctx) = (mapping.clone(), ctx.clone());
                ctx.spawn(relay(task_ctx, mapping, socket, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, listen = %mapping.listen, "tcp mapping accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one accepted connection; closes it if the stream cannot be opened.
async fn relay(ctx: Ctx, mapping: TcpMapping, mut socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (edge, service) = (mapping.edge, mapping.service.as_str());
    let mut stream = match open_to_edge(&ctx.hub, edge, service, TCP_SOURCE).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(
                %peer, edge, service, code = e.code().name().unwrap_or("?"), reason = %e,
                "tcp mapping: cannot reach the edge's service; closing the connection"
            );
            return;
        }
    };
    tracing::debug!(%peer, edge, service, "tcp mapping: relaying");
    match tokio::io::copy_bidirectional(&mut socket, &mut stream).await {
        Ok((up, down)) => {
            tracing::debug!(%peer, edge, service, up, down, "tcp mapping: relay ended");
        }
        Err(e) => {
            tracing::debug!(%peer, edge, service, error = %e, "tcp mapping: relay failed");
        }
    }
}
