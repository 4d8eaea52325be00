//! Spooling rate: how fast the writer puts batches on disk while the database is down.
//!
//! `cargo bench --bench spool -- [--events 1000000] [--threads 4]`
//!
//! The layer points at a port where nothing listens, so every batch fails at once and goes
//! to the spool (CRC-framed binary frames, fsynced per batch) in a temporary directory. Events are
//! emitted by several threads as fast as they can; the clock stops when the writer has
//! spooled them all. If spooling is slower than the application, the queue fills and
//! records are dropped (counted): the rate here is what an outage can absorb.

mod support;

use support::{arg, emit_backups};

use std::time::{Duration, Instant};

use tracing_subscriber::prelude::*;

fn main() {
    let events = arg("--events", 1_000_000);
    let threads = arg("--threads", 4);
    let dir = std::env::temp_dir().join(format!("audit-spool-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (layer, handle) = audit_layer::AuditLayer::builder()
        // Nothing listens on port 9: every connection attempt is refused at once.
        .database_url("postgres://bench@127.0.0.1:9/none")
        .queue_capacity(usize::try_from(events).unwrap_or(usize::MAX))
        .spool_dir(&dir)
        .spool_max_bytes(64 << 30)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    let started = Instant::now();
    let per_thread = events / threads;
    emit_backups(&dispatch, threads, per_thread);
    let emitted = per_thread * threads;
    let emitted_in = started.elapsed();
    loop {
        let stats = handle.stats();
        if stats.spooled + stats.dropped >= emitted {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let spooled_in = started.elapsed();
    let stats = handle.stats();
    println!(
        "spool: {emitted} events, {threads} threads, database down: emitted in {:.2} s, spooled in {:.2} s = {:.0} records/s; {} MiB on disk ({:.0} bytes/record), {} dropped",
        emitted_in.as_secs_f64(),
        spooled_in.as_secs_f64(),
        stats.spooled as f64 / spooled_in.as_secs_f64(),
        stats.spool_bytes >> 20,
        stats.spool_bytes as f64 / stats.spooled.max(1) as f64,
        stats.dropped
    );
    assert_eq!(stats.dropped, 0, "the queue overflowed");
    drop(dispatch);
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
}
