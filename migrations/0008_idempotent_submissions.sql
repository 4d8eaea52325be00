-- 0008: submissions that commit once, however often they are sent.
--
-- Producers outside the process (auditd's HTTP ingest, for services in any language) send
-- a batch of records under an idempotency key of their choosing, and send it again when
-- they do not learn its fate. The key is kept with the batch, in the ledger row that
-- commits with the records, so a retry is recognised after a restart of auditd too, and
-- by any auditd writing to this database: the unique index refuses a second batch under
-- the same key, and that batch's records are never written (the writer leaves an
-- `audit_duplicate_suppressed` record saying which seqs of its stream they had taken).
-- `request_digest` is the SHA-256 of the request that carried them, so that a key sent
-- again with different content is told apart from a retry.
ALTER TABLE audit_writer_batches
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_digest bytea;

CREATE UNIQUE INDEX audit_writer_batches_idempotency_key
    ON audit_writer_batches (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

COMMENT ON COLUMN audit_writer_batches.idempotency_key IS
    'The key a producer sent the batch under (auditd: token name, a colon, the Idempotency-Key header); a second batch under it is refused';
COMMENT ON COLUMN audit_writer_batches.request_digest IS
    'SHA-256 of the request that carried the batch, to tell a retry from a key reused for other records';
