//! Following the log as it is written: `GET /api/v1/logs/tail` (long poll) and
//! `GET /api/v1/logs/stream` (Server-Sent Events), both in commit order
//! ([`records::committed_after`] says how no row is skipped).
//!
//! Both look again every `tail_poll_interval`, and at once when the audit writer reports a
//! commit (`listen`): the notice makes a tail fast, the poll makes it certain.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::access::{Access, Answer, Caller};
use crate::duration::parse_duration;
use crate::http::{self, ApiError, ChannelBody};
use crate::query::records::{
    self, committed_after, tail_cursor_of, take_tail_cursor, DEFAULT_PAGE_ROWS, MAX_PAGE_ROWS,
};
use crate::query::{self, Params};
use crate::state::App;

/// Long poll: answers as soon as rows are committed after the cursor, or after `wait`.
pub async fn long_poll(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let cursor = take_tail_cursor(&mut params, None)?;
    let limit = params
        .take_parsed("limit", query::limit(MAX_PAGE_ROWS))?
        .unwrap_or(DEFAULT_PAGE_ROWS);
    let wait = params
        .take_parsed("wait", parse_wait)?
        .unwrap_or(Duration::from_secs(25))
        // Longer waits are shortened, as the request timeout shortens them: the answer
        // is the same, only sooner.
        .min(app.limits.max_tail_wait)
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
    let mut commits = query::follow(&app.commit_notices);
    let mut cursor = cursor;
    let (rows, next) = loop {
        let (rows, next) = committed_after(&client, &filters, cursor, limit)
            .await
            .map_err(|e| ApiError::database(&e))?;
        let looked = tokio::time::Instant::now();
        if !rows.is_empty() || looked >= deadline || *stopping.borrow() {
            break (rows, next);
        }
        cursor = Some(next);
        tokio::select! {
            () = tokio::time::sleep(app.limits.tail_poll_interval) => {}
            () = query::next_commit(&mut commits, looked) => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {}
        }
    };
    let body = records::page_body(&rows, Some(&next.encode()))?;
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
    route: &'static str,
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
        let mut commits = query::follow(&app.commit_notices);
        let mut cursor = cursor;
        let mut sent: u64 = 0;
        let mut idle_since = tokio::time::Instant::now();
        let stall = app.limits.stalled_client_timeout;
        let mut outcome = StatusCode::OK;
        let greeting = Bytes::from_static(b"retry: 2000\n\n");
        let greeted = match http::deliver(&tx, greeting, &mut stopping, stall).await {
            Ok(()) => true,
            // Gone before the first line: still a read of the log, and recorded as one.
            Err(status) => {
                outcome = status;
                false
            }
        };
        let ends_at = tokio::time::Instant::now() + app.limits.max_stream_duration;
        loop {
            if !greeted || *stopping.borrow() || tokio::time::Instant::now() >= ends_at {
                break;
            }
            let looked = tokio::time::Instant::now();
            let (rows, next) = match committed_after(&client, &filters, cursor, MAX_PAGE_ROWS).await
            {
                Ok(found) => found,
                Err(e) => {
                    http::log_query_failure(&e);
                    outcome = StatusCode::SERVICE_UNAVAILABLE;
                    break;
                }
            };
            let mut events = Vec::new();
            let mut complete = 0u64;
            let mut unreadable = false;
            for row in &rows {
                if write_event(&mut events, row).is_err() {
                    unreadable = true;
                    break;
                }
                complete += 1;
            }
            if !events.is_empty() {
                if let Err(status) = http::deliver(&tx, events.into(), &mut stopping, stall).await {
                    outcome = after_failed_send(outcome, status);
                    break;
                }
                sent += complete;
                idle_since = tokio::time::Instant::now();
            }
            if unreadable {
                // Every event before the row went out whole; the stream ends at the row, so
                // a client resuming from its last event id meets the same failure rather
                // than silently skipping a record.
                outcome = StatusCode::INTERNAL_SERVER_ERROR;
                break;
            }
            if complete == 0 && idle_since.elapsed() >= app.limits.stream_keepalive {
                let keep_alive = Bytes::from_static(b": keep-alive\n\n");
                if let Err(status) = http::deliver(&tx, keep_alive, &mut stopping, stall).await {
                    outcome = after_failed_send(outcome, status);
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
                () = query::next_commit(&mut commits, looked) => {}
                _ = stopping.changed() => {}
                () = tokio::time::sleep_until(ends_at) => {}
                () = tx.closed() => break,
            }
        }
        drop(client);
        app.record_read(&caller, route, &filters.describe(), sent, outcome);
        // Only now: shutdown waits for every slot, so no stream's record is left behind.
        drop(stream_slot);
    });

    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx would otherwise hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(Answer::plain(response))
}

/// Appends one Server-Sent Event for `row`, or nothing at all when the row cannot be
/// read (never half an event).
fn write_event(out: &mut Vec<u8>, row: &tokio_postgres::Row) -> Result<(), ApiError> {
    let start = out.len();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(tail_cursor_of(row).encode().as_bytes());
    out.extend_from_slice(b"\nevent: audit_log\ndata: ");
    match records::write_record(out, row, None) {
        Ok(_) => {
            out.extend_from_slice(b"\n\n");
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// A long poll's `wait`: up to nine digits, an optional fraction of up to three, and an
/// optional unit (`ms`, `s`, `m`, `h`; seconds without one), exactly the pattern the
/// OpenAPI document states.
fn parse_wait(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let unit_known = matches!(unit, "" | "ms" | "s" | "m" | "h");
    if !digits(whole, 9) || !fraction.is_none_or(|f| digits(f, 3)) || !unit_known {
        return Err("a duration like 250ms, 30s or 1m".to_owned());
    }
    parse_duration(text)
}

/// What a failed send leaves in a stream's access record: the outcome so far when the
/// client went away (the normal end of an event stream, which it may resume), else the
/// failure (a client that stopped reading, a shutdown).
fn after_failed_send(outcome: StatusCode, status: StatusCode) -> StatusCode {
    if status == http::client_closed_request() {
        outcome
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_exactly_what_the_document_states() {
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_wait("2"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_wait("999999999h").map(|d| d.as_secs()),
            Ok(999_999_999 * 3600)
        );
        for bad in [
            "",
            "s",
            ".5s",
            "1.s",
            "1.2345s",
            " 1s",
            "1 s",
            "5min",
            "1e3",
            "1000000000s",
        ] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
    }
}
