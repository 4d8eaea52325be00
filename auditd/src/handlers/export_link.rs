//! `GET /api/v1/logs/export/link`: a download link for an export ([`crate::auth::links`]),
//! so that a browser saves it straight to disk.

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;
use serde_json::json;

use crate::access::{Answer, Caller};
use crate::auth::links;
use crate::http::{self, ApiError};
use crate::query::{ExportRequest, Params};
use crate::state::App;

/// Answers with a link to the export `query` asks for, after checking it as the export
/// itself would (a bad filter is a 400 now, not a failed download later).
pub fn issue(app: &App, query: Option<&str>, caller: &Caller) -> Result<Answer, ApiError> {
    let raw = query.unwrap_or("");
    let mut params = Params::parse(Some(raw))?;
    for name in links::PARAMETERS {
        if params.take(name)?.is_some() {
            return Err(ApiError::bad_parameter(
                name,
                "is for links; ask without it",
            ));
        }
    }
    let filters = app.filters(&mut params)?;
    ExportRequest::parse(filters, params, false)?;
    let link = links::sign(&app.tokens.current(), &caller.name, raw)?;
    let expires_at = link.expires.and_then(|secs| {
        chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    });
    let mut response = http::json(
        StatusCode::OK,
        &json!({ "url": link.url, "expires_at": expires_at }),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Answer::plain(response))
}
