//! Response bodies and the JSON shapes every route shares: one error format, one body type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// Every response body: a buffer, or a stream fed through a channel. A stream that fails
/// midway yields an error, and hyper then cuts the connection instead of ending the body
/// cleanly, so the client can tell a truncated answer from a complete one.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The content type of JSON responses.
pub const JSON: &str = "application/json";

/// The status recorded for a read whose client went away before its answer was complete
/// (nginx's 499, "client closed request").
pub fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Hands a chunk to a streamed response (an empty one ends an
/// [`until_finished`](ChannelBody::until_finished) body). `Err` with the status to record
/// when the client went away (499), did not take the chunk within `stall` (408: a client
/// that stops reading must not hold a database connection and a stream slot for ever),
/// or the server began to shut down (503).
pub async fn deliver(
    tx: &ChunkSender,
    chunk: Bytes,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    stall: std::time::Duration,
) -> Result<(), StatusCode> {
    tokio::select! {
        sent = tx.send(Ok(chunk)) => sent.map_err(|_| client_closed_request()),
        _ = stopping.wait_for(|stop| *stop) => Err(StatusCode::SERVICE_UNAVAILABLE),
        () = tokio::time::sleep(stall) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with a complete body and a content type, never cached (audit records, and
/// answers about them, stay out of caches).
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    cached_response(status, content_type, "no-store", body)
}

/// A response with a complete body, a content type and a `Cache-Control` policy.
pub fn cached_response(
    status: StatusCode,
    content_type: &'static str,
    cache_control: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    response(status, JSON, value.to_string())
}

/// An API error: what went wrong, and which parameter when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The response status.
    pub status: StatusCode,
    /// A stable code for programs, like `invalid_parameter`.
    pub code: &'static str,
    /// The explanation, for people.
    pub message: String,
    /// The query parameter to blame, if one is.
    pub parameter: Option<String>,
}

impl ApiError {
    /// A 400 that blames `parameter`.
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: message.into(),
            parameter: Some(parameter.to_owned()),
        }
    }

    /// An error that blames no parameter.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            parameter: None,
        }
    }

    /// A 503 for too many `what` at once; the response asks to retry after a second.
    pub fn overloaded(what: &str) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("too many {what} in progress; try again"),
        )
    }

    /// A 404 saying what was not found.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// A database failure: logged in full ([`log_query_failure`]), answered without
    /// internals.
    pub fn database(error: &tokio_postgres::Error) -> Self {
        log_query_failure(error);
        if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_timeout",
                "the query took longer than the server allows; narrow the filters",
            )
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_error",
                "the database failed to answer",
            )
        }
    }

    /// The JSON error response: `{"error":{"code","message"[,"parameter"]}}`.
    pub fn into_response(self) -> Response<Body> {
        let overloaded = self.code == "overloaded";
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(parameter) = self.parameter {
            error["parameter"] = parameter.into();
        }
        let mut response = json(self.status, &serde_json::json!({ "error": error }));
        if overloaded {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

/// Logs a failed query with everything the server said: for a failure that can no longer
/// be answered with a status (a stream already under way), and for every one that is.
pub fn log_query_failure(error: &tokio_postgres::Error) {
    tracing::warn!(error = %audit_layer::describe_db_error(error), "query failed");
}

/// A body fed chunk by chunk from a task; a full channel slows the task down, so a slow
/// client never makes the server buffer more than the channel holds.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    /// Ends cleanly only on an empty chunk ([`ChannelBody::until_finished`]).
    needs_end: bool,
}

/// The producing side of a [`ChannelBody`].
pub type ChunkSender = mpsc::Sender<Result<Bytes, std::io::Error>>;

impl ChannelBody {
    /// The sender for the producing task, and the body for the response.
    pub fn channel(chunks: usize) -> (ChunkSender, Body) {
        ChannelBody::with_end(chunks, false)
    }

    /// As [`channel`](Self::channel), for a body that must arrive whole or be seen to be
    /// cut: it ends cleanly only when the task sends an empty chunk. If the task stops
    /// without one (a failure, a shutdown, a panic), the body fails, so hyper closes the
    /// connection without the final chunk and the client knows it has only a part.
    pub fn until_finished(chunks: usize) -> (ChunkSender, Body) {
        ChannelBody::with_end(chunks, true)
    }

    fn with_end(chunks: usize, needs_end: bool) -> (ChunkSender, Body) {
        let (tx, rx) = mpsc::channel(chunks);
        (tx, ChannelBody { rx, needs_end }.boxed())
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let needs_end = self.needs_end;
        self.rx.poll_recv(cx).map(|chunk| match chunk {
            Some(Ok(data)) if needs_end && data.is_empty() => None,
            Some(result) => Some(result.map(Frame::data)),
            None if needs_end => Some(Err(std::io::Error::other(
                "the response was cut short; resume from the last cursor received",
            ))),
            None => None,
        })
    }
}
