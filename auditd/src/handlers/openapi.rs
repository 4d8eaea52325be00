//! `GET /api/v1/openapi.json`: the OpenAPI 3 document describing every route.

use hyper::{Response, StatusCode};

use crate::http::{self, Body};

/// The document, embedded; a test checks it against the route table.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Answers `GET /api/v1/openapi.json` with `DOCUMENT`.
pub fn document() -> Response<Body> {
    http::response(StatusCode::OK, http::JSON, DOCUMENT)
}
