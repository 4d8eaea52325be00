//! Checking what PostgreSQL holds against what the writer committed: every record's leaf,
//! recomputed from its row, against the leaves of its batch's ledger row, and every
//! batch's root against its leaves. Each difference is named: a record changed, missing
//! or added (in no committed batch); a batch whose root does not match its leaves. A
//! leaf covers the record's stream, seq and time, so records reordered or swapped are
//! records changed.
//!
//! What this cannot see yet: someone who rewrites records *and* their ledger rows
//! consistently. That needs the ledger sealed into a signed log, which is not built yet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use futures_util::TryStreamExt;
use tokio_postgres::Client;

use super::batch::batch_leaves;
use super::merkle::{leaf_hash, root, Hash};
use super::record::{stored_record, STORED_RECORD_COLUMNS};
use crate::error::Error;

/// What is wrong with one record or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The record's stored values are not those committed.
    Changed {
        /// The row's id.
        id: i64,
        /// Its stream.
        stream_id: i64,
        /// Its place in the stream.
        seq: i64,
    },
    /// A committed record is not in the table.
    Missing {
        /// Its stream.
        stream_id: i64,
        /// Its place in the stream.
        seq: i64,
    },
    /// A row of a writer's stream that is in no committed batch.
    Added {
        /// The row's id.
        id: i64,
        /// Its stream.
        stream_id: i64,
        /// Its place in the stream.
        seq: i64,
    },
    /// A ledger row whose root is not the head of its leaves, or whose leaves are
    /// malformed.
    BatchChanged {
        /// The batch's stream.
        stream_id: i64,
        /// The batch.
        batch_id: i64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Changed { id, stream_id, seq } => {
                write!(f, "record {id} (stream {stream_id}, seq {seq}) changed")
            }
            Finding::Missing { stream_id, seq } => {
                write!(f, "record of stream {stream_id}, seq {seq} missing")
            }
            Finding::Added { id, stream_id, seq } => write!(
                f,
                "record {id} (stream {stream_id}, seq {seq}) added: in no committed batch"
            ),
            Finding::BatchChanged {
                stream_id,
                batch_id,
            } => write!(
                f,
                "ledger row of batch {batch_id} (stream {stream_id}) changed"
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Ledger rows whose proof was checked.
    pub batches: u64,
    /// Records proven unchanged.
    pub proven: u64,
    /// Rows that no proof covers, not counted as findings: written without integrity
    /// (before migration 4, or with it turned off), or not by audit-layer (no stream).
    pub unproven: u64,
    /// Every difference found.
    pub findings: Vec<Finding>,
    /// Committed records not in the table because retention retired them (by the
    /// retirement given in the [`RetiredRun`] that covers them), not counted as findings.
    pub retired: BTreeMap<i64, u64>,
}

/// Records that left the table on purpose: the (stream, seq) run of records that one
/// retirement (auditd's `audit_retirements` row, signed) archived and dropped. A
/// committed record in none of these and not in the table is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetiredRun {
    /// The stream.
    pub stream_id: i64,
    /// The first seq of the run.
    pub first_seq: i64,
    /// Its last seq (inclusive).
    pub last_seq: i64,
    /// The retirement that took them.
    pub retirement: i64,
}

impl Report {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Which batches, and so which records, a check covers.
///
/// A scoped check reads only the records of the batches in scope (found through the
/// committing transaction, by the BRIN index on `tx_id`), so it costs what it covers. It
/// finds those records changed, missing, reordered or copied; a row forged outside any
/// batch, with a transaction id of its own, is found only by a check of everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Batches committed at or after this time (the ledger's `committed_at`).
    pub committed_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Batches committed before this time.
    pub committed_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Batches committed by this transaction or a later one (`tx_id`): what was sealed
    /// after a checkpoint already checked.
    pub from_tx: Option<i64>,
}

impl Scope {
    /// Whether it covers everything.
    pub fn is_everything(&self) -> bool {
        *self == Scope::default()
    }
}

/// Checks every record and batch in the database `client` is connected to.
pub async fn verify(client: &Client) -> Result<Report, Error> {
    verify_scoped(client, &Scope::default(), |_| {}).await
}

/// Checks the records and batches in `scope`, calling `progress` with the number of
/// records checked so far every 100,000 records.
pub async fn verify_scoped(
    client: &Client,
    scope: &Scope,
    progress: impl FnMut(u64),
) -> Result<Report, Error> {
    verify_retired(client, scope, &[], progress).await
}

/// Like [`verify_scoped`], counting a committed record that is not in the table as
/// retired, not missing, when one of `retired` covers it.
pub async fn verify_retired(
    client: &Client,
    scope: &Scope,
    retired: &[RetiredRun],
    mut progress: impl FnMut(u64),
) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut retired = retired.to_vec();
    retired.sort();
    // The committed leaf of each (stream, seq).
    let mut committed = Committed::default();
    let in_scope = "($1::timestamptz IS NULL OR b.committed_at >= $1) \
                    AND ($2::timestamptz IS NULL OR b.committed_at < $2) \
                    AND ($3::bigint IS NULL OR b.tx_id >= $3)";
    let bounds: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [
        &scope.committed_since,
        &scope.committed_until,
        &scope.from_tx,
    ];
    let ledger = client
        .query(
            &format!(
                "SELECT stream_id, batch_id, encoding, leaves, root, first_seq, last_seq, rows \
                 FROM audit_writer_batches b \
                 WHERE rows > 0 AND {in_scope} ORDER BY stream_id, batch_id"
            ),
            &bounds,
        )
        .await?;
    for batch in &ledger {
        let (stream_id, batch_id): (i64, i64) = (batch.try_get(0)?, batch.try_get(1)?);
        let encoding: Option<i16> = batch.try_get(2)?;
        if encoding.is_none() {
            continue;
        }
        report.batches += 1;
        committed.stream_or_new(stream_id);
        let leaves: Option<Vec<u8>> = batch.try_get(3)?;
        let committed_root: Option<Vec<u8>> = batch.try_get(4)?;
        let (Some(leaves), Some(committed_root)) = (leaves, committed_root) else {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
            continue;
        };
        let range: (Option<i64>, Option<i64>) = (batch.try_get(5)?, batch.try_get(6)?);
        let rows: i32 = batch.try_get(7)?;
        let entries = (encoding == Some(1))
            .then(|| batch_leaves(&leaves, rows, range.0, range.1))
            .flatten();
        let Some(entries) = entries else {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
            continue;
        };
        let seqs = (entries.first().map(|e| e.0), entries.last().map(|e| e.0));
        let hashes: Vec<Hash> = entries.iter().map(|(_, leaf)| *leaf).collect();
        for (seq, leaf) in entries {
            committed.insert(stream_id, seq, leaf);
        }
        // The seq range says where the batch's records are; it must be theirs.
        if root(&hashes).as_slice() != committed_root.as_slice() || range != seqs {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
        }
    }
    // Streamed in table order (no sort, nothing held but the hashes): a verifier reads
    // the table once, as fast as PostgreSQL sends it.
    let rows = if scope.is_everything() {
        client
            .query_raw(
                &format!("SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs"),
                std::iter::empty::<i64>(),
            )
            .await?
    } else {
        // A batch's records were written by its own transaction.
        client
            .query_raw(
                &format!(
                    "SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs l \
                     WHERE EXISTS (SELECT 1 FROM audit_writer_batches b \
                                   WHERE b.tx_id = l.tx_id AND b.stream_id = l.stream_id \
                                     AND b.rows > 0 AND b.encoding IS NOT NULL AND {in_scope})"
                ),
                bounds.iter().copied(),
            )
            .await?
    };
    let mut rows = std::pin::pin!(rows);
    committed.sort();
    let mut encoding = Vec::with_capacity(1024);
    let mut checked = 0u64;
    while let Some(row) = rows.try_next().await? {
        checked += 1;
        if checked.is_multiple_of(100_000) {
            progress(checked);
        }
        let id: i64 = row.try_get(0)?;
        let record = stored_record(&row)?;
        let (Some(stream_id), Some(seq)) = (record.stream_id, record.seq) else {
            report.unproven += 1;
            continue;
        };
        encoding.clear();
        record.encode(&mut encoding);
        let leaf = leaf_hash(&encoding);
        let Some(stream) = committed.stream(stream_id) else {
            report.unproven += 1;
            continue;
        };
        match stream.take(seq) {
            Some(expected) if expected == leaf => report.proven += 1,
            Some(_) => report
                .findings
                .push(Finding::Changed { id, stream_id, seq }),
            // In no committed batch, or a second row for a record already seen.
            None => report.findings.push(Finding::Added { id, stream_id, seq }),
        }
    }
    report.findings.sort_by_key(|f| match f {
        Finding::Changed { stream_id, seq, .. } | Finding::Added { stream_id, seq, .. } => {
            (*stream_id, *seq)
        }
        Finding::Missing { stream_id, seq } => (*stream_id, *seq),
        Finding::BatchChanged { stream_id, .. } => (*stream_id, i64::MIN),
    });
    for (stream_id, seq) in committed.missing() {
        // Runs of two retirements may overlap (a month restored and retired again): the
        // covering run may start before the last one that starts at or before `seq`.
        let at = retired.partition_point(|r| (r.stream_id, r.first_seq) <= (stream_id, seq));
        let covering = retired[..at]
            .iter()
            .rev()
            .take_while(|r| r.stream_id == stream_id)
            .find(|r| seq <= r.last_seq);
        match covering {
            Some(run) => *report.retired.entry(run.retirement).or_default() += 1,
            None => report.findings.push(Finding::Missing { stream_id, seq }),
        }
    }
    Ok(report)
}

/// The committed leaves of each stream, in seq order, each marked once its row is seen.
///
/// The table is read in about the order it was written, so the next row of a stream is
/// nearly always its next entry: found by a cursor, without hashing a key or searching,
/// which keeps the verifier at the speed PostgreSQL sends rows.
#[derive(Default)]
struct Committed {
    index: HashMap<i64, usize>,
    streams: Vec<(i64, StreamLeaves)>,
    last: Option<(i64, usize)>,
}

#[derive(Default)]
struct StreamLeaves {
    leaves: Vec<(i64, Hash)>,
    seen: Vec<bool>,
    cursor: usize,
}

impl Committed {
    fn stream_or_new(&mut self, stream_id: i64) -> &mut StreamLeaves {
        let at = *self.index.entry(stream_id).or_insert_with(|| {
            self.streams.push((stream_id, StreamLeaves::default()));
            self.streams.len() - 1
        });
        &mut self.streams[at].1
    }

    fn insert(&mut self, stream_id: i64, seq: i64, leaf: Hash) {
        self.stream_or_new(stream_id).leaves.push((seq, leaf));
    }

    /// Sorts each stream's leaves by seq, once all are in.
    fn sort(&mut self) {
        for (_, stream) in &mut self.streams {
            stream.leaves.sort_by_key(|(seq, _)| *seq);
            stream.seen = vec![false; stream.leaves.len()];
        }
    }

    /// The stream's leaves, when any batch of it proved records.
    fn stream(&mut self, stream_id: i64) -> Option<&mut StreamLeaves> {
        let at = match self.last {
            Some((id, at)) if id == stream_id => at,
            _ => {
                let at = *self.index.get(&stream_id)?;
                self.last = Some((stream_id, at));
                at
            }
        };
        Some(&mut self.streams[at].1)
    }

    /// Every committed (stream, seq) whose row was not seen, in order.
    fn missing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let mut streams: Vec<&(i64, StreamLeaves)> = self.streams.iter().collect();
        streams.sort_by_key(|(id, _)| *id);
        streams.into_iter().flat_map(|(id, stream)| {
            stream
                .leaves
                .iter()
                .zip(&stream.seen)
                .filter(|(_, seen)| !**seen)
                .map(move |((seq, _), _)| (*id, *seq))
        })
    }
}

impl StreamLeaves {
    /// The committed leaf of `seq`, marking it seen; `None` when there is none, or when
    /// its row was seen already.
    fn take(&mut self, seq: i64) -> Option<Hash> {
        let at = match self.leaves.get(self.cursor) {
            Some((next, _)) if *next == seq => self.cursor,
            _ => self.leaves.binary_search_by_key(&seq, |(s, _)| *s).ok()?,
        };
        self.cursor = at + 1;
        if std::mem::replace(&mut self.seen[at], true) {
            return None;
        }
        Some(self.leaves[at].1)
    }
}
