//! `GET /metrics`: the Prometheus text format, with the request counters ([`crate::metrics`])
//! and what is read at scrape time: the pool, reads in flight, the text search sample, the
//! access-audit writer.

use hyper::{Response, StatusCode};

use crate::http::Body;
use crate::metrics::Extra;
use crate::state::App;

/// Answers `GET /metrics`.
pub fn render(app: &App) -> Response<Body> {
    let pool = app.pool.status();
    let mut extra = vec![
        Extra {
            name: "auditd_db_pool_connections",
            kind: "gauge",
            help: "Open database connections.",
            value: pool.size as f64,
        },
        Extra {
            name: "auditd_db_pool_available",
            kind: "gauge",
            help: "Idle database connections.",
            value: pool.available as f64,
        },
        Extra {
            name: "auditd_db_pool_waiting",
            kind: "gauge",
            help: "Requests waiting for a database connection.",
            value: pool.waiting as f64,
        },
        Extra {
            name: "auditd_db_pool_max",
            kind: "gauge",
            help: "Most database connections allowed.",
            value: pool.max_size as f64,
        },
        Extra {
            name: "auditd_http_connections_open",
            kind: "gauge",
            help: "HTTP connections open now.",
            value: app.connections.open() as f64,
        },
        Extra {
            name: "auditd_http_connections_evicted_total",
            kind: "counter",
            help: "Idle connections asked to close to make room for a new one (--max-connections reached).",
            value: app.connections.evicted() as f64,
        },
        Extra {
            name: "auditd_http_connections_refused_total",
            kind: "counter",
            help: "Connections closed at once: --max-connections or --max-connections-per-ip reached.",
            value: app.connections.refused() as f64,
        },
        Extra {
            name: "auditd_http_requests_in_flight",
            kind: "gauge",
            help: "Requests being served now.",
            value: app.reads_in_flight() as f64,
        },
        Extra {
            name: "auditd_text_search_sample_messages",
            kind: "gauge",
            help: "Messages in the sample that tunes text search (0 without the trigram index).",
            value: app.text_sample.current().len() as f64,
        },
        Extra {
            name: "auditd_text_searches_narrowed_total",
            kind: "counter",
            help: "Text searches whose index lookup left out parts common in the sample.",
            value: app.narrowed_text_searches() as f64,
        },
    ];
    if let Some((lag, age)) = app.replication.latest() {
        for (name, help, value) in [
            (
                "auditd_db_reads_from_standby",
                "1 when queries are served from a hot standby (--database-url), 0 on the primary.",
                f64::from(u8::from(lag.reads_from_standby)),
            ),
            (
                "auditd_db_replication_lag_seconds",
                "Seconds the read database runs behind: since the last commit it replayed, while it has WAL left to replay (0 for a standby that stopped receiving: watch the bytes).",
                lag.seconds,
            ),
            (
                "auditd_db_replication_lag_bytes",
                "WAL bytes between the write database's position and what the read database has replayed.",
                lag.bytes,
            ),
            (
                "auditd_db_standbys",
                "Standbys streaming from the write database.",
                lag.standbys as f64,
            ),
            (
                "auditd_db_synchronous_standbys",
                "Standbys whose confirmation the write database's commits wait for (needs pg_monitor for the write role).",
                lag.synchronous_standbys as f64,
            ),
            (
                "auditd_db_replication_sample_age_seconds",
                "Seconds since the replication figures above were sampled.",
                age.as_secs_f64(),
            ),
        ] {
            extra.push(Extra {
                name,
                kind: "gauge",
                help,
                value,
            });
        }
    }
    let [ingested, fixups, duplicates, limited] = app.metrics.ingest_counts();
    for (name, help, value) in [
        (
            "auditd_ingest_records_total",
            "Records accepted by POST /api/v1/events (committed or spooled).",
            ingested,
        ),
        (
            "auditd_ingest_fixups_total",
            "Fix-ups applied to ingested records (each noted in the record's _fixups).",
            fixups,
        ),
        (
            "auditd_ingest_duplicates_total",
            "Retries answered as duplicates of a request already committed under its Idempotency-Key.",
            duplicates,
        ),
        (
            "auditd_ingest_rate_limited_total",
            "Writes refused with 429 for their token's rate.",
            limited,
        ),
    ] {
        extra.push(Extra {
            name,
            kind: "counter",
            help,
            value: value as f64,
        });
    }
    if let Some(handle) = &app.audit_handle {
        let s = handle.stats();
        extra.push(Extra {
            name: "auditd_writer_spool_bytes",
            kind: "gauge",
            help: "Bytes waiting in auditd's spool (--spool-dir) for the database.",
            value: s.spool_bytes as f64,
        });
        // The writer's counters cover access records and ingested records alike; the
        // names keep what they were called before ingest.
        for (name, help, value) in [
            (
                "auditd_access_records_written_total",
                "Records committed by auditd's writer: access records and ingested records.",
                s.written,
            ),
            (
                "auditd_access_records_dropped_total",
                "Records auditd's writer dropped (queue full or writer stopped).",
                s.dropped,
            ),
            (
                "auditd_access_records_rejected_total",
                "Records refused by PostgreSQL (kept in audit_logs_rejected).",
                s.rejected,
            ),
            (
                "auditd_access_writer_retries_total",
                "Retried writes of auditd's writer.",
                s.retries,
            ),
            (
                "auditd_writer_spooled_records_total",
                "Records auditd's writer put in its spool.",
                s.spooled,
            ),
        ] {
            extra.push(Extra {
                name,
                kind: "counter",
                help,
                value: value as f64,
            });
        }
    }
    crate::http::response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        app.metrics.render(&extra),
    )
}
