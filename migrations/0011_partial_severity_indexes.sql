-- 0011: severity indexes that serve the pages people ask for.
--
-- A page of several severities (min_severity=error, severity=error,critical) could not be
-- read in time order from the full btree (severity, created_at DESC, id DESC): PostgreSQL
-- walked the primary key newest first and filtered, about 100,000 rows for a page when
-- those severities are 0.1 % of the records. Nine records in ten are 'info', and a page of
-- info is served by that walk anyway (about as many rows read as shown). So two partial
-- indexes over the other severities replace the full btree:
--
-- * (severity, created_at DESC, id DESC) serves one severity, however rare;
-- * (created_at DESC, id DESC) serves a list of them, in time order.
--
-- Together they cost a write what the full btree did (they hold a tenth of the rows).
-- Measured in BENCHMARKS.md, "Index designs".
--
-- On a small table (under 100,000 records: a new database, the quickstart) the swap is
-- done here, in the migration's transaction, in well under a second. On a larger one a
-- build here would hold off every writer while it read the table, so nothing is done
-- here: `auditd migrate`, or `auditd serve`'s upkeep, builds each partition's indexes
-- CONCURRENTLY, then creates the parent's from them and drops the full index in a moment
-- (audit_layer::schema::complete_index_swaps). Until then the full index serves.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT FROM audit_logs LIMIT 100000) AS sample) < 100000 THEN
        CREATE INDEX audit_logs_severity_partial
            ON audit_logs (severity, created_at DESC, id DESC) WHERE severity <> 'info';
        CREATE INDEX audit_logs_above_info
            ON audit_logs (created_at DESC, id DESC) WHERE severity <> 'info';
        DROP INDEX IF EXISTS audit_logs_severity_idx;
        COMMENT ON INDEX audit_logs_severity_partial IS
            'Pages of one severity, newest first, for every severity but info (the primary key serves info)';
        COMMENT ON INDEX audit_logs_above_info IS
            'Pages of several severities (min_severity), newest first, info excepted';
    END IF;
END;
$$;
