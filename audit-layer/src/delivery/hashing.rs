//! The writer's side of record integrity: each batch's leaves and Merkle root, computed on
//! the writer thread from the values exactly as they go to `COPY` (the emitting thread
//! pays nothing), committed with the batch in its ledger row (migration 0004).

use crate::integrity::merkle::{leaf_hash, root, Hash};
use crate::integrity::{jsonb_text, StoredRecord};
use crate::queue::Pending;

/// A batch's proof: its leaves (in the batch's order, which is seq order) in the ledger's
/// dense form when the seqs run without a gap, else each after its seq
/// ([`batch_leaves`](crate::integrity::batch_leaves) reads both), and their tree head.
pub(crate) struct BatchProof {
    pub(crate) leaves: Vec<u8>,
    pub(crate) root: Hash,
}

/// A batch's proof, built record by record as the batch is copied, so the hashing runs
/// while PostgreSQL parses the rows already sent (not before the copy starts).
pub(crate) struct ProofBuilder {
    stream_id: i64,
    seqs: Vec<i64>,
    hashes: Vec<Hash>,
    encoding: Vec<u8>,
}

impl ProofBuilder {
    pub(crate) fn new(stream_id: i64, records: usize) -> Self {
        ProofBuilder {
            stream_id,
            seqs: Vec::with_capacity(records),
            hashes: Vec::with_capacity(records),
            encoding: Vec::with_capacity(512),
        }
    }

    /// Adds the next record's leaf.
    pub(crate) fn add(&mut self, seq: i64, log: &Pending) {
        // What PostgreSQL will print for the metadata. The layer only sends JSON that
        // jsonb takes; were it not so, COPY would refuse the record and it would never
        // be in the table, so the text as sent is as good a stand-in as any.
        let metadata = log
            .metadata()
            .map(|text| jsonb_text(text).unwrap_or_else(|_| text.to_owned()));
        let stored = StoredRecord {
            stream_id: Some(self.stream_id),
            seq: Some(seq),
            created_at_micros: log.created_at.micros(),
            username: log.username(),
            user_id: log.user_id,
            event_type: log.event_type(),
            severity: log.severity.as_str(),
            message: log.message(),
            ip_address: log.ip_address,
            // The layer writes host addresses (no netmask).
            ip_prefix: None,
            resource_type: log.resource_type(),
            resource_id: log.resource_id(),
            resource_name: log.resource_name(),
            metadata: metadata.as_deref(),
        };
        self.encoding.clear();
        stored.encode(&mut self.encoding);
        let leaf = leaf_hash(&self.encoding);
        self.seqs.push(seq);
        self.hashes.push(leaf);
    }

    pub(crate) fn finish(self) -> BatchProof {
        let dense = self.seqs.windows(2).all(|pair| pair[1] == pair[0] + 1);
        let mut leaves = Vec::with_capacity(self.hashes.len() * if dense { 32 } else { 40 });
        for (seq, leaf) in self.seqs.iter().zip(&self.hashes) {
            if !dense {
                leaves.extend_from_slice(&seq.to_be_bytes());
            }
            leaves.extend_from_slice(leaf);
        }
        BatchProof {
            root: root(&self.hashes),
            leaves,
        }
    }
}
