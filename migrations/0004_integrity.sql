-- 0004: every batch the writer commits proves its records.
--
-- The writer hashes each record it sends (audit_layer::integrity: the canonical encoding,
-- version 1, of every stored value, and its RFC 6962 leaf hash) and commits, in the same
-- transaction as the records, the batch's leaves and their Merkle root in its ledger row.
-- A verifier recomputes each record's leaf from the stored row and each batch's root from
-- the leaves: a record changed, removed, added or moved after its commit shows, and so
-- does an edited ledger row once it is sealed into the signed log (a later migration).
--
-- leaves: for each record of the batch in audit_logs, in seq order, its seq (8 bytes,
-- big-endian) and its leaf hash (32 bytes). Records refused into audit_logs_rejected are
-- not in it; dropped records never had a row.
ALTER TABLE audit_writer_batches
    ADD COLUMN encoding smallint,
    ADD COLUMN leaves bytea,
    ADD COLUMN root bytea,
    ADD COLUMN tx_id bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;

-- Hashes do not compress: store them out of line as they are, without trying.
ALTER TABLE audit_writer_batches ALTER COLUMN leaves SET STORAGE EXTERNAL;

COMMENT ON COLUMN audit_writer_batches.encoding IS
    'Record encoding version of leaves and root (1); NULL when written without integrity';
COMMENT ON COLUMN audit_writer_batches.leaves IS
    'Per record in seq order: seq (int8, big-endian) then its RFC 6962 leaf hash (32 bytes)';
COMMENT ON COLUMN audit_writer_batches.root IS
    'RFC 6962 Merkle tree head of the leaf hashes';
COMMENT ON COLUMN audit_writer_batches.tx_id IS
    'Transaction that committed the batch, for sealing batches in commit order';
