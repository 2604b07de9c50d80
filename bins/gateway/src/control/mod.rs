//! The REST control plane (`docs/GATEWAY.md#control-plane`): listing, inspecting and
//! kicking edges and services, probes, Prometheus metrics and the OpenAPI document, all
//! JSON over HTTP/1.1 on `control_listen`.
//!
//! - `serve`: the listener, one function per accepted connection (any
//!   byte stream, so TLS can wrap it), limits and the request timeout;
//! - `auth`: the bearer token;
//! - `edges`, `services`: the resources;
//! - `openapi`: the routes and their OpenAPI description, generated from the handlers.

mod auth;
mod edges;
pub mod openapi;
mod serve;
mod services;

pub(crate) use serve::ControlPlane;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto_core::{Registration, RegistrationKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::hub::Hub;
use crate::metrics::CONTENT_TYPE;

/// What every handler shares.
#[derive(Clone, Debug)]
pub(crate) struct ControlState {
    /// The gateway's state.
    pub(crate) hub: Arc<Hub>,
    /// The OpenAPI document, rendered once.
    pub(crate) openapi: Arc<str>,
}

/// An error answer: `{"error": "...", "code": "..."}` with its HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for a person.
    error: String,
    /// What went wrong, for a program: `bad_id`, `bad_page_size`, `bad_page_token`,
    /// `bad_query`, `not_found`, `unauthorized` or `timeout`.
    code: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: a malformed request.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such peer.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no or a wrong bearer token.
    pub(crate) fn unauthorized() -> ApiError {
        let message = "this control plane requires Authorization: Bearer <token>";
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 503: the request took longer than the control plane allows.
    pub(crate) fn timeout() -> ApiError {
        let message = "the request did not complete in time";
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let bearer = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer);
        }
        response
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("bad_query", rejection.body_text())
    }
}

/// Parses a peer id from a path: a positive decimal number.
pub(crate) fn parse_id(text: &str) -> Result<u64, ApiError> {
    match text.parse::<u64>() {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(ApiError::bad_request(
            "bad_id",
            format!("{text:?} is not an id (a positive decimal number)"),
        )),
    }
}

/// Default page size of the lists.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size of the lists.
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

/// A page of `items` (sorted by id) after `page_token`: the page, and the token of the
/// next page when there is one. `page_token` is the last id of the previous page; clients
/// must treat it as opaque.
pub(crate) fn page<T>(
    items: Vec<(u64, T)>,
    page_size: Option<u32>,
    page_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        let message = format!("page_size must be 1..={MAX_PAGE_SIZE}, not {size}");
        return Err(ApiError::bad_request("bad_page_size", message));
    }
    let after = match page_token {
        None => 0,
        Some(token) => token.parse::<u64>().map_err(|_| {
            ApiError::bad_request("bad_page_token", format!("{token:?} is not a page token"))
        })?,
    };
    let mut rest = items.into_iter().filter(|(id, _)| *id > after).peekable();
    let mut page = Vec::new();
    let mut last = after;
    while page.len() < size as usize {
        let Some((id, item)) = rest.next() else { break };
        last = id;
        page.push(item);
    }
    let next = rest.peek().map(|_| last.to_string());
    Ok((page, next))
}

/// The names of `registrations` of `kind`, sorted.
pub(crate) fn names(registrations: &[Registration], kind: RegistrationKind) -> Vec<String> {
    let mut names: Vec<String> = registrations
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.name.as_str().to_owned())
        .collect();
    names.sort();
    names
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The answer of the probes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Probe {
    /// `ok` (healthz), `ready` or `draining` (readyz).
    status: &'static str,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "Alive", body = Probe)))]
pub(crate) async fn healthz() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

/// Readiness: 200 while the gateway takes new peers, 503 once shutdown (drain) began.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "Serving", body = Probe),
        (status = 503, description = "Shutting down: draining", body = Probe),
    ))]
pub(crate) async fn readyz(State(state): State<ControlState>) -> (StatusCode, Json<Probe>) {
    if state.hub.is_shutting_down() {
        let body = Probe { status: "draining" };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    } else {
        (StatusCode::OK, Json(Probe { status: "ready" }))
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "Every series", body = String,
            content_type = "application/openmetrics-text"),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn metrics(State(state): State<ControlState>) -> Response {
    let text = state.hub.metrics.encode();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of this API",
            content_type = "application/json"),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn openapi_json(State(state): State<ControlState>) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    (json, state.openapi.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_ids() {
        let items: Vec<(u64, u64)> = [3, 5, 9, 12].into_iter().map(|i| (i, i)).collect();
        let (first, next) = page(items.clone(), Some(2), None).unwrap();
        assert_eq!((first, next.as_deref()), (vec![3, 5], Some("5")));
        let (second, next) = page(items.clone(), Some(2), Some("5")).unwrap();
        assert_eq!((second, next), (vec![9, 12], None));
        let (all, next) = page(items.clone(), None, None).unwrap();
        assert_eq!((all.len(), next), (4, None));
        assert!(page(items.clone(), Some(0), None).is_err());
        assert!(page(items.clone(), Some(1001), None).is_err());
        assert!(page(items, None, Some("x")).is_err());
    }

    #[test]
    fn ids_are_positive_numbers() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in ["0", "-1", "x", "", "18446744073709551616"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}
