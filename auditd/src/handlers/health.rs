//! `/healthz` (the process answers) and `/readyz` (the database answers too).

use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::json;

use crate::http::{self, Body};
use crate::state::App;

/// Answers `/healthz`: the process is up (the database is not asked).
pub fn healthz() -> Response<Body> {
    http::json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Answers `/readyz`: 200 when the database answers `SELECT 1` within 2 s, else 503.
pub async fn readyz(app: &App) -> Response<Body> {
    let check = async {
        let client = app.client().await.map_err(|e| e.message)?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| audit_layer::describe_db_error(&e))
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => http::json(StatusCode::OK, &json!({ "status": "ready" })),
        Ok(Err(error)) => http::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": error }),
        ),
        Err(_) => http::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": "the database did not answer within 2s" }),
        ),
    }
}
