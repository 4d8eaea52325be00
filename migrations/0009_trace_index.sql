-- 0009: the audit records of a trace, found by index.
--
-- audit-layer's `opentelemetry` feature stores the trace and span of the span a record is
-- emitted in as metadata.trace_id and metadata.span_id; auditd's `trace_id` filter asks
-- for `metadata ? 'trace_id' AND length(metadata->>'trace_id') = 32 AND
-- metadata->>'trace_id' = $1`. The index is partial: only records that carry a trace id of
-- that length are in it, so a deployment that does not trace pays nothing for it, at
-- write time or on disk, and a record whose own `trace_id` is some long text is not
-- refused for an index row too large. Created on the partitioned table, it is built
-- on each partition once (a scan of the partition; on a large table, run the migration
-- when writes can wait, or create it per partition CONCURRENTLY first with the same
-- definition, and PostgreSQL attaches those instead of building them).
CREATE INDEX audit_logs_trace_id
    ON audit_logs ((metadata->>'trace_id'), created_at, id)
    WHERE metadata ? 'trace_id' AND length(metadata->>'trace_id') = 32;
