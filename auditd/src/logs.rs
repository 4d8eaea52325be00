//! `GET /api/v1/logs` and `GET /api/v1/logs/{id}`: pages of records, newest first by default.

use audit_layer::{AuditLog, RECORD_COLUMNS};
use hyper::StatusCode;
use tokio_postgres::Row;

use crate::app::{Access, Answer, App};
use crate::cursor::PageCursor;
use crate::filters::{Filters, Sql};
use crate::http::{self, ApiError};
use crate::params::{self, Params};

/// Records per page when `limit` is not given.
pub const DEFAULT_PAGE_ROWS: i64 = 100;
/// The largest `limit` a page may ask for.
pub const MAX_PAGE_ROWS: i64 = 1000;

/// Listing order: by `(created_at, id)`, descending (newest first) unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first (`order=desc`, the default).
    Newest,
    /// Oldest first (`order=asc`).
    Oldest,
}

impl Order {
    /// Takes the `order` parameter out of `params`; newest first when absent.
    pub fn take(params: &mut Params) -> Result<Order, ApiError> {
        Ok(params
            .take_parsed("order", |v| match v {
                "desc" => Ok(Order::Newest),
                "asc" => Ok(Order::Oldest),
                _ => Err("must be asc or desc".to_owned()),
            })?
            .unwrap_or(Order::Newest))
    }
}

/// Takes the `cursor` parameter out of `params`; an error when it is not a page cursor.
pub fn take_cursor(params: &mut Params) -> Result<Option<PageCursor>, ApiError> {
    params.take_parsed("cursor", |v| {
        PageCursor::decode(v).ok_or_else(|| "not a cursor given by this API".to_owned())
    })
}

/// The query for one page: the filters, the position after `cursor`, the order, `limit`.
pub fn page_sql(filters: &Filters, order: Order, cursor: Option<PageCursor>, limit: i64) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT id, {RECORD_COLUMNS} FROM audit_logs WHERE true"
    ));
    filters.push_conditions(&mut sql);
    let (after, direction) = match order {
        Order::Newest => ("<", "DESC"),
        Order::Oldest => (">", "ASC"),
    };
    if let Some(c) = cursor {
        let at = sql.bind(c.created_at);
        let id = sql.bind(c.id);
        sql.push(&format!(" AND (created_at, id) {after} ({at}, {id})"));
    }
    sql.push(&format!(
        " ORDER BY created_at {direction}, id {direction} LIMIT {limit}"
    ));
    sql
}

/// Appends a record as a JSON object, `{"id":...,<fields>[,"cursor":"..."]}`; returns
/// its page cursor.
pub fn write_record(
    out: &mut Vec<u8>,
    row: &Row,
    cursor: Option<&str>,
) -> Result<PageCursor, ApiError> {
    let id: i64 = row.try_get("id").map_err(|e| ApiError::database(&e))?;
    let log = AuditLog::from_row(row).map_err(|e| ApiError::database(&e))?;
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b',');
    log.write_json_fields(out);
    if let Some(cursor) = cursor {
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    Ok(PageCursor {
        created_at: log.created_at,
        id,
    })
}

/// `{"items":[<record>,...],"next_cursor":<string or null>}`: a page, as every listing
/// route answers it.
pub fn page_body(rows: &[Row], next_cursor: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(512 * rows.len() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_record(&mut body, row, None)?;
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    match next_cursor {
        // Cursors are hex: nothing to escape.
        Some(cursor) => {
            body.push(b'"');
            body.extend_from_slice(cursor.as_bytes());
            body.push(b'"');
        }
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(body)
}

/// The page cursor of a row, from its `created_at` and `id`.
pub fn row_cursor(row: &Row) -> Result<PageCursor, ApiError> {
    Ok(PageCursor {
        created_at: row
            .try_get("created_at")
            .map_err(|e| ApiError::database(&e))?,
        id: row.try_get("id").map_err(|e| ApiError::database(&e))?,
    })
}

/// Answers `GET /api/v1/logs`: a page of matching records and the cursor of the next.
pub async fn list(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let order = Order::take(&mut params)?;
    let limit = params
        .take_parsed("limit", params::limit(MAX_PAGE_ROWS))?
        .unwrap_or(DEFAULT_PAGE_ROWS);
    let cursor = take_cursor(&mut params)?;
    params.finish()?;

    // One row more than asked says whether there is a next page, without a COUNT.
    let sql = page_sql(&filters, order, cursor, limit + 1);
    let client = app.client().await?;
    let rows = client
        .query(&sql.text, &sql.params())
        .await
        .map_err(|e| ApiError::database(&e))?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];

    let next = match page.last() {
        Some(row) if more => Some(row_cursor(row)?.encode()),
        _ => None,
    };
    let body = page_body(page, next.as_deref())?;
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
    let sql = format!("SELECT id, {RECORD_COLUMNS} FROM audit_logs WHERE id = $1");
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .map_err(|e| ApiError::database(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no audit record with id {id}")))?;
    let mut body = Vec::with_capacity(1024);
    write_record(&mut body, &row, None)?;
    Ok(Answer {
        response: http::response(StatusCode::OK, http::JSON, body),
        access: Some(Access {
            filters: serde_json::json!({ "id": id }),
            rows: 1,
        }),
    })
}
