//! `GET /api/v1/logs/export`: every matching record, streamed as NDJSON or CSV.
//!
//! Rows are read a page at a time (keyset, as for listing) and handed to the response
//! through a small channel, so memory stays flat whatever the size and a slow client slows
//! the reading down instead of filling memory. Each record carries its cursor, so an export
//! that broke off resumes with `cursor=<the last one received>`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio_postgres::Row;

use crate::access::{Answer, Caller};
use crate::http::{self, ApiError, ChannelBody};
use crate::query::{csv, records, ExportRequest, Format, PageCursor, Params};
use crate::state::App;

/// Bytes gathered before a chunk is handed to the response.
const CHUNK_BYTES: usize = 64 * 1024;

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
        let mut stopping = app.stopping.clone();
        let mut cursor = cursor;
        let mut sent: u64 = 0;
        let mut chunk = Vec::with_capacity(CHUNK_BYTES * 2);
        if matches!(format, Format::Csv(_)) {
            chunk.extend_from_slice(csv::HEADER.as_bytes());
        }
        let page_rows = app.limits.export_page_rows;
        let stall = app.limits.stalled_client_timeout;
        let outcome = loop {
            let want = match max_rows {
                Some(max) => (max - sent).min(page_rows as u64) as i64,
                None => page_rows,
            };
            if want == 0 {
                break StatusCode::OK;
            }
            if *stopping.borrow() {
                // Shutting down: end now, recorded, rather than be dropped unrecorded.
                break StatusCode::SERVICE_UNAVAILABLE;
            }
            let sql = records::page_sql(&filters, order, cursor, want);
            let rows = match client.query(&sql.text, &sql.params()).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The status line is gone: all that is left is to cut the body short,
                    // so the client sees a truncated export it can resume.
                    http::log_query_failure(&e);
                    break StatusCode::SERVICE_UNAVAILABLE;
                }
            };
            let fetched = rows.len() as i64;
            let mut stopped = None;
            for row in &rows {
                match write_row(&mut chunk, row, format) {
                    Ok(c) => cursor = Some(c),
                    Err(_) => {
                        stopped = Some(StatusCode::INTERNAL_SERVER_ERROR);
                        break;
                    }
                }
                sent += 1;
                if chunk.len() >= CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES * 2));
                    if let Err(status) = http::deliver(&tx, full.into(), &mut stopping, stall).await
                    {
                        stopped = Some(status);
                        break;
                    }
                }
            }
            if let Some(status) = stopped {
                break status;
            }
            if fetched < want {
                break StatusCode::OK;
            }
        };
        // The rest, then the end; without the end the body is cut short (`until_finished`).
        let finished = async {
            if !chunk.is_empty() {
                http::deliver(&tx, chunk.into(), &mut stopping, stall).await?;
            }
            http::deliver(&tx, Bytes::new(), &mut stopping, stall).await
        };
        let outcome = match outcome {
            StatusCode::OK => finished.await.err().unwrap_or(StatusCode::OK),
            failed => failed,
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
