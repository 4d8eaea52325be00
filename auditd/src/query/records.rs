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

use audit_layer::integrity::{stored_record, StoredRecord, STORED_RECORD_COLUMNS};
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
pub fn page_sql(
    filters: &Filters,
    order: Order,
    cursor: Option<PageCursor>,
    limit: Option<i64>,
) -> Sql {
    page_sql_of(
        &format!("id, {STORED_RECORD_COLUMNS}"),
        filters,
        order,
        cursor,
        limit,
    )
}

/// [`page_sql`], each record followed by its seal status (`sealed`: its batch is in the
/// latest signed checkpoint; `committed`: in a batch with a proof, not sealed yet;
/// `unproven`: written without integrity), for [`page_body_with_seal_status`].
///
/// Checkpoints seal every batch below their horizon (migration 0005), and a record's
/// batch commits in its transaction: so a record's status is its `tx_id` against the
/// latest horizon, and one probe of the ledger's `tx_id` index. Worked out for the page's
/// rows only, after its limit. A mark, not a proof: it trusts the row's `tx_id`, stream and
/// seq, which a role that may write rows can copy from a sealed record; the record's
/// proof (`/api/v1/logs/{id}/proof`, `auditd verify`) checks its content.
pub fn page_with_seal_status_sql(
    filters: &Filters,
    order: Order,
    cursor: Option<PageCursor>,
    limit: Option<i64>,
) -> Sql {
    let mut sql = page_sql_of(
        &format!("id, {STORED_RECORD_COLUMNS}, tx_id"),
        filters,
        order,
        cursor,
        limit,
    );
    let direction = match order {
        Order::Newest => "DESC",
        Order::Oldest => "ASC",
    };
    sql.text = format!(
        "SELECT p.*, CASE \
             WHEN p.stream_id IS NULL OR NOT EXISTS (SELECT 1 FROM audit_writer_batches b \
                 WHERE b.tx_id = p.tx_id AND b.stream_id = p.stream_id AND b.root IS NOT NULL \
                   AND p.seq BETWEEN b.first_seq AND b.last_seq) \
                 THEN 'unproven' \
             WHEN p.tx_id < (SELECT horizon FROM audit_checkpoints ORDER BY id DESC LIMIT 1) \
                 THEN 'sealed' \
             ELSE 'committed' END \
         FROM ({}) p ORDER BY p.created_at {direction}, p.id {direction}",
        sql.text
    );
    sql
}

fn page_sql_of(
    columns: &str,
    filters: &Filters,
    order: Order,
    cursor: Option<PageCursor>,
    limit: Option<i64>,
) -> Sql {
    let mut sql = Sql::new(&format!("SELECT {columns} FROM audit_logs WHERE true"));
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
    sql.push(&format!(" ORDER BY created_at {direction}, id {direction}"));
    if let Some(limit) = limit {
        sql.push(&format!(" LIMIT {limit}"));
    }
    sql
}

/// The query for one record by its id (`$1`).
pub fn by_id_sql() -> String {
    format!("SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs WHERE id = $1")
}

/// Appends a record, read with `id` first and then
/// [`STORED_RECORD_COLUMNS`], as a JSON object,
/// `{"id":...,<fields>[,"cursor":"..."]}`; returns its page cursor.
pub fn write_record(
    out: &mut Vec<u8>,
    row: &Row,
    cursor: Option<&str>,
) -> Result<PageCursor, ApiError> {
    write_record_with(out, row, cursor, None)
}

/// [`write_record`], with `"seal_status"` when given.
fn write_record_with(
    out: &mut Vec<u8>,
    row: &Row,
    cursor: Option<&str>,
    seal_status: Option<&str>,
) -> Result<PageCursor, ApiError> {
    let id: i64 = row.try_get(0).map_err(|e| ApiError::database(&e))?;
    let record = stored_record(row).map_err(|e| ApiError::database(&e))?;
    write_stored_fields(out, id, &record);
    if let Some(status) = seal_status {
        // One of three words the query spells: nothing to escape.
        out.extend_from_slice(b",\"seal_status\":\"");
        out.extend_from_slice(status.as_bytes());
        out.push(b'"');
    }
    if let Some(cursor) = cursor {
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    Ok(PageCursor {
        created_at: chrono::DateTime::from_timestamp_micros(record.created_at_micros)
            .unwrap_or_default(),
        id,
    })
}

/// Appends `{"id":...,"created_at":...,...,"metadata":...` (no closing brace) for a row
/// read with [`STORED_RECORD_COLUMNS`](audit_layer::integrity::STORED_RECORD_COLUMNS):
/// every value as stored, `metadata` as the text `jsonb` prints (copied, not parsed and
/// printed again), an address with its netmask when it has one (`192.0.2.0/24`), times
/// in RFC 3339 with microseconds, UTC.
pub fn write_stored_fields(out: &mut Vec<u8>, id: i64, r: &StoredRecord<'_>) {
    fn string(out: &mut Vec<u8>, value: &str) {
        // Serializing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
    fn int(out: &mut Vec<u8>, value: Option<i64>) {
        match value {
            Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
    }
    fn optional(out: &mut Vec<u8>, name: &[u8], value: Option<&str>) {
        out.extend_from_slice(name);
        match value {
            Some(v) => string(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"{\"id\":");
    int(out, Some(id));
    out.extend_from_slice(b",\"created_at\":\"");
    write_time_micros(out, r.created_at_micros);
    out.extend_from_slice(b"\",\"username\":");
    string(out, r.username);
    out.extend_from_slice(b",\"user_id\":");
    int(out, r.user_id);
    out.extend_from_slice(b",\"event_type\":");
    string(out, r.event_type);
    out.extend_from_slice(b",\"severity\":");
    string(out, r.severity);
    out.extend_from_slice(b",\"message\":");
    string(out, r.message);
    out.extend_from_slice(b",\"ip_address\":");
    match inet_text(r) {
        None => out.extend_from_slice(b"null"),
        // Digits, dots, colons and a slash: nothing to escape.
        Some(ip) => {
            out.push(b'"');
            out.extend_from_slice(ip.as_bytes());
            out.push(b'"');
        }
    }
    optional(out, b",\"resource_type\":", r.resource_type);
    optional(out, b",\"resource_id\":", r.resource_id);
    optional(out, b",\"resource_name\":", r.resource_name);
    out.extend_from_slice(b",\"metadata\":");
    // jsonb prints valid JSON, on one line.
    out.extend_from_slice(r.metadata.unwrap_or("null").as_bytes());
}

/// A record's address as `inet` prints it: with its netmask only when that is shorter
/// than the address (`192.0.2.0/24`).
pub fn inet_text(r: &StoredRecord<'_>) -> Option<String> {
    let ip = r.ip_address?;
    Some(match r.ip_prefix {
        Some(bits) => format!("{ip}/{bits}"),
        None => ip.to_string(),
    })
}

/// Appends a time given in microseconds since the Unix epoch as RFC 3339, always with six
/// fractional digits and `Z` (`2026-03-02T09:00:00.000000Z`), without allocating.
pub fn write_time_micros(out: &mut Vec<u8>, micros: i64) {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros) else {
        out.extend_from_slice(b"invalid");
        return;
    };
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // timestamptz reaches beyond four-digit years; chrono writes those correctly.
        out.extend_from_slice(
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        );
        return;
    }
    fn digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
        let mut buf = [b'0'; 6];
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    digits(out, year as u32, 4);
    let sep = [b'-', b'-', b'T', b':', b':', b'.'];
    let parts = [
        (t.month(), 2),
        (t.day(), 2),
        (t.hour(), 2),
        (t.minute(), 2),
        (t.second(), 2),
        (t.nanosecond() / 1000 % 1_000_000, 6),
    ];
    for (separator, (value, width)) in sep.iter().zip(parts) {
        out.push(*separator);
        digits(out, value, width);
    }
    out.push(b'Z');
}

/// `{"items":[<record>,...],"next_cursor":<string or null>}`: a page, as every listing
/// route answers it.
pub fn page_body(rows: &[Row], next_cursor: Option<&str>) -> Result<Vec<u8>, ApiError> {
    page_body_of(rows, next_cursor, false)
}

/// [`page_body`] for rows read with [`page_with_seal_status_sql`].
pub fn page_body_with_seal_status(
    rows: &[Row],
    next_cursor: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    page_body_of(rows, next_cursor, true)
}

fn page_body_of(
    rows: &[Row],
    next_cursor: Option<&str>,
    seal_status: bool,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(512 * rows.len() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let status: Option<&str> = if seal_status {
            let last = row.len() - 1;
            Some(row.try_get(last).map_err(|e| ApiError::database(&e))?)
        } else {
            None
        };
        write_record_with(&mut body, row, None, status)?;
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
        "SELECT id, tx_id, {STORED_RECORD_COLUMNS} FROM audit_logs WHERE true"
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
