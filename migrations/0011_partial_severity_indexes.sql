-- 0011: severity indexed only where people look.
--
-- Nine records in ten are 'info', and nobody pages through them by severity: a page of
-- info records is found by walking the primary key newest first (about as many rows read
-- as shown). The full severity btree cost every write its share all the same. Two partial
-- indexes over the other severities replace it, so an info record's write touches three
-- secondary btrees instead of four:
--
-- * (severity, created_at DESC, id DESC) serves one severity, however rare;
-- * (created_at DESC, id DESC) serves a list of them (`min_severity`, severity=a,b), which
--   the full btree could not give in time order: a page of min_severity=error read
--   ~100,000 rows through the primary key instead.
--
-- Measured in BENCHMARKS.md, "Index designs".
--
-- On a small table (under 100,000 records: a new database, the quickstart) the swap is
-- done here, in the migration's transaction, in well under a second. On a larger one a
-- build here would hold off every writer while it read the table, so the new indexes are
-- only declared on the parent (ON ONLY: not used until every partition has its own), and
-- `auditd migrate`, or `auditd serve`'s upkeep, builds each partition's CONCURRENTLY and
-- then drops the full index (audit_layer::schema::complete_index_swaps). Until then all
-- three exist, queries use whichever serves them, and partitions created meanwhile get all.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT FROM audit_logs LIMIT 100000) AS sample) < 100000 THEN
        CREATE INDEX audit_logs_severity_partial
            ON audit_logs (severity, created_at DESC, id DESC) WHERE severity <> 'info';
        CREATE INDEX audit_logs_above_info
            ON audit_logs (created_at DESC, id DESC) WHERE severity <> 'info';
        DROP INDEX IF EXISTS audit_logs_severity_idx;
    ELSE
        CREATE INDEX audit_logs_severity_partial
            ON ONLY audit_logs (severity, created_at DESC, id DESC) WHERE severity <> 'info';
        CREATE INDEX audit_logs_above_info
            ON ONLY audit_logs (created_at DESC, id DESC) WHERE severity <> 'info';
    END IF;
END;
$$;

COMMENT ON INDEX audit_logs_severity_partial IS
    'Pages of one severity, newest first, for every severity but info (the primary key serves info)';
COMMENT ON INDEX audit_logs_above_info IS
    'Pages of several severities (min_severity), newest first, info excepted';
