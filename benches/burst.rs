//! A burst against a real PostgreSQL: 8 threads emitting as fast as they can, with and
//! without a spool, in the same run.
//!
//! `cargo bench --bench burst -- [--events 1000000] [--threads 8]`
//!
//! Each case gets a fresh database and the layer's default settings (queue 65,536, batches
//! of 8,192, two in flight), plus `spool_dir` in the spool case. Each thread times every
//! emit on its own clock. Printed per case: records dropped, batches spilled to the spool,
//! records in the table and whether each is there exactly once, the caller's p50/p99/p99.9,
//! and this process's peak RSS. A third case emits the same events at a pace the database
//! keeps up with (no burst) for the caller's latency without back-pressure, and one with a
//! queue large enough for the whole burst (no spool), for what processing every record
//! costs the callers.

mod support;

use std::time::{Duration, Instant};

use pg_provision::Postgres;
use support::{arg, connect, connect_migrated, peak_rss_mib};
use tracing_subscriber::prelude::*;

/// Emits `per_thread` events from each of `threads` threads, `pause` between events;
/// returns every emit's duration, in nanoseconds.
fn emit_timed(
    dispatch: &tracing::Dispatch,
    threads: u64,
    per_thread: u64,
    pause: Duration,
) -> Vec<u64> {
    let mut all = Vec::with_capacity((threads * per_thread) as usize);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let dispatch = dispatch.clone();
                scope.spawn(move || {
                    let mut took = Vec::with_capacity(per_thread as usize);
                    tracing::dispatcher::with_default(&dispatch, || {
                        let span = tracing::info_span!("request", username = "bench", ip_address = "192.0.2.1");
                        let _guard = span.enter();
                        for seq in 0..per_thread {
                            let started = Instant::now();
                            tracing::info!(target: "audit", event_type = "benchmark", resource_type = "device",
                                resource_id = "dev-1", thread, seq, "Device configuration backed up");
                            took.push(started.elapsed().as_nanos() as u64);
                            if !pause.is_zero() {
                                std::thread::sleep(pause);
                            }
                        }
                    });
                    took
                })
            })
            .collect();
        for handle in handles {
            all.extend(handle.join().expect("thread"));
        }
    });
    all
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

async fn case(
    server: &Postgres,
    name: &str,
    spool: bool,
    queue: usize,
    threads: u64,
    per_thread: u64,
    pause: Duration,
) {
    let url = server
        .create_database(&format!("bench_burst_{name}"))
        .await
        .expect("database");
    connect_migrated(&url).await;
    let dir = std::env::temp_dir().join(format!("audit-burst-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .queue_capacity(queue);
    if spool {
        builder = builder.spool_dir(&dir);
    }
    let (layer, handle) = builder.build().expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let started = Instant::now();
    let mut took = emit_timed(&dispatch, threads, per_thread, pause);
    let emitted_in = started.elapsed();
    let stats = handle
        .shutdown(Duration::from_secs(600))
        .await
        .expect("shutdown");
    let written_in = started.elapsed();
    let client = connect(&url).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM audit_logs WHERE event_type = 'benchmark'",
            &[],
        )
        .await
        .expect("count");
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    took.sort_unstable();
    let emitted = threads * per_thread;
    println!(
        "{name}: {emitted} events from {threads} threads emitted in {:.2} s, all committed in {:.2} s; dropped {}, spilled batches {}, in the table {rows} ({}), caller p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs; peak RSS so far {:.0} MiB",
        emitted_in.as_secs_f64(),
        written_in.as_secs_f64(),
        stats.dropped,
        stats.spilled_batches,
        if rows == distinct && rows as u64 + stats.dropped == emitted { "each exactly once" } else { "NOT exactly once" },
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        percentile(&took, 0.999),
        peak_rss_mib(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    let events = arg("--events", 1_000_000);
    let threads = arg("--threads", 8);
    let per_thread = events / threads;
    let server = support::postgres().await;
    let default_queue = 65_536;
    let burst = Duration::ZERO;
    case(
        &server,
        "no_spool",
        false,
        default_queue,
        threads,
        per_thread,
        burst,
    )
    .await;
    case(
        &server,
        "spool",
        true,
        default_queue,
        threads,
        per_thread,
        burst,
    )
    .await;
    // Every record held in memory instead: what processing all of them costs the
    // callers, without the spool.
    let all = usize::try_from(threads * per_thread).unwrap_or(usize::MAX);
    case(
        &server,
        "queue_for_all",
        false,
        all,
        threads,
        per_thread,
        burst,
    )
    .await;
    // About 40,000 events/s in all: well within what the database takes.
    let pace = Duration::from_micros(200);
    case(
        &server,
        "paced",
        true,
        default_queue,
        threads,
        per_thread / 10,
        pace,
    )
    .await;
}
