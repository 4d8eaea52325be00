//! Counters that make every record's fate visible.
//!
//! Each record the layer sees ends in exactly one of: written, rejected (kept in
//! `audit_logs_rejected`), dropped (queue full or writer stopped), or still pending.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The live counters, shared by the layer, the writer and the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_writer_stopped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) unsettled_batches: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) spilled_batches: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spool_corrupt: AtomicU64,
    pub(crate) fixups: AtomicU64,
    pub(crate) suppressed_duplicates: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_last_error(&self, error: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.dropped_writer_stopped.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self, queue_depth: usize, queue_capacity: usize) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            enqueued: load(&self.enqueued),
            written: load(&self.written),
            dropped: self.dropped(),
            dropped_queue_full: load(&self.dropped_queue_full),
            dropped_writer_stopped: load(&self.dropped_writer_stopped),
            rejected: load(&self.rejected),
            retries: load(&self.retries),
            batches: load(&self.batches),
            unsettled_batches: load(&self.unsettled_batches),
            spooled: load(&self.spooled),
            spilled_batches: load(&self.spilled_batches),
            spool_bytes: load(&self.spool_bytes),
            spool_corrupt: load(&self.spool_corrupt),
            fixups: load(&self.fixups),
            suppressed_duplicates: load(&self.suppressed_duplicates),
            queue_depth,
            queue_capacity,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// A snapshot of the pipeline's counters, from [`AuditHandle::stats`](crate::AuditHandle::stats).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Records accepted into the queue.
    pub enqueued: u64,
    /// Records committed to `audit_logs`.
    pub written: u64,
    /// Records lost before reaching the queue: `dropped_queue_full + dropped_writer_stopped`.
    pub dropped: u64,
    /// Records dropped because the queue was full (the database was slower than the
    /// application for longer than the queue could absorb).
    pub dropped_queue_full: u64,
    /// Records emitted after the writer had shut down.
    pub dropped_writer_stopped: u64,
    /// Records PostgreSQL refused; each is kept in `audit_logs_rejected` with its reason.
    pub rejected: u64,
    /// Failed database attempts that were retried.
    pub retries: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batch attempts that failed in a way that could have happened after `COMMIT` (a
    /// lost connection, a timeout); each was settled from the batch ledger before anything
    /// was sent again, so none was written twice.
    pub unsettled_batches: u64,
    /// Records written to the spool, in all (each is replayed from there).
    pub spooled: u64,
    /// Batches sent to the spool because every in-flight slot was taken (the database
    /// slower than the application, or failing and retried): with a spool, a burst spills
    /// to disk instead of filling the queue. The batches that then queue behind them on
    /// disk are counted in `spooled`, not here.
    pub spilled_batches: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Damaged spool segments found and set aside (`*.spool.corrupt`).
    pub spool_corrupt: u64,
    /// Fix-ups applied to records (each is also noted in the record's metadata).
    pub fixups: u64,
    /// Records of submissions not written because a batch under the same idempotency key
    /// had committed before (a sender's retry); an `audit_duplicate_suppressed` record
    /// names their seqs.
    pub suppressed_duplicates: u64,
    /// Records in the queue now.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// The most recent error the writer met, if any.
    pub last_error: Option<String>,
}

impl Stats {
    /// Records accepted but not yet committed or rejected.
    pub fn pending(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.written + self.rejected + self.suppressed_duplicates)
    }
}
