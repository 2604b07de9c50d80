//! [`Edge`]: a device's or client's connection to the gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Address, Call, Publish, RegistrationKind, Role};

use crate::client::handler::{CallRequest, Handler, handler};
use crate::client::options::Options;
use crate::client::{Client, ClientHandle, Setup, name};
use crate::connection::Connection;
use crate::error::Error;
use crate::exchange::Message;
use crate::runtime::{Dialer, Runtime};
use crate::stream::{IncomingStream, Stream};

/// An edge's connection to the gateway: calls to methods services registered, messages to
/// topics, streams to and from services, and methods services can call on it.
///
/// It reconnects by itself (unless [`EdgeBuilder::reconnect`] turns that off), asking for
/// the id it had so it keeps its identity, and re-registers its methods on each new
/// session. Operations started while disconnected wait for the next session up to their
/// timeout, then fail with [`Error::NotConnected`].
///
/// Cloning is cheap; clones share the connection.
#[derive(Clone, Debug)]
pub struct Edge {
    client: Arc<ClientHandle>,
}

/// Configures an [`Edge`]; from [`Edge::builder`].
pub struct EdgeBuilder {
    options: Options,
    requested_id: Option<u64>,
    handlers: Vec<(String, Handler)>,
}

impl std::fmt::Debug for EdgeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeBuilder")
            .field("requested_id", &self.requested_id)
            .finish_non_exhaustive()
    }
}

fn service(name: Name) -> Address {
    Address {
        peer_id: 0,
        peer_name: name,
    }
}

impl Edge {
    /// A builder with default options.
    pub fn builder() -> EdgeBuilder {
        EdgeBuilder {
            options: Options::default(),
            requested_id: None,
            handlers: Vec::new(),
        }
    }

    /// Calls `method` on whichever service registered it, with the default timeout.
    pub async fn call(&self, method: &str, body: Bytes) -> Result<Bytes, Error> {
        self.call_service(None, method, body, None).await
    }

    /// Calls `method`, on the service named `service` if given; `timeout` bounds the
    /// whole call. Dropping the future cancels the call on the service.
    pub async fn call_service(
        &self,
        service_name: Option<&str>,
        method: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error> {
        let mut call = Call::new(name(method)?, body);
        if let Some(s) = service_name {
            call.address = service(name(s)?);
        }
        call.timeout = timeout;
        self.client.call(call).await
    }

    /// Publishes on `topic` and waits for the receiving service (or external MQ) to
    /// acknowledge: `Ok` on done, its error otherwise.
    pub async fn publish(&self, topic: &str, body: Bytes) -> Result<(), Error> {
        self.client.publish(Publish::new(name(topic)?, body)).await
    }

    /// Publishes on `topic` without waiting for an acknowledgement (at most once);
    /// resolves when queued.
    pub async fn publish_fire_and_forget(&self, topic: &str, body: Bytes) -> Result<(), Error> {
        let mut publish = Publish::new(name(topic)?, body);
        publish.ack = false;
        self.client.publish(publish).await
    }

    /// The next message a service sent to this edge; `None` once closed. Acknowledge it
    /// with [`Message::done`] or [`Message::error`].
    pub async fn receive(&self) -> Option<Message> {
        self.client.receive().await
    }

    /// Opens a stream to the service named `service_name` with open `metadata`; resolves
    /// when the service accepts.
    pub async fn open_stream(&self, service_name: &str, metadata: Bytes) -> Result<Stream, Error> {
        let address = service(name(service_name)?);
        let (stream, _) = self.client.open_stream(address, metadata, None).await?;
        Ok(stream)
    }

    /// The next stream a service opened to this edge, accepted; `None` once closed.
    pub async fn accept_stream(&self) -> Option<Stream> {
        self.client.accept_stream().await
    }

    /// The next stream a service opened to this edge, to accept or refuse (e.g. with
    /// `NOT_FOUND` for an exposed service that does not exist).
    pub async fn incoming_stream(&self) -> Option<IncomingStream> {
        self.client.incoming_stream().await
    }

    /// Registers a method services can call, now and after every reconnect.
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

    /// The id the gateway assigned in the current or last session.
    pub fn edge_id(&self) -> Option<u64> {
        self.client.assigned_id()
    }

    /// The current session, if connected.
    pub fn connection(&self) -> Option<Connection> {
        self.client.current()
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

impl EdgeBuilder {
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

    /// Metadata for the gateway's hooks (a serial number, a device model, ...).
    pub fn metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.options.metadata = metadata.into();
        self
    }

    /// The authentication token for the gateway's auth hook.
    pub fn token(mut self, token: impl Into<Bytes>) -> Self {
        self.options.token = token.into();
        self
    }

    /// The edge's software version.
    pub fn version(mut self, version: &str) -> Self {
        self.options.version = version.to_owned();
        self
    }

    /// The edge id to ask for (the gateway or a service's edge-id hook decides).
    pub fn edge_id(mut self, id: u64) -> Self {
        self.requested_id = Some(id);
        self
    }

    /// Whether to reconnect after losing the connection (default `true`).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.options.reconnect = reconnect;
        self
    }

    /// A method services can call on this edge.
    pub fn method<F, Fut>(mut self, method: &str, f: F) -> Self
    where
        F: Fn(CallRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
    {
        self.handlers.push((method.to_owned(), handler(f)));
        self
    }

    /// Starts the edge on `runtime`, connecting through `dialer` in the background. Fails
    /// only on invalid names.
    pub fn start(self, runtime: Arc<dyn Runtime>, dialer: Dialer) -> Result<Edge, Error> {
        let setup = Setup {
            role: Role::Edge,
            name: Name::EMPTY,
            options: self.options,
            requested_id: self.requested_id,
            topics: Vec::new(),
            handlers: self
                .handlers
                .into_iter()
                .map(|(method, handler)| Ok((name(&method)?, RegistrationKind::Method, handler)))
                .collect::<Result<_, Error>>()?,
        };
        Ok(Edge {
            client: Arc::new(ClientHandle(Client::start(runtime, dialer, setup))),
        })
    }
}
