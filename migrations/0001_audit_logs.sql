-- 0001: the audit_logs table, its indexes, monthly partitions and their upkeep.
--
-- Same columns, names and meanings as the original design (audit-log-usage-guide.md),
-- with these deliberate changes, each for a reason:
--
-- * id is a bigint identity, not SERIAL: a 32-bit counter overflows in about six hours at
--   100,000 events/s.
-- * metadata is jsonb, not TEXT holding JSON: it is validated on the way in, numbers stay
--   numbers, and it can be queried (metadata @> '{"site":"fra1"}').
-- * severity is constrained to info, warning, error, critical; the layer maps anything else
--   to one of these (and marks the record), so a typo never fails a batch.
-- * ip_address is inet, not VARCHAR(45): validated, compact, and searchable by network
--   (ip_address << '10.0.0.0/8'). The layer strips ports; an unparsable value is stored as
--   NULL and quoted in the record's fix-up notes.
-- * created_at is when the event happened (UTC, stamped by the layer on the emitting
--   thread), not when the row was inserted; the DEFAULT only serves hand-written inserts.
-- * user_id has no foreign key: an audit record must outlive the user it names, and the
--   writer must never fail because a user row is missing or deleted. The README shows how to
--   add one where that trade-off is wanted.
-- * The table is range-partitioned by month on created_at, so retention is a DROP TABLE
--   instead of a huge DELETE; the primary key therefore includes created_at.

CREATE TABLE audit_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY (CACHE 128),
    username      varchar(255) NOT NULL,
    user_id       bigint,
    event_type    varchar(100) NOT NULL,
    message       text NOT NULL,
    ip_address    inet,
    resource_type varchar(100),
    resource_id   varchar(255),
    resource_name varchar(255),
    severity      varchar(20) NOT NULL DEFAULT 'info'
                  CONSTRAINT audit_logs_severity_check
                  CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    metadata      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);

COMMENT ON TABLE audit_logs IS
    'Who did what, from where, to which resource, with what outcome. Written by audit-layer.';
COMMENT ON COLUMN audit_logs.created_at IS 'When the event happened (UTC), stamped by the emitter';

-- Rows whose month has no partition yet land here, so an insert never fails for a missing
-- partition (an application whose role may only INSERT still writes). Upkeep moves them out.
CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;

-- The queries people run filter on one of these and read newest first; each index ends
-- with (created_at DESC, id DESC) so a page is an index range scan, at any depth, and the
-- keyset cursor (created_at, id) is served by the same index.
CREATE INDEX audit_logs_username_idx   ON audit_logs (username, created_at DESC, id DESC);
CREATE INDEX audit_logs_event_type_idx ON audit_logs (event_type, created_at DESC, id DESC);
CREATE INDEX audit_logs_severity_idx   ON audit_logs (severity, created_at DESC, id DESC);
CREATE INDEX audit_logs_resource_idx   ON audit_logs (resource_type, resource_id, created_at DESC, id DESC);

-- A record PostgreSQL refused (a constraint a DBA added, a trigger that raised) is kept here
-- with the reason, so no record is ever lost silently; the rest of its batch is written.
CREATE TABLE audit_logs_rejected (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    sqlstate    text,
    reason      text NOT NULL,
    record      jsonb NOT NULL
);

COMMENT ON TABLE audit_logs_rejected IS
    'Audit records PostgreSQL refused to store in audit_logs, with the reason. Inspect and replay by hand.';

-- The one partition upkeep routine: makes sure monthly partitions exist from the month of
-- `from_ts` through `months_ahead` months later, and for every month that has rows in the
-- DEFAULT partition, moving those rows into their month's new partition. Idempotent; safe
-- to run concurrently with itself (a transaction-level advisory lock) and with writers
-- (it locks the table against writes only while it moves rows and attaches). Called by the
-- migration step, periodically by auditd, and by `auditd partitions`; callable from psql
-- or pg_cron too. Pinned to UTC and ISO dates, so that month boundaries do not depend on
-- the caller's session settings.
CREATE FUNCTION audit_logs_ensure_partitions(from_ts timestamptz DEFAULT now(),
                                             months_ahead integer DEFAULT 2)
RETURNS integer
LANGUAGE plpgsql
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    month       timestamp;
    month_start timestamptz;
    month_end   timestamptz;
    part_name   text;
    created     integer := 0;
    moved       bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('audit_logs_ensure_partitions'));
    FOR month IN
        SELECT date_trunc('month', from_ts AT TIME ZONE 'UTC') + make_interval(months => i)
        FROM generate_series(0, months_ahead) AS i
        UNION
        SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')
        FROM audit_logs_default
        ORDER BY 1
    LOOP
        month_start := month AT TIME ZONE 'UTC';
        month_end   := (month + interval '1 month') AT TIME ZONE 'UTC';
        part_name   := 'audit_logs_' || to_char(month, 'YYYY"m"MM');
        IF to_regclass(format('%I', part_name)) IS NOT NULL THEN
            CONTINUE;
        END IF;
        -- From here until commit no writer may add rows to DEFAULT for this month, or the
        -- CREATE/ATTACH below would find them and fail.
        LOCK TABLE audit_logs IN SHARE ROW EXCLUSIVE MODE;
        IF EXISTS (SELECT 1 FROM audit_logs_default
                   WHERE created_at >= month_start AND created_at < month_end) THEN
            -- Move the month's rows into a standalone table, then attach it (attaching
            -- checks that DEFAULT no longer holds rows of the range).
            EXECUTE format('CREATE TABLE %I (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           part_name);
            EXECUTE format('WITH moved AS (DELETE FROM audit_logs_default
                                           WHERE created_at >= $1 AND created_at < $2
                                           RETURNING *)
                            INSERT INTO %I SELECT * FROM moved', part_name)
                USING month_start, month_end;
            GET DIAGNOSTICS moved = ROW_COUNT;
            EXECUTE format('ALTER TABLE audit_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_end);
            RAISE NOTICE 'created partition % and moved % rows into it from audit_logs_default',
                part_name, moved;
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_end);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;

COMMENT ON FUNCTION audit_logs_ensure_partitions(timestamptz, integer) IS
    'Creates the monthly audit_logs partitions from the month of from_ts through months_ahead months later.';
