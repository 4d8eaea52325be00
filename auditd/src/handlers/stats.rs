//! `GET /api/v1/stats`: how many records by event type and by severity in a time window.

use audit_layer::Severity;
use chrono::{Duration, Utc};
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use crate::access::{Access, Answer};
use crate::http::{self, ApiError};
use crate::query::{Params, Sql};
use crate::state::App;

/// Answers `GET /api/v1/stats`; without `since` and `until`, the window is the last 24 hours.
pub async fn stats(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let mut filters = app.filters(&mut params)?;
    params.finish()?;
    // Without a window, the last 24 hours: a count over all history is rarely what is meant,
    // and never cheap.
    let (since, until) = filters.window();
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or(until - Duration::hours(24));
    filters.set_window(since, until);

    let mut sql = Sql::new("SELECT event_type, severity, count(*) FROM audit_logs WHERE true");
    filters.push_conditions(&mut sql);
    sql.push(" GROUP BY GROUPING SETS ((event_type), (severity))");
    let client = app.client().await?;
    let rows = client
        .query(&sql.text, &sql.params())
        .await
        .map_err(|e| ApiError::database(&e))?;

    let mut by_event_type = Map::new();
    let mut by_severity: Map<String, Value> = Severity::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), json!(0)))
        .collect();
    let mut total = 0i64;
    for row in &rows {
        let event_type: Option<String> = row.get(0);
        let severity: Option<String> = row.get(1);
        let count: i64 = row.get(2);
        match (event_type, severity) {
            (Some(e), None) => {
                total += count;
                by_event_type.insert(e, json!(count));
            }
            (None, Some(s)) => {
                by_severity.insert(s, json!(count));
            }
            _ => {}
        }
    }
    let body = json!({
        "since": since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "until": until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "total": total,
        "by_event_type": by_event_type,
        "by_severity": by_severity,
    });
    Ok(Answer {
        response: http::json(StatusCode::OK, &body),
        access: Some(Access {
            filters: filters.describe(),
            rows: 0,
        }),
    })
}
