//! `/v1/services`: list, get and kick connected services, and the methods and topics
//! they offer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use proto_core::RegistrationKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::serve::Peer;
use super::{ApiError, ControlState, ErrorBody, names, page, parse_id, unix_ms};
use crate::hub::ServiceLink;

/// A connected service.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceItem {
    /// The id the gateway gave it.
    id: u64,
    /// Its name.
    name: String,
    /// Its address as the gateway sees it (`ip:port`).
    addr: String,
    /// When it was admitted, in milliseconds since the Unix epoch.
    connected_at: u64,
    /// The methods it registered (edges can call them), sorted.
    methods: Vec<String>,
    /// The topics it takes messages for, sorted.
    topics: Vec<String>,
}

/// A page of services.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServicePage {
    /// The services of this page, by ascending id.
    items: Vec<ServiceItem>,
    /// How many services match the filter (on every page).
    total: usize,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// A method or topic, with how many services offer it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NameCount {
    /// The method or topic.
    name: String,
    /// How many connected services registered it.
    services: usize,
}

/// The distinct methods or topics of the connected services.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NameCounts {
    /// By name.
    items: Vec<NameCount>,
    /// How many distinct names.
    total: usize,
}

/// Filters and paging of `GET /v1/services`; filters combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ServiceQuery {
    /// Only services with this name (exact).
    name: Option<String>,
    /// Only services that registered this method (exact).
    method: Option<String>,
    /// Only services that take this topic (exact).
    topic: Option<String>,
    /// Services per page, 1..=1000 (default 100).
    page_size: Option<u32>,
    /// The `next_page_token` of the previous page (opaque).
    page_token: Option<String>,
}

/// The filter of `GET /v1/services/methods` and `/topics`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NamesQuery {
    /// Only the services with this name (exact).
    service: Option<String>,
}

fn item(service: &ServiceLink) -> ServiceItem {
    let registrations = service.conn.peer_registrations();
    ServiceItem {
        id: service.id,
        name: service.name.clone(),
        addr: service.addr.to_string(),
        connected_at: unix_ms(service.connected_at),
        methods: names(&registrations, RegistrationKind::Method),
        topics: names(&registrations, RegistrationKind::Topic),
    }
}

fn matches(service: &ServiceLink, query: &ServiceQuery) -> bool {
    let name = query.name.as_deref().is_none_or(|n| service.name == n);
    let method = query.method.as_deref();
    let method = method.is_none_or(|m| service.has(RegistrationKind::Method, m));
    let topic = query.topic.as_deref();
    let topic = topic.is_none_or(|t| service.has(RegistrationKind::Topic, t));
    name && method && topic
}

/// The connected services, without those whose connection is ending (kicked), by id.
fn connected(state: &ControlState) -> Vec<Arc<ServiceLink>> {
    let mut services = state.hub.services();
    services.retain(|s| !s.conn.is_closed());
    services
}

fn found(state: &ControlState, id: &str) -> Result<Arc<ServiceLink>, ApiError> {
    let id = parse_id(id)?;
    let service = state.hub.service(id);
    service.ok_or_else(|| ApiError::not_found(format!("service {id} is not connected")))
}

/// Lists the connected services, by ascending id.
#[utoipa::path(get, path = "/v1/services", tag = "services", params(ServiceQuery),
    responses(
        (status = 200, description = "A page of services", body = ServicePage),
        (status = 400, description = "A bad filter, page_size or page_token", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<ControlState>,
    query: Result<Query<ServiceQuery>, QueryRejection>,
) -> Result<Json<ServicePage>, ApiError> {
    let Query(query) = query?;
    let services: Vec<(u64, Arc<ServiceLink>)> = connected(&state)
        .into_iter()
        .filter(|s| matches(s, &query))
        .map(|s| (s.id, s))
        .collect();
    let total = services.len();
    let (services, next_page_token) = page(services, query.page_size, query.page_token.as_deref())?;
    Ok(Json(ServicePage {
        items: services.iter().map(|s| item(s)).collect(),
        total,
        next_page_token,
    }))
}

/// One connected service.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "services",
    params(("id" = u64, Path, description = "The service id")),
    responses(
        (status = 200, description = "The service", body = ServiceItem),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "Not connected", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<ControlState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceItem>, ApiError> {
    let peer = found(&state, &id)?;
    Ok(Json(item(&peer)))
}

/// Kicks a service: its connection closes at once with `KICKED` ("kicked by the
/// operator"). Idempotent: 204 whether it was connected, already kicked or never there.
#[utoipa::path(delete, path = "/v1/services/{id}", tag = "services",
    params(("id" = u64, Path, description = "The service id")),
    responses(
        (status = 204, description = "Kicked, or not connected"),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn kick(
    State(state): State<ControlState>,
    Extension(Peer(who)): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let kicked = state.hub.kick_service(id);
    tracing::info!(role = "service", id, %who, kicked, "kick");
    Ok(StatusCode::NO_CONTENT)
}

fn counts(state: &ControlState, query: &NamesQuery, kind: RegistrationKind) -> NameCounts {
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let wanted = query.service.as_deref();
    for service in connected(state) {
        if wanted.is_some_and(|w| service.name != w) {
            continue;
        }
        let mut own = names(&service.conn.peer_registrations(), kind);
        own.dedup();
        for name in own {
            *by_name.entry(name).or_default() += 1;
        }
    }
    let items: Vec<NameCount> = by_name
        .into_iter()
        .map(|(name, services)| NameCount { name, services })
        .collect();
    NameCounts {
        total: items.len(),
        items,
    }
}

/// The distinct methods services registered, with how many services offer each.
#[utoipa::path(get, path = "/v1/services/methods", tag = "services", params(NamesQuery),
    responses(
        (status = 200, description = "Methods by name", body = NameCounts),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn methods(
    State(state): State<ControlState>,
    query: Result<Query<NamesQuery>, QueryRejection>,
) -> Result<Json<NameCounts>, ApiError> {
    let Query(query) = query?;
    Ok(Json(counts(&state, &query, RegistrationKind::Method)))
}

/// The distinct topics services take, with how many services take each.
#[utoipa::path(get, path = "/v1/services/topics", tag = "services", params(NamesQuery),
    responses(
        (status = 200, description = "Topics by name", body = NameCounts),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn topics(
    State(state): State<ControlState>,
    query: Result<Query<NamesQuery>, QueryRejection>,
) -> Result<Json<NameCounts>, ApiError> {
    let Query(query) = query?;
    Ok(Json(counts(&state, &query, RegistrationKind::Topic)))
}
