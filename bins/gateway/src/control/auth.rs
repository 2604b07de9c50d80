//! The control plane's bearer token: with `control_token` set, every route but the probes
//! needs `Authorization: Bearer <token>`; the comparison takes the same time wherever the
//! first differing byte is (only the length can show).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// The token a request must carry.
#[derive(Clone, Debug)]
pub(crate) struct Token(pub(crate) Arc<[u8]>);

/// The credentials of `Authorization: Bearer <credentials>` (the scheme in any case).
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

/// Answers 401 (with `WWW-Authenticate: Bearer`) unless the request carries the token.
pub(crate) async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    let allowed = bearer(&request).is_some_and(|given| bool::from(given.ct_eq(&token.0)));
    if allowed {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}
