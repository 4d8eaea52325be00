//! Following the log as it is written: `GET /api/v1/logs/tail` (long poll) and
//! `GET /api/v1/logs/stream` (Server-Sent Events).
//!
//! Identity values are not handed out in commit order: a batch holding ids 100..199 can
//! commit after one holding 200..299, so "id > last seen" skips rows. Both endpoints follow
//! `(tx_id, id)` instead, and only up to the horizon `pg_snapshot_xmin(pg_current_snapshot())`:
//! every transaction below it has finished, so no row can still appear behind the cursor
//! (migration 0002). A transaction still open holds the horizon back; its rows, and those
//! committed after it, are delivered once it ends — late, never lost.
//!
//! Both look again every `tail_poll_interval`, and at once when the audit writer reports a
//! commit (`listen`): the notice makes a tail fast, the poll makes it certain.

use std::sync::Arc;
use std::time::Duration;

use audit_layer::RECORD_COLUMNS;
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio_postgres::{Client, Row};

use crate::app::{Access, Answer, App, Caller, Route};
use crate::cli::parse_duration;
use crate::cursor::TailCursor;
use crate::filters::{Filters, Sql};
use crate::http::{self, ApiError, ChannelBody};
use crate::listen;
use crate::logs::{self, DEFAULT_PAGE_ROWS, MAX_PAGE_ROWS};
use crate::params::{self, Params};

/// The committed rows after `cursor`, in commit order, and the cursor after them.
async fn next_rows(
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

impl TailCursor {
    fn max_with(self, other: TailCursor) -> TailCursor {
        if (self.tx_id, self.id) >= (other.tx_id, other.id) {
            self
        } else {
            other
        }
    }
}

fn take_tail_cursor(
    params: &mut Params,
    header: Option<String>,
) -> Result<Option<TailCursor>, ApiError> {
    let from_param = params.take_parsed("cursor", |v| {
        TailCursor::decode(v).ok_or_else(|| "not a tail cursor given by this API".to_owned())
    })?;
    match (from_param, header) {
        (Some(c), _) => Ok(Some(c)),
        (None, Some(h)) => TailCursor::decode(&h).map(Some).ok_or_else(|| {
            ApiError::bad_parameter("Last-Event-ID", "not an event id given by this API")
        }),
        (None, None) => Ok(None),
    }
}

fn tail_cursor_of(row: &Row) -> TailCursor {
    TailCursor {
        tx_id: row.get("tx_id"),
        id: row.get("id"),
    }
}

/// Long poll: answers as soon as rows are committed after the cursor, or after `wait`.
pub async fn long_poll(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let cursor = take_tail_cursor(&mut params, None)?;
    let limit = params
        .take_parsed("limit", params::limit(MAX_PAGE_ROWS))?
        .unwrap_or(DEFAULT_PAGE_ROWS);
    let max_wait = app.limits.max_tail_wait;
    let wait = params
        .take_parsed("wait", |v| {
            let d = parse_duration(v)?;
            if d > max_wait {
                Err(format!("at most {max_wait:?}"))
            } else {
                Ok(d)
            }
        })?
        .unwrap_or(Duration::from_secs(25))
        // The request timeout must not cut the answer off.
        .min(
            app.limits
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        );
    params.finish()?;

    let client = app.client().await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = app.stopping.clone();
    let mut commits = listen::follow(&app.commit_notices);
    let mut cursor = cursor;
    let (rows, next) = loop {
        let (rows, next) = next_rows(&client, &filters, cursor, limit)
            .await
            .map_err(|e| ApiError::database(&e))?;
        let looked = tokio::time::Instant::now();
        if !rows.is_empty() || looked >= deadline || *stopping.borrow() {
            break (rows, next);
        }
        cursor = Some(next);
        tokio::select! {
            () = tokio::time::sleep(app.limits.tail_poll_interval) => {}
            () = listen::next_commit(&mut commits, looked) => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {}
        }
    };
    let body = logs::page_body(&rows, Some(&next.encode()))?;
    Ok(Answer {
        response: http::response(StatusCode::OK, http::JSON, body),
        access: Some(Access {
            filters: filters.describe(),
            rows: rows.len() as u64,
        }),
    })
}

/// Server-Sent Events: each committed row is an event whose id is its tail cursor, so a
/// client that reconnects with `Last-Event-ID` resumes exactly after the last row it got.
pub async fn stream(
    app: &Arc<App>,
    mut params: Params,
    last_event_id: Option<String>,
    caller: Caller,
    route: &'static Route,
) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let cursor = take_tail_cursor(&mut params, last_event_id)?;
    params.finish()?;

    let stream_slot = app.stream_slot()?;
    let client = app.client().await?;
    let (tx, body) = ChannelBody::channel(16);
    let app = app.clone();
    tokio::spawn(async move {
        let mut stopping = app.stopping.clone();
        let mut commits = listen::follow(&app.commit_notices);
        let mut cursor = cursor;
        let mut sent: u64 = 0;
        let mut idle_since = tokio::time::Instant::now();
        let mut outcome = StatusCode::OK;
        if tx
            .send(Ok(Bytes::from_static(b"retry: 2000\n\n")))
            .await
            .is_err()
        {
            return;
        }
        loop {
            if *stopping.borrow() {
                break;
            }
            let looked = tokio::time::Instant::now();
            let (rows, next) = match next_rows(&client, &filters, cursor, MAX_PAGE_ROWS).await {
                Ok(found) => found,
                Err(e) => {
                    ApiError::database(&e);
                    outcome = StatusCode::SERVICE_UNAVAILABLE;
                    break;
                }
            };
            let mut events = Vec::new();
            for row in &rows {
                events.extend_from_slice(b"id: ");
                events.extend_from_slice(tail_cursor_of(row).encode().as_bytes());
                events.extend_from_slice(b"\nevent: audit_log\ndata: ");
                if logs::write_record(&mut events, row, None).is_err() {
                    outcome = StatusCode::INTERNAL_SERVER_ERROR;
                    break;
                }
                events.extend_from_slice(b"\n\n");
            }
            if !events.is_empty() {
                if tx.send(Ok(Bytes::from(events))).await.is_err() {
                    break;
                }
                sent += rows.len() as u64;
                idle_since = tokio::time::Instant::now();
            } else if idle_since.elapsed() >= app.limits.stream_keepalive {
                if tx
                    .send(Ok(Bytes::from_static(b": keep-alive\n\n")))
                    .await
                    .is_err()
                {
                    break;
                }
                idle_since = tokio::time::Instant::now();
            }
            cursor = Some(next);
            if rows.len() as i64 == MAX_PAGE_ROWS {
                continue; // more are waiting
            }
            tokio::select! {
                () = tokio::time::sleep(app.limits.tail_poll_interval) => {}
                () = listen::next_commit(&mut commits, looked) => {}
                _ = stopping.changed() => {}
                () = tx.closed() => break,
            }
        }
        drop(client);
        drop(stream_slot);
        app.metrics.rows_served(route.path, sent);
        app.record_access(&caller, route, &filters.describe(), sent, outcome);
    });

    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx would otherwise hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(Answer::plain(response))
}
