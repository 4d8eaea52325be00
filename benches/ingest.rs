//! End-to-end ingest throughput: events emitted through the tracing macros by several
//! threads, timed until every one is committed in PostgreSQL.
//!
//! `cargo bench --bench ingest -- [--events N] [--threads T] [--batch-size B] [--in-flight F]`
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway cluster with PostgreSQL's default
//! durability (fsync on), on this machine. Prints events/s and the process's peak memory.

use std::time::{Duration, Instant};

use pg_provision::{ClusterOptions, Postgres};
use tokio_postgres::NoTls;
use tracing::{info, info_span};
use tracing_subscriber::prelude::*;

struct Args {
    events: u64,
    threads: u64,
    batch_size: usize,
    in_flight: usize,
}

fn args() -> Args {
    let mut parsed = Args {
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
            _ => {} // cargo bench passes --bench
        }
    }
    parsed
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Postgres::from_env_or_throwaway(&ClusterOptions { durable: true })
        .expect("a PostgreSQL to measure against");
    let url = runtime
        .block_on(server.create_database("bench_ingest"))
        .expect("bench database");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(connection);
        audit_layer::migrate::migrate(&client)
            .await
            .expect("migrate");
    });

    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .queue_capacity(1 << 20)
        .batch_size(args.batch_size)
        .max_in_flight(args.in_flight)
        .build()
        .expect("audit layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    let per_thread = args.events / args.threads;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..args.threads {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let span = info_span!("request", username = "bench", ip_address = "192.0.2.1");
                    let _guard = span.enter();
                    for seq in 0..per_thread {
                        info!(
                            target: "audit",
                            event_type = "benchmark",
                            resource_type = "device",
                            resource_id = "dev-1",
                            thread,
                            seq,
                            "Device configuration backed up"
                        );
                    }
                })
            });
        }
    });
    let emitted = started.elapsed();
    let stats = runtime
        .block_on(handle.shutdown(Duration::from_secs(600)))
        .expect("all committed");
    let committed = started.elapsed();
    let total = per_thread * args.threads;
    assert_eq!(stats.written, total, "{stats:?}");
    println!(
        "ingest: {total} events, {} threads, batch {}, {} in flight: emitted in {:.2} s, committed in {:.2} s = {:.0} events/s end to end; \
         {} batches, {} dropped, peak RSS {:.0} MiB",
        args.threads,
        args.batch_size,
        args.in_flight,
        emitted.as_secs_f64(),
        committed.as_secs_f64(),
        total as f64 / committed.as_secs_f64(),
        stats.batches,
        stats.dropped,
        peak_rss_mib()
    );
}
