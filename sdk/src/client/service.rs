//! [`Service`]: a cloud microservice's connection to the gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Call, Publish, RegistrationKind, Role};

use crate::client::handler::{CallRequest, Handler, handler};
use crate::client::options::Options;
use crate::client::presence::{
    EDGE_ID_HOOK, EDGE_OFFLINE_HOOK, EDGE_ONLINE_HOOK, EdgeInfo, edge_id_handler, presence_handler,
};
use crate::client::{Client, ClientHandle, Setup, name};
use crate::connection::Connection;
use crate::error::Error;
use crate::exchange::Message;
use crate::runtime::{Dialer, Runtime};
use crate::stream::{IncomingStream, Stream};

/// A service's connection to the gateway: calls and messages to edges by id, methods and
/// topics edges reach it by, streams both ways, and presence hooks.
///
/// It reconnects by itself (unless [`ServiceBuilder::reconnect`] turns that off) and
/// re-registers everything on each new session. Operations started while disconnected wait
/// for the next session up to their timeout, then fail with [`Error::NotConnected`];
/// operations in flight when a session is lost fail with [`Error::ConnectionLost`] (their
/// outcome is unknown, so they are not retried behind your back).
///
/// Cloning is cheap; clones share the connection.
#[derive(Clone, Debug)]
pub struct Service {
    client: Arc<ClientHandle>,
}

/// Configures a [`Service`]; from [`Service::builder`].
pub struct ServiceBuilder {
    name: String,
    options: Options,
    topics: Vec<String>,
    handlers: Vec<(String, RegistrationKind, Handler)>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A builder for the service called `name` (the name edges open streams to).
    pub fn builder(name: &str) -> ServiceBuilder {
        ServiceBuilder {
            name: name.to_owned(),
            options: Options::default(),
            topics: Vec::new(),
            handlers: Vec::new(),
        }
    }

    /// Calls `method` on edge `edge_id` with the default timeout.
    pub async fn call(&self, edge_id: u64, method: &str, body: Bytes) -> Result<Bytes, Error> {
        self.call_with_timeout(edge_id, method, body, None).await
    }

    /// Calls `method` on edge `edge_id`; `timeout` bounds the whole call (including a wait
    /// for the connection). Dropping the future cancels the call on the edge.
    pub async fn call_with_timeout(
        &self,
        edge_id: u64,
        method: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error> {
        let mut call = Call::new(name(method)?, body);
        call.address = edge(edge_id);
        call.timeout = timeout;
        self.client.call(call).await
    }

    /// Sends a message to edge `edge_id` and waits for its acknowledgement: `Ok` when the
    /// edge says done, its error otherwise.
    pub async fn publish(&self, edge_id: u64, body: Bytes) -> Result<(), Error> {
        let mut publish = Publish::new(Name::EMPTY, body);
        publish.address = edge(edge_id);
        self.client.publish(publish).await
    }

    /// Sends a message to edge `edge_id` on `topic` and waits for its acknowledgement.
    pub async fn publish_topic(&self, edge_id: u64, topic: &str, body: Bytes) -> Result<(), Error> {
        let mut publish = Publish::new(name(topic)?, body);
        publish.address = edge(edge_id);
        self.client.publish(publish).await
    }

    /// Sends a message to edge `edge_id` without waiting for an acknowledgement (at most
    /// once); resolves when it is queued.
    pub async fn publish_fire_and_forget(&self, edge_id: u64, body: Bytes) -> Result<(), Error> {
        let mut publish = Publish::new(Name::EMPTY, body);
        publish.address = edge(edge_id);
        publish.ack = false;
        self.client.publish(publish).await
    }

    /// The next message an edge published on one of our topics; `None` once closed.
    /// Acknowledge it with [`Message::done`] or [`Message::error`].
    pub async fn receive(&self) -> Option<Message> {
        self.client.receive().await
    }

    /// Opens a stream to edge `edge_id` with open `metadata` (e.g. which of its exposed
    /// services); resolves when the edge accepts.
    pub async fn open_stream(&self, edge_id: u64, metadata: Bytes) -> Result<Stream, Error> {
        let (stream, _) = self
            .client
            .open_stream(edge(edge_id), metadata, None)
            .await?;
        Ok(stream)
    }

    /// The next stream an edge opened to this service, accepted; `None` once closed.
    pub async fn accept_stream(&self) -> Option<Stream> {
        self.client.accept_stream().await
    }

    /// The next stream an edge opened to this service, to accept or refuse.
    pub async fn incoming_stream(&self) -> Option<IncomingStream> {
        self.client.incoming_stream().await
    }

    /// Registers a method edges can call, now and after every reconnect.
    pub fn register<F, Fut>(&self, method: &str, f: F) -> Result<(), Error>
    where
        F: Fn(CallRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
    {
        self.client
            .register(method, RegistrationKind::Method, handler(f))
    }

    /// Removes a method.
    pub fn unregister(&self, method: &str) -> Result<(), Error> {
        self.client.unregister(method, RegistrationKind::Method)
    }

    /// Waits until connected (with reconnection off: fails if the attempt failed).
    pub async fn wait_connected(&self) -> Result<(), Error> {
        self.client.wait_connected().await
    }

    /// The current session, if connected.
    pub fn connection(&self) -> Option<Connection> {
        self.client.current()
    }

    /// The service id the gateway assigned in the current or last session.
    pub fn service_id(&self) -> Option<u64> {
        self.client.assigned_id()
    }

    /// Why the last connection attempt or session failed.
    pub fn last_error(&self) -> Option<Error> {
        self.client.last_error()
    }

    /// Closes gracefully: work in flight drains, then everything fails with
    /// [`Error::Closed`] and `receive` / `accept_stream` return `None`.
    pub async fn close(&self) {
        self.client.close().await
    }
}

fn edge(edge_id: u64) -> Address {
    Address {
        peer_id: edge_id,
        peer_name: Name::EMPTY,
    }
}

impl ServiceBuilder {
    /// Replaces all options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Edits the options in place.
    pub fn configure(mut self, edit: impl FnOnce(&mut Options)) -> Self {
        edit(&mut self.options);
        self
    }

    /// The authentication token for the gateway's auth hook.
    pub fn token(mut self, token: impl Into<Bytes>) -> Self {
        self.options.token = token.into();
        self
    }

    /// The service's version, for version-aware routing.
    pub fn version(mut self, version: &str) -> Self {
        self.options.version = version.to_owned();
        self
    }

    /// Whether to reconnect after losing the connection (default `true`).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.options.reconnect = reconnect;
        self
    }

    /// Receives messages edges publish on `topic`.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topics.push(topic.to_owned());
        self
    }

    /// A method edges can call.
    pub fn method<F, Fut>(mut self, method: &str, f: F) -> Self
    where
        F: Fn(CallRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
    {
        self.handlers
            .push((method.to_owned(), RegistrationKind::Method, handler(f)));
        self
    }

    /// The edge-id hook: the gateway asks this service which id a connecting edge gets,
    /// from its metadata and the id it asked for. An error rejects the edge with that error.
    pub fn edge_id_hook<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(EdgeInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, Error>> + Send + 'static,
    {
        self.handlers.push((
            EDGE_ID_HOOK.to_owned(),
            RegistrationKind::Hook,
            edge_id_handler(f),
        ));
        self
    }

    /// Called when an edge comes online. An error disconnects the edge with that error.
    pub fn on_edge_online<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(EdgeInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.handlers.push((
            EDGE_ONLINE_HOOK.to_owned(),
            RegistrationKind::Hook,
            presence_handler(f),
        ));
        self
    }

    /// Called when an edge goes offline.
    pub fn on_edge_offline<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(EdgeInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.handlers.push((
            EDGE_OFFLINE_HOOK.to_owned(),
            RegistrationKind::Hook,
            presence_handler(f),
        ));
        self
    }

    /// Starts the service on `runtime`, connecting through `dialer` in the background.
    /// Fails only on invalid names.
    pub fn start(self, runtime: Arc<dyn Runtime>, dialer: Dialer) -> Result<Service, Error> {
        let setup = Setup {
            role: Role::Service,
            name: name(&self.name)?,
            options: self.options,
            requested_id: None,
            topics: self
                .topics
                .iter()
                .map(|t| name(t))
                .collect::<Result<_, _>>()?,
            handlers: self
                .handlers
                .into_iter()
                .map(|(method, kind, handler)| Ok((name(&method)?, kind, handler)))
                .collect::<Result<_, Error>>()?,
        };
        Ok(Service {
            client: Arc::new(ClientHandle(Client::start(runtime, dialer, setup))),
        })
    }
}
