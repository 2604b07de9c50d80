//! `/v1/edges`: list, get and kick connected edges, and list an edge's methods.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proto_core::RegistrationKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::serve::Peer;
use super::{ApiError, ControlState, ErrorBody, names, page, parse_id, unix_ms};
use crate::hub::EdgeSession;

/// An online edge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EdgeItem {
    /// Its edge id.
    id: u64,
    /// Its address as the gateway sees it (`ip:port`).
    addr: Option<String>,
    /// The metadata of its HELLO as text, when it is valid UTF-8; else null.
    metadata: Option<String>,
    /// The metadata of its HELLO, base64 (standard alphabet, padded): always exact.
    metadata_base64: String,
    /// When this session was admitted, in milliseconds since the Unix epoch.
    connected_at: u64,
    /// The methods it registered (services can call them), sorted.
    methods: Vec<String>,
}

/// A page of edges.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EdgePage {
    /// The edges of this page, by ascending id.
    items: Vec<EdgeItem>,
    /// How many edges match the filter (on every page).
    total: usize,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// The methods of one edge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EdgeMethods {
    /// The edge id.
    id: u64,
    /// The methods it registered, sorted.
    methods: Vec<String>,
}

/// Filters and paging of `GET /v1/edges`; filters combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EdgeQuery {
    /// Only edges whose metadata (read as UTF-8, invalid bytes replaced) contains this.
    meta: Option<String>,
    /// Only edges whose address (`ip:port`) contains this.
    addr: Option<String>,
    /// Only edges that registered this method (exact name).
    method: Option<String>,
    /// Edges per page, 1..=1000 (default 100).
    page_size: Option<u32>,
    /// The `next_page_token` of the previous page (opaque).
    page_token: Option<String>,
}

fn item(edge: &EdgeSession) -> EdgeItem {
    let registrations = edge.conn.peer_registrations();
    EdgeItem {
        id: edge.id,
        addr: edge.addr.map(|a| a.to_string()),
        metadata: std::str::from_utf8(&edge.metadata).ok().map(str::to_owned),
        metadata_base64: BASE64.encode(&edge.metadata),
        connected_at: unix_ms(edge.connected_at),
        methods: names(&registrations, RegistrationKind::Method),
    }
}

fn matches(edge: &EdgeSession, query: &EdgeQuery) -> bool {
    let meta = query
        .meta
        .as_deref()
        .is_none_or(|wanted| String::from_utf8_lossy(&edge.metadata).contains(wanted));
    let addr = query
        .addr
        .as_deref()
        .is_none_or(|wanted| edge.addr.is_some_and(|a| a.to_string().contains(wanted)));
    let method = query.method.as_deref().is_none_or(|wanted| {
        edge.conn
            .peer_registrations()
            .iter()
            .any(|r| r.kind == RegistrationKind::Method && r.name.as_str() == wanted)
    });
    meta && addr && method
}

/// The online edge `id` (a kicked one whose connection is ending is gone already).
fn online(state: &ControlState, id: &str) -> Result<Arc<EdgeSession>, ApiError> {
    let id = parse_id(id)?;
    let edge = state.hub.edge(id).filter(|e| !e.conn.is_closed());
    edge.ok_or_else(|| ApiError::not_found(format!("edge {id} is not online")))
}

/// Lists the online edges, by ascending id.
#[utoipa::path(get, path = "/v1/edges", tag = "edges", params(EdgeQuery),
    responses(
        (status = 200, description = "A page of edges", body = EdgePage),
        (status = 400, description = "A bad filter, page_size or page_token", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<ControlState>,
    query: Result<Query<EdgeQuery>, QueryRejection>,
) -> Result<Json<EdgePage>, ApiError> {
    let Query(query) = query?;
    let mut edges: Vec<(u64, Arc<EdgeSession>)> = state
        .hub
        .edges()
        .into_iter()
        .filter(|e| !e.conn.is_closed() && matches(e, &query))
        .map(|e| (e.id, e))
        .collect();
    edges.sort_by_key(|(id, _)| *id);
    let total = edges.len();
    let (edges, next_page_token) = page(edges, query.page_size, query.page_token.as_deref())?;
    Ok(Json(EdgePage {
        items: edges.iter().map(|e| item(e)).collect(),
        total,
        next_page_token,
    }))
}

/// One online edge.
#[utoipa::path(get, path = "/v1/edges/{id}", tag = "edges",
    params(("id" = u64, Path, description = "The edge id")),
    responses(
        (status = 200, description = "The edge", body = EdgeItem),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "Not online", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<ControlState>,
    Path(id): Path<String>,
) -> Result<Json<EdgeItem>, ApiError> {
    let peer = online(&state, &id)?;
    Ok(Json(item(&peer)))
}

/// The methods an online edge registered.
#[utoipa::path(get, path = "/v1/edges/{id}/methods", tag = "edges",
    params(("id" = u64, Path, description = "The edge id")),
    responses(
        (status = 200, description = "Its methods", body = EdgeMethods),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "Not online", body = ErrorBody),
    ))]
pub(crate) async fn methods(
    State(state): State<ControlState>,
    Path(id): Path<String>,
) -> Result<Json<EdgeMethods>, ApiError> {
    let edge = online(&state, &id)?;
    let methods = names(&edge.conn.peer_registrations(), RegistrationKind::Method);
    Ok(Json(EdgeMethods {
        id: edge.id,
        methods,
    }))
}

/// Kicks an edge: its connection closes at once with `KICKED` ("kicked by the
/// operator"). Idempotent: 204 whether it was online, already kicked or never there.
#[utoipa::path(delete, path = "/v1/edges/{id}", tag = "edges",
    params(("id" = u64, Path, description = "The edge id")),
    responses(
        (status = 204, description = "Kicked, or not online"),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn kick(
    State(state): State<ControlState>,
    Extension(Peer(who)): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let kicked = state.hub.kick_edge(id);
    tracing::info!(role = "edge", id, %who, kicked, "kick");
    Ok(StatusCode::NO_CONTENT)
}
