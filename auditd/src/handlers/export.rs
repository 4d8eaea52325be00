//! `GET /api/v1/logs/export`: every matching record, streamed as NDJSON or CSV.
//!
//! One statement, streamed (`query::stream`, the path retention archives share): rows
//! are formatted as PostgreSQL sends them and handed to the response a chunk at a time
//! through a small channel, so memory stays flat whatever the size and a slow client
//! slows the reading down instead of filling memory. Each record carries its cursor, so
//! an export that broke off resumes with `cursor=<the last one received>`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio_postgres::Row;

use crate::access::{Answer, Caller};
use crate::http::{self, ApiError, ChannelBody};
use crate::query::stream::{stream_rows, ChunkSink, Stopped};
use crate::query::{csv, records, ExportRequest, Format, PageCursor, Params};
use crate::state::App;

/// Answers `GET /api/v1/logs/export`: a task streams the rows and records the access when
/// it ends.
pub async fn export(
    app: &Arc<App>,
    params: Params,
    caller: Caller,
    route: &'static str,
) -> Result<Answer, ApiError> {
    let mut params = params;
    let filters = app.filters(&mut params)?;
    let ExportRequest {
        filters,
        order,
        cursor,
        format,
        max_rows,
    } = ExportRequest::parse(filters, params, caller.by_link)?;

    // Fail now, with a proper status, rather than after the 200 has gone out.
    let stream_slot = app.stream_slot()?;
    let client = app.client().await?;
    let (tx, body) = ChannelBody::until_finished(4);
    let app = app.clone();
    tokio::spawn(async move {
        let mut sink = ResponseSink {
            tx,
            stopping: app.stopping.clone(),
            stall: app.limits.stalled_client_timeout,
        };
        let head = match format {
            Format::Csv(_) => csv::HEADER.as_bytes(),
            Format::Ndjson => b"",
        };
        let sql = records::page_sql(
            &filters,
            order,
            cursor,
            max_rows.map(|n| n.min(i64::MAX as u64) as i64),
        );
        // The stream takes as long as the export is big: no statement timeout for it, in
        // a transaction of its own so that the pooled connection keeps its own.
        let (sent, streamed) = match client
            .batch_execute("BEGIN READ ONLY; SET LOCAL statement_timeout = 0")
            .await
        {
            Ok(()) => {
                stream_rows(
                    &client,
                    &sql.text,
                    &sql.params(),
                    head,
                    |out, row| write_row(out, row, format).map(drop),
                    &mut sink,
                )
                .await
            }
            Err(e) => (0, Err(Stopped::Query(e))),
        };
        // Read only: whether it commits or not changes nothing, but the connection goes
        // back to the pool outside a transaction.
        let _ = client.batch_execute("ROLLBACK").await;
        let outcome = match streamed {
            // The end of the body; without it the body is cut short (`until_finished`).
            Ok(()) => match sink.send_bytes(Bytes::new()).await {
                Ok(()) => StatusCode::OK,
                Err(status) => status,
            },
            // The status line is gone: all that is left is to cut the body short, so the
            // client sees a truncated export it can resume.
            Err(Stopped::Query(e)) => {
                http::log_query_failure(&e);
                StatusCode::SERVICE_UNAVAILABLE
            }
            Err(Stopped::Row(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Err(Stopped::Sink(status)) => status,
        };
        drop(client);
        app.record_read(&caller, route, &filters.describe(), sent, outcome);
        // Only now: shutdown waits for every slot, so no stream's record is left behind.
        drop(stream_slot);
    });

    let mut response = Response::new(body);
    let (content_type, file) = match format {
        Format::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"audit_logs.ndjson\"",
        ),
        Format::Csv(_) => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"audit_logs.csv\"",
        ),
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static(file));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(Answer::plain(response))
}

/// Chunks into the response body, racing each against shutdown and a stalled client.
struct ResponseSink {
    tx: http::ChunkSender,
    stopping: tokio::sync::watch::Receiver<bool>,
    stall: std::time::Duration,
}

impl ResponseSink {
    async fn send_bytes(&mut self, bytes: Bytes) -> Result<(), StatusCode> {
        http::deliver(&self.tx, bytes, &mut self.stopping, self.stall).await
    }
}

impl ChunkSink for ResponseSink {
    type Error = StatusCode;
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), StatusCode> {
        self.send_bytes(chunk.into()).await
    }
}

fn write_row(out: &mut Vec<u8>, row: &Row, format: Format) -> Result<PageCursor, ApiError> {
    let cursor = records::row_cursor(row)?.encode();
    match format {
        Format::Ndjson => {
            let c = records::write_record(out, row, Some(&cursor))?;
            out.push(b'\n');
            Ok(c)
        }
        Format::Csv(cells) => csv::write_row(out, row, &cursor, cells),
    }
}
