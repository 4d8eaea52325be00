//! The background writer: batches records by size and time and writes them with `COPY`.
//!
//! It runs on its own thread with its own single-threaded runtime, so it never competes
//! with the application's tasks, works the same under any runtime flavour (or none), and is
//! not cancelled when the application's runtime shuts down before `shutdown` is awaited.
//!
//! While the database is unreachable the writer retries the batch in hand with capped
//! backoff, and new records wait in the bounded queue; when that is full the layer counts
//! them as dropped and the writer reports the drops. A batch refused for its data is split
//! in halves until the bad record is alone; that record goes to `audit_logs_rejected` and
//! every other one is written.
//!
//! Its own diagnostics are ordinary tracing events with target `audit_layer::writer`, which
//! the audit filter never selects, so they reach the application's other layers and never
//! become audit records.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::Instant;

use super::copy::{part_key, BatchKey, Fate};
use super::copy::{Failure, Sink};
use super::retry::{is_connection_problem, Backoff, FailureKind, UNDEFINED_COLUMN};
use super::spool::{Corruption, Spool};
use crate::error::Error;
use crate::queue::Pending;
use crate::queue::{Ack, Message};
use crate::queue::{Queued, Sequence};
use crate::record::{AuditLog, Severity};
use crate::schema;
use crate::stats::Counters;
use crate::submit::{BatchFate, IdempotencyKey, Submitted};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The writer's tuning, set through the builder.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub(crate) batch_size: usize,
    pub(crate) batch_max_wait: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) run_migrations: bool,
    pub(crate) migrate_timeout: Duration,
    pub(crate) max_in_flight: usize,
    /// Benchmarks of the emitting side only: count batches as written and drop them.
    pub(crate) discard: bool,
}

/// Attempts at writing a submission whole that may fail (out of time, or refused in a way
/// no single record explains) before it is written in parts instead, without its
/// idempotency key.
const WHOLE_ATTEMPTS: u32 = 3;

/// How long the writer waits before looking at an empty queue again: it starts short after
/// activity and doubles while the queue stays empty.
const IDLE_POLL_MIN: Duration = Duration::from_micros(500);
const IDLE_POLL_MAX: Duration = Duration::from_millis(10);

pub(crate) struct Writer {
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    config: WriterConfig,
    /// One permit per batch being written; all of them means nothing is in flight.
    in_flight: Arc<Semaphore>,
}

/// What the concurrent batch writes share.
struct Shared {
    sink: Sink,
    counters: Arc<Counters>,
    /// This writer's stream: its records' `stream_id`, and its batches' ledger key.
    stream_id: i64,
    next_batch: AtomicI64,
    seq: Arc<Sequence>,
    /// Drops already recorded as `audit_dropped` records.
    drops_recorded: AtomicU64,
    retry_initial: Duration,
    retry_max: Duration,
    drop_report: Mutex<DropReport>,
    spool: Option<Mutex<Spool>>,
    /// Signalled when batches enter or leave the spool.
    spool_changed: Notify,
}

#[derive(Default)]
struct DropReport {
    reported: u64,
    at: Option<Instant>,
    spool_full_at: Option<Instant>,
}

impl Writer {
    pub(crate) fn new(
        rx: mpsc::Receiver<Message>,
        sink: Sink,
        counters: Arc<Counters>,
        seq: Arc<Sequence>,
        stream_id: i64,
        spool: Option<Spool>,
        config: WriterConfig,
    ) -> Self {
        if let Some(spool) = &spool {
            counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        }
        Writer {
            rx,
            shared: Arc::new(Shared {
                sink,
                counters,
                stream_id,
                next_batch: AtomicI64::new(1),
                seq,
                drops_recorded: AtomicU64::new(0),
                retry_initial: config.retry_initial,
                retry_max: config.retry_max,
                drop_report: Mutex::new(DropReport::default()),
                spool: spool.map(Mutex::new),
                spool_changed: Notify::new(),
            }),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
        }
    }

    /// Starts writing a batch as soon as fewer than `max_in_flight` batches are being
    /// written. While PostgreSQL works on one `COPY`, the next is already streaming, so the
    /// server's ingest runs on more than one core.
    async fn dispatch(&self, mut batch: Vec<Queued>) {
        if let Some(notice) = self.shared.drop_notice() {
            batch.push(notice);
        }
        self.dispatch_batch(batch, None, None).await;
    }

    /// Dispatches a submission's records as a batch of their own, under its key, and
    /// tells the submitter what became of it.
    async fn dispatch_submission(&self, submitted: Box<Submitted>) {
        let Submitted {
            records,
            key,
            reply,
            held,
        } = *submitted;
        self.dispatch_batch(records, key, Some((reply, held))).await;
    }

    async fn dispatch_batch(
        &self,
        batch: Vec<Queued>,
        claim: Option<IdempotencyKey>,
        submitter: Option<(
            oneshot::Sender<BatchFate>,
            tokio::sync::OwnedSemaphorePermit,
        )>,
    ) {
        let answer = |fate: BatchFate| {
            if let Some((reply, held)) = submitter {
                // The submitter may have given up waiting; the batch is written anyway.
                let _ = reply.send(fate);
                drop(held);
            }
        };
        if batch.is_empty() {
            return answer(BatchFate::default());
        }
        if self.config.discard {
            Counters::add(&self.shared.counters.written, batch.len() as u64);
            return answer(BatchFate::default());
        }
        // The batch's key, and whether it goes to the spool, are decided here, in
        // dispatch order, so that batches reach the table (directly or through the spool)
        // in the order they were formed.
        let key = self.shared.new_key();
        let free = self.in_flight.clone().try_acquire_owned().ok();
        if self.shared.spool.is_some() {
            // While the spool holds anything, new batches queue behind it on disk. And
            // with every slot taken (the database slower than the emitters) the batch
            // goes there too, replayed in order, exactly once, as after an outage,
            // instead of waiting while the queue fills and records are dropped.
            let behind_spool = self.shared.spool_active();
            if (behind_spool || free.is_none())
                && self.shared.spool_takes(key, &batch, claim.as_ref())
            {
                if !behind_spool {
                    Counters::add(&self.shared.counters.spilled_batches, 1);
                }
                return answer(BatchFate {
                    spooled: true,
                    ..BatchFate::default()
                });
            }
        }
        let permit = match free {
            Some(permit) => permit,
            // The semaphore is never closed, so acquiring only waits.
            None => match self.in_flight.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let fate = match claim {
                Some(claim) => shared.write_submission(key, batch, claim, true).await,
                None => shared.write_batch(key, batch, true).await,
            };
            drop(permit);
            answer(fate);
        });
    }

    /// Returns once every dispatched batch is committed or kept as rejected, the spool
    /// included.
    async fn settle(&self) {
        let all = u32::try_from(self.config.max_in_flight).unwrap_or(u32::MAX);
        // Acquired and released at once: only the waiting matters.
        let _ = self.in_flight.acquire_many(all).await;
        while self.shared.spool_active() {
            tokio::select! {
                () = self.shared.spool_changed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    pub(crate) async fn run(mut self) {
        if self.config.run_migrations {
            self.shared.migrate(self.config.migrate_timeout).await;
        }
        if self.shared.spool.is_some() {
            tokio::spawn(self.shared.clone().replay());
        }
        let size = self.config.batch_size;
        let mut messages = Vec::with_capacity(size);
        let mut batch: Vec<Queued> = Vec::with_capacity(size);
        // When the oldest record of the current batch must be written at the latest.
        let mut deadline = Instant::now();
        let mut stop_acks: Vec<Ack> = Vec::new();
        let mut idle = IDLE_POLL_MIN;
        loop {
            // The queue is polled rather than awaited: a receiver parked on it would be woken
            // by every record, a system call on the emitting thread each time (a quarter of
            // an event's cost when measured). Polling costs a record at most IDLE_POLL_MAX of
            // latency, well inside batch_max_wait. Taking many at once returns their queue
            // slots in one atomic operation, instead of one per record that the emitting
            // thread's next send must wait to see.
            let mut closed = false;
            let mut poll = Context::from_waker(Waker::noop());
            if let Poll::Ready(0) = self.rx.poll_recv_many(&mut poll, &mut messages, size) {
                closed = true;
            }
            if messages.is_empty() {
                if closed {
                    // Every sender is gone (layer and handle dropped): write what is left.
                    self.dispatch(take_batch(&mut batch, size)).await;
                    self.settle().await;
                    return;
                }
                if !batch.is_empty() && Instant::now() >= deadline {
                    self.dispatch(take_batch(&mut batch, size)).await;
                    continue;
                }
                let wake = match batch.is_empty() {
                    true => Instant::now() + idle,
                    false => deadline.min(Instant::now() + idle),
                };
                tokio::time::sleep_until(wake).await;
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            }
            idle = IDLE_POLL_MIN;
            for message in messages.drain(..) {
                match message {
                    Message::Record(record) => {
                        if batch.is_empty() {
                            deadline = Instant::now() + self.config.batch_max_wait;
                        }
                        batch.push(record);
                        if batch.len() >= size {
                            self.dispatch(take_batch(&mut batch, size)).await;
                        }
                    }
                    Message::Submit(submitted) => self.dispatch_submission(submitted).await,
                    Message::Flush(ack) => {
                        self.dispatch(take_batch(&mut batch, size)).await;
                        self.settle().await;
                        ack.send();
                    }
                    Message::Shutdown(ack) => stop_acks.push(ack),
                }
            }
            if !stop_acks.is_empty() {
                self.drain_and_stop(batch, stop_acks).await;
                return;
            }
        }
    }

    /// Refuses new records, writes everything already queued, then acknowledges.
    async fn drain_and_stop(&mut self, mut batch: Vec<Queued>, mut acks: Vec<Ack>) {
        let size = self.config.batch_size;
        self.rx.close();
        while let Some(message) = self.rx.recv().await {
            match message {
                Message::Record(record) => {
                    batch.push(record);
                    if batch.len() >= size {
                        self.dispatch(take_batch(&mut batch, size)).await;
                    }
                }
                Message::Submit(submitted) => self.dispatch_submission(submitted).await,
                Message::Flush(ack) | Message::Shutdown(ack) => acks.push(ack),
            }
        }
        self.dispatch(batch).await;
        self.settle().await;
        self.shared.report_drops(true);
        for ack in acks {
            ack.send();
        }
    }
}

impl Shared {
    fn new_key(&self) -> BatchKey {
        BatchKey {
            stream_id: self.stream_id,
            batch_id: self.next_batch.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A record the writer adds to its stream to explain something about it (records
    /// dropped, a submission not written), numbered like any record: the table then says
    /// itself why seqs are missing.
    fn notice(
        &self,
        event_type: &str,
        severity: Severity,
        message: String,
        members: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
    ) -> Queued {
        let mut log = AuditLog::new("system", event_type, message);
        log.severity = severity;
        for (key, value) in members {
            log.metadata.insert(key.into(), value);
        }
        Queued {
            seq: self.seq.next(),
            log: Pending::from_log(log),
        }
    }

    /// An `audit_dropped` record for the drops not yet recorded.
    fn drop_notice(&self) -> Option<Queued> {
        let dropped = self.counters.dropped();
        let recorded = self.drops_recorded.load(Ordering::Relaxed);
        if dropped <= recorded {
            return None;
        }
        self.drops_recorded.store(dropped, Ordering::Relaxed);
        let full = self.counters.dropped_queue_full.load(Ordering::Relaxed);
        let stopped = self.counters.dropped_writer_stopped.load(Ordering::Relaxed);
        Some(self.notice(
            "audit_dropped",
            Severity::Error,
            format!("{} audit records dropped", dropped - recorded),
            [
                ("dropped", (dropped - recorded).into()),
                ("dropped_total", dropped.into()),
                ("dropped_queue_full_total", full.into()),
                ("dropped_writer_stopped_total", stopped.into()),
                (
                    "explanation",
                    "the records are missing from this stream's seq numbers".into(),
                ),
            ],
        ))
    }

    /// Writes a batch under its ledger key, each record exactly once, isolating refused
    /// records. Returns once every record is committed, kept as rejected, or (when
    /// `may_spill` and the database fails) safely in the spool.
    async fn write_batch(&self, key: BatchKey, batch: Vec<Queued>, may_spill: bool) -> BatchFate {
        let mut fate = BatchFate::default();
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        // Parts still to write, the next one last; each under its ledger key.
        let mut pending = vec![(key, batch)];
        while let Some((key, chunk)) = pending.pop() {
            loop {
                let failure = match self.sink.copy(key, &chunk).await {
                    Ok(()) => {
                        self.committed(chunk.len(), &mut backoff);
                        break;
                    }
                    Err(failure) => failure,
                };
                match failure.kind {
                    FailureKind::AlreadyCommitted => {
                        // An earlier attempt whose answer was lost did commit; or its key
                        // is a fence (rows = 0): the batch was split before (a replay of a
                        // spooled batch after a crash), and its parts, under keys that
                        // are the same every time, are where its records went.
                        if self.fence(key, &mut backoff).await == Fate::Committed {
                            self.committed(chunk.len(), &mut backoff);
                        } else {
                            pending.extend(split_under_part_keys(key, chunk));
                        }
                        break;
                    }
                    FailureKind::Data => {
                        // The server refused the rows: nothing committed, for certain.
                        if let [record] = chunk.as_slice() {
                            self.reject(key.stream_id, record, failure, &mut backoff)
                                .await;
                            fate.rejected += 1;
                        } else {
                            pending.extend(split_under_part_keys(key, chunk));
                        }
                        break;
                    }
                    // Only submissions have an idempotency key (`write_submission`).
                    FailureKind::Transient | FailureKind::TooSlow | FailureKind::Duplicate => {}
                }
                // The failure may have come after COMMIT was sent. Sending the same key
                // again is safe: the ledger admits a key once, so a batch that did commit
                // answers AlreadyCommitted instead of being written twice.
                self.counters.set_last_error(failure.message.clone());
                if failure.maybe_committed {
                    Counters::add(&self.counters.unsettled_batches, 1);
                }
                if failure.kind == FailureKind::TooSlow && chunk.len() > 1 {
                    // Smaller parts need keys of their own: first make sure this one can
                    // never commit, or learn that it did.
                    if self.fence(key, &mut backoff).await == Fate::Committed {
                        self.committed(chunk.len(), &mut backoff);
                        break;
                    }
                    Counters::add(&self.counters.retries, 1);
                    pending.extend(split_under_part_keys(key, chunk));
                    break;
                }
                if may_spill && self.spool_takes(key, &chunk, None) {
                    fate.spooled = true;
                    break;
                }
                self.wait_before_retry(&failure.message, &mut backoff).await;
            }
        }
        self.report_drops(false);
        fate
    }

    /// Writes a submission sent under an idempotency key: whole, in one transaction (its
    /// records, the ones PostgreSQL refuses into `audit_logs_rejected`, and its ledger
    /// row with the key), so that the key stands for all of it or none. It is not split:
    /// the records PostgreSQL refuses are found by trial copies that are rolled back, and
    /// a call too slow (or a refusal no single record explains) is tried again whole, up
    /// to 3 times; after that it is written in parts without its key (reported), rather
    /// than not at all.
    ///
    /// If a batch under the same key committed before, nothing is written: a retry (the
    /// same request digest) is suppressed; a key reused for other records is refused when
    /// its sender waits for the answer (`may_spill`), and written without the key when it
    /// comes from the spool (its sender was told it was spooled). Either way a notice
    /// names the seqs left unused.
    async fn write_submission(
        &self,
        key: BatchKey,
        batch: Vec<Queued>,
        claim: IdempotencyKey,
        may_spill: bool,
    ) -> BatchFate {
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        // Positions of the records PostgreSQL refuses, with the reason.
        let mut refused: Vec<(usize, Failure)> = Vec::new();
        let mut unwritable_whole = 0;
        loop {
            let kept: Vec<Queued> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
                .map(|(_, record)| record.clone())
                .collect();
            let reasons: Vec<(&Queued, &Failure)> =
                refused.iter().map(|(i, f)| (&batch[*i], f)).collect();
            let written = self
                .sink
                .copy_claimed(key, &kept, &reasons, Some(&claim))
                .await;
            let failure = match written {
                Ok(()) => return self.submission_committed(&kept, &refused, &mut backoff),
                Err(failure) => failure,
            };
            if failure.sqlstate.as_deref() == Some(UNDEFINED_COLUMN) {
                // A schema without migration 0008: the records matter more than the key.
                let error = format!(
                    "idempotency keys need migration 0008 (run the migrations); a submission \
                     under {:?} is written without its key: {}",
                    claim.as_str(),
                    failure.message
                );
                tracing::error!(error = %error, "audit submission written without its idempotency key");
                self.counters.set_last_error(error);
                return self.write_batch(key, batch, may_spill).await;
            }
            match failure.kind {
                FailureKind::AlreadyCommitted => {
                    if self.fence(key, &mut backoff).await == Fate::Committed {
                        return self.submission_committed(&kept, &refused, &mut backoff);
                    }
                    // A fence: settled before a crash (a duplicate, a key reused, or
                    // written in parts), and replayed again: settled the same way.
                    return self
                        .not_written(key, batch, claim, may_spill, &mut backoff)
                        .await;
                }
                FailureKind::Duplicate => {
                    // This very batch, its answer lost (its own key is in the ledger), or
                    // another under the same idempotency key.
                    if self.fence(key, &mut backoff).await == Fate::Committed {
                        return self.submission_committed(&kept, &refused, &mut backoff);
                    }
                    return self
                        .not_written(key, batch, claim, may_spill, &mut backoff)
                        .await;
                }
                FailureKind::Data => {
                    match self.refused_records(key.stream_id, &batch, &refused).await {
                        // Nothing committed, for certain: the same key is tried again, without
                        // the records found refused.
                        Ok(found) if !found.is_empty() => {
                            refused.extend(found);
                            continue;
                        }
                        // Refused whole, yet no record alone is (a trigger on the ledger, a
                        // constraint that depends on the whole): it counts as a failed whole
                        // attempt, and after a few the batch is written as any other is.
                        Ok(_) => unwritable_whole += 1,
                        Err(probe) if probe.kind == FailureKind::TooSlow => unwritable_whole += 1,
                        Err(probe) => {
                            self.wait_before_retry(&probe.message, &mut backoff).await;
                            continue;
                        }
                    }
                }
                FailureKind::TooSlow => unwritable_whole += 1,
                FailureKind::Transient => {}
            }
            if unwritable_whole >= WHOLE_ATTEMPTS {
                // Not writable whole (too slow within the timeout, or refused in a way no
                // single record explains): written in parts, as any batch is, once this
                // attempt surely never commits. The key cannot stand for parts, so it is
                // not kept (said, not hidden).
                if self.fence(key, &mut backoff).await == Fate::Committed {
                    return self.submission_committed(&kept, &refused, &mut backoff);
                }
                let error = format!(
                    "a submission under {:?} could not be written whole ({}); written in \
                     parts, without its idempotency key",
                    claim.as_str(),
                    failure.message
                );
                tracing::error!(error = %error, "audit submission written without its idempotency key");
                self.counters.set_last_error(error);
                return self.write_batch(part_key(key, 0), batch, may_spill).await;
            }
            self.counters.set_last_error(failure.message.clone());
            if failure.maybe_committed {
                Counters::add(&self.counters.unsettled_batches, 1);
            }
            // Sent again under the same key, a batch that did commit answers
            // AlreadyCommitted; to the spool it goes whole, key and all.
            if may_spill && self.spool_takes(key, &batch, Some(&claim)) {
                return BatchFate {
                    spooled: true,
                    ..BatchFate::default()
                };
            }
            self.wait_before_retry(&failure.message, &mut backoff).await;
        }
    }

    fn submission_committed(
        &self,
        kept: &[Queued],
        refused: &[(usize, Failure)],
        backoff: &mut Backoff,
    ) -> BatchFate {
        self.committed(kept.len(), backoff);
        Counters::add(&self.counters.rejected, refused.len() as u64);
        if let Some((_, reason)) = refused.first() {
            self.counters.set_last_error(format!(
                "{} records of a submission rejected: {}",
                refused.len(),
                reason.message
            ));
        }
        self.report_drops(false);
        BatchFate {
            rejected: refused.len(),
            ..BatchFate::default()
        }
    }

    /// The records of `batch` not yet known refused that PostgreSQL refuses, each with its
    /// reason, found by halving in trial copies that are rolled back.
    async fn refused_records(
        &self,
        stream_id: i64,
        batch: &[Queued],
        known: &[(usize, Failure)],
    ) -> Result<Vec<(usize, Failure)>, Failure> {
        let candidates: Vec<usize> = (0..batch.len())
            .filter(|i| !known.iter().any(|(r, _)| r == i))
            .collect();
        let mut found = Vec::new();
        let mut parts = vec![candidates];
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let records: Vec<Queued> = part.iter().map(|i| batch[*i].clone()).collect();
            match self.sink.probe(stream_id, &records).await {
                Ok(()) => {}
                Err(failure) if failure.kind == FailureKind::Data => {
                    if let [one] = part.as_slice() {
                        found.push((*one, failure));
                    } else {
                        let mut first = part;
                        let second = first.split_off(first.len() / 2);
                        parts.push(second);
                        parts.push(first);
                    }
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(found)
    }

    /// A submission that is not written because another batch holds its key.
    async fn not_written(
        &self,
        key: BatchKey,
        batch: Vec<Queued>,
        claim: IdempotencyKey,
        may_spill: bool,
        backoff: &mut Backoff,
    ) -> BatchFate {
        let earlier = loop {
            match self.sink.claimed_digest(&claim).await {
                Ok(digest) => break digest,
                Err(failure) => self.wait_before_retry(&failure.message, backoff).await,
            }
        };
        let retry = earlier.as_deref() == Some(&claim.request_digest()[..]);
        // No batch holds the key: this one was written in parts without it before a
        // crash (`write_submission`'s fallback), and goes on the same way.
        if earlier.is_none() && !may_spill {
            return self.write_batch(part_key(key, 0), batch, false).await;
        }
        if !retry && !may_spill {
            // From the spool: its sender was told it was spooled, so it is written, only
            // not under a key that stands for other records.
            tracing::warn!(
                idempotency_key = %claim.as_str(),
                "a spooled submission reused an idempotency key for other records; written without it"
            );
            self.counters.set_last_error(format!(
                "idempotency key {:?} reused for other records; written without it",
                claim.as_str()
            ));
            return self.write_batch(part_key(key, 0), batch, false).await;
        }
        let seqs = batch.iter().map(|r| r.seq);
        let (first, last) = (seqs.clone().min(), seqs.max());
        Counters::add(&self.counters.suppressed_duplicates, batch.len() as u64);
        let (event_type, why) = if retry {
            (
                "audit_duplicate_suppressed",
                "a retry of a submission already committed under its idempotency key: the records are in the table under the first attempt",
            )
        } else {
            (
                "audit_submission_refused",
                "its idempotency key was used before for other records: its sender was told so, and nothing of it was written",
            )
        };
        let notice = self.notice(
            event_type,
            Severity::Warning,
            format!("{} audit records not written: {why}", batch.len()),
            [
                ("idempotency_key", claim.as_str().into()),
                ("records", batch.len().into()),
                ("first_seq", first.into()),
                ("last_seq", last.into()),
                (
                    "explanation",
                    "these seqs of this stream are not used".into(),
                ),
            ],
        );
        self.write_batch(self.new_key(), vec![notice], false).await;
        BatchFate {
            duplicate: retry,
            key_reused: !retry,
            ..BatchFate::default()
        }
    }

    fn spool_active(&self) -> bool {
        self.spool
            .as_ref()
            .and_then(|s| s.lock().ok())
            .is_some_and(|s| !s.is_empty())
    }

    /// Appends a batch to the spool; `false` when there is no spool, no room, or the disk
    /// fails (the caller then keeps the batch in memory and retries).
    fn spool_takes(
        &self,
        key: BatchKey,
        records: &[Queued],
        claim: Option<&IdempotencyKey>,
    ) -> bool {
        let Some(spool) = &self.spool else {
            return false;
        };
        let Ok(mut spool) = spool.lock() else {
            return false;
        };
        match spool.append(key, records, claim) {
            Ok(true) => {
                Counters::add(&self.counters.spooled, records.len() as u64);
                self.counters
                    .spool_bytes
                    .store(spool.bytes(), Ordering::Relaxed);
                self.spool_changed.notify_one();
                true
            }
            Ok(false) => {
                self.report_spool_full();
                false
            }
            Err(e) => {
                let error = format!("cannot append to the spool: {e}");
                tracing::error!(error = %error, "audit spool failed; keeping the batch in memory");
                self.counters.set_last_error(error);
                false
            }
        }
    }

    fn report_spool_full(&self) {
        let Ok(mut report) = self.drop_report.lock() else {
            return;
        };
        if report
            .spool_full_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!("audit spool is full; batches wait in memory, then the queue fills");
            report.spool_full_at = Some(Instant::now());
        }
    }

    /// Writes the spool back, oldest batch first, for as long as the writer lives.
    async fn replay(self: Arc<Self>) {
        let Some(spool) = &self.spool else {
            return;
        };
        loop {
            let next = match spool.lock() {
                Ok(mut spool) => spool.peek(|c| self.report_corruption(c)),
                Err(_) => return,
            };
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    tokio::select! {
                        () = self.spool_changed.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
                Err(e) => {
                    let error = format!("cannot read the spool: {e}");
                    tracing::error!(error = %error, "audit spool failed");
                    self.counters.set_last_error(error);
                    tokio::time::sleep(self.retry_max).await;
                    continue;
                }
            };
            let frame_bytes = batch.frame_bytes;
            match batch.claim {
                Some(claim) => {
                    self.write_submission(batch.key, batch.records, claim, false)
                        .await
                }
                None => self.write_batch(batch.key, batch.records, false).await,
            };
            if let Ok(mut spool) = spool.lock() {
                spool.consume(frame_bytes);
                // Reading on retires replayed segments, so the size shown stays true.
                let _ = spool.peek(|c| self.report_corruption(c));
                self.counters
                    .spool_bytes
                    .store(spool.bytes(), Ordering::Relaxed);
            }
            self.spool_changed.notify_waiters();
        }
    }

    fn report_corruption(&self, c: Corruption) {
        Counters::add(&self.counters.spool_corrupt, 1);
        let error = format!(
            "spool segment {} is damaged at byte {}: {}; set aside as .corrupt",
            c.segment.display(),
            c.offset,
            c.reason
        );
        tracing::error!(error = %error, "audit spool damaged: records in the damaged part are not replayed");
        self.counters.set_last_error(error);
    }

    fn committed(&self, rows: usize, backoff: &mut Backoff) {
        Counters::add(&self.counters.written, rows as u64);
        Counters::add(&self.counters.batches, 1);
        backoff.reset();
    }

    /// Learns whether a batch with an unknown outcome committed, making sure it never will
    /// if it has not. Waits for the database as long as it takes.
    async fn fence(&self, key: BatchKey, backoff: &mut Backoff) -> Fate {
        loop {
            match self.sink.fence(key).await {
                Ok(fate) => return fate,
                Err(failure) => self.wait_before_retry(&failure.message, backoff).await,
            }
        }
    }

    async fn reject(
        &self,
        stream_id: i64,
        record: &Queued,
        reason: Failure,
        backoff: &mut Backoff,
    ) {
        loop {
            match self.sink.keep_rejected(stream_id, record, &reason).await {
                Ok(()) => {
                    Counters::add(&self.counters.rejected, 1);
                    self.counters
                        .set_last_error(format!("record rejected: {}", reason.message));
                    tracing::error!(
                        reason = %reason.message,
                        event_type = %record.log.event_type(),
                        username = %record.log.username(),
                        seq = record.seq,
                        "PostgreSQL refused an audit record; kept in audit_logs_rejected, \
                         the rest of its batch was written"
                    );
                    return;
                }
                Err(failure) if failure.kind == FailureKind::Data => {
                    // Not even the JSON form is accepted: the log is the last place left.
                    Counters::add(&self.counters.rejected, 1);
                    self.counters.set_last_error(format!(
                        "record rejected and not storable: {}",
                        failure.message
                    ));
                    tracing::error!(
                        reason = %reason.message,
                        rejected_table_error = %failure.message,
                        record = %record.log.to_log().to_json(),
                        seq = record.seq,
                        "PostgreSQL refused an audit record and could not keep it in \
                         audit_logs_rejected; the record is in this message"
                    );
                    return;
                }
                Err(failure) => self.wait_before_retry(&failure.message, backoff).await,
            }
        }
    }

    async fn wait_before_retry(&self, reason: &str, backoff: &mut Backoff) {
        Counters::add(&self.counters.retries, 1);
        self.counters.set_last_error(reason.to_owned());
        let delay = backoff.next_delay();
        tracing::warn!(
            error = %reason,
            retry_in = ?delay,
            "audit writer cannot write to the database; retrying"
        );
        self.report_drops(false);
        tokio::time::sleep(delay).await;
    }

    async fn migrate(&self, timeout: Duration) {
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        loop {
            let attempt = async {
                let client = self.sink.client().await.map_err(Some)?;
                match tokio::time::timeout(timeout, schema::migrate(&client)).await {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(e)) => Err(Some(Failure {
                        maybe_committed: false,
                        kind: match &e {
                            Error::Db(db) if is_connection_problem(db) => FailureKind::Transient,
                            _ => FailureKind::Data,
                        },
                        sqlstate: None,
                        message: e.to_string(),
                    })),
                    Err(_) => {
                        // Possibly inside BEGIN with a statement running: never reuse it.
                        drop(deadpool_postgres::Object::take(client));
                        Err(None)
                    }
                }
            };
            match attempt.await {
                Ok(report) => {
                    tracing::info!(
                        applied = ?report.applied,
                        version = report.version,
                        "audit schema is up to date"
                    );
                    return;
                }
                Err(None) => {
                    let reason = format!("migrations did not finish within {timeout:?}");
                    self.wait_before_retry(&reason, &mut backoff).await
                }
                Err(Some(f)) if f.kind == FailureKind::Transient => {
                    self.wait_before_retry(&f.message, &mut backoff).await
                }
                Err(Some(f)) => {
                    // Not something waiting fixes (no DDL rights, schema too new): say so and
                    // write anyway; if the schema is usable, records still get through.
                    self.counters
                        .set_last_error(format!("migrations failed: {}", f.message));
                    tracing::error!(error = %f.message, "audit schema migrations failed; writing anyway");
                    return;
                }
            }
        }
    }

    /// Says how many records the layer dropped since the last report, at most once a second
    /// (or now, when `final_report`).
    fn report_drops(&self, final_report: bool) {
        let dropped = self.counters.dropped();
        let Ok(mut report) = self.drop_report.lock() else {
            return;
        };
        if dropped == report.reported {
            return;
        }
        let due = report
            .at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if due || final_report {
            tracing::warn!(
                dropped = dropped - report.reported,
                dropped_total = dropped,
                "audit records dropped: the queue was full or the writer had stopped"
            );
            report.reported = dropped;
            report.at = Some(Instant::now());
        }
    }
}

/// A batch in halves, each under its part key (`copy::part_key`), the first half last (it
/// is written first). A single record goes on whole under its first part key.
fn split_under_part_keys(key: BatchKey, mut chunk: Vec<Queued>) -> Vec<(BatchKey, Vec<Queued>)> {
    if chunk.len() < 2 {
        return vec![(part_key(key, 0), chunk)];
    }
    let second = chunk.split_off(chunk.len() / 2);
    vec![(part_key(key, 1), second), (part_key(key, 0), chunk)]
}

fn take_batch(batch: &mut Vec<Queued>, capacity: usize) -> Vec<Queued> {
    std::mem::replace(batch, Vec::with_capacity(capacity))
}
