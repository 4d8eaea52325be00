//! The bounded queue between the emitting threads and the writer.
//!
//! The layer only ever calls `try_send`: with the default policy an emitting thread never
//! waits, whatever the database does. Flush and shutdown requests travel through the same
//! queue, so they reach the writer after every record emitted before them.
//!
//! Every record is numbered here, in emission order, before it may be dropped: a dropped
//! record leaves a gap in its stream's `seq` column, so loss shows in the table itself.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::pending::Pending;
use crate::stats::Counters;

/// A record and its number in this layer's stream.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) seq: i64,
    pub(crate) log: Pending,
}

/// What to do with a record when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Drop it at once, count it, and have the writer record how many were dropped as
    /// soon as it can (an `audit_dropped` record). The emitting thread never waits.
    Drop,
    /// Wait up to this long for room (the emitting thread blocks, polling), then drop as
    /// above. Trades the application's latency for fewer lost records.
    Block(Duration),
}

/// What the writer receives.
// Nearly every message is a record: boxing it to shrink the rare control messages would
// cost an allocation per event on the emitting thread.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Message {
    Record(Queued),
    /// A submission's records, written as a batch of their own (`crate::submit`). Boxed:
    /// every queue slot is as large as the largest message, and records are nearly all.
    Submit(Box<crate::submit::Submitted>),
    /// Commit everything received so far, then acknowledge.
    Flush(Ack),
    /// Commit everything, acknowledge, and stop.
    Shutdown(Ack),
}

/// How the writer answers a flush or shutdown request.
pub(crate) enum Ack {
    /// An awaiting task.
    Async(oneshot::Sender<()>),
    /// A thread blocked with a timeout (dropping the handle outside any runtime).
    Blocking(std::sync::mpsc::SyncSender<()>),
}

impl Ack {
    pub(crate) fn send(self) {
        // The requester may have given up waiting; that is its choice, not an error.
        match self {
            Ack::Async(tx) => {
                let _ = tx.send(());
            }
            Ack::Blocking(tx) => {
                let _ = tx.try_send(());
            }
        }
    }
}

/// The sending side, held by the layer.
#[derive(Clone)]
pub(crate) struct RecordSender {
    tx: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    seq: Arc<Sequence>,
    overflow: OverflowPolicy,
}

/// The stream's record numbers, shared by the layer and the writer (which numbers its own
/// `audit_dropped` records from it too).
#[derive(Debug, Default)]
pub(crate) struct Sequence(AtomicI64);

impl Sequence {
    pub(crate) fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `n` numbers in a row, the first of them returned.
    pub(crate) fn next_run(&self, n: usize) -> i64 {
        self.0.fetch_add(n as i64, Ordering::Relaxed) + 1
    }
}

impl RecordSender {
    pub(crate) fn new(
        tx: mpsc::Sender<Message>,
        counters: Arc<Counters>,
        seq: Arc<Sequence>,
        overflow: OverflowPolicy,
    ) -> Self {
        RecordSender {
            tx,
            counters,
            seq,
            overflow,
        }
    }

    /// Hands a record to the writer (waiting only under [`OverflowPolicy::Block`]); counts
    /// it as dropped if it cannot.
    pub(crate) fn push(&self, log: Pending) {
        let mut message = Message::Record(Queued {
            seq: self.seq.next(),
            log,
        });
        let mut deadline = None;
        loop {
            match self.tx.try_send(message) {
                Ok(()) => return Counters::add(&self.counters.enqueued, 1),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Counters::add(&self.counters.dropped_writer_stopped, 1)
                }
                Err(mpsc::error::TrySendError::Full(back)) => {
                    let OverflowPolicy::Block(wait) = self.overflow else {
                        return Counters::add(&self.counters.dropped_queue_full, 1);
                    };
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
                    if Instant::now() >= deadline {
                        return Counters::add(&self.counters.dropped_queue_full, 1);
                    }
                    message = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
}

/// Records in the queue now.
pub(crate) fn depth(tx: &mpsc::Sender<Message>) -> usize {
    tx.max_capacity() - tx.capacity()
}
