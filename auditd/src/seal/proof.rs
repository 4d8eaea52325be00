//! Proofs handed out: that one record is in its batch and its batch in the signed log
//! (two RFC 9162 inclusion proofs chained, up to the latest checkpoint), and that one
//! size of the log is a prefix of another (a consistency proof). Whoever holds the
//! public key checks them without the database; auditd is not trusted to be honest,
//! only to answer.

use audit_layer::integrity::merkle::{consistency_proof, inclusion_proof, Hash};
use audit_layer::integrity::{
    batch_leaves, stored_encoding, BatchEntry, BATCH_ENTRY_COLUMNS, STORED_RECORD_COLUMNS,
};
use tokio::sync::Mutex;
use tokio_postgres::GenericClient;

use super::log::{extend_leaves, SealError};

/// The log's leaves, read once and then only what was appended since: a proof costs
/// hashing, not reading the whole tree again.
#[derive(Default)]
pub struct LogLeaves {
    leaves: Mutex<Vec<Hash>>,
}

impl LogLeaves {
    /// Runs `with` on the first `size` leaves, reading those not held yet.
    pub async fn with<T>(
        &self,
        client: &impl GenericClient,
        size: u64,
        with: impl FnOnce(&[Hash]) -> T,
    ) -> Result<T, SealError> {
        let mut leaves = self.leaves.lock().await;
        if (leaves.len() as u64) < size {
            extend_leaves(client, &mut leaves, size).await?;
        }
        Ok(with(&leaves[..size as usize]))
    }
}

/// A record's place in the signed log, as far as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProof {
    /// The record.
    pub id: i64,
    /// Its stream.
    pub stream_id: i64,
    /// Its place in the stream.
    pub seq: i64,
    /// Its canonical encoding, recomputed from the stored row.
    pub encoded: Vec<u8>,
    /// `SHA-256(0x00 || encoded)`.
    pub leaf: Hash,
    /// Whether that leaf is the one its batch committed (if not, the record was changed).
    pub matches_committed: bool,
    /// Its batch's ledger entry.
    pub batch: BatchEntry,
    /// Its index among the batch's records.
    pub batch_index: u64,
    /// The inclusion proof of the committed leaf in the batch's tree (root `batch.root`).
    pub batch_path: Vec<Hash>,
    /// The batch in the log, once sealed.
    pub sealed: Option<SealedProof>,
}

/// A batch's inclusion in the log at a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedProof {
    /// The batch's leaf position.
    pub position: u64,
    /// The checkpoint's size.
    pub tree_size: u64,
    /// The inclusion proof of the batch's entry in the tree of that size.
    pub path: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: String,
}

/// What can be proven of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provable {
    /// No record has that id.
    NoRecord,
    /// The record was written without integrity (or not by audit-layer).
    Unproven,
    /// Its proof.
    Proof(Box<RecordProof>),
}

/// The proof of record `id`, up to the latest checkpoint.
pub async fn record_proof(
    client: &impl GenericClient,
    leaves: &LogLeaves,
    id: i64,
) -> Result<Provable, SealError> {
    let checkpoint = latest_checkpoint(client).await?;
    record_proof_at(client, leaves, id, checkpoint.as_ref()).await
}

/// The proof of record `id` up to `checkpoint` (size, note), so that many proofs share
/// one checkpoint.
pub async fn record_proof_at(
    client: &impl GenericClient,
    leaves: &LogLeaves,
    id: i64,
    checkpoint: Option<&(u64, String)>,
) -> Result<Provable, SealError> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs WHERE id = $1"),
            &[&id],
        )
        .await?
    else {
        return Ok(Provable::NoRecord);
    };
    let (Some(stream_id), Some(seq)): (Option<i64>, Option<i64>) =
        (row.try_get("stream_id")?, row.try_get("seq")?)
    else {
        return Ok(Provable::Unproven);
    };
    let encoded = stored_encoding(&row)?;
    let leaf = audit_layer::integrity::merkle::leaf_hash(&encoded);
    let Some(batch_row) = client
        .query_opt(
            &format!(
                "SELECT {BATCH_ENTRY_COLUMNS}, leaves FROM audit_writer_batches \
                 WHERE stream_id = $1 AND first_seq <= $2 AND last_seq >= $2 \
                   AND rows > 0 AND encoding IS NOT NULL \
                 ORDER BY first_seq DESC LIMIT 1"
            ),
            &[&stream_id, &seq],
        )
        .await?
    else {
        return Ok(Provable::Unproven);
    };
    let Some(batch) = BatchEntry::from_row(&batch_row)? else {
        return Ok(Provable::Unproven);
    };
    let committed: Vec<u8> = batch_row.try_get("leaves")?;
    let Some(entries) = batch_leaves(
        &committed,
        batch.rows,
        Some(batch.first_seq),
        Some(batch.last_seq),
    ) else {
        return Ok(Provable::Unproven);
    };
    let Some(index) = entries.iter().position(|(s, _)| *s == seq) else {
        return Ok(Provable::Unproven);
    };
    let hashes: Vec<Hash> = entries.iter().map(|(_, leaf)| *leaf).collect();
    let batch_path = inclusion_proof(&hashes, index).unwrap_or_default();
    let sealed = match checkpoint {
        Some(checkpoint) => sealed_proof(client, leaves, &batch, checkpoint).await?,
        None => None,
    };
    Ok(Provable::Proof(Box::new(RecordProof {
        id,
        stream_id,
        seq,
        encoded,
        leaf,
        matches_committed: hashes[index] == leaf,
        batch,
        batch_index: index as u64,
        batch_path,
        sealed,
    })))
}

async fn sealed_proof(
    client: &impl GenericClient,
    leaves: &LogLeaves,
    batch: &BatchEntry,
    checkpoint: &(u64, String),
) -> Result<Option<SealedProof>, SealError> {
    let Some(position) = client
        .query_opt(
            "SELECT position FROM audit_log_tree WHERE stream_id = $1 AND batch_id = $2",
            &[&batch.stream_id, &batch.batch_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let position: i64 = position.try_get(0)?;
    if position as u64 >= checkpoint.0 {
        return Ok(None);
    }
    let path = leaves
        .with(client, checkpoint.0, |leaves| {
            inclusion_proof(leaves, position as usize).unwrap_or_default()
        })
        .await?;
    Ok(Some(SealedProof {
        position: position as u64,
        tree_size: checkpoint.0,
        path,
        checkpoint: checkpoint.1.clone(),
    }))
}

/// The size and note of the latest stored checkpoint.
pub async fn latest_checkpoint(
    client: &impl GenericClient,
) -> Result<Option<(u64, String)>, SealError> {
    let Some(row) = client
        .query_opt(
            "SELECT tree_size, note FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((
        row.try_get::<_, i64>(0)?.max(0) as u64,
        row.try_get(1)?,
    )))
}

/// The consistency proof from size `from` to size `to`, or `None` when `to` is beyond
/// the latest checkpoint or `from` beyond `to`.
pub async fn consistency(
    client: &impl GenericClient,
    leaves: &LogLeaves,
    from: u64,
    to: u64,
) -> Result<Option<Vec<Hash>>, SealError> {
    let Some((latest, _)) = latest_checkpoint(client).await? else {
        return Ok(None);
    };
    if from > to || to > latest {
        return Ok(None);
    }
    leaves
        .with(client, to, |leaves| {
            consistency_proof(leaves, from as usize)
        })
        .await
}
