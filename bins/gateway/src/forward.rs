//! Forwarding between a connection and the one its traffic is routed to: requests,
//! messages and streams, each on its own task, so nothing waits behind anything else.
//!
//! Errors keep their code across the hop. A target that disappears while work is in flight
//! answers at once with `EDGE_NOT_ONLINE` / `SERVICE_NOT_ONLINE`, not with a timeout.
//! A caller that cancels (or whose deadline passes) cancels the forwarded call.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use proto_core::name::Name;
use proto_core::{Address, Call, ErrorCode, OpenStream, Publish};
use tether_tokio::{Connection, Error, IncomingStream, Message, Request};

use crate::metrics::Metrics;
use crate::splice::splice;

/// Where forwarded traffic came from, as the target sees it (its address).
#[derive(Clone, Debug)]
pub(crate) struct Source(pub(crate) Address);

impl Source {
    /// An edge, seen by a service.
    pub(crate) fn edge(id: u64) -> Source {
        Source(Address {
            peer_id: id,
            peer_name: Name::EMPTY,
        })
    }

    /// A service, seen by an edge.
    pub(crate) fn service(name: &str) -> Source {
        Source(Address {
            peer_id: 0,
            peer_name: Name::new(name).unwrap_or(Name::EMPTY),
        })
    }
}

/// How long the gateway waits for the target of a stream to accept it (the SDK's default
/// operation timeout), for relayed streams and ingress alike.
pub(crate) const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which error a lost target turns into.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TargetKind {
    /// An edge: `EDGE_NOT_ONLINE`.
    Edge,
    /// A service: `SERVICE_NOT_ONLINE`.
    Service,
}

impl TargetKind {
    /// The other kind: the source of traffic that goes to this kind.
    pub(crate) fn opposite(self) -> TargetKind {
        match self {
            TargetKind::Edge => TargetKind::Service,
            TargetKind::Service => TargetKind::Edge,
        }
    }

    /// The error for work in flight to a target of this kind that is no longer connected.
    pub(crate) fn gone(self) -> Error {
        match self {
            TargetKind::Edge => Error::EdgeNotOnline(String::from("the edge disconnected")),
            TargetKind::Service => {
                Error::ServiceNotOnline(String::from("the service disconnected"))
            }
        }
    }

    /// Maps a failure of the forwarded operation: a lost target is "not online".
    fn map(self, error: Error) -> Error {
        match error {
            Error::ConnectionLost(_)
            | Error::TransportFailed(_)
            | Error::Closed
            | Error::NotConnected(_) => self.gone(),
            other => other,
        }
    }
}

fn remaining(deadline: Option<Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| {
        d.saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1))
    })
}

/// Races `work` against the caller giving up.
async fn unless_cancelled<T>(request: &Request, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        result = work => Some(result),
        _ = request.cancelled() => None,
    }
}

/// Bodies of requests and messages from one connection that the gateway may hold while
/// forwarding them. Past it the gateway stops taking that connection's work, and the
/// peer's own windows slow it down: the gateway never buffers without bound.
#[derive(Clone, Debug)]
pub(crate) struct Budget(Arc<Semaphore>);

/// The budget per connection, in KiB (16 MiB).
const BUDGET_KIB: u32 = 16 * 1024;

impl Budget {
    /// A fresh budget for one connection.
    pub(crate) fn new() -> Budget {
        Budget(Arc::new(Semaphore::new(BUDGET_KIB as usize)))
    }

    /// Waits until `len` more bytes fit (a body larger than the whole budget waits for all
    /// of it), and holds them until the permit is dropped.
    pub(crate) async fn take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(len / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(BUDGET_KIB);
        Arc::clone(&self.0).acquire_many_owned(kib).await.ok()
    }
}

/// Forwards `request` to `target` and answers it.
pub(crate) async fn forward_request(
    _held: Option<OwnedSemaphorePermit>,
    mut request: Request,
    target: Connection,
    source: Source,
    kind: TargetKind,
    metrics: Arc<Metrics>,
) {
    let started = Instant::now();
    let method = match Name::new(request.method()) {
        Ok(m) => m,
        Err(_) => {
            return refuse_request(
                request,
                Error::InvalidArgument(String::from("method")),
                kind,
                &metrics,
            );
        }
    };
    let call = Call {
        address: source.0,
        method,
        body: request.take_body(),
        timeout: remaining(request.deadline()),
    };
    // Dropping the forwarded call (when the caller cancels) cancels it at the target.
    match unless_cancelled(&request, target.call(call)).await {
        Some(result) => {
            let result = result.map_err(|e| kind.map(e));
            let code = result.as_ref().map_or_else(Error::code, |_| ErrorCode::OK);
            metrics.rpc(kind, code, started.elapsed());
            request.respond(result);
        }
        None => metrics.rpc(kind, ErrorCode::CANCELLED, started.elapsed()),
    }
}

/// Forwards `message` to `target` and relays the acknowledgement.
pub(crate) async fn forward_message(
    _held: Option<OwnedSemaphorePermit>,
    mut message: Message,
    target: Connection,
    source: Source,
    kind: TargetKind,
    metrics: Arc<Metrics>,
) {
    let started = Instant::now();
    let publish = Publish {
        address: source.0,
        // A topic that arrived as a name is one again (empty on service → edge messages).
        topic: Name::new(message.topic()).unwrap_or(Name::EMPTY),
        body: message.take_body(),
        ack: message.ack_wanted(),
        timeout: remaining(message.deadline()),
    };
    match target.publish(publish).await {
        Ok(()) => {
            metrics.message(kind, ErrorCode::OK, started.elapsed());
            message.done();
        }
        Err(e) => {
            let e = kind.map(e);
            metrics.message(kind, e.code(), started.elapsed());
            message.error(e);
        }
    }
}

/// Opens the matching stream on `target`; splices the two when it accepts, passes its
/// refusal back otherwise.
pub(crate) async fn forward_stream(
    incoming: IncomingStream,
    target: Connection,
    source: Source,
    kind: TargetKind,
    open_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
) {
    let open = OpenStream {
        address: source.0,
        metadata: incoming.metadata().clone(),
    };
    match target.open_stream(open, Some(open_timeout)).await {
        Ok((mut far, accept_metadata)) => match incoming.accept(accept_metadata) {
            Ok(near) => {
                let _open = metrics.stream_relayed();
                splice(near, far, kind, &metrics).await;
            }
            // The opener withdrew while the target decided: the target must not take the
            // stream for one that ended cleanly with no data (dropping `far` sends FIN).
            Err(_) => {
                metrics.stream_reset(ErrorCode::CANCELLED);
                far.reset(ErrorCode::CANCELLED, "the opener withdrew the stream");
            }
        },
        Err(e) => {
            let e = kind.map(e);
            incoming.refuse(e.code(), &e.text());
        }
    }
}

/// Answers a request (towards `kind`) that cannot be routed.
pub(crate) fn refuse_request(request: Request, error: Error, kind: TargetKind, metrics: &Metrics) {
    metrics.rpc(kind, error.code(), std::time::Duration::ZERO);
    request.respond(Err(error));
}

/// Answers a message that cannot be routed (a fire-and-forget one is dropped: its sender
/// asked for no outcome).
pub(crate) fn refuse_message(message: Message, error: Error, kind: TargetKind, metrics: &Metrics) {
    metrics.message(kind, error.code(), std::time::Duration::ZERO);
    if message.ack_wanted() {
        message.error(error);
    }
}

/// Refuses a stream that cannot be routed.
pub(crate) fn refuse_stream(incoming: IncomingStream, error: Error) {
    incoming.refuse(error.code(), &error.text());
}
