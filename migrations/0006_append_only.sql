-- 0006: append-only in the database too. A trigger refuses UPDATE, DELETE and TRUNCATE
-- on the records, the batch ledger, the signed log and its checkpoints, for every role,
-- the owner included; the only exception is the schema's own upkeep (moving rows out of
-- the DEFAULT partition; retention, later), which runs as the owner and says so for the
-- length of the change (the transaction-local setting audit.upkeep = 'on', honoured only
-- for a member of the table owner's role, so a writer that sets it gains nothing).
--
-- This stops mistakes and roles granted too much. It does not stop a superuser or the
-- owner, who can drop the trigger or set session_replication_role = replica: what they
-- change anyway is what `auditd verify` finds. Writers get INSERT only (see the README's
-- least-privilege roles), so for them the trigger is a second lock.
-- The function's search_path is pinned and every name qualified: a role that may create
-- objects in some schema must not be able to put its own current_setting or pg_has_role
-- in front of the real ones.
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_setting('audit.upkeep', true) = 'on'
       AND pg_catalog.pg_has_role(current_user,
                       (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID),
                       'MEMBER') THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % refused: audit records are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Records leave only through the schema''s upkeep (partitions, retention). A change made anyway, with the trigger bypassed, is found by auditd verify.';
END;
$$;

COMMENT ON FUNCTION audit_refuse_change() IS
    'Refuses UPDATE, DELETE and TRUNCATE on the audit tables, except for the schema''s own upkeep run by the owner.';

-- Row triggers on the partitioned table apply to every partition, present and future;
-- a statement trigger (TRUNCATE) is not passed on to partitions, so each partition gets
-- its own: the existing ones below, new ones from audit_logs_ensure_partitions.
CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_logs_no_truncate
    BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_writer_batches_append_only
    BEFORE UPDATE OR DELETE ON audit_writer_batches
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_writer_batches_no_truncate
    BEFORE TRUNCATE ON audit_writer_batches
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_log_tree_append_only
    BEFORE UPDATE OR DELETE ON audit_log_tree
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_tree_no_truncate
    BEFORE TRUNCATE ON audit_log_tree
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_catalog.pg_inherits
                WHERE inhparent = 'audit_logs'::regclass LOOP
        EXECUTE format('CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', part);
    END LOOP;
END;
$$;

-- The ledger's transaction id is the committing transaction's, whatever an INSERT says:
-- sealing orders batches by it, so a writer may not choose it. (One row per batch: the
-- trigger costs nothing measurable.)
CREATE FUNCTION audit_writer_batches_stamp_tx() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.tx_id := pg_catalog.pg_current_xact_id()::text::bigint;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_writer_batches_stamp_tx
    BEFORE INSERT ON audit_writer_batches
    FOR EACH ROW EXECUTE FUNCTION audit_writer_batches_stamp_tx();

-- Partition upkeep moves rows out of DEFAULT: it now says it is upkeep while it does, and
-- gives every partition it creates its TRUNCATE trigger.
CREATE OR REPLACE FUNCTION audit_logs_ensure_partitions(from_ts timestamptz DEFAULT now(),
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
            -- Moving rows is upkeep, which the append-only trigger lets the owner do.
            PERFORM set_config('audit.upkeep', 'on', true);
            EXECUTE format('WITH moved AS (DELETE FROM audit_logs_default
                                           WHERE created_at >= $1 AND created_at < $2
                                           RETURNING *)
                            INSERT INTO %I SELECT * FROM moved', part_name)
                USING month_start, month_end;
            GET DIAGNOSTICS moved = ROW_COUNT;
            PERFORM set_config('audit.upkeep', '', true);
            EXECUTE format('ALTER TABLE audit_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_end);
            EXECUTE format('CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON %I '
                           'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', part_name);
            RAISE NOTICE 'created partition % and moved % rows into it from audit_logs_default',
                part_name, moved;
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_end);
            EXECUTE format('CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON %I '
                           'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', part_name);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;
