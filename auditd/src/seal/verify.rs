//! Checking the signed log from what is stored: the tree's leaves against the ledger rows
//! they seal, every stored checkpoint's signature and root against the tree, and any
//! published copy of a checkpoint (kept where the database cannot reach) against the
//! tree. The records themselves are checked against the ledger by
//! `audit_layer::integrity::verify`; together they prove each sealed record unchanged.
//!
//! Every checkpoint is checked against the same stored leaves, so checkpoints that all
//! match are consistent with each other: the tree only grew. One that does not match
//! names the size at which history was rewritten.

use std::collections::HashMap;
use std::fmt;

use audit_layer::integrity::merkle::{CompactTree, Hash};
use audit_layer::integrity::{BatchEntry, BATCH_ENTRY_COLUMNS};
use tokio_postgres::Client;

use super::checkpoint::{Checkpoint, NoteError};
use super::keys::VerifierKey;

/// What is wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFinding {
    /// A position of the tree has no leaf, or a leaf that is not a hash.
    LeafMissing {
        /// The position.
        position: i64,
    },
    /// A sealed batch's ledger row is gone (and, with it, the proof of its records).
    BatchMissing {
        /// Its leaf's position.
        position: i64,
        /// Its stream.
        stream_id: i64,
        /// The batch.
        batch_id: i64,
    },
    /// A sealed batch's ledger row no longer hashes to its leaf.
    LedgerChanged {
        /// Its leaf's position.
        position: i64,
        /// Its stream.
        stream_id: i64,
        /// The batch.
        batch_id: i64,
    },
    /// A ledger row that should have been sealed (it is older than the latest seal's
    /// horizon) and is not in the tree: added after the fact.
    LedgerAdded {
        /// Its stream.
        stream_id: i64,
        /// The batch.
        batch_id: i64,
    },
    /// A stored checkpoint whose note is not signed by a key given, or not well formed.
    CheckpointUnsigned {
        /// The row's id.
        id: i64,
        /// Why.
        why: NoteError,
    },
    /// A stored checkpoint's row does not say what its note says.
    CheckpointRowChanged {
        /// The row's id.
        id: i64,
    },
    /// A checkpoint whose root is not the stored tree's at its size: the tree is not
    /// consistent with it.
    TreeNotConsistent {
        /// The stored checkpoint's id, or `None` for a published copy.
        id: Option<i64>,
        /// Its tree size.
        size: u64,
    },
    /// A checkpoint smaller than one signed before it: the log shrank.
    LogShrank {
        /// The later checkpoint's id.
        id: i64,
        /// Its size.
        size: u64,
        /// The size signed before it.
        earlier: u64,
    },
    /// A published checkpoint not signed by a key given, or not a checkpoint.
    PublishedUnsigned {
        /// Its place among those given.
        index: usize,
        /// Why.
        why: NoteError,
    },
}

impl fmt::Display for LogFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogFinding::LeafMissing { position } => {
                write!(f, "log leaf {position} missing")
            }
            LogFinding::BatchMissing {
                position,
                stream_id,
                batch_id,
            } => write!(
                f,
                "batch {batch_id} (stream {stream_id}) sealed at log leaf {position} missing: its ledger row was deleted"
            ),
            LogFinding::LedgerChanged {
                position,
                stream_id,
                batch_id,
            } => write!(
                f,
                "ledger row of batch {batch_id} (stream {stream_id}) changed since it was sealed at log leaf {position}"
            ),
            LogFinding::LedgerAdded {
                stream_id,
                batch_id,
            } => write!(
                f,
                "ledger row of batch {batch_id} (stream {stream_id}) added: older than the last seal, and not sealed"
            ),
            LogFinding::CheckpointUnsigned { id, why } => {
                write!(f, "checkpoint {id} not trusted: {why}")
            }
            LogFinding::CheckpointRowChanged { id } => {
                write!(f, "checkpoint {id} changed: its row does not say what its signed note says")
            }
            LogFinding::TreeNotConsistent { id: Some(id), size } => write!(
                f,
                "log not consistent with checkpoint {id}: the stored tree's root at size {size} is not the one signed"
            ),
            LogFinding::TreeNotConsistent { id: None, size } => write!(
                f,
                "log not consistent with the published checkpoint of size {size}: the stored tree's root at that size is not the one signed"
            ),
            LogFinding::LogShrank { id, size, earlier } => write!(
                f,
                "checkpoint {id} has size {size}, smaller than the {earlier} signed before it: the log shrank"
            ),
            LogFinding::PublishedUnsigned { index, why } => {
                write!(f, "published checkpoint {} not trusted: {why}", index + 1)
            }
        }
    }
}

/// What a check of the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogReport {
    /// Leaves in the tree.
    pub tree_size: u64,
    /// Records in the sealed batches.
    pub sealed_records: u64,
    /// Batches committed with integrity and not sealed yet (newer than the last seal).
    pub unsealed_batches: u64,
    /// Records those batches hold.
    pub unsealed_records: u64,
    /// Stored checkpoints checked.
    pub checkpoints: u64,
    /// The largest size a trusted checkpoint signed, and when.
    pub latest: Option<Checkpoint>,
    /// Whether signatures were checked (public keys were given).
    pub signatures_checked: bool,
    /// Every difference found.
    pub findings: Vec<LogFinding>,
}

impl LogReport {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks the tree and its checkpoints. Without `keys`, signatures are not checked
/// (only that the checkpoints match the tree); `published` are checkpoint notes kept
/// outside the database.
pub async fn verify_log(
    client: &Client,
    keys: &[VerifierKey],
    published: &[String],
) -> Result<LogReport, tokio_postgres::Error> {
    let mut report = LogReport {
        signatures_checked: !keys.is_empty(),
        ..LogReport::default()
    };
    // The ledger, by batch.
    let ledger = client
        .query(
            &format!("SELECT {BATCH_ENTRY_COLUMNS} FROM audit_writer_batches WHERE rows > 0 AND encoding IS NOT NULL"),
            &[],
        )
        .await?;
    let mut entries: HashMap<(i64, i64), Option<BatchEntry>> = HashMap::with_capacity(ledger.len());
    for row in &ledger {
        let key = (row.try_get("stream_id")?, row.try_get("batch_id")?);
        entries.insert(key, BatchEntry::from_row(row)?);
    }

    // The tree, leaf by leaf, against the ledger.
    let tree_rows = client
        .query(
            "SELECT position, stream_id, batch_id, leaf FROM audit_log_tree ORDER BY position",
            &[],
        )
        .await?;
    let mut leaves: Vec<Hash> = Vec::with_capacity(tree_rows.len());
    let mut sealed: std::collections::HashSet<(i64, i64)> =
        std::collections::HashSet::with_capacity(tree_rows.len());
    for row in &tree_rows {
        let position: i64 = row.try_get(0)?;
        let (stream_id, batch_id): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        let stored: Vec<u8> = row.try_get(3)?;
        // Positions run 0, 1, 2, ...: a hole is a leaf removed, and the tree ends there
        // (what follows cannot be placed; checkpoints beyond it will not match).
        if position != leaves.len() as i64 {
            report.findings.push(LogFinding::LeafMissing {
                position: leaves.len() as i64,
            });
            break;
        }
        let leaf = Hash::try_from(stored.as_slice()).unwrap_or_else(|_| {
            report.findings.push(LogFinding::LeafMissing { position });
            [0; 32]
        });
        leaves.push(leaf);
        sealed.insert((stream_id, batch_id));
        match entries.get(&(stream_id, batch_id)) {
            None => report.findings.push(LogFinding::BatchMissing {
                position,
                stream_id,
                batch_id,
            }),
            Some(Some(entry)) if entry.leaf() == leaf => report.sealed_records += entry.rows as u64,
            Some(_) => report.findings.push(LogFinding::LedgerChanged {
                position,
                stream_id,
                batch_id,
            }),
        }
    }
    report.tree_size = leaves.len() as u64;

    // Stored checkpoints: signed, saying what their rows say, matching the tree, never
    // shrinking.
    let checkpoints = client
        .query(
            "SELECT id, tree_size, horizon, note FROM audit_checkpoints ORDER BY id",
            &[],
        )
        .await?;
    let mut largest = 0u64;
    let mut horizon = 0i64;
    // (size, root, stored checkpoint id) of every trusted checkpoint, to match against
    // the tree in one pass.
    let mut claims: Vec<(u64, Hash, Option<i64>)> = Vec::new();
    for row in &checkpoints {
        report.checkpoints += 1;
        let id: i64 = row.try_get(0)?;
        let size: i64 = row.try_get(1)?;
        let note: String = row.try_get(3)?;
        let checkpoint = match open(&note, keys) {
            Ok(checkpoint) => checkpoint,
            Err(why) => {
                report
                    .findings
                    .push(LogFinding::CheckpointUnsigned { id, why });
                continue;
            }
        };
        let row_horizon: i64 = row.try_get(2)?;
        if checkpoint.size != size as u64 || checkpoint.horizon.is_some_and(|h| h != row_horizon) {
            report
                .findings
                .push(LogFinding::CheckpointRowChanged { id });
        }
        // The signed horizon, not the row's: a row is anyone's to edit.
        horizon = horizon.max(checkpoint.horizon.unwrap_or(0));
        claims.push((checkpoint.size, checkpoint.root, Some(id)));
        if checkpoint.size < largest {
            report.findings.push(LogFinding::LogShrank {
                id,
                size: checkpoint.size,
                earlier: largest,
            });
        }
        largest = largest.max(checkpoint.size);
        if report
            .latest
            .as_ref()
            .is_none_or(|latest| checkpoint.size >= latest.size)
        {
            report.latest = Some(checkpoint);
        }
    }
    for (index, note) in published.iter().enumerate() {
        match open(note, keys) {
            Ok(checkpoint) => claims.push((checkpoint.size, checkpoint.root, None)),
            Err(why) => report
                .findings
                .push(LogFinding::PublishedUnsigned { index, why }),
        }
    }

    report.findings.extend(
        unmatched(claims, &leaves)
            .into_iter()
            .map(|(size, id)| LogFinding::TreeNotConsistent { id, size }),
    );

    // Ledger rows not in the tree: either newer than the last seal (waiting), or added.
    for (key, entry) in &entries {
        if sealed.contains(key) {
            continue;
        }
        let Some(entry) = entry else { continue };
        if entry.tx_id < horizon {
            report.findings.push(LogFinding::LedgerAdded {
                stream_id: key.0,
                batch_id: key.1,
            });
        } else {
            report.unsealed_batches += 1;
            report.unsealed_records += entry.rows as u64;
        }
    }
    Ok(report)
}

/// The checkpoint of `note`, signed by one of `keys`; with no keys, unchecked.
fn open(note: &str, keys: &[VerifierKey]) -> Result<Checkpoint, NoteError> {
    if keys.is_empty() {
        Checkpoint::parse_unverified(note)
    } else {
        Checkpoint::open(note, keys).map(|(checkpoint, _)| checkpoint)
    }
}

/// The claims (size, root, id) that the tree of `leaves` does not bear out, found by
/// growing the tree once through every size claimed.
fn unmatched(
    mut claims: Vec<(u64, Hash, Option<i64>)>,
    leaves: &[Hash],
) -> Vec<(u64, Option<i64>)> {
    claims.sort_by_key(|&(size, _, id)| (size, id));
    let mut tree = CompactTree::default();
    let mut wrong = Vec::new();
    for (size, claimed_root, id) in claims {
        while tree.size() < size && (tree.size() as usize) < leaves.len() {
            tree.push(leaves[tree.size() as usize]);
        }
        if tree.size() != size || tree.root() != claimed_root {
            wrong.push((size, id));
        }
    }
    wrong
}
