//! The one streaming path for everything that reads many rows (an export, a retention
//! archive): one statement, no pages, rows formatted as PostgreSQL sends them into chunks
//! of about [`CHUNK_BYTES`], each handed to a sink before the next is filled. Memory
//! stays at a chunk or two whatever the size, and a slow sink (a client, a disk) slows
//! the reading down instead of filling memory.
//!
//! One statement rather than pages of `LIMIT n`: a page is a new statement, planned and
//! started again, which costs about half of what a stream reaches. A long read holds no
//! transaction id, so it delays neither sealing nor the tails (their horizon counts only
//! transactions that write); it does hold its tables' `ACCESS SHARE` lock until it ends,
//! so a retention run's detach waits for it (and tries again later). A stream its sink
//! stops is cancelled in PostgreSQL, not read to its end.

use std::future::Future;

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// Bytes gathered before a chunk is handed to the sink.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Where the chunks of a stream go.
pub trait ChunkSink {
    /// Why the sink stopped taking chunks.
    type Error;
    /// Takes one chunk; the stream waits until it has.
    fn send(&mut self, chunk: Vec<u8>) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why a stream ended before its last row.
#[derive(Debug)]
pub enum Stopped<S, F> {
    /// The query failed (or the connection did).
    Query(tokio_postgres::Error),
    /// A row could not be formatted.
    Row(F),
    /// The sink stopped taking chunks.
    Sink(S),
}

/// Streams the rows of `sql` into `sink`: `head` first, then each row as `format`
/// appends it, the last chunk sent before it returns. Says how many rows went out to
/// the sink, and whether the stream ended after the last row or why it stopped.
pub async fn stream_rows<S, F, E>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    head: &[u8],
    mut format: F,
    sink: &mut S,
) -> (u64, Result<(), Stopped<S::Error, E>>)
where
    S: ChunkSink,
    F: FnMut(&mut Vec<u8>, &Row) -> Result<(), E>,
{
    let (mut sent, mut pending) = (0u64, 0u64);
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
    chunk.extend_from_slice(head);
    let outcome = async {
        let rows = client
            .query_raw(sql, params.iter().copied())
            .await
            .map_err(Stopped::Query)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await.map_err(Stopped::Query)? {
            format(&mut chunk, &row).map_err(Stopped::Row)?;
            pending += 1;
            if chunk.len() >= CHUNK_BYTES {
                let full = std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4),
                );
                sink.send(full).await.map_err(Stopped::Sink)?;
                sent += std::mem::take(&mut pending);
            }
        }
        Ok(())
    }
    .await;
    // What was formatted goes out, whatever stopped the stream, unless the sink did.
    let flushed = match &outcome {
        Err(Stopped::Sink(_)) => {
            // Dropping the rows does not stop PostgreSQL sending them: the connection
            // would read the rest of the result before it could serve anything else.
            // A client gone, or a full disk, ends the query instead.
            let _ = client
                .cancel_token()
                .cancel_query(tokio_postgres::NoTls)
                .await;
            Ok(())
        }
        _ if chunk.is_empty() => Ok(()),
        _ => sink.send(chunk).await.map_err(Stopped::Sink),
    };
    if flushed.is_ok() {
        sent += pending;
    }
    (sent, outcome.and(flushed))
}
