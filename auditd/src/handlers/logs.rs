//! `GET /api/v1/logs` and `GET /api/v1/logs/{id}`: pages of records, newest first by default.

use hyper::StatusCode;
use tokio_postgres::error::SqlState;

use crate::access::{Access, Answer};
use crate::http::{self, ApiError};
use crate::query::records::{self, Order, DEFAULT_PAGE_ROWS, MAX_PAGE_ROWS};
use crate::query::{self, Params};
use crate::state::App;

/// Answers `GET /api/v1/logs`: a page of matching records and the cursor of the next.
pub async fn list(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let order = Order::take(&mut params)?;
    let limit = params
        .take_parsed("limit", query::limit(MAX_PAGE_ROWS))?
        .unwrap_or(DEFAULT_PAGE_ROWS);
    let cursor = records::take_cursor(&mut params)?;
    let mut seal_status = params.take_bool("seal_status")?.unwrap_or(false);
    params.finish()?;

    // One row more than asked says whether there is a next page, without a COUNT.
    let sql = if seal_status {
        records::page_with_seal_status_sql(&filters, order, cursor, Some(limit + 1))
    } else {
        records::page_sql(&filters, order, cursor, Some(limit + 1))
    };
    let client = app.client().await?;
    let rows = match client.query(&sql.text, &sql.params()).await {
        Ok(rows) => rows,
        // A role granted audit_logs alone cannot read the ledger: the records without it.
        Err(e) if seal_status && e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            seal_status = false;
            let sql = records::page_sql(&filters, order, cursor, Some(limit + 1));
            client
                .query(&sql.text, &sql.params())
                .await
                .map_err(|e| ApiError::database(&e))?
        }
        Err(e) => return Err(ApiError::database(&e)),
    };
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];

    let next = match page.last() {
        Some(row) if more => Some(records::row_cursor(row)?.encode()),
        _ => None,
    };
    let body = if seal_status {
        records::page_body_with_seal_status(page, next.as_deref())?
    } else {
        records::page_body(page, next.as_deref())?
    };
    Ok(Answer {
        response: http::response(StatusCode::OK, http::JSON, body),
        access: Some(Access {
            filters: filters.describe(),
            rows: page.len() as u64,
        }),
    })
}

/// Answers `GET /api/v1/logs/{id}`: one record, or 404.
pub async fn by_id(app: &App, id: &str, params: Params) -> Result<Answer, ApiError> {
    params.finish()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_parameter("id", "must be an integer"))?;
    let client = app.client().await?;
    let row = client
        .query_opt(&records::by_id_sql(), &[&id])
        .await
        .map_err(|e| ApiError::database(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no audit record with id {id}")))?;
    let mut body = Vec::with_capacity(1024);
    records::write_record(&mut body, &row, None)?;
    Ok(Answer {
        response: http::response(StatusCode::OK, http::JSON, body),
        access: Some(Access {
            filters: serde_json::json!({ "id": id }),
            rows: 1,
        }),
    })
}
