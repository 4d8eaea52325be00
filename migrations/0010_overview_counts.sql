-- 0010: counts kept ahead for the overview (GET /api/v1/overview, the viewer's histogram
-- and facets), so that counting a fortnight of records reads hundreds of rows, not millions.
--
-- * Counted after the fact, never on the write path: a trigger or a second table per
--   insert would cost every write, and the writes are the product's bottleneck. auditd
--   runs audit_counts_catch_up() every few seconds; it counts the rows of transactions
--   below the snapshot horizon it last reached (the tail's (tx_id) order, migration 0002),
--   so that each row is counted exactly once even when it arrives late, with a created_at
--   hours old (a spool replayed, a producer's clock). The overview counts rows at or above
--   the horizon, and the window's edges that no bucket covers, from audit_logs itself: its
--   answer is exact at every moment, whether the counts are a second behind or a week.
-- * Two tables, because the overview asks two kinds of question. Counted by user too, one
--   table would hold nearly a row per record wherever users are many (a thousand users,
--   nine event types and four severities are 36,000 combinations an hour): so one table
--   counts by severity, event type and resource type, the other by user and severity.
--   A filter on some other column (ip_address, resource_id, text, metadata) is counted
--   from audit_logs, through its indexes.
-- * Hourly and daily buckets, on UTC boundaries: 90 days are 90 daily rows per combination,
--   and the window's ragged ends use the hourly ones. In a quiet hour the counts by user
--   are nearly as many as its records; they pay off where the records are many, and a
--   catch-up every few seconds writes only the users active in those seconds.
-- * Rows leave audit_logs only with a whole month (retention detaches the partition) and
--   return with one (reattach, restore): each of those marks the month stale, in the same
--   transaction; the overview counts a stale month from audit_logs, and the next catch-up
--   counts it again from scratch. These tables are a cache of what audit_logs holds, not
--   evidence: `auditd verify` proves the records; recounting everything is
--   `SELECT audit_counts_recount('-infinity', 'infinity')`.
-- * NULLS NOT DISTINCT (PostgreSQL 15, as is every supported PostgreSQL now that 14 has
--   reached its end of life): records without a resource type are counted in one row.

CREATE TABLE audit_counts_by_kind (
    bucket_seconds integer NOT NULL CHECK (bucket_seconds IN (3600, 86400)),
    bucket         timestamptz NOT NULL,
    severity       varchar(20) NOT NULL,
    event_type     varchar(100) NOT NULL,
    resource_type  varchar(100),
    n              bigint NOT NULL,
    CONSTRAINT audit_counts_by_kind_key
        UNIQUE NULLS NOT DISTINCT (bucket_seconds, bucket, severity, event_type, resource_type)
);

CREATE TABLE audit_counts_by_user (
    bucket_seconds integer NOT NULL CHECK (bucket_seconds IN (3600, 86400)),
    bucket         timestamptz NOT NULL,
    username       varchar(255) NOT NULL,
    severity       varchar(20) NOT NULL,
    n              bigint NOT NULL,
    CONSTRAINT audit_counts_by_user_key UNIQUE (bucket_seconds, bucket, username, severity)
);

-- A filter on one user reads that user's buckets, not every user's.
CREATE INDEX audit_counts_by_user_username ON audit_counts_by_user (username, bucket_seconds, bucket);

COMMENT ON TABLE audit_counts_by_kind IS
    'Records per hour and per day (UTC) by severity, event type and resource type, for rows below audit_counts_state.counted_below_tx';
COMMENT ON TABLE audit_counts_by_user IS
    'Records per hour and per day (UTC) by user and severity, for rows below audit_counts_state.counted_below_tx';

CREATE TABLE audit_counts_state (
    single           boolean PRIMARY KEY DEFAULT true CHECK (single),
    -- Every row whose tx_id is below this is counted (unless its month is stale).
    counted_below_tx bigint NOT NULL DEFAULT 0,
    counted_at       timestamptz
);
INSERT INTO audit_counts_state DEFAULT VALUES;

-- One row per change, never merged: a recount deletes only the marks it saw before it
-- counted, so a month attached while it counts stays marked for the next one.
CREATE TABLE audit_counts_stale (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    CHECK (range_start < range_end)
);

COMMENT ON TABLE audit_counts_stale IS
    'Ranges whose rows changed as a whole (a month detached or attached): counted from audit_logs until counted again';

-- Adds the rows of transactions in [from_tx, below_tx) created in [range_start, range_end)
-- to the counts. The caller holds the advisory lock 'audit_counts'.
CREATE FUNCTION audit_counts_add(from_tx bigint, below_tx bigint,
                                 range_start timestamptz, range_end timestamptz)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    counted bigint;
BEGIN
    -- Two passes over the rows (hot in cache by then): grouped by user and kind at once,
    -- they would make nearly a group per record, and counting ran at 55,000 rows/s.
    WITH kinds AS MATERIALIZED (
        SELECT date_bin('1 hour', created_at, timestamptz '1970-01-01 00:00:00+00') AS hour,
               severity, event_type, resource_type, count(*) AS n
        FROM audit_logs
        WHERE tx_id >= from_tx AND tx_id < below_tx
          AND created_at >= range_start AND created_at < range_end
        GROUP BY 1, 2, 3, 4),
    kind_hour AS (
        INSERT INTO audit_counts_by_kind AS c
        SELECT 3600, hour, severity, event_type, resource_type, n FROM kinds
        ON CONFLICT ON CONSTRAINT audit_counts_by_kind_key DO UPDATE SET n = c.n + excluded.n),
    kind_day AS (
        INSERT INTO audit_counts_by_kind AS c
        SELECT 86400, date_bin('1 day', hour, timestamptz '1970-01-01 00:00:00+00'),
               severity, event_type, resource_type, sum(n)::bigint
        FROM kinds GROUP BY 2, 3, 4, 5
        ON CONFLICT ON CONSTRAINT audit_counts_by_kind_key DO UPDATE SET n = c.n + excluded.n),
    users AS MATERIALIZED (
        SELECT date_bin('1 hour', created_at, timestamptz '1970-01-01 00:00:00+00') AS hour,
               username, severity, count(*) AS n
        FROM audit_logs
        WHERE tx_id >= from_tx AND tx_id < below_tx
          AND created_at >= range_start AND created_at < range_end
        GROUP BY 1, 2, 3),
    user_hour AS (
        INSERT INTO audit_counts_by_user AS c
        SELECT 3600, hour, username, severity, n FROM users
        ON CONFLICT ON CONSTRAINT audit_counts_by_user_key DO UPDATE SET n = c.n + excluded.n),
    user_day AS (
        INSERT INTO audit_counts_by_user AS c
        SELECT 86400, date_bin('1 day', hour, timestamptz '1970-01-01 00:00:00+00'),
               username, severity, sum(n)::bigint
        FROM users GROUP BY 2, 3, 4
        ON CONFLICT ON CONSTRAINT audit_counts_by_user_key DO UPDATE SET n = c.n + excluded.n)
    SELECT coalesce(sum(n), 0)::bigint INTO counted FROM kinds;
    RETURN counted;
END;
$$;

-- Counts [range_start, range_end) again from scratch, and clears the stale marks inside it.
CREATE FUNCTION audit_counts_recount(range_start timestamptz, range_end timestamptz)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    below   bigint;
    counted bigint;
    seen    bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('audit_counts'));
    SELECT counted_below_tx INTO below FROM audit_counts_state;
    -- Day buckets start on UTC midnight: a range with an end inside a day recounts it whole.
    IF isfinite(range_start) THEN
        range_start := date_bin('1 day', range_start, timestamptz '1970-01-01 00:00:00+00');
    END IF;
    IF isfinite(range_end) THEN
        range_end := date_bin('1 day', range_end - interval '1 microsecond',
                              timestamptz '1970-01-01 00:00:00+00') + interval '1 day';
    END IF;
    SELECT array_agg(s.id) INTO seen FROM audit_counts_stale s
        WHERE s.range_start >= audit_counts_recount.range_start
          AND s.range_end <= audit_counts_recount.range_end;
    DELETE FROM audit_counts_by_kind WHERE bucket >= range_start AND bucket < range_end;
    DELETE FROM audit_counts_by_user WHERE bucket >= range_start AND bucket < range_end;
    counted := audit_counts_add(0, below, range_start, range_end);
    DELETE FROM audit_counts_stale WHERE id = ANY (seen);
    RETURN counted;
END;
$$;

-- Marks [range_start, range_end) as changed wholesale; call it in the transaction that
-- detaches or attaches the rows.
CREATE FUNCTION audit_counts_mark_stale(range_start timestamptz, range_end timestamptz)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO audit_counts_stale (range_start, range_end) VALUES (range_start, range_end);
$$;

-- Counts stale ranges again, then the rows committed since the last call. Returns how many
-- rows it counted.
CREATE FUNCTION audit_counts_catch_up()
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    below   bigint;
    horizon bigint;
    stale   record;
    counted bigint := 0;
BEGIN
    -- An advisory lock, not a row lock: this transaction takes an xid only when it writes,
    -- after counting, so it holds back the horizon of the tail and the sealer no longer
    -- than its writes last.
    PERFORM pg_advisory_xact_lock(hashtext('audit_counts'));
    SELECT counted_below_tx INTO below FROM audit_counts_state;
    FOR stale IN SELECT DISTINCT range_start, range_end FROM audit_counts_stale ORDER BY 1 LOOP
        counted := counted + audit_counts_recount(stale.range_start, stale.range_end);
    END LOOP;
    -- Every transaction below the horizon has ended, so each statement from here on sees
    -- all of their rows (this one's own xid, if it has one yet, is not below it).
    horizon := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    IF horizon > below THEN
        counted := counted + audit_counts_add(below, horizon, '-infinity', 'infinity');
        UPDATE audit_counts_state SET counted_below_tx = horizon, counted_at = now();
    END IF;
    RETURN counted;
END;
$$;

COMMENT ON FUNCTION audit_counts_catch_up() IS
    'Brings the overview''s counts up to date; auditd serve calls it every --counts-interval.';
