//! End-to-end ingest throughput: events emitted through the tracing macros by several
//! threads, timed until every one is committed in PostgreSQL; and in the same run, on the
//! same schema, the baselines. The events' users, event types, severities and devices vary
//! as a deployment's do (`support::varied`: skewed, 1,000 users, 20,000 devices), since
//! the indexes cost a write more when the values spread. The baselines:
//!
//! * the original design's approach: one `INSERT` and one commit per record, bare (one
//!   prepared statement in autocommit), and as the original repository sends it
//!   (a transaction around `INSERT ... RETURNING`, then `refresh()` reading the row back);
//! * raw binary `COPY` of the same rows, pre-built in memory, over as many connections as
//!   the layer uses: the ceiling for any writer.
//!
//! `cargo bench --bench ingest -- [--events N] [--threads T] [--batch-size B] [--in-flight F]
//!  [--pairs P] [--baseline-records N]`
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway cluster with PostgreSQL's default
//! durability (fsync on), on this machine. Each measurement gets a fresh database. Prints
//! events/s and the process's peak memory.

mod support;

use support::{connect_migrated, cpu_seconds, emit_varied, peak_rss_mib, varied};

use std::time::{Duration, Instant};

use pg_provision::{ClusterOptions, Postgres};
use tracing_subscriber::prelude::*;

struct Args {
    pairs: usize,
    baseline_records: u64,
    events: u64,
    threads: u64,
    batch_size: usize,
    in_flight: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        pairs: 3,
        baseline_records: 20_000,
        events: 1_000_000,
        threads: 4,
        batch_size: 8192,
        in_flight: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.replace('_', "").parse().ok());
        match arg.as_str() {
            "--events" => parsed.events = value().expect("--events N"),
            "--threads" => parsed.threads = value().expect("--threads N"),
            "--batch-size" => parsed.batch_size = value().expect("--batch-size N") as usize,
            "--in-flight" => parsed.in_flight = value().expect("--in-flight N") as usize,
            "--pairs" => parsed.pairs = (value().expect("--pairs N") as usize).max(1),
            "--baseline-records" => {
                parsed.baseline_records = value().expect("--baseline-records N")
            }
            _ => {} // cargo bench passes --bench
        }
    }
    parsed
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Postgres::from_env_or_throwaway(&ClusterOptions::durable())
        .expect("a PostgreSQL to measure against");
    let url = runtime
        .block_on(server.create_database("bench_ingest"))
        .expect("bench database");
    runtime.block_on(connect_migrated(&url));

    // Integrity off and on, alternately, `--pairs` times each (3 by default): the VM drifts
    // by a third within minutes, so the ratio is taken between neighbouring runs, and
    // reported as the ratio of the sums, with the range of the pairs.
    let mut rates = Vec::new();
    for round in 0..args.pairs * 2 {
        let integrity = round % 2 == 1;
        let url = runtime
            .block_on(server.create_database(&format!("bench_ingest_{round}")))
            .expect("bench database");
        runtime.block_on(connect_migrated(&url));
        rates.push((integrity, layer_run(&runtime, &url, &args, integrity)));
    }
    let cpu = |integrity: bool| -> f64 {
        let runs: Vec<f64> = rates
            .iter()
            .filter(|(i, _)| *i == integrity)
            .map(|(_, r)| r.cpu_per_event)
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let (cpu_on, cpu_off) = (cpu(true), cpu(false));
    let on: Vec<f64> = rates
        .iter()
        .filter(|(i, _)| *i)
        .map(|(_, r)| r.rate)
        .collect();
    let off: Vec<f64> = rates
        .iter()
        .filter(|(i, _)| !*i)
        .map(|(_, r)| r.rate)
        .collect();
    let pairs: Vec<String> = on
        .iter()
        .zip(&off)
        .map(|(on, off)| format!("{:.2}", on / off))
        .collect();
    println!(
        "ingest: integrity on = {:.2} x off (pairs: {}; on {:.0}, off {:.0} events/s on average)",
        on.iter().sum::<f64>() / off.iter().sum::<f64>(),
        pairs.join(", "),
        on.iter().sum::<f64>() / on.len() as f64,
        off.iter().sum::<f64>() / off.len() as f64,
    );
    println!(
        "ingest: CPU per event, this process and PostgreSQL together: integrity on {:.2} µs, off {:.2} µs = {:.3} x (throughput bound by CPU: 1/that = {:.2} x)",
        cpu_on * 1e6,
        cpu_off * 1e6,
        cpu_on / cpu_off,
        cpu_off / cpu_on
    );
    let layer_rate = on[on.len() - 1];

    // Baseline 1: one INSERT, one commit, per record (the original design's repository).
    let url = runtime
        .block_on(server.create_database("bench_per_record"))
        .expect("bench database");
    let per_record = runtime.block_on(per_record_inserts(&url, args.baseline_records));
    println!(
        "baseline, one INSERT and commit per record: {} records in {:.2} s = {:.0} records/s",
        args.baseline_records,
        per_record.as_secs_f64(),
        args.baseline_records as f64 / per_record.as_secs_f64()
    );

    // Baseline 1b: the same, statement for statement as the original repository sends it.
    let url = runtime
        .block_on(server.create_database("bench_seed_repository"))
        .expect("bench database");
    let seed = runtime.block_on(seed_repository(&url, args.baseline_records));
    let seed_rate = args.baseline_records as f64 / seed.as_secs_f64();
    println!(
        "baseline, the original repository's statements per record (BEGIN, INSERT ... RETURNING id, COMMIT, BEGIN, refresh SELECT, ROLLBACK): {} records in {:.2} s = {seed_rate:.0} records/s",
        args.baseline_records,
        seed.as_secs_f64(),
    );

    // Baseline 2: raw binary COPY of pre-built rows, batches and connections as the layer.
    let url = runtime
        .block_on(server.create_database("bench_raw_copy"))
        .expect("bench database");
    let total = args.events / args.threads * args.threads;
    let raw = runtime.block_on(raw_copy(&url, total, args.batch_size, args.in_flight));
    let raw_rate = total as f64 / raw.as_secs_f64();
    println!(
        "baseline, raw binary COPY of pre-built rows ({} connections, batch {}): {total} rows in {:.2} s = {raw_rate:.0} rows/s",
        args.in_flight,
        args.batch_size,
        raw.as_secs_f64()
    );
    println!(
        "ingest: layer end to end = {:.2} x raw COPY, {:.0} x one-INSERT-per-record, {:.0} x the original repository",
        layer_rate / raw_rate,
        layer_rate / (args.baseline_records as f64 / per_record.as_secs_f64()),
        layer_rate / seed_rate
    );
}

/// A row as both baselines send it, built before the clock starts: the record's columns,
/// with the metadata already JSON text, as the layer's queued records carry it.
struct PrebuiltRow {
    log: audit_layer::AuditLog,
    severity: &'static str,
    metadata: JsonbText,
}

impl PrebuiltRow {
    fn sample(i: u64) -> Self {
        let v = varied(i);
        let mut log =
            audit_layer::AuditLog::new(v.username, v.event_type, "Device configuration backed up");
        log.severity = v.severity.parse().expect("severity");
        log.ip_address = Some("192.0.2.1".parse().expect("ip"));
        log.resource_type = Some("device".into());
        log.resource_id = Some(v.resource_id.into());
        log.metadata.insert("thread".into(), (i % 4).into());
        log.metadata.insert("seq".into(), i.into());
        PrebuiltRow {
            severity: log.severity.as_str(),
            metadata: JsonbText(serde_json::Value::Object(log.metadata.clone()).to_string()),
            log,
        }
    }

    /// The column values, in `RECORD_COLUMNS` order.
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 11] {
        let r = &self.log;
        [
            &r.username,
            &r.user_id,
            &r.event_type,
            &r.message,
            &r.ip_address,
            &r.resource_type,
            &r.resource_id,
            &r.resource_name,
            &self.severity,
            &self.metadata,
            &r.created_at,
        ]
    }
}

/// JSON text sent as `jsonb` as it is (the binary format is a version byte and the text).
#[derive(Debug)]
struct JsonbText(String);

impl tokio_postgres::types::ToSql for JsonbText {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSONB
    }

    tokio_postgres::types::to_sql_checked!();
}

async fn per_record_inserts(url: &str, n: u64) -> Duration {
    let client = connect_migrated(url).await;
    let statement = client
        .prepare(&format!(
            "INSERT INTO audit_logs ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            audit_layer::RECORD_COLUMNS
        ))
        .await
        .expect("prepare");
    let rows: Vec<PrebuiltRow> = (0..n).map(PrebuiltRow::sample).collect();
    let started = Instant::now();
    for row in &rows {
        client
            .execute(&statement, &row.params())
            .await
            .expect("insert");
    }
    started.elapsed()
}

/// What `AuditLogRepository.create_log` in the original design puts on the wire for each
/// record, through SQLAlchemy's session and psycopg2: a transaction around the INSERT,
/// `db.refresh(log_entry)` reading the row back in a new one, and the session's close
/// returning the connection to the pool with a ROLLBACK. Python's own time is not counted.
async fn seed_repository(url: &str, n: u64) -> Duration {
    let client = connect_migrated(url).await;
    let insert = client
        .prepare(&format!(
            "INSERT INTO audit_logs ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING created_at, id",
            audit_layer::RECORD_COLUMNS
        ))
        .await
        .expect("prepare insert");
    let refresh = client
        .prepare(&format!(
            // By primary key, as the ORM refreshes: here (created_at, id), an index lookup
            // in one partition, as cheap as the original's lookup by `id`.
            "SELECT id, {} FROM audit_logs WHERE created_at = $1 AND id = $2",
            audit_layer::RECORD_COLUMNS
        ))
        .await
        .expect("prepare refresh");
    let rows: Vec<PrebuiltRow> = (0..n).map(PrebuiltRow::sample).collect();
    let started = Instant::now();
    for row in &rows {
        client.batch_execute("BEGIN").await.expect("begin");
        let key = client
            .query_one(&insert, &row.params())
            .await
            .expect("insert");
        let (created_at, id): (chrono::DateTime<chrono::Utc>, i64) = (key.get(0), key.get(1));
        client.batch_execute("COMMIT").await.expect("commit");
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .query_one(&refresh, &[&created_at, &id])
            .await
            .expect("refresh");
        client.batch_execute("ROLLBACK").await.expect("rollback");
    }
    started.elapsed()
}

async fn raw_copy(url: &str, n: u64, batch: usize, connections: usize) -> Duration {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let rows: Vec<PrebuiltRow> = (0..n).map(PrebuiltRow::sample).collect();
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect_migrated(url).await);
    }
    let statement = format!(
        "COPY audit_logs ({}) FROM STDIN (FORMAT binary)",
        audit_layer::RECORD_COLUMNS
    );
    let types = [
        Type::VARCHAR,
        Type::INT8,
        Type::VARCHAR,
        Type::TEXT,
        Type::INET,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::JSONB,
        Type::TIMESTAMPTZ,
    ];
    let rows = std::sync::Arc::new(rows);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let rows = rows.clone();
        let statement = statement.clone();
        let types = types.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<&PrebuiltRow> = rows.iter().skip(c).step_by(connections).collect();
            for chunk in mine.chunks(batch) {
                let sink = client.copy_in(&statement).await.expect("copy");
                let writer = BinaryCopyInWriter::new(sink, &types);
                let mut writer = std::pin::pin!(writer);
                for row in chunk {
                    writer.as_mut().write(&row.params()).await.expect("row");
                }
                writer.finish().await.expect("finish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("copy task");
    }
    started.elapsed()
}

/// One end-to-end run of the layer into `url`: the events/s from the first emission to
/// the last commit.
fn layer_run(runtime: &tokio::runtime::Runtime, url: &str, args: &Args, integrity: bool) -> Run {
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(url)
        .queue_capacity(1 << 20)
        .batch_size(args.batch_size)
        .max_in_flight(args.in_flight)
        .integrity(integrity)
        .build()
        .expect("audit layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    let per_thread = args.events / args.threads;
    let (ours_before, postgres_before) = cpu_seconds();
    let started = Instant::now();
    emit_varied(&dispatch, args.threads, per_thread);
    let emitted = started.elapsed();
    let stats = runtime
        .block_on(handle.shutdown(Duration::from_secs(600)))
        .expect("all committed");
    let committed = started.elapsed();
    let total = per_thread * args.threads;
    assert_eq!(stats.written, total, "{stats:?}");
    let (ours_after, postgres_after) = cpu_seconds();
    let cpu = (ours_after - ours_before, postgres_after - postgres_before);
    println!(
        "ingest (integrity {}): {total} events, {} threads, batch {}, {} in flight: emitted in {:.2} s, committed in {:.2} s = {:.0} events/s end to end; \
         {} batches, {} dropped, peak RSS {:.0} MiB; CPU {:.2} µs/event here and {:.2} µs/event in PostgreSQL",
        if integrity { "on" } else { "off" },
        args.threads,
        args.batch_size,
        args.in_flight,
        emitted.as_secs_f64(),
        committed.as_secs_f64(),
        total as f64 / committed.as_secs_f64(),
        stats.batches,
        stats.dropped,
        peak_rss_mib(),
        cpu.0 * 1e6 / total as f64,
        cpu.1 * 1e6 / total as f64,
    );
    Run {
        rate: total as f64 / committed.as_secs_f64(),
        cpu_per_event: (cpu.0 + cpu.1) / total as f64,
    }
}

/// What one layer run measured.
struct Run {
    rate: f64,
    cpu_per_event: f64,
}
