//! The bounded queue between the emitting threads and the writer.
//!
//! The layer only ever calls `try_send`: an emitting thread never waits, whatever the
//! database does. Flush and shutdown requests travel through the same queue, so they reach
//! the writer after every record emitted before them.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::record::AuditLog;
use crate::stats::Counters;

/// What the writer receives.
pub(crate) enum Message {
    Record(AuditLog),
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
}

impl RecordSender {
    pub(crate) fn new(tx: mpsc::Sender<Message>, counters: Arc<Counters>) -> Self {
        RecordSender { tx, counters }
    }

    /// Hands a record to the writer without waiting; counts it as dropped if it cannot.
    pub(crate) fn push(&self, record: AuditLog) {
        match self.tx.try_send(Message::Record(record)) {
            Ok(()) => Counters::add(&self.counters.enqueued, 1),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Counters::add(&self.counters.dropped_queue_full, 1)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Counters::add(&self.counters.dropped_writer_stopped, 1)
            }
        }
    }
}

/// Records in the queue now.
pub(crate) fn depth(tx: &mpsc::Sender<Message>) -> usize {
    tx.max_capacity() - tx.capacity()
}
