//! Index designs for `audit_logs`, compared in one run: what each costs a write, and what
//! each gives the queries people run (issue 17).
//!
//! `cargo bench --bench index_design -- [--ingest-rows 1000000] [--query-rows 10000000]
//! [--rounds 2] [--requests 50] [--only NAME]`
//!
//! **Ingest.** For each design, a fresh database with the schema migrated, its secondary
//! indexes swapped for the design's, then raw binary `COPY` of `--ingest-rows` pre-built
//! rows over 2 connections in batches of 8,192 (as the layer writes), `--rounds` times in
//! turn, so that the VM's drift falls on every design alike; rows/s and the ratio to
//! the schema before migration 0011 (four full btrees) in the same round.
//!
//! **Queries.** `--query-rows` records over 90 days with values of every selectivity (a
//! user with a tenth of the rows, one with 0.1 %, one with five; the same for event type,
//! severity and resource) are loaded once; for each design its indexes are built and
//! analysed, then each page query auditd sends (`... ORDER BY created_at DESC, id DESC
//! LIMIT 101`, the first page and one 5,000 records deep) is timed `--requests` times:
//! p50 and p99, with the plan's top node.

mod support;

use std::time::{Duration, Instant};

use support::{
    arg, build_secondary_indexes, connect, connect_migrated, cpu_seconds, load_skewed,
    skewed_value, DROP_SECONDARY_INDEXES,
};

/// A design: its name, and the SQL that turns the migrated schema's secondary indexes
/// into it (after dropping them all, when `replaces_all`).
struct Design {
    name: &'static str,
    replaces_all: bool,
    sql: &'static str,
}

async fn apply(client: &tokio_postgres::Client, design: &Design) {
    if design.replaces_all {
        client
            .batch_execute(DROP_SECONDARY_INDEXES)
            .await
            .expect("drop indexes");
    }
    client.batch_execute(design.sql).await.expect("design");
}

/// The schema before migration 0011: four full btrees. Every ratio is to it.
const BEFORE_0011: &str = "DROP INDEX audit_logs_severity_partial, audit_logs_above_info; \
     CREATE INDEX audit_logs_severity_idx ON audit_logs (severity, created_at DESC, id DESC)";

fn designs() -> Vec<Design> {
    vec![
        Design {
            name: "before 0011: 4 btrees",
            replaces_all: false,
            sql: BEFORE_0011,
        },
        Design {
            name: "since 0011: 3 btrees + 2 partial",
            replaces_all: false,
            sql: "",
        },
        Design {
            name: "primary key only",
            replaces_all: true,
            sql: "",
        },
        Design {
            name: "one btree_gin (5 columns)",
            replaces_all: true,
            sql: "CREATE EXTENSION IF NOT EXISTS btree_gin; \
                  CREATE INDEX audit_logs_columns_gin ON audit_logs USING gin \
                      (username, event_type, severity, resource_type, resource_id) \
                      WITH (fastupdate = on)",
        },
        Design {
            name: "BRIN bloom + partial severity",
            replaces_all: true,
            sql: "CREATE INDEX audit_logs_columns_bloom ON audit_logs USING brin \
                      (username text_bloom_ops, event_type text_bloom_ops, \
                       resource_id text_bloom_ops) WITH (pages_per_range = 8); \
                  CREATE INDEX audit_logs_severity_partial ON audit_logs \
                      (severity, created_at DESC, id DESC) WHERE severity <> 'info'",
        },
        Design {
            name: "covering time index + bloom",
            replaces_all: true,
            sql: "CREATE INDEX audit_logs_time_covering ON audit_logs (created_at DESC, id DESC) \
                      INCLUDE (username, event_type, severity, resource_type, resource_id); \
                  CREATE INDEX audit_logs_columns_bloom ON audit_logs USING brin \
                      (username text_bloom_ops, event_type text_bloom_ops, \
                       resource_id text_bloom_ops) WITH (pages_per_range = 8); \
                  CREATE INDEX audit_logs_severity_partial ON audit_logs \
                      (severity, created_at DESC, id DESC) WHERE severity <> 'info'",
        },
        Design {
            name: "2 btrees + 2 partial",
            replaces_all: false,
            sql: "DROP INDEX audit_logs_event_type_idx",
        },
    ]
}

/// The values of a column at each selectivity, as `support::skewed_row_sql` writes them.
const CASES: [(&str, &str, &str); 5] = [
    ("username", "username = $1", "user"),
    ("event_type", "event_type = $1", "event"),
    ("severity", "severity = $1", "severity"),
    // As auditd sends `min_severity` (a list), and the one value a partial index on
    // `severity <> 'info'` leaves out.
    (
        "severity IN",
        "severity = ANY(string_to_array($1, ','))",
        "severities",
    ),
    (
        "resource",
        "resource_type = 'device' AND resource_id = $1",
        "resource",
    ),
];

/// Raw binary COPY of `rows` skewed rows over 2 connections, batches of 8,192: rows/s,
/// and the CPU time PostgreSQL spent per row (its every process: steadier than the rate
/// on a VM whose speed drifts).
async fn copy_rate(url: &str, rows: u64) -> (f64, f64) {
    // The rows are made by the server, outside the clock, and sent back once.
    let data = fetch_rows(url, rows).await;
    let connections = 2;
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(url).await);
    }
    let data = std::sync::Arc::new(data);
    let started = Instant::now();
    let cpu_before = cpu_seconds().1;
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::Type;
            let types = [
                Type::VARCHAR,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::TEXT,
                Type::INET,
                Type::TIMESTAMPTZ,
            ];
            let mine: Vec<&SkewedRow> = data.iter().skip(c).step_by(connections).collect();
            for chunk in mine.chunks(8192) {
                let sink = client
                    .copy_in(
                        "COPY audit_logs (username, event_type, severity, resource_type, \
                         resource_id, message, ip_address, created_at) FROM STDIN (FORMAT binary)",
                    )
                    .await
                    .expect("copy");
                let writer = BinaryCopyInWriter::new(sink, &types);
                let mut writer = std::pin::pin!(writer);
                for row in chunk {
                    writer
                        .as_mut()
                        .write(&[
                            &row.0[0], &row.0[1], &row.0[2], &row.0[3], &row.0[4], &row.0[5],
                            &row.1, &row.2,
                        ])
                        .await
                        .expect("row");
                }
                writer.finish().await.expect("finish");
            }
            // Kept open until measured: a backend's CPU time shows only while it lives
            // (or once its postmaster has reaped it).
            client
        }));
    }
    let mut open = Vec::new();
    for task in tasks {
        open.push(task.await.expect("copy task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().1 - cpu_before;
    drop(open);
    (rows as f64 / elapsed, cpu / rows as f64 * 1e6)
}

struct SkewedRow([String; 6], std::net::IpAddr, chrono::DateTime<chrono::Utc>);

async fn fetch_rows(url: &str, rows: u64) -> Vec<SkewedRow> {
    let client = connect(url).await;
    client
        .query(
            &format!(
                "SELECT {}, 'Event number ' || i, ('10.' || (i % 200) || '.' || (i % 250) || '.1')::inet, \
                        now() - (({rows} - i) * interval '1 millisecond') \
                 FROM generate_series(0::bigint, {rows} - 1) AS i",
                support::skewed_row_sql()
            ),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| {
            SkewedRow(
                [r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)],
                r.get(6),
                r.get(7),
            )
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times each page query on `client`; prints p50, p99 and the plan's top scan.
async fn time_queries(client: &tokio_postgres::Client, design: &str, requests: usize) {
    let page = "SELECT id, created_at, username, event_type, severity, message, resource_id \
                FROM audit_logs WHERE true";
    for (column, condition, kind) in CASES {
        for selectivity in ["common", "middling", "rare"] {
            let value = skewed_value(kind, selectivity);
            let first =
                format!("{page} AND {condition} ORDER BY created_at DESC, id DESC LIMIT 101");
            // The cursor 5,000 records deep, when there are that many.
            let deep_cursor = client
                .query_opt(
                    &format!(
                        "SELECT created_at, id FROM audit_logs WHERE {condition} \
                         ORDER BY created_at DESC, id DESC OFFSET 5000 LIMIT 1"
                    ),
                    &[&value],
                )
                .await
                .expect("cursor");
            let mut queries = vec![("page 1", first, None)];
            if let Some(row) = deep_cursor {
                let at: chrono::DateTime<chrono::Utc> = row.get(0);
                let id: i64 = row.get(1);
                queries.push((
                    "5,000 deep",
                    format!(
                        "{page} AND {condition} AND (created_at, id) < ($2, $3) \
                         ORDER BY created_at DESC, id DESC LIMIT 101"
                    ),
                    Some((at, id)),
                ));
            }
            for (depth, sql, cursor) in queries {
                // Prepared anew each time, as auditd sends it (an unnamed statement): so
                // the plan is made for these values, never a generic one.
                let run = || async {
                    match cursor {
                        Some((at, id)) => client.query(sql.as_str(), &[&value, &at, &id]).await,
                        None => client.query(sql.as_str(), &[&value]).await,
                    }
                    .expect("query")
                };
                for _ in 0..3 {
                    run().await;
                }
                let mut times = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let started = Instant::now();
                    run().await;
                    times.push(started.elapsed());
                }
                times.sort();
                let plan = explain_top(client, &sql, value, cursor).await;
                println!(
                    "queries: {design:<32} {column:<11} {selectivity:<8} {depth:<10} p50 {:>8.2} ms  p99 {:>8.2} ms  {plan}",
                    percentile(&times, 0.5),
                    percentile(&times, 0.99)
                );
            }
        }
    }
}

/// The first scan node of the plan PostgreSQL picks for `sql`.
async fn explain_top(
    client: &tokio_postgres::Client,
    sql: &str,
    value: &str,
    cursor: Option<(chrono::DateTime<chrono::Utc>, i64)>,
) -> String {
    let explain = format!("EXPLAIN {sql}");
    let rows = match cursor {
        Some((at, id)) => client.query(&explain, &[&value, &at, &id]).await,
        None => client.query(&explain, &[&value]).await,
    }
    .expect("explain");
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .find(|line| line.contains("Scan"))
        .map(|line| {
            let line = line.trim().trim_start_matches("->  ");
            line.split("  (").next().unwrap_or(line).to_owned()
        })
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let ingest_rows = arg("--ingest-rows", 1_000_000);
    let query_rows = arg("--query-rows", 10_000_000);
    let rounds = arg("--rounds", 2);
    let requests = arg("--requests", 50) as usize;
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let designs: Vec<Design> = designs()
        .into_iter()
        // The design before 0011 stays first whatever is chosen: every ratio is to it.
        .enumerate()
        .filter(|(i, d)| *i == 0 || only.as_deref().is_none_or(|o| d.name.contains(o)))
        .map(|(_, d)| d)
        .collect();
    let server = support::postgres().await;

    if ingest_rows > 0 {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); designs.len()];
        let mut cpu_per_row: Vec<Vec<f64>> = vec![Vec::new(); designs.len()];
        for round in 0..rounds {
            for (i, design) in designs.iter().enumerate() {
                let url = server
                    .create_database(&format!("bench_index_ingest_{round}_{i}"))
                    .await
                    .expect("database");
                let client = connect_migrated(&url).await;
                apply(&client, design).await;
                let (rate, cpu) = copy_rate(&url, ingest_rows).await;
                println!(
                    "ingest: round {round} {:<32} {rate:>9.0} rows/s = {:.2} x before 0011; PostgreSQL CPU {cpu:.2} µs/row",
                    design.name,
                    rate / rates[0].get(round as usize).copied().unwrap_or(rate)
                );
                rates[i].push(rate);
                cpu_per_row[i].push(cpu);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        for (design, cpu_of) in designs.iter().zip(&cpu_per_row) {
            println!(
                "ingest: {:<32} PostgreSQL CPU {:.2} µs/row on average (throughput bound by CPU: {:.2} x before 0011)",
                design.name,
                mean(cpu_of),
                mean(&cpu_per_row[0]) / mean(cpu_of)
            );
        }
        for (design, rates_of) in designs.iter().zip(&rates) {
            let ratios: Vec<String> = rates_of
                .iter()
                .zip(&rates[0])
                .map(|(r, before)| format!("{:.2}", r / before))
                .collect();
            println!(
                "ingest: {:<32} {:.0}–{:.0} rows/s, x before 0011 by round: {}",
                design.name,
                rates_of.iter().copied().fold(f64::INFINITY, f64::min),
                rates_of.iter().copied().fold(0.0, f64::max),
                ratios.join(", ")
            );
        }
    }

    if query_rows > 0 {
        let url = server
            .create_database("bench_index_queries")
            .await
            .expect("database");
        load_skewed(&connect_migrated(&url).await, query_rows).await;
        let client = connect(&url).await;
        for design in &designs {
            let started = Instant::now();
            // The migrated schema's indexes back first (the load had none), then the
            // design's swap.
            client
                .batch_execute(
                    "DROP INDEX IF EXISTS audit_logs_columns_gin, audit_logs_columns_bloom, \
                         audit_logs_severity_idx, audit_logs_time_covering",
                )
                .await
                .expect("the last design's indexes");
            build_secondary_indexes(&client).await;
            apply(&client, design).await;
            client
                .batch_execute("VACUUM ANALYZE audit_logs")
                .await
                .expect("analyze");
            println!(
                "queries: {:<32} indexes ready in {:.0} s",
                design.name,
                started.elapsed().as_secs_f64()
            );
            time_queries(&client, design.name, requests).await;
        }
    }
}
