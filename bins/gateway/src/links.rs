//! Serving one admitted connection: everything it sends is routed and forwarded on its
//! own task. The three loops (requests, messages, streams) run side by side, and each item
//! is handed off at once, so a slow target never delays anything else.

use std::sync::Arc;
use std::time::Duration;

use proto_core::RegistrationKind;
use proto_core::name::Name;
use tether_tokio::{Connection, Error};

use crate::forward::{
    Budget, Source, TargetKind, forward_message, forward_request, forward_stream, refuse_message,
    refuse_request, refuse_stream,
};
use crate::hub::{EdgeSession, Hub, ServiceLink};
use crate::routing::RouteKey;

/// How long the gateway waits for the target of a stream to accept it (the SDK's default
/// operation timeout).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves a service: its calls, messages and streams go to the edge they address.
pub(crate) async fn serve_service(hub: Arc<Hub>, link: Arc<ServiceLink>) {
    let conn = link.conn.clone();
    let source = Source::service(&link.name);
    let requests = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            let budget = Budget::new();
            while let Some(request) = conn.next_request().await {
                let held = budget.take(request.body().len()).await;
                let id = request.address().peer_id;
                match hub.edge(id) {
                    Some(edge) => {
                        let target = edge.conn.clone();
                        tokio::spawn(forward_request(
                            held,
                            request,
                            target,
                            source.clone(),
                            TargetKind::Edge,
                        ));
                    }
                    None => refuse_request(request, edge_not_online(id)),
                }
            }
        }
    };
    let messages = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            let budget = Budget::new();
            while let Some(message) = conn.next_message().await {
                let held = budget.take(message.body().len()).await;
                let id = message.address().peer_id;
                let topic = Name::new(message.topic()).unwrap_or(Name::EMPTY);
                match hub.edge(id) {
                    Some(edge) => {
                        let target = edge.conn.clone();
                        tokio::spawn(forward_message(
                            held,
                            message,
                            target,
                            topic,
                            source.clone(),
                            TargetKind::Edge,
                        ));
                    }
                    None => refuse_message(message, edge_not_online(id)),
                }
            }
        }
    };
    let streams = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            while let Some(incoming) = conn.incoming_stream().await {
                let id = incoming.address().map_or(0, |a| a.peer_id);
                match hub.edge(id) {
                    Some(edge) => {
                        let target = edge.conn.clone();
                        let timeout = OPEN_TIMEOUT;
                        tokio::spawn(forward_stream(
                            incoming,
                            target,
                            source.clone(),
                            TargetKind::Edge,
                            timeout,
                        ));
                    }
                    None => refuse_stream(incoming, edge_not_online(id)),
                }
            }
        }
    };
    tokio::join!(requests, messages, streams);
}

fn edge_not_online(id: u64) -> Error {
    Error::EdgeNotOnline(format!("edge {id} is not online"))
}

/// Serves an edge: its calls go to a service that registered the method, its messages to
/// one that takes the topic, its streams to the service it names.
pub(crate) async fn serve_edge(hub: Arc<Hub>, session: Arc<EdgeSession>) {
    let conn: Connection = session.conn.clone();
    let key = RouteKey::for_edge(hub.config.hashby, session.id, session.addr.map(|a| a.ip()));
    let source = Source::edge(session.id);
    let requests = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            let budget = Budget::new();
            while let Some(request) = conn.next_request().await {
                let held = budget.take(request.body().len()).await;
                let method = request.method().to_owned();
                let wanted = request.address().peer_name.as_str().to_owned();
                let mut candidates = hub.services_with(RegistrationKind::Method, &method);
                if !wanted.is_empty() {
                    candidates.retain(|s| s.name == wanted);
                }
                match hub.pick(&candidates, key) {
                    Some(service) => {
                        let target = service.conn.clone();
                        tokio::spawn(forward_request(
                            held,
                            request,
                            target,
                            source.clone(),
                            TargetKind::Service,
                        ));
                    }
                    None if !wanted.is_empty() && hub.services_named(&wanted).is_empty() => {
                        refuse_request(
                            request,
                            Error::ServiceNotOnline(format!("no service {wanted:?} is connected")),
                        )
                    }
                    None => refuse_request(
                        request,
                        Error::MethodNotFound(format!("no service registered {method:?}")),
                    ),
                }
            }
        }
    };
    let messages = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            let budget = Budget::new();
            while let Some(message) = conn.next_message().await {
                let held = budget.take(message.body().len()).await;
                let topic_text = message.topic().to_owned();
                let candidates = hub.services_with(RegistrationKind::Topic, &topic_text);
                match hub.pick(&candidates, key) {
                    Some(service) => {
                        let target = service.conn.clone();
                        let topic = Name::new(&topic_text).unwrap_or(Name::EMPTY);
                        tokio::spawn(forward_message(
                            held,
                            message,
                            target,
                            topic,
                            source.clone(),
                            TargetKind::Service,
                        ));
                    }
                    None => refuse_message(
                        message,
                        Error::TopicNotFound(format!("no service takes {topic_text:?}")),
                    ),
                }
            }
        }
    };
    let streams = {
        let (hub, conn, source) = (Arc::clone(&hub), conn.clone(), source.clone());
        async move {
            while let Some(incoming) = conn.incoming_stream().await {
                let name = incoming
                    .address()
                    .map(|a| a.peer_name.as_str().to_owned())
                    .unwrap_or_default();
                let candidates = hub.services_named(&name);
                match hub.pick(&candidates, key) {
                    Some(service) => {
                        let target = service.conn.clone();
                        let timeout = OPEN_TIMEOUT;
                        tokio::spawn(forward_stream(
                            incoming,
                            target,
                            source.clone(),
                            TargetKind::Service,
                            timeout,
                        ));
                    }
                    None => refuse_stream(
                        incoming,
                        Error::ServiceNotOnline(format!("no service {name:?} is connected")),
                    ),
                }
            }
        }
    };
    tokio::join!(requests, messages, streams);
}
