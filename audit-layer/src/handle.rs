//! The application's handle on the writer: flush, shutdown, counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::queue::{self, Ack, Message, Queued, Sequence};
use crate::stats::{Counters, Stats};
use crate::submit::{Receipt, Submission, SubmissionSettings, Submitted};

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
    pub(crate) seq: Arc<Sequence>,
    pub(crate) submissions: SubmissionSettings,
    /// Records of submissions not yet committed or spooled, bounded by the queue's
    /// capacity.
    pub(crate) submitted: Arc<tokio::sync::Semaphore>,
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

    /// An empty [`Submission`], with this layer's redaction, caps and clock: records from
    /// outside tracing (JSON objects another process sent) to be written by
    /// [`submit`](Self::submit).
    pub fn submission(&self) -> Submission {
        self.submissions.submission()
    }

    /// Writes a submission's records as one batch of their own, numbered in this layer's
    /// stream, and returns once they are committed or safely in the spool.
    ///
    /// With an [`IdempotencyKey`](crate::IdempotencyKey), they commit whole, in one
    /// transaction with the key, at most once under it: if a batch under the same key
    /// committed before (in this process or any other writing to the database), nothing
    /// is written, and the receipt says [`Outcome::Duplicate`](crate::Outcome::Duplicate)
    /// when it had the same request digest (a retry) or
    /// [`Outcome::KeyReused`](crate::Outcome::KeyReused) when it had another.
    ///
    /// Waits for room (the records of submissions not yet committed or spooled count
    /// against the queue's capacity), and while the database is down with no spool, for
    /// the database: bound it with `tokio::time::timeout`. A submission given up while
    /// waiting for room was not taken (it used no seq); one given up after is still
    /// written.
    pub async fn submit(&self, submission: Submission) -> Result<Receipt, Error> {
        let count = submission.records.len();
        let fixups = submission.fixups;
        if count == 0 {
            return Ok(Receipt {
                outcome: crate::Outcome::Committed,
                records: 0,
                rejected: 0,
                fixups,
                stream_id: self.stream_id,
                seqs: None,
            });
        }
        // Room first, numbers after: a submission given up while it waits for room has
        // taken no seq, so it leaves no gap. Its records count against the queue's
        // capacity until their fate is known, so submissions cannot pile up in memory.
        let room = u32::try_from(count.min(self.tx.max_capacity())).unwrap_or(u32::MAX);
        let held = self
            .submitted
            .clone()
            .acquire_many_owned(room)
            .await
            .map_err(|_| Error::WriterStopped)?;
        let slot = self.tx.reserve().await.map_err(|_| Error::WriterStopped)?;
        let first = self.seq.next_run(count);
        let records = submission
            .records
            .into_iter()
            .zip(first..)
            .map(|(log, seq)| Queued { seq, log })
            .collect();
        let (reply, fate) = oneshot::channel();
        slot.send(Message::Submit(Box::new(Submitted {
            records,
            key: submission.key,
            reply,
            held,
        })));
        Counters::add(&self.counters.enqueued, count as u64);
        Counters::add(&self.counters.fixups, fixups);
        let fate = fate.await.map_err(|_| Error::WriterStopped)?;
        Ok(Receipt {
            outcome: fate.outcome(),
            records: count,
            rejected: fate.rejected,
            fixups,
            stream_id: self.stream_id,
            seqs: Some((first, first + count as i64 - 1)),
        })
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
