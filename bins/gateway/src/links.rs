//! Serving one admitted connection: everything it sends is routed and forwarded on its
//! own task. The three loops (requests, messages, streams) run side by side, and each item
//! is handed off at once, so a slow target never delays anything else. The loops are the
//! same for services and edges; only the routing decision ([`Router`]) differs.

use std::sync::Arc;

use proto_core::RegistrationKind;
use tether_tokio::{Connection, Error, IncomingStream, Message, Request};

use crate::forward::{
    Budget, OPEN_TIMEOUT, Source, TargetKind, forward_message, forward_request, forward_stream,
    refuse_message, refuse_request, refuse_stream,
};
use crate::hub::{EdgeSession, Hub, ServiceLink};
use crate::metrics::Metrics;
use crate::routing::RouteKey;

/// Where one connection's traffic goes: the target connection, or why there is none.
trait Router: Send + Sync + 'static {
    /// What a lost target turns into.
    const KIND: TargetKind;
    fn request(&self, request: &Request) -> Result<Connection, Error>;
    fn message(&self, message: &Message) -> Result<Connection, Error>;
    fn stream(&self, incoming: &IncomingStream) -> Result<Connection, Error>;
}

/// A service's traffic: to the edge its address names.
struct ToEdge(Arc<Hub>);

impl ToEdge {
    fn edge(&self, id: u64) -> Result<Connection, Error> {
        match self.0.edge(id) {
            Some(edge) => Ok(edge.conn.clone()),
            None => Err(Error::EdgeNotOnline(format!("edge {id} is not online"))),
        }
    }
}

impl Router for ToEdge {
    const KIND: TargetKind = TargetKind::Edge;

    fn request(&self, request: &Request) -> Result<Connection, Error> {
        self.edge(request.address().peer_id)
    }

    fn message(&self, message: &Message) -> Result<Connection, Error> {
        self.edge(message.address().peer_id)
    }

    fn stream(&self, incoming: &IncomingStream) -> Result<Connection, Error> {
        self.edge(incoming.address().map_or(0, |a| a.peer_id))
    }
}

/// An edge's traffic: to a service that offers what is asked, picked by `key`.
struct ToService {
    hub: Arc<Hub>,
    key: RouteKey,
}

impl ToService {
    fn pick(
        &self,
        candidates: &[Arc<ServiceLink>],
        none: impl FnOnce() -> Error,
    ) -> Result<Connection, Error> {
        match self.hub.pick(candidates, self.key) {
            Some(service) => Ok(service.conn.clone()),
            None => Err(none()),
        }
    }

    fn named(&self, name: &str) -> Result<Connection, Error> {
        let candidates = self.hub.services_named(name);
        self.pick(&candidates, || {
            Error::ServiceNotOnline(format!("no service {name:?} is connected"))
        })
    }
}

impl Router for ToService {
    const KIND: TargetKind = TargetKind::Service;

    fn request(&self, request: &Request) -> Result<Connection, Error> {
        let method = request.method();
        let wanted = request.address().peer_name.as_str();
        let mut candidates = self.hub.services_with(RegistrationKind::Method, method);
        if !wanted.is_empty() {
            candidates.retain(|s| s.name == wanted);
            if candidates.is_empty() && self.hub.services_named(wanted).is_empty() {
                return Err(Error::ServiceNotOnline(format!(
                    "no service {wanted:?} is connected"
                )));
            }
        }
        self.pick(&candidates, || {
            Error::MethodNotFound(format!("no service registered {method:?}"))
        })
    }

    fn message(&self, message: &Message) -> Result<Connection, Error> {
        let topic = message.topic();
        let candidates = self.hub.services_with(RegistrationKind::Topic, topic);
        self.pick(&candidates, || {
            Error::TopicNotFound(format!("no service takes {topic:?}"))
        })
    }

    fn stream(&self, incoming: &IncomingStream) -> Result<Connection, Error> {
        self.named(incoming.address().map_or("", |a| a.peer_name.as_str()))
    }
}

/// Serves a service: its calls, messages and streams go to the edge they address.
pub(crate) async fn serve_service(hub: Arc<Hub>, link: Arc<ServiceLink>) {
    let source = Source::service(&link.name);
    let metrics = Arc::clone(&hub.metrics);
    serve(link.conn.clone(), source, Arc::new(ToEdge(hub)), metrics).await;
}

/// Serves an edge: its calls go to a service that registered the method, its messages to
/// one that takes the topic, its streams to the service it names.
pub(crate) async fn serve_edge(hub: Arc<Hub>, session: Arc<EdgeSession>) {
    let key = RouteKey::for_edge(hub.config.hashby, session.id, session.addr.map(|a| a.ip()));
    let metrics = Arc::clone(&hub.metrics);
    let router = Arc::new(ToService { hub, key });
    serve(
        session.conn.clone(),
        Source::edge(session.id),
        router,
        metrics,
    )
    .await;
}

/// Takes everything `conn` sends until it ends and forwards each item where `router`
/// says, each on its own task.
async fn serve<R: Router>(conn: Connection, source: Source, router: Arc<R>, metrics: Arc<Metrics>) {
    let requests = {
        let (conn, source, router) = (conn.clone(), source.clone(), Arc::clone(&router));
        let metrics = Arc::clone(&metrics);
        async move {
            let budget = Budget::new();
            while let Some(request) = conn.next_request().await {
                let held = budget.take(request.body().len()).await;
                match router.request(&request) {
                    Ok(target) => {
                        let metrics = Arc::clone(&metrics);
                        let forward = forward_request(
                            held,
                            request,
                            target,
                            source.clone(),
                            R::KIND,
                            metrics,
                        );
                        tokio::spawn(forward);
                    }
                    Err(e) => refuse_request(request, e, R::KIND, &metrics),
                }
            }
        }
    };
    let messages = {
        let (conn, source, router) = (conn.clone(), source.clone(), Arc::clone(&router));
        let metrics = Arc::clone(&metrics);
        async move {
            let budget = Budget::new();
            while let Some(message) = conn.next_message().await {
                let held = budget.take(message.body().len()).await;
                match router.message(&message) {
                    Ok(target) => {
                        let metrics = Arc::clone(&metrics);
                        let forward = forward_message(
                            held,
                            message,
                            target,
                            source.clone(),
                            R::KIND,
                            metrics,
                        );
                        tokio::spawn(forward);
                    }
                    Err(e) => refuse_message(message, e, R::KIND, &metrics),
                }
            }
        }
    };
    let streams = async move {
        while let Some(incoming) = conn.incoming_stream().await {
            match router.stream(&incoming) {
                Ok(target) => {
                    let (kind, metrics) = (R::KIND, Arc::clone(&metrics));
                    let forward = forward_stream(
                        incoming,
                        target,
                        source.clone(),
                        kind,
                        OPEN_TIMEOUT,
                        metrics,
                    );
                    tokio::spawn(forward);
                }
                Err(e) => refuse_stream(incoming, e),
            }
        }
    };
    tokio::join!(requests, messages, streams);
}
