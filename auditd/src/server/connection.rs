//! One HTTP/1.1 connection, served by hyper through the router until it closes, the
//! admission asks it to give way (`crate::admission`), or the server shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::admission::{Busy, ConnectionSlot, EVICTION_GRACE};
use crate::http::Body;
use crate::router;
use crate::state::App;

/// hyper's smallest read buffer (it refuses less).
const MIN_BUF_SIZE: usize = 8192;

/// Serves `stream` (plain TCP, or TLS once its handshake is done) on a task of its own.
pub(super) fn serve_connection<S>(app: &Arc<App>, stream: S, peer: SocketAddr, slot: ConnectionSlot)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &app.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A client that never finishes its headers, or keeps a connection idle between
        // requests, does not hold it forever (hyper times both from the last response).
        .header_read_timeout(limits.header_read_timeout)
        // A larger head is answered 431 and the connection closed.
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
    let liveness = slot.liveness();
    let service = {
        let app = app.clone();
        service_fn(move |request| {
            let app = app.clone();
            // Busy from the request's head to the end of its response body, so an export
            // or an event stream is never taken for an idle connection.
            let busy = liveness.busy();
            async move {
                let response = router::handle(&app, request, peer).await;
                Ok::<_, Infallible>(response.map(|body| BusyBody { body, _busy: busy }.boxed()))
            }
        })
    };
    let mut stopping = app.stopping.clone();
    let liveness = slot.liveness();
    tokio::spawn(async move {
        let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
        let mut closing = false;
        // Set when the connection gives way: past it, it is closed regardless.
        let mut deadline: Option<tokio::time::Instant> = None;
        let outcome = loop {
            let past_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = connection.as_mut() => break Some(outcome),
                // Shutting down: hyper finishes the response in progress, if any, then
                // closes (the server's grace period bounds the wait).
                _ = stopping.wait_for(|stop| *stop), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                // Giving way to a new connection: the same, within EVICTION_GRACE, so a
                // client with half its headers sent or no longer reading cannot stay.
                () = liveness.asked_to_close(), if deadline.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    deadline = Some(tokio::time::Instant::now() + EVICTION_GRACE);
                }
                () = past_deadline => break None,
            }
        };
        if let Some(Err(e)) = outcome {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
        drop(slot);
    });
}

/// A response body that keeps its connection marked busy until it is done.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
