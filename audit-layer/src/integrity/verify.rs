//! Checking what PostgreSQL holds against what the writer committed: every record's leaf,
//! recomputed from its row, against the leaves of its batch's ledger row, and every
//! batch's root against its leaves. Each difference is named: a record changed, missing
//! or added (in no committed batch); a batch whose root does not match its leaves. A
//! leaf covers the record's stream, seq and time, so records reordered or swapped are
//! records changed.
//!
//! What this cannot see yet: someone who rewrites records *and* their ledger rows
//! consistently. That needs the ledger sealed into a signed log, which is not built yet.

use std::collections::{HashMap, HashSet};
use std::fmt;

use tokio_postgres::Client;

use super::merkle::{root, Hash};
use super::record::{stored_leaf, STORED_RECORD_COLUMNS};
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
}

impl Report {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks every record and batch in the database `client` is connected to.
pub async fn verify(client: &Client) -> Result<Report, Error> {
    let mut report = Report::default();
    // The committed leaf of each (stream, seq).
    let mut committed: HashMap<(i64, i64), Hash> = HashMap::new();
    let mut proven_streams: HashSet<i64> = HashSet::new();
    let ledger = client
        .query(
            "SELECT stream_id, batch_id, encoding, leaves, root, first_seq, last_seq \
             FROM audit_writer_batches \
             WHERE rows > 0 ORDER BY stream_id, batch_id",
            &[],
        )
        .await?;
    for batch in &ledger {
        let (stream_id, batch_id): (i64, i64) = (batch.get(0), batch.get(1));
        let encoding: Option<i16> = batch.get(2);
        if encoding.is_none() {
            continue;
        }
        report.batches += 1;
        proven_streams.insert(stream_id);
        let leaves: Option<Vec<u8>> = batch.get(3);
        let committed_root: Option<Vec<u8>> = batch.get(4);
        let (Some(leaves), Some(committed_root)) = (leaves, committed_root) else {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
            continue;
        };
        if encoding != Some(1) || leaves.len() % 40 != 0 {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
            continue;
        }
        let range: (Option<i64>, Option<i64>) = (batch.get(5), batch.get(6));
        let mut hashes = Vec::with_capacity(leaves.len() / 40);
        let mut seqs = (None, None);
        for entry in leaves.chunks_exact(40) {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&entry[..8]);
            let seq = i64::from_be_bytes(seq);
            seqs = (seqs.0.or(Some(seq)), Some(seq));
            let mut leaf = [0u8; 32];
            leaf.copy_from_slice(&entry[8..]);
            committed.insert((stream_id, seq), leaf);
            hashes.push(leaf);
        }
        // The seq range says where the batch's records are; it must be theirs.
        if root(&hashes).as_slice() != committed_root.as_slice() || range != seqs {
            report.findings.push(Finding::BatchChanged {
                stream_id,
                batch_id,
            });
        }
    }
    let rows = client
        .query(
            &format!("SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs ORDER BY stream_id, seq"),
            &[],
        )
        .await?;
    let mut seen: HashSet<(i64, i64)> = HashSet::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let (stream_id, seq): (Option<i64>, Option<i64>) =
            (row.try_get("stream_id")?, row.try_get("seq")?);
        let (Some(stream_id), Some(seq)) = (stream_id, seq) else {
            report.unproven += 1;
            continue;
        };
        let leaf = stored_leaf(row)?;
        match committed.get(&(stream_id, seq)) {
            Some(expected) if *expected == leaf => report.proven += 1,
            Some(_) => report
                .findings
                .push(Finding::Changed { id, stream_id, seq }),
            None if proven_streams.contains(&stream_id) => {
                report.findings.push(Finding::Added { id, stream_id, seq })
            }
            None => report.unproven += 1,
        }
        seen.insert((stream_id, seq));
    }
    let mut missing: Vec<(i64, i64)> = committed
        .keys()
        .filter(|key| !seen.contains(key))
        .copied()
        .collect();
    missing.sort_unstable();
    report.findings.extend(
        missing
            .into_iter()
            .map(|(stream_id, seq)| Finding::Missing { stream_id, seq }),
    );
    Ok(report)
}
