-- 0003: exactly-once delivery, and loss made visible.
--
-- Each audit-layer instance is a stream (stream_id, random per process) that numbers its
-- records (seq, from 1, in emission order). A record dropped before reaching the database
-- leaves a gap in its stream's seq, so loss is visible in the table itself, not only in a
-- counter; the writer also records a synthetic `audit_dropped` record saying how many.
-- Rows written by other means leave both NULL.
ALTER TABLE audit_logs
    ADD COLUMN stream_id bigint,
    ADD COLUMN seq bigint;

ALTER TABLE audit_logs_rejected
    ADD COLUMN stream_id bigint,
    ADD COLUMN seq bigint;

-- The batch ledger. Every batch the writer commits adds its row here in the same
-- transaction. When the outcome of a commit is unknown (the connection dropped during or
-- after COMMIT, a call timed out), the writer "fences" the batch: it inserts the batch's
-- key itself, with rows = 0. If that insert succeeds, the batch did not commit and now never
-- can (its own ledger insert would collide), so it is sent again under a new id; if the key
-- is already there, the batch committed and is not sent again. Either way no record is
-- written twice or lost.
CREATE TABLE audit_writer_batches (
    stream_id    bigint NOT NULL,
    batch_id     bigint NOT NULL,
    rows         integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, batch_id)
);

COMMENT ON TABLE audit_writer_batches IS
    'One row per batch committed by an audit-layer writer (rows = 0: an attempt fenced off after an unknown outcome). Safe to prune after a few days.';
