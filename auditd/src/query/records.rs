//! Reading records: the SQL of a page and of the commit-order tail, the cursors that say
//! where each left off, and a row as the JSON every route answers with. Listing, export and
//! both tails share these, so a record looks the same and a cursor means the same
//! wherever it comes from.
//!
//! Identity values are not handed out in commit order: a batch holding ids 100..199 can
//! commit after one holding 200..299, so "id > last seen" skips rows. The tails follow
//! `(tx_id, id)` instead, and only up to the horizon `pg_snapshot_xmin(pg_current_snapshot())`:
//! every transaction below it has finished, so no row can still appear behind the cursor
//! (migration 0002). A transaction still open holds the horizon back; its rows, and those
//! committed after it, are delivered once it ends: late, never lost.

use audit_layer::{AuditLog, RECORD_COLUMNS};
use tokio_postgres::{Client, Row};

use super::cursor::{PageCursor, TailCursor};
use super::filters::Filters;
use super::params::Params;
use super::sql::Sql;
use crate::http::ApiError;

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

/// The query for one record by its id (`$1`).
pub fn by_id_sql() -> String {
    format!("SELECT id, {RECORD_COLUMNS} FROM audit_logs WHERE id = $1")
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

/// The committed rows after `cursor` (from the horizon when `None`), in commit order,
/// at most `limit`, and the cursor after them.
pub async fn committed_after(
    client: &Client,
    filters: &Filters,
    cursor: Option<TailCursor>,
    limit: i64,
) -> Result<(Vec<Row>, TailCursor), tokio_postgres::Error> {
    let horizon: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .get(0);
    // Without a cursor, start at the horizon: rows committed from now on.
    let start = cursor.unwrap_or(TailCursor {
        tx_id: horizon - 1,
        id: i64::MAX,
    });
    let mut sql = Sql::new(&format!(
        "SELECT id, tx_id, {RECORD_COLUMNS} FROM audit_logs WHERE true"
    ));
    let (tx, id, h) = (sql.bind(start.tx_id), sql.bind(start.id), sql.bind(horizon));
    // `tx_id >= ...` lets the BRIN index skip old pages; the row comparison does the rest.
    sql.push(&format!(
        " AND tx_id >= {tx} AND tx_id < {h} AND (tx_id, id) > ({tx}, {id})"
    ));
    filters.push_conditions(&mut sql);
    sql.push(&format!(" ORDER BY tx_id, id LIMIT {limit}"));
    let rows = client.query(&sql.text, &sql.params()).await?;
    let next = match rows.last() {
        Some(row) if rows.len() as i64 == limit => TailCursor {
            tx_id: row.get("tx_id"),
            id: row.get("id"),
        },
        // Everything below the horizon has been seen: move the cursor up to it, so the next
        // query starts there.
        _ => TailCursor {
            tx_id: horizon - 1,
            id: i64::MAX,
        }
        .max_with(start),
    };
    Ok((rows, next))
}

/// Takes the tail cursor from the `cursor` parameter, or else from the `Last-Event-ID`
/// header an event stream's client sends when it reconnects.
pub fn take_tail_cursor(
    params: &mut Params,
    header: Option<String>,
) -> Result<Option<TailCursor>, ApiError> {
    let from_param = params.take_parsed("cursor", |v| {
        TailCursor::decode(v).ok_or_else(|| "not a tail cursor given by this API".to_owned())
    })?;
    // The header is checked even when the parameter wins: a malformed one is refused,
    // not ignored.
    let from_header = header
        .map(|h| {
            TailCursor::decode(&h).ok_or_else(|| {
                ApiError::bad_parameter("Last-Event-ID", "not an event id given by this API")
            })
        })
        .transpose()?;
    Ok(from_param.or(from_header))
}

/// The tail cursor of a row read by [`committed_after`].
pub fn tail_cursor_of(row: &Row) -> TailCursor {
    TailCursor {
        tx_id: row.get("tx_id"),
        id: row.get("id"),
    }
}
