-- 0002: record which transaction wrote each row, so readers can follow commits in order.
--
-- Identity values are handed out when a row is inserted, not when its transaction commits:
-- a batch holding ids 100..199 may commit after one holding 200..299, so a reader that asks
-- for "id > last seen" skips rows. tx_id is the writing transaction's id. Every transaction
-- older than the current snapshot's xmin has finished, so rows with
-- tx_id < pg_snapshot_xmin(pg_current_snapshot()) are final, and following (tx_id, id) up
-- to that horizon never skips or repeats a row. auditd's tail endpoints work this way.
--
-- The default is evaluated by PostgreSQL for every inserted row (COPY included), so writers
-- need no change and cannot get it wrong.

-- Stored as bigint (an xid8 with its epoch always fits) because BRIN has no xid8 support.
ALTER TABLE audit_logs
    ADD COLUMN tx_id bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;

COMMENT ON COLUMN audit_logs.tx_id IS
    'Transaction that inserted the row; follow (tx_id, id) below the snapshot xmin to read in commit order';

-- Transaction ids and identity values only grow with the table, which is what BRIN is for:
-- the index costs the writer next to nothing (a btree on (tx_id, id) cost 17% of ingest
-- throughput), a reader that keeps up only visits the newest pages, and a lookup by id alone
-- (the primary key starts with created_at) visits only the page ranges that can hold it.
CREATE INDEX audit_logs_id_tx_brin ON audit_logs USING brin (id, tx_id)
    WITH (autosummarize = on);
