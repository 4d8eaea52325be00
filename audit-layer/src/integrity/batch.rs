//! The entry a committed batch has in the signed log, encoding version 1: what of its
//! ledger row (`audit_writer_batches`) the log's leaf covers.
//!
//! The records are covered by the batch's Merkle root; the entry adds whose batch it is,
//! how many records it proves, when and by which transaction it committed. A ledger row
//! edited after it was sealed no longer hashes to its leaf in the log.

use super::merkle::{leaf_hash, Hash};

/// The version byte that starts a batch entry, version 1.
pub const BATCH_ENCODING_V1: u8 = 1;

/// A committed batch's ledger values, as its entry in the log covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    /// The writer's stream.
    pub stream_id: i64,
    /// The batch, within its stream.
    pub batch_id: i64,
    /// How many records the batch committed to `audit_logs`.
    pub rows: i32,
    /// The seq of its first record.
    pub first_seq: i64,
    /// The seq of its last record.
    pub last_seq: i64,
    /// The record encoding version of its leaves.
    pub encoding: i16,
    /// The Merkle root of its records' leaves.
    pub root: Hash,
    /// `committed_at`, in microseconds since the Unix epoch.
    pub committed_at_micros: i64,
    /// The committing transaction (`pg_current_xact_id()`).
    pub tx_id: i64,
}

/// The columns to select for [`BatchEntry::from_row`].
pub const BATCH_ENTRY_COLUMNS: &str =
    "stream_id, batch_id, rows, first_seq, last_seq, encoding, root, committed_at, tx_id";

impl BatchEntry {
    /// The encoding (version 1): fixed-width big-endian fields after the version byte.
    pub fn encode(&self) -> [u8; 87] {
        let mut out = [0u8; 87];
        out[0] = BATCH_ENCODING_V1;
        out[1..9].copy_from_slice(&self.stream_id.to_be_bytes());
        out[9..17].copy_from_slice(&self.batch_id.to_be_bytes());
        out[17..21].copy_from_slice(&self.rows.to_be_bytes());
        out[21..29].copy_from_slice(&self.first_seq.to_be_bytes());
        out[29..37].copy_from_slice(&self.last_seq.to_be_bytes());
        out[37..39].copy_from_slice(&self.encoding.to_be_bytes());
        out[39..71].copy_from_slice(&self.root);
        out[71..79].copy_from_slice(&self.committed_at_micros.to_be_bytes());
        out[79..87].copy_from_slice(&self.tx_id.to_be_bytes());
        out
    }

    /// The entry's leaf hash in the log: `SHA-256(0x00 || encoding)`.
    pub fn leaf(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// The entry of a ledger row read with [`BATCH_ENTRY_COLUMNS`], or `None` when the
    /// row proves nothing (written without integrity, a fenced attempt) or is malformed
    /// (its root not a hash, its seq range missing).
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Option<Self>, tokio_postgres::Error> {
        let encoding: Option<i16> = row.try_get("encoding")?;
        let root: Option<Vec<u8>> = row.try_get("root")?;
        let rows: i32 = row.try_get("rows")?;
        let first_seq: Option<i64> = row.try_get("first_seq")?;
        let last_seq: Option<i64> = row.try_get("last_seq")?;
        let (Some(encoding), Some(root), Some(first_seq), Some(last_seq)) =
            (encoding, root, first_seq, last_seq)
        else {
            return Ok(None);
        };
        let Ok(root) = Hash::try_from(root.as_slice()) else {
            return Ok(None);
        };
        if rows <= 0 {
            return Ok(None);
        }
        let committed_at: chrono::DateTime<chrono::Utc> = row.try_get("committed_at")?;
        Ok(Some(BatchEntry {
            stream_id: row.try_get("stream_id")?,
            batch_id: row.try_get("batch_id")?,
            rows,
            first_seq,
            last_seq,
            encoding,
            root,
            committed_at_micros: committed_at.timestamp_micros(),
            tx_id: row.try_get("tx_id")?,
        }))
    }
}

/// The committed leaves of a ledger row, each with its record's seq, read from its
/// `leaves` column in either of its two forms: *dense*, the leaf hashes alone (32 bytes
/// each) when the batch's seqs run without a gap from `first_seq` to `last_seq`, the
/// usual case; or *sparse*, each seq (8 bytes, big-endian) before its hash, when a
/// record refused into `audit_logs_rejected` left a gap. `None` when the bytes are
/// neither (the row was changed).
pub fn batch_leaves(
    leaves: &[u8],
    rows: i32,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
) -> Option<Vec<(i64, Hash)>> {
    let rows = usize::try_from(rows).ok()?;
    let hash = |bytes: &[u8]| Hash::try_from(bytes).ok();
    if leaves.len() == rows * 32 {
        let (first, last) = (first_seq?, last_seq?);
        if rows == 0 || last.checked_sub(first)?.checked_add(1)? != rows as i64 {
            return None;
        }
        return leaves
            .chunks_exact(32)
            .zip(first..=last)
            .map(|(leaf, seq)| Some((seq, hash(leaf)?)))
            .collect();
    }
    if leaves.len() == rows * 40 {
        return leaves
            .chunks_exact(40)
            .map(|entry| {
                let seq = i64::from_be_bytes(entry[..8].try_into().ok()?);
                Some((seq, hash(&entry[8..])?))
            })
            .collect();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_read_in_both_forms_and_nothing_else() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let dense = [a, b].concat();
        assert_eq!(
            batch_leaves(&dense, 2, Some(7), Some(8)),
            Some(vec![(7, a), (8, b)])
        );
        // Dense only when the seqs run without a gap.
        assert_eq!(batch_leaves(&dense, 2, Some(7), Some(9)), None);
        assert_eq!(batch_leaves(&dense, 2, None, Some(8)), None);
        let sparse = [&7i64.to_be_bytes()[..], &a, &9i64.to_be_bytes(), &b].concat();
        assert_eq!(
            batch_leaves(&sparse, 2, Some(7), Some(9)),
            Some(vec![(7, a), (9, b)])
        );
        assert_eq!(batch_leaves(&sparse[..79], 2, Some(7), Some(9)), None);
        assert_eq!(batch_leaves(&dense, 3, Some(7), Some(9)), None);
        assert_eq!(batch_leaves(&dense, -1, Some(7), Some(9)), None);
        assert_eq!(batch_leaves(&[], 0, Some(1), Some(0)), None);
    }

    #[test]
    fn every_field_changes_the_leaf() {
        let entry = BatchEntry {
            stream_id: 1,
            batch_id: 2,
            rows: 3,
            first_seq: 10,
            last_seq: 12,
            encoding: 1,
            root: [7; 32],
            committed_at_micros: 4,
            tx_id: 5,
        };
        let variants = [
            BatchEntry {
                stream_id: 9,
                ..entry
            },
            BatchEntry {
                batch_id: 9,
                ..entry
            },
            BatchEntry { rows: 9, ..entry },
            BatchEntry {
                first_seq: 9,
                ..entry
            },
            BatchEntry {
                last_seq: 9,
                ..entry
            },
            BatchEntry {
                encoding: 9,
                ..entry
            },
            BatchEntry {
                root: [9; 32],
                ..entry
            },
            BatchEntry {
                committed_at_micros: 9,
                ..entry
            },
            BatchEntry { tx_id: 9, ..entry },
        ];
        for variant in variants {
            assert_ne!(variant.leaf(), entry.leaf(), "{variant:?}");
        }
    }
}
