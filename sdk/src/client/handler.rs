//! Registered RPC handlers and the task that serves a session's requests with them.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use proto_core::ErrorCode;

use crate::connection::Connection;
use crate::error::Error;
use crate::exchange::Request;
use crate::runtime::{BoxFuture, Runtime, until};

/// A call handed to a registered handler.
#[derive(Clone, Debug)]
pub struct CallRequest {
    /// The method called.
    pub method: String,
    /// The request body.
    pub body: Bytes,
    /// The calling edge (requests a service receives from edges).
    pub edge_id: Option<u64>,
    /// The calling service (requests an edge receives from services).
    pub service: Option<String>,
    /// When the caller stops waiting, if it set a timeout. The handler is dropped then.
    pub deadline: Option<Instant>,
}

/// A registered method: an async function from the request to the response body or an
/// error (its code and text reach the caller).
pub type Handler = Arc<dyn Fn(CallRequest) -> BoxFuture<Result<Bytes, Error>> + Send + Sync>;

/// Makes a [`Handler`] from an async function or closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(CallRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

/// Where handlers are looked up: the client's table, which may change while serving.
pub(crate) trait Handlers: Send + Sync + 'static {
    fn handler(&self, method: &str) -> Option<Handler>;
}

impl Handlers for std::sync::Mutex<HashMap<String, Handler>> {
    fn handler(&self, method: &str) -> Option<Handler> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(method)
            .cloned()
    }
}

/// Serves `connection`'s requests until it ends: each on its own task, dropped when the
/// caller cancels or its deadline passes. The number of tasks is bounded by our
/// `max_inflight_requests` setting, which the peer must respect.
pub(crate) async fn serve(
    runtime: Arc<dyn Runtime>,
    connection: Connection,
    handlers: Arc<dyn Handlers>,
) {
    while let Some(request) = connection.next_request().await {
        let Some(handler) = handlers.handler(request.method()) else {
            let method = request.method().to_owned();
            request.respond(Err(Error::MethodNotFound(format!(
                "this peer has no handler for {method:?}"
            ))));
            continue;
        };
        let rt = Arc::clone(&runtime);
        runtime.spawn(Box::pin(async move { answer(rt, request, handler).await }));
    }
}

async fn answer(runtime: Arc<dyn Runtime>, mut request: Request, handler: Handler) {
    let address = request.address().clone();
    let call = CallRequest {
        method: request.method().to_owned(),
        body: request.take_body(),
        edge_id: (address.peer_id != 0).then_some(address.peer_id),
        service: (!address.peer_name.is_empty()).then(|| address.peer_name.as_str().to_owned()),
        deadline: request.deadline(),
    };
    let work = handler(call);
    let outcome = {
        let mut work = std::pin::pin!(work);
        let mut cancelled = std::pin::pin!(request.cancelled());
        let raced = poll_fn(|cx| {
            if let Poll::Ready(result) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            cancelled.as_mut().poll(cx).map(|_: ErrorCode| None)
        });
        until(&*runtime, request.deadline(), raced).await.flatten()
    };
    match outcome {
        Some(result) => request.respond(result),
        // Cancelled (the answer is then discarded) or past the caller's deadline.
        None => request.respond(Err(Error::Timeout(String::from(
            "the handler did not finish before the caller's deadline",
        )))),
    }
}
