//! Sealing: appending the batches committed since the last seal to the signed log
//! (`audit_log_tree`, migration 0005) and signing a checkpoint of it, in one transaction.
//!
//! Commit order without a race: a batch is taken only once its transaction id is below
//! the snapshot horizon (`pg_snapshot_xmin(pg_current_snapshot())`), so every transaction
//! that could still commit a batch before it has ended; the horizon is stored with the
//! checkpoint, and the next seal starts there. Seals are serialised by an advisory lock,
//! so any number of auditd processes (and `auditd seal` from cron) may run them.
//!
//! Before appending, the sealer checks that the stored tree is the one its latest
//! checkpoint signed, and refuses to sign on top of a tree someone changed.

use std::fmt;
use std::time::Duration;

use audit_layer::integrity::merkle::{CompactTree, Hash};
use audit_layer::integrity::{BatchEntry, BATCH_ENTRY_COLUMNS};
use chrono::Utc;
use tokio_postgres::{Client, GenericClient};

use super::checkpoint::Checkpoint;
use super::keys::{SigningKey, VerifierKey};

/// The advisory lock that serialises seals (`auditsea` in ASCII).
const SEAL_LOCK: i64 = 0x6175_6469_7473_6561;

/// How old the latest checkpoint may grow before one is signed again with nothing new:
/// a quiet hour still gets a checkpoint, so that a stretch without records is provable
/// (and a verifier sees that the sealer was alive), as CloudTrail's hourly digests do.
pub const HEARTBEAT: Duration = Duration::from_secs(3600);

/// Most batches appended by one seal; a backlog is sealed over several.
pub const MAX_BATCHES_PER_SEAL: i64 = 100_000;

/// Why a seal did not happen.
#[derive(Debug)]
pub enum SealError {
    /// A database call failed.
    Database(tokio_postgres::Error),
    /// The stored tree is not the one the latest checkpoint signed: someone changed it.
    Inconsistent(String),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Database(e) => write!(f, "database: {e}"),
            SealError::Inconsistent(why) => write!(
                f,
                "refusing to seal: {why}; run `auditd verify` to see what changed"
            ),
        }
    }
}

impl std::error::Error for SealError {}

impl From<tokio_postgres::Error> for SealError {
    fn from(e: tokio_postgres::Error) -> Self {
        SealError::Database(e)
    }
}

/// What one seal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The tree's size after it.
    pub tree_size: u64,
    /// Batches appended.
    pub batches: u64,
    /// Records those batches hold.
    pub records: u64,
    /// The checkpoint signed, when one was (the tree grew, or the key is new).
    pub note: Option<String>,
    /// How long the oldest batch appended had waited since its commit.
    pub longest_wait: Option<Duration>,
}

/// Seals with one key, remembering the tree between seals so that each costs what it
/// appends, not the size of the log.
///
/// A sealer never signs on top of a history it cannot trust: the latest stored checkpoint
/// must be signed by its key or one it was told to trust (the keys before a rotation),
/// and the stored tree must extend its *anchor*, a checkpoint kept outside the database
/// (the file it publishes to), so that a superuser who empties or rewrites the log and its
/// checkpoints cannot have it signed anew.
pub struct Sealer {
    key: SigningKey,
    trusted: Vec<VerifierKey>,
    anchor: Option<Checkpoint>,
    known: Option<Known>,
}

struct Known {
    checkpoint_id: i64,
    tree: CompactTree,
}

impl Sealer {
    /// A sealer signing with `key`.
    pub fn new(key: SigningKey) -> Self {
        Sealer {
            trusted: vec![key.verifier()],
            key,
            anchor: None,
            known: None,
        }
    }

    /// Also trusts checkpoints signed by `keys` (the keys before a rotation).
    pub fn trusting(mut self, keys: impl IntoIterator<Item = VerifierKey>) -> Self {
        self.trusted.extend(keys);
        self
    }

    /// Refuses to sign unless the stored log extends `note`, a checkpoint kept outside
    /// the database (signed by a trusted key).
    pub fn anchored(mut self, note: &str) -> Result<Self, SealError> {
        let (checkpoint, _) = Checkpoint::open(note, &self.trusted).map_err(|e| {
            SealError::Inconsistent(format!("the published checkpoint is not trusted: {e}"))
        })?;
        self.anchor = Some(checkpoint);
        Ok(self)
    }

    /// The key it signs with.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Appends what is ready and signs a checkpoint when the tree grew, when this key has
    /// not signed the latest one (a rotation starts with a checkpoint), or when the latest
    /// is older than [`HEARTBEAT`].
    pub async fn seal(&mut self, client: &mut Client) -> Result<Sealed, SealError> {
        // Read committed, whatever the session's default: each statement must see what
        // committed before it, the lock's holder's seal included.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
            .await?;
        let latest = tx
            .query_opt(
                "SELECT id, tree_size, horizon, key_id, note, \
                        now() - signed_at > make_interval(secs => $1) AS stale \
                 FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                &[&HEARTBEAT.as_secs_f64()],
            )
            .await?;
        let stale = match &latest {
            Some(row) => row.try_get::<_, Option<bool>>(5)?.unwrap_or(true),
            None => false,
        };
        let (last_id, last_size, last_horizon, last_key, last_root) = match &latest {
            None => {
                if let Some(anchor) = self.anchor.as_ref().filter(|a| a.size > 0) {
                    return Err(SealError::Inconsistent(format!(
                        "the database holds no checkpoint, but one of size {} was published: the log was removed",
                        anchor.size
                    )));
                }
                (0, 0, 0, None, CompactTree::default().root())
            }
            Some(row) => {
                let note: String = row.try_get(4)?;
                let (checkpoint, by) = Checkpoint::open(&note, &self.trusted).map_err(|e| {
                    SealError::Inconsistent(format!(
                        "the latest stored checkpoint is not trusted: {e} (after a rotation, \
                         give the earlier public key)"
                    ))
                })?;
                let size: i64 = row.try_get(1)?;
                if checkpoint.size != size as u64 {
                    return Err(SealError::Inconsistent(format!(
                        "the latest checkpoint row says size {size}, its note {}",
                        checkpoint.size
                    )));
                }
                let horizon = checkpoint.horizon.ok_or_else(|| {
                    SealError::Inconsistent("the latest checkpoint has no horizon line".to_owned())
                })?;
                (
                    row.try_get(0)?,
                    size,
                    horizon,
                    Some(by.id()),
                    checkpoint.root,
                )
            }
        };
        let stored_size: i64 = tx
            .query_one(
                "SELECT coalesce(max(position) + 1, 0) FROM audit_log_tree",
                &[],
            )
            .await?
            .try_get(0)?;
        if stored_size != last_size {
            return Err(SealError::Inconsistent(format!(
                "the tree has {stored_size} leaves, its latest checkpoint {last_size}"
            )));
        }
        let mut tree = match self.known.take() {
            // Its own history, which extended the anchor when it was loaded.
            Some(known) if known.checkpoint_id == last_id => known.tree,
            _ => {
                let leaves = load_leaves(&tx, last_size).await?;
                if let Some(anchor) = &self.anchor {
                    let extends = anchor.size <= leaves.len() as u64
                        && audit_layer::integrity::merkle::root(&leaves[..anchor.size as usize])
                            == anchor.root;
                    if !extends {
                        return Err(SealError::Inconsistent(format!(
                            "the stored log does not extend the published checkpoint of size {}",
                            anchor.size
                        )));
                    }
                }
                CompactTree::from_leaves(&leaves)
            }
        };
        if tree.root() != last_root {
            return Err(SealError::Inconsistent(
                "the stored tree's root is not the one its latest checkpoint signed".to_owned(),
            ));
        }

        let horizon: i64 = tx
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await?
            .try_get(0)?;
        let ready = tx
            .query(
                &format!(
                    "SELECT {BATCH_ENTRY_COLUMNS} FROM audit_writer_batches b \
                     WHERE tx_id >= $1 AND tx_id < $2 AND rows > 0 AND encoding IS NOT NULL \
                       AND NOT EXISTS (SELECT 1 FROM audit_log_tree t \
                                       WHERE t.stream_id = b.stream_id AND t.batch_id = b.batch_id) \
                     ORDER BY tx_id, stream_id, batch_id LIMIT $3"
                ),
                &[&last_horizon, &horizon, &MAX_BATCHES_PER_SEAL],
            )
            .await?;
        // A seal cut short by the limit takes up again at its last batch's transaction.
        let next_horizon = match ready.last() {
            Some(last) if ready.len() as i64 == MAX_BATCHES_PER_SEAL => last.try_get("tx_id")?,
            _ => horizon,
        };
        let mut positions = Vec::with_capacity(ready.len());
        let mut streams = Vec::with_capacity(ready.len());
        let mut batches = Vec::with_capacity(ready.len());
        let mut leaves: Vec<Vec<u8>> = Vec::with_capacity(ready.len());
        let mut records = 0u64;
        let mut oldest = None;
        for row in &ready {
            // The query's filter keeps only rows with an entry; a row whose root is not
            // a hash is left out, for the verifier to report.
            let Some(entry) = BatchEntry::from_row(row)? else {
                continue;
            };
            let leaf = entry.leaf();
            positions.push(tree.size() as i64);
            streams.push(entry.stream_id);
            batches.push(entry.batch_id);
            leaves.push(leaf.to_vec());
            tree.push(leaf);
            records += entry.rows as u64;
            oldest = Some(oldest.map_or(entry.committed_at_micros, |o: i64| {
                o.min(entry.committed_at_micros)
            }));
        }
        if !positions.is_empty() {
            tx.execute(
                "INSERT INTO audit_log_tree (position, stream_id, batch_id, leaf) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])",
                &[&positions, &streams, &batches, &leaves],
            )
            .await?;
        }
        let our_key = crate::hex::encode(&self.key.id());
        let sign =
            !positions.is_empty() || latest.is_none() || last_key != Some(self.key.id()) || stale;
        let now = Utc::now();
        let note = if sign {
            let checkpoint = Checkpoint {
                origin: self.key.name().to_owned(),
                size: tree.size(),
                root: tree.root(),
                time: Some(now),
                horizon: Some(next_horizon),
            };
            let note = checkpoint.sign(&self.key);
            let id: i64 = tx
                .query_one(
                    "INSERT INTO audit_checkpoints (tree_size, horizon, key_name, key_id, note) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &(tree.size() as i64),
                        &next_horizon,
                        &self.key.name(),
                        &our_key,
                        &note,
                    ],
                )
                .await?
                .try_get(0)?;
            Some((id, note, checkpoint))
        } else {
            None
        };
        tx.commit().await?;
        let checkpoint_id = note.as_ref().map_or(last_id, |(id, _, _)| *id);
        let tree_size = tree.size();
        self.known = Some(Known {
            checkpoint_id,
            tree,
        });
        Ok(Sealed {
            tree_size,
            batches: positions.len() as u64,
            records,
            note: note.map(|(_, note, checkpoint)| {
                // Committed: it is what the next seal must extend.
                self.anchor = Some(checkpoint);
                note
            }),
            longest_wait: oldest.map(|micros| {
                let waited = now.timestamp_micros().saturating_sub(micros).max(0);
                Duration::from_micros(waited as u64)
            }),
        })
    }
}

/// The stored tree of `size` leaves, checking that positions run 0, 1, 2, ...
pub async fn load_leaves(client: &impl GenericClient, size: i64) -> Result<Vec<Hash>, SealError> {
    let mut leaves = Vec::new();
    extend_leaves(client, &mut leaves, size.max(0) as u64).await?;
    Ok(leaves)
}

/// Reads the stored leaves after those in `leaves`, up to `size` of them, checking that
/// positions run on without a hole and each is a hash.
pub async fn extend_leaves(
    client: &impl GenericClient,
    leaves: &mut Vec<Hash>,
    size: u64,
) -> Result<(), SealError> {
    let rows = client
        .query(
            "SELECT position, leaf FROM audit_log_tree \
             WHERE position >= $1 AND position < $2 ORDER BY position",
            &[&(leaves.len() as i64), &(size.min(i64::MAX as u64) as i64)],
        )
        .await?;
    for row in &rows {
        let position: i64 = row.try_get(0)?;
        let leaf: Vec<u8> = row.try_get(1)?;
        if position != leaves.len() as i64 {
            return Err(SealError::Inconsistent(format!(
                "leaf {} of the tree is missing",
                leaves.len()
            )));
        }
        let leaf = Hash::try_from(leaf.as_slice()).map_err(|_| {
            SealError::Inconsistent(format!("leaf {position} of the tree is not a hash"))
        })?;
        leaves.push(leaf);
    }
    if (leaves.len() as u64) < size {
        return Err(SealError::Inconsistent(format!(
            "the tree has {} leaves below its checkpoint's size {size}",
            leaves.len()
        )));
    }
    Ok(())
}
