//! The signed log under load, end to end: 1,000,000 events from 8 threads through the
//! layer (integrity on) while a sealer seals every second, then:
//!
//! * the seal lag: per batch, from its commit to the first signed checkpoint that holds
//!   it (p50, p99, max), over the whole run and per third of it (flat, or growing);
//! * no false alarm: the records and the log verify intact (exit if not);
//! * verify's rate, records/s, against `psql -c "\copy (SELECT * FROM audit_logs) TO
//!   '/dev/null'"` of the same rows in the same run.
//!
//! `cargo bench --bench integrity -- [--events N] [--threads T] [--seal-every-ms MS]`
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway cluster (fsync on).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditd::seal::{verify_log, Sealer, SigningKey};
use pg_provision::{ClusterOptions, Postgres};
use support::{arg, connect, connect_migrated, emit_backups, peak_rss_mib};
use tracing_subscriber::prelude::*;

fn main() {
    let events = arg("--events", 1_000_000);
    let threads = arg("--threads", 8);
    let seal_every = Duration::from_millis(arg("--seal-every-ms", 1000));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Postgres::from_env_or_throwaway(&ClusterOptions::durable())
        .expect("a PostgreSQL to measure against");
    let url = runtime
        .block_on(server.create_database("bench_integrity"))
        .expect("bench database");
    let client = runtime.block_on(connect_migrated(&url));

    // Ingest with a sealer running beside it.
    let key = SigningKey::generate("bench.invalid/log").expect("key");
    let verifier = key.verifier();
    let stop = Arc::new(AtomicBool::new(false));
    let sealing = {
        let (url, stop) = (url.clone(), stop.clone());
        runtime.spawn(async move {
            let mut sealer = Sealer::new(key);
            let mut client = connect(&url).await;
            let mut seals = 0u64;
            let mut slowest = Duration::ZERO;
            loop {
                let started = Instant::now();
                sealer.seal(&mut client).await.expect("seal");
                slowest = slowest.max(started.elapsed());
                seals += 1;
                if stop.load(Ordering::Relaxed) {
                    // One more, for what committed since.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    sealer.seal(&mut client).await.expect("seal");
                    return (seals + 1, slowest);
                }
                tokio::time::sleep(seal_every.saturating_sub(started.elapsed())).await;
            }
        })
    };
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        // The whole burst fits in the queue, as in the ingest bench: drops are not the
        // subject here.
        .queue_capacity(1 << 20)
        .batch_size(8192)
        .max_in_flight(2)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let started = Instant::now();
    emit_backups(&dispatch, threads, events / threads);
    let stats = runtime
        .block_on(handle.shutdown(Duration::from_secs(600)))
        .expect("everything committed");
    let ingest = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (seals, slowest_seal) = runtime.block_on(sealing).expect("sealer");
    println!(
        "integrity: {} events from {threads} threads committed in {:.2} s ({:.0} events/s) with a seal every {} ms: {seals} seals, the slowest {:.0} ms; {} dropped",
        stats.written,
        ingest.as_secs_f64(),
        stats.written as f64 / ingest.as_secs_f64(),
        seal_every.as_millis(),
        slowest_seal.as_secs_f64() * 1000.0,
        stats.dropped
    );

    // The lag from each batch's commit to its first checkpoint, overall and by thirds.
    let lag = runtime
        .block_on(client.query(
            "WITH lag AS (
               SELECT t.position,
                      extract(epoch FROM (SELECT min(c.signed_at) FROM audit_checkpoints c
                                          WHERE c.tree_size > t.position) - b.committed_at)::float8 AS s
               FROM audit_log_tree t JOIN audit_writer_batches b USING (stream_id, batch_id)),
             thirds AS (SELECT ntile(3) OVER (ORDER BY position) AS third, s FROM lag)
             SELECT third, count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY s), max(s)
             FROM thirds GROUP BY ROLLUP (third) ORDER BY third NULLS FIRST",
            &[],
        ))
        .expect("lag");
    for row in &lag {
        let third: Option<i32> = row.get(0);
        let count: i64 = row.get(1);
        let (p50, p99, max): (f64, f64, f64) = (row.get(2), row.get(3), row.get(4));
        println!(
            "integrity: seal lag {}: {count} batches, p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            third.map_or("overall".to_owned(), |t| format!("third {t}")),
            p50,
            p99,
            max
        );
    }

    // No false alarm, and verify's rate against psql's, alternately twice (the VM drifts).
    let mut ratios = Vec::new();
    for round in 0..2 {
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let records = runtime
            .block_on(audit_layer::integrity::verify(&client))
            .expect("verify records");
        let records_time = started.elapsed();
        let log = runtime
            .block_on(verify_log(&client, std::slice::from_ref(&verifier), &[]))
            .expect("verify log");
        let verify_time = started.elapsed();
        let verify_cpu = process_cpu_seconds() - cpu_before;
        if !records.intact() || !log.intact() || log.unsealed_batches > 0 {
            eprintln!(
                "integrity: FALSE ALARM or unsealed: {:?} {:?} ({} unsealed)",
                records.findings, log.findings, log.unsealed_batches
            );
            std::process::exit(1);
        }
        let psql = Instant::now();
        let status = std::process::Command::new("psql")
            .args([
                &url,
                "-q",
                "-c",
                "\\copy (SELECT * FROM audit_logs) TO '/dev/null'",
            ])
            .status()
            .expect("psql");
        assert!(status.success());
        let psql = psql.elapsed();
        let rate = records.proven as f64 / verify_time.as_secs_f64();
        let psql_rate = records.proven as f64 / psql.as_secs_f64();
        ratios.push(rate / psql_rate);
        println!(
            "integrity: verify {round}: {} records, {} batches, {} checkpoints in {:.2} s (records {:.2} s, log {:.2} s; this process's CPU {:.2} s) = {rate:.0} records/s; psql \\copy of the same rows {:.2} s = {psql_rate:.0} rows/s; intact",
            records.proven,
            log.tree_size,
            log.checkpoints,
            verify_time.as_secs_f64(),
            records_time.as_secs_f64(),
            (verify_time - records_time).as_secs_f64(),
            verify_cpu,
            psql.as_secs_f64(),
        );
    }
    println!(
        "integrity: verify = {:.2} x psql \\copy (runs: {:.2}, {:.2}); peak RSS {:.0} MiB",
        ratios.iter().sum::<f64>() / ratios.len() as f64,
        ratios[0],
        ratios[1],
        peak_rss_mib()
    );
}

/// This process's CPU time so far (user and system), in seconds, from /proc.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: fields 14 and 15 are utime and stime.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
