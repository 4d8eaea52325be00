-- 0005: the signed log. auditd seals committed batches, in commit order, into one
-- append-only RFC 6962 Merkle tree and signs checkpoints of it (C2SP tlog-checkpoint,
-- Ed25519, with a key that is never in the database).
--
-- audit_log_tree: leaf `position` (0, 1, 2, ...) of the tree is the entry of one batch
-- (audit_layer::integrity::BatchEntry, version 1: the ledger row's stream, batch, rows,
-- seq range, encoding, root, committed_at and tx_id). A batch enters when every transaction that
-- could still commit before it has ended: its tx_id is below the snapshot horizon
-- pg_snapshot_xmin(pg_current_snapshot()) at sealing, so no batch overtakes another.
CREATE TABLE audit_log_tree (
    position  bigint PRIMARY KEY CHECK (position >= 0),
    stream_id bigint NOT NULL,
    batch_id  bigint NOT NULL,
    leaf      bytea NOT NULL CHECK (octet_length(leaf) = 32),
    sealed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, batch_id)
);

COMMENT ON TABLE audit_log_tree IS
    'The signed log: leaf position n is the entry hash of one committed batch, in commit order. Append-only.';

-- audit_checkpoints: every signed checkpoint, verbatim. `horizon`: every batch whose
-- transaction id is below it was sealed by this checkpoint (the next seal starts there).
CREATE TABLE audit_checkpoints (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_size bigint NOT NULL CHECK (tree_size >= 0),
    horizon   bigint NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now(),
    key_name  text NOT NULL,
    key_id    text NOT NULL,
    note      text NOT NULL
);

CREATE INDEX audit_checkpoints_tree_size ON audit_checkpoints (tree_size);

COMMENT ON TABLE audit_checkpoints IS
    'Signed checkpoints of audit_log_tree (C2SP signed notes, Ed25519). Publish copies outside the database.';

-- Sealing reads the batches committed since the last horizon.
CREATE INDEX audit_writer_batches_tx_id ON audit_writer_batches (tx_id);

-- The seq range of a proven batch (its first and last record in audit_logs), so that a
-- record's batch is found by index, for its proof, and sealed with the entry.
ALTER TABLE audit_writer_batches
    ADD COLUMN first_seq bigint,
    ADD COLUMN last_seq bigint;
CREATE INDEX audit_writer_batches_seq_range ON audit_writer_batches (stream_id, first_seq)
    WHERE first_seq IS NOT NULL;

-- With the seq range known, a batch whose seqs run without a gap (nearly every batch:
-- only a record refused into audit_logs_rejected leaves one) stores its leaf hashes
-- alone, 32 bytes a record instead of 40 (audit_layer::integrity::batch_leaves).
COMMENT ON COLUMN audit_writer_batches.leaves IS
    'Per record in seq order, its RFC 6962 leaf hash (32 bytes) when the seqs run from first_seq to last_seq without a gap; else its seq (int8, big-endian) then its hash';

COMMENT ON TABLE audit_writer_batches IS
    'One row per batch committed by an audit-layer writer (rows = 0: an attempt fenced off after an unknown outcome). With integrity, evidence: kept as long as its records.';
