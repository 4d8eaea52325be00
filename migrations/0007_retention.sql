-- 0007: retention. Whole monthly partitions older than a window leave the database, each
-- first written to an archive file that is checked against the signed log; what left, and
-- where to, stays here, so that `auditd verify` reports those records retired, not missing.
-- The batch ledger and the signed log are never retired: they are small (32 bytes a
-- record, one row a batch) and they are what proves the archives.

-- One row per partition retired. `manifest` is the archive's manifest, verbatim (its
-- rows, its records' (stream, seq) runs, the batches they came from, the checkpoint the
-- archive was checked against, the file's sha256); `signature` is a signed note over the
-- manifest's sha256 by the log's key, NULL only for a log that is not sealed. Verify
-- trusts a retirement only through that signature, so a row added here by hand does not
-- excuse a missing record.
CREATE TABLE audit_retirements (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_name text NOT NULL,
    range_start    timestamptz NOT NULL,
    range_end      timestamptz NOT NULL,
    rows           bigint NOT NULL CHECK (rows >= 0),
    retired_at     timestamptz NOT NULL DEFAULT now(),
    archive        text,
    archive_sha256 text,
    manifest       text NOT NULL,
    signature      text
);

COMMENT ON TABLE audit_retirements IS
    'Partitions retired by auditd retention: what left, when, into which archive, with the signed manifest that proves it. Append-only.';

CREATE TRIGGER audit_retirements_append_only
    BEFORE UPDATE OR DELETE ON audit_retirements
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_retirements_no_truncate
    BEFORE TRUNCATE ON audit_retirements
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Legal holds: while a hold is in force, retention keeps every partition whose month
-- overlaps its time range (and, when it names a user or a resource, holds a record of
-- theirs in the range). Placing and lifting a hold are audit records too (written by
-- auditd); the row keeps who and why.
CREATE TABLE audit_legal_holds (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    range_start   timestamptz NOT NULL,
    range_end     timestamptz NOT NULL CHECK (range_end > range_start),
    username      text,
    resource_type text,
    resource_id   text,
    reason        text NOT NULL,
    placed_by     text NOT NULL,
    placed_at     timestamptz NOT NULL DEFAULT now(),
    lifted_by     text,
    lifted_at     timestamptz
);

COMMENT ON TABLE audit_legal_holds IS
    'Legal holds: retention keeps the partitions they touch until they are lifted (auditd hold).';

-- A hold is lifted, never deleted or rewritten: the row says who placed it, why, and who
-- lifted it when, even for the owner (retention's own role). The schema's upkeep does
-- not touch holds.
CREATE FUNCTION audit_legal_holds_lift_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.lifted_at IS NULL AND NEW.lifted_at IS NOT NULL
       AND NEW.lifted_by IS NOT NULL
       AND (NEW.name, NEW.range_start, NEW.range_end, NEW.username, NEW.resource_type,
            NEW.resource_id, NEW.reason, NEW.placed_by, NEW.placed_at)
           IS NOT DISTINCT FROM
           (OLD.name, OLD.range_start, OLD.range_end, OLD.username, OLD.resource_type,
            OLD.resource_id, OLD.reason, OLD.placed_by, OLD.placed_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on audit_legal_holds refused: a hold is only ever lifted, once', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'auditd hold lift NAME --reason ... lifts a hold and leaves an audit record.';
END;
$$;

CREATE TRIGGER audit_legal_holds_lift_only
    BEFORE UPDATE OR DELETE ON audit_legal_holds
    FOR EACH ROW EXECUTE FUNCTION audit_legal_holds_lift_only();
CREATE TRIGGER audit_legal_holds_no_truncate
    BEFORE TRUNCATE ON audit_legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
