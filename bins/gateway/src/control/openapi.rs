//! The control plane's routes and their OpenAPI 3.1 description, both generated from the
//! handlers' `#[utoipa::path]` attributes (utoipa-axum registers the route and its
//! description together), so they cannot drift. `docs/openapi.json` is a copy, checked by
//! a test (`TETHER_UPDATE_OPENAPI=1` rewrites it).

use axum::middleware::from_fn_with_state;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Token};
use super::{ControlState, edges, services};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tether gateway control plane",
        version = "1",
        description = "Lists, inspects and kicks the edges and services connected to a \
            Tether gateway; probes, Prometheus metrics and this document. With a control \
            token configured, every route but /healthz and /readyz needs \
            `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "edges", description = "Connected edges"),
        (name = "services", description = "Connected services"),
        (name = "probes", description = "Liveness and readiness (never authenticated)"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "meta", description = "This description"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme the document's `security` refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The routes that need the token (when one is set), and the probes, which never do.
fn routes() -> (OpenApiRouter<ControlState>, OpenApiRouter<ControlState>) {
    let guarded = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(edges::list))
        .routes(routes!(edges::get, edges::kick))
        .routes(routes!(edges::methods))
        .routes(routes!(services::list))
        .routes(routes!(services::get, services::kick))
        .routes(routes!(services::methods))
        .routes(routes!(services::topics))
        .routes(routes!(super::metrics))
        .routes(routes!(super::openapi_json));
    let probes = OpenApiRouter::new()
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz));
    (guarded, probes)
}

/// The OpenAPI description of the control plane.
pub fn document() -> Document {
    let (guarded, probes) = routes();
    guarded.merge(probes).into_openapi()
}

/// [`document`] as pretty JSON with a final newline (the form of `docs/openapi.json`).
pub fn to_json() -> String {
    // Serialising a document of strings and maps does not fail.
    let mut json = document().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The control plane's router over `state`; with `token`, all but the probes need it.
pub(crate) fn router(state: ControlState, token: Option<Token>) -> axum::Router {
    let (mut guarded, probes) = routes();
    if let Some(token) = token {
        guarded = guarded.layer(from_fn_with_state(token, auth::require));
    }
    let (router, _) = guarded.merge(probes).split_for_parts();
    router.with_state(state)
}
