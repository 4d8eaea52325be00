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

use crate::app::{Answer, App, Caller, Route};
use crate::cursor::PageCursor;
use crate::filters::Filters;
use crate::http::{ApiError, ChannelBody, ChunkSender};
use crate::logs::{self, Order};
use crate::params::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

const CSV_HEADER: &str = "id,created_at,username,user_id,event_type,severity,message,ip_address,\
resource_type,resource_id,resource_name,metadata,cursor\r\n";

/// Bytes gathered before a chunk is handed to the response.
const CHUNK_BYTES: usize = 64 * 1024;

/// What an export was asked for.
pub struct ExportRequest {
    filters: Filters,
    order: Order,
    cursor: Option<PageCursor>,
    format: Format,
    max_rows: Option<u64>,
}

impl ExportRequest {
    /// Takes every parameter of an export out of `params`; any other is an error. The
    /// parameters of a download link ([`crate::export_link`]) are taken and left to it.
    pub fn parse(app: &App, mut params: Params) -> Result<ExportRequest, ApiError> {
        let filters = app.filters(&mut params)?;
        let order = Order::take(&mut params)?;
        let cursor = logs::take_cursor(&mut params)?;
        let format = params
            .take_parsed("format", |v| match v {
                "ndjson" => Ok(Format::Ndjson),
                "csv" => Ok(Format::Csv),
                _ => Err("must be ndjson or csv".to_owned()),
            })?
            .unwrap_or(Format::Ndjson);
        let max_rows = params.take_parsed("limit", |v| match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err("must be a positive integer".to_owned()),
        })?;
        for name in crate::export_link::PARAMETERS {
            params.take(name)?;
        }
        params.finish()?;
        Ok(ExportRequest {
            filters,
            order,
            cursor,
            format,
            max_rows,
        })
    }
}

/// Answers `GET /api/v1/logs/export`: a task streams the rows and records the access when
/// it ends.
pub async fn export(
    app: &Arc<App>,
    params: Params,
    caller: Caller,
    route: &'static Route,
) -> Result<Answer, ApiError> {
    let ExportRequest {
        filters,
        order,
        cursor,
        format,
        max_rows,
    } = ExportRequest::parse(app, params)?;

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
        if format == Format::Csv {
            chunk.extend_from_slice(CSV_HEADER.as_bytes());
        }
        let page_rows = app.limits.export_page_rows;
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
            let sql = logs::page_sql(&filters, order, cursor, want);
            let rows = match client.query(&sql.text, &sql.params()).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The status line is gone: all that is left is to cut the body short,
                    // so the client sees a truncated export it can resume.
                    ApiError::database(&e);
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
                    if let Err(status) = deliver(&tx, full.into(), &mut stopping).await {
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
                deliver(&tx, chunk.into(), &mut stopping).await?;
            }
            deliver(&tx, Bytes::new(), &mut stopping).await
        };
        let outcome = match outcome {
            StatusCode::OK => finished.await.err().unwrap_or(StatusCode::OK),
            failed => failed,
        };
        drop(client);
        drop(stream_slot);
        app.metrics.rows_served(route.path, sent);
        app.record_access(&caller, route, &filters.describe(), sent, outcome);
    });

    let mut response = Response::new(body);
    let (content_type, file) = match format {
        Format::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"audit_logs.ndjson\"",
        ),
        Format::Csv => (
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

/// Hands a chunk to the response (an empty one ends it, see `until_finished`): `Err` with
/// the status to record when the client went away (nginx's 499) or the server began to
/// shut down first.
async fn deliver(
    tx: &ChunkSender,
    chunk: Bytes,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), StatusCode> {
    tokio::select! {
        sent = tx.send(Ok(chunk)) => sent.map_err(|_| client_gone()),
        _ = stopping.wait_for(|stop| *stop) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn client_gone() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

fn write_row(out: &mut Vec<u8>, row: &Row, format: Format) -> Result<PageCursor, ApiError> {
    let cursor = logs::row_cursor(row)?.encode();
    match format {
        Format::Ndjson => {
            let c = logs::write_record(out, row, Some(&cursor))?;
            out.push(b'\n');
            Ok(c)
        }
        Format::Csv => write_csv(out, row, &cursor),
    }
}

fn write_csv(out: &mut Vec<u8>, row: &Row, cursor: &str) -> Result<PageCursor, ApiError> {
    let id: i64 = row.try_get("id").map_err(|e| ApiError::database(&e))?;
    let log = audit_layer::AuditLog::from_row(row).map_err(|e| ApiError::database(&e))?;
    let metadata = if log.metadata.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(log.metadata.clone()).to_string()
    };
    let fields: [&str; 13] = [
        &id.to_string(),
        &log.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        &log.username,
        &log.user_id.map(|u| u.to_string()).unwrap_or_default(),
        &log.event_type,
        log.severity.as_str(),
        &log.message,
        &log.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
        log.resource_type.as_deref().unwrap_or(""),
        log.resource_id.as_deref().unwrap_or(""),
        log.resource_name.as_deref().unwrap_or(""),
        &metadata,
        cursor,
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(out, field);
    }
    out.extend_from_slice(b"\r\n");
    Ok(PageCursor {
        created_at: log.created_at,
        id,
    })
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled.
fn csv_field(out: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut out, f);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||"
        );
    }
}
