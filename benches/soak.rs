//! Soak: a steady event rate for a long time while the database restarts every minute.
//! Memory must stay flat and every record must arrive exactly once.
//!
//! `cargo bench --bench soak -- [--minutes 10] [--rate 20000] [--restart-every 60]`
//!
//! Starts its own durable throwaway cluster (it has to restart it). The layer has a spool,
//! so records emitted while the server is down go to disk instead of the queue.

mod support;

use support::{arg, connect, connect_migrated, rss_mib};

use std::time::{Duration, Instant};

use pg_provision::{Cluster, ClusterOptions};
use tracing::info;
use tracing_subscriber::prelude::*;

fn main() {
    let minutes = arg("--minutes", 10);
    let rate = arg("--rate", 20_000);
    let restart_every = Duration::from_secs(arg("--restart-every", 60));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = Cluster::start_new(&ClusterOptions::durable()).expect("cluster");
    let url = cluster.url("postgres");
    runtime.block_on(connect_migrated(&url));
    let spool = std::env::temp_dir().join(format!("audit-soak-spool-{}", std::process::id()));
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .spool_dir(&spool)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    let total = Duration::from_secs(minutes * 60);
    let started = Instant::now();
    let emitter = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let mut emitted: u64 = 0;
            while started.elapsed() < total {
                // Keep to the rate: emit what is due, then sleep a millisecond.
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while emitted < due {
                    emitted += 1;
                    info!(target: "audit", username = "soak", event_type = "soak", n = emitted, "steady");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            emitted
        })
    });

    let mut samples = Vec::new();
    let mut restarts = 0;
    let mut next_restart = restart_every;
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        let stats = handle.stats();
        samples.push((
            started.elapsed().as_secs(),
            rss_mib(),
            stats.queue_depth,
            stats.spool_bytes,
        ));
        if started.elapsed() >= next_restart && started.elapsed() + Duration::from_secs(5) < total {
            cluster.stop("immediate").expect("stop");
            std::thread::sleep(Duration::from_secs(2));
            cluster.start().expect("start");
            restarts += 1;
            next_restart += restart_every;
        }
        if samples.len() % 30 == 0 {
            let (t, rss, depth, spool) = samples[samples.len() - 1];
            eprintln!(
                "{t:>4}s rss {rss:.0} MiB, queue {depth}, spool {spool} B, written {}, retries {}",
                stats.written, stats.retries
            );
        }
    }
    let emitted = emitter.join().expect("emitter");
    let stats = runtime
        .block_on(handle.shutdown(Duration::from_secs(300)))
        .expect("everything committed at the end");
    let (rows, distinct, max_seq): (i64, i64, i64) = runtime.block_on(async {
        let client = connect(&url).await;
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT seq), max(seq) FROM audit_logs \
                 WHERE stream_id = $1 AND event_type = 'soak'",
                &[&handle.stream_id()],
            )
            .await
            .expect("count");
        (row.get(0), row.get(1), row.get(2))
    });
    let minute = |from: u64, to: u64| {
        let s: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 >= from && s.0 < to)
            .map(|s| s.1)
            .collect();
        (
            s.iter().copied().fold(f64::INFINITY, f64::min),
            s.iter().copied().fold(0.0, f64::max),
        )
    };
    let end = started.elapsed().as_secs();
    let (first_min, first_max) = minute(60, 120);
    let (last_min, last_max) = minute(end.saturating_sub(60), end + 1);
    println!(
        "soak: {minutes} min at {rate}/s, {restarts} restarts (immediate stop, 2 s down): \
         emitted {emitted}, rows {rows}, distinct seq {distinct}, max seq {max_seq}, \
         dropped {}, spooled {}, retries {}, unsettled batches {}",
        stats.dropped, stats.spooled, stats.retries, stats.unsettled_batches
    );
    println!(
        "soak: RSS in minute 2: {first_min:.0}-{first_max:.0} MiB; in the last minute: {last_min:.0}-{last_max:.0} MiB"
    );
    assert_eq!(
        (rows as u64, distinct as u64),
        (emitted, emitted),
        "every record exactly once"
    );
    let _ = std::fs::remove_dir_all(&spool);
}
