//! The application's handle on the writer: flush, shutdown, counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::queue::{self, Ack, Message};
use crate::stats::{Counters, Stats};

/// Controls the background writer of an [`AuditLayer`](crate::AuditLayer).
///
/// Keep it for the life of the application and call [`shutdown`](Self::shutdown) before
/// exiting: a global subscriber is never dropped, so without it the records of the last
/// batch window would be lost at exit.
///
/// Dropping the handle without `shutdown` does not stop the writer. Outside an async
/// runtime it waits (at most the configured `drop_flush_timeout`) for everything emitted so
/// far to be committed; inside one it cannot wait without blocking the runtime, so it only
/// asks the writer to commit its current batch now.
#[must_use = "without the handle, records of the last batch window are lost at exit"]
pub struct AuditHandle {
    pub(crate) tx: mpsc::Sender<Message>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) stream_id: i64,
    pub(crate) drop_flush_timeout: Duration,
    pub(crate) stopped: AtomicBool,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Returns once every record emitted before this call is committed (or kept as
    /// rejected).
    ///
    /// While the database is unreachable this waits for it; wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Flush(Ack::Async(ack)))
            .await
            .map_err(|_| Error::WriterStopped)?;
        done.await.map_err(|_| Error::WriterStopped)
    }

    /// Commits everything emitted before this call, then stops the writer.
    ///
    /// Records emitted afterwards are counted as `dropped_writer_stopped`. If the time runs
    /// out (the database is down), returns [`Error::ShutdownTimeout`] with the number of
    /// records not committed; the writer keeps trying until the process exits.
    ///
    /// Await it inside a tokio runtime with its time driver (as `#[tokio::main]` sets up),
    /// of either flavour.
    pub async fn shutdown(&self, timeout: Duration) -> Result<Stats, Error> {
        self.stopped.store(true, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        let stop = async {
            self.tx
                .send(Message::Shutdown(Ack::Async(ack)))
                .await
                .map_err(|_| Error::WriterStopped)?;
            done.await.map_err(|_| Error::WriterStopped)
        };
        match tokio::time::timeout(timeout, stop).await {
            Ok(Ok(())) => Ok(self.stats()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ShutdownTimeout {
                unwritten: self.stats().pending(),
            }),
        }
    }

    /// This layer's stream: the `stream_id` of every record it writes. Within a stream,
    /// `seq` numbers records 1, 2, 3... in emission order, so a gap is a lost record.
    pub fn stream_id(&self) -> i64 {
        self.stream_id
    }

    /// The pipeline's counters now.
    pub fn stats(&self) -> Stats {
        self.counters
            .snapshot(queue::depth(&self.tx), self.tx.max_capacity())
    }
}

impl Drop for AuditHandle {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here could stall a current-thread runtime: only ask for a flush.
            let (ack, _) = oneshot::channel();
            let _ = self.tx.try_send(Message::Flush(Ack::Async(ack)));
            return;
        }
        let deadline = std::time::Instant::now() + self.drop_flush_timeout;
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let mut request = Message::Flush(Ack::Blocking(ack));
        // A full queue is the writer waiting on the database: keep trying until the deadline.
        loop {
            match self.tx.try_send(request) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if std::time::Instant::now() >= deadline {
                        return;
                    }
                    request = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}
