//! A primary killed with SIGKILL in the middle of ingest, its standby promoted: what
//! arrived, how long writes paused, and whether the log still proves itself.
//!
//! `cargo bench --bench failover -- [--events 100000] [--rate 20000] [--decide-ms 500]
//! [--stall-ms 300] [--only sync|async]`
//!
//! One writer emits `--events` records at `--rate` a second through a multi-host URL
//! (`target_session_attrs=read-write`). Halfway, the standby stops receiving for
//! `--stall-ms` (a slow or broken network: its WAL receiver is stopped), then the
//! primary's processes are killed and the connection between them is cut, losing what
//! was in flight; `--decide-ms` later (the time an operator or Patroni takes to decide)
//! the standby is promoted, and the writer finds it. Both clusters are durable. With
//! synchronous replication every record must arrive exactly once (commits wait during the
//! stall); with asynchronous replication what the old primary confirmed during the stall
//! is lost, and this says how much and what `stream_gaps` (in `auditd verify`) reports.
//! `--stall-ms 0` fails over from a standby that kept up.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_provision::{Cluster, ClusterOptions, Replication};
use support::{arg, connect};
use tracing::info;
use tracing_subscriber::prelude::*;

fn main() {
    let events = arg("--events", 100_000);
    let rate = arg("--rate", 20_000);
    let decide = Duration::from_millis(arg("--decide-ms", 500));
    let stall = Duration::from_millis(arg("--stall-ms", 300));
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (name, replication) in [
        ("sync", Replication::Synchronous),
        ("async", Replication::Asynchronous),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        runtime.block_on(run(name, replication, events, rate, decide, stall));
    }
}

async fn run(
    name: &str,
    replication: Replication,
    events: u64,
    rate: u64,
    decide: Duration,
    stall: Duration,
) {
    let (primary, standby) = tokio::task::spawn_blocking(move || {
        let primary = Cluster::start_new(&ClusterOptions {
            durable: true,
            replication,
        })
        .expect("primary");
        let standby = primary
            .start_standby(&ClusterOptions::durable())
            .expect("standby");
        (primary, standby)
    })
    .await
    .expect("clusters");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    support::connect_migrated(&primary.url("postgres")).await;
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let stream = handle.stream_id();
    let emitted = Arc::new(AtomicU64::new(0));
    let producer = {
        let emitted = emitted.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..events {
                    let due = Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                    info!(target: "audit", username = "alice", event_type = "failover", i, "steady");
                    emitted.fetch_add(1, Ordering::Relaxed);
                }
            });
        })
    };
    let mut sealer = auditd::seal::Sealer::new(
        auditd::seal::SigningKey::generate("bench.example/failover").expect("key"),
    );
    while emitted.load(Ordering::Relaxed) < events / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seal_client = connect(&primary.url("postgres")).await;
    let sealed_before = sealer
        .seal(&mut seal_client)
        .await
        .expect("seal before the kill");
    drop(seal_client);
    let standby_client = connect(&standby.url("postgres")).await;
    while standby_client
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await
        .expect("checkpoints on the standby")
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(standby_client);
    let emitted_before_stall = emitted.load(Ordering::Relaxed);
    if !stall.is_zero() {
        standby.hold_replication(true).expect("hold replication");
        tokio::time::sleep(stall).await;
    }
    let killed = Instant::now();
    primary.kill().expect("kill the primary");
    if !stall.is_zero() {
        standby.cut_replication().expect("cut replication");
    }
    tokio::time::sleep(decide).await;
    let promoting = Instant::now();
    standby.promote().expect("promote");
    let promote_took = promoting.elapsed();
    producer.join().expect("producer");
    let stats = handle
        .shutdown(Duration::from_secs(300))
        .await
        .expect("writer shutdown");
    let after_kill = killed.elapsed();

    let client = connect(&standby.url("postgres")).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM audit_logs \
             WHERE stream_id = $1 AND event_type = 'failover'",
            &[&stream],
        )
        .await
        .expect("count");
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    let pause: f64 = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM max(committed_at - previous)), 0)::float8 \
             FROM (SELECT committed_at, lag(committed_at) OVER (ORDER BY committed_at) AS previous \
                   FROM audit_writer_batches WHERE stream_id = $1) batches",
            &[&stream],
        )
        .await
        .expect("pause")
        .get(0);
    let gaps = audit_layer::integrity::stream_gaps(&client)
        .await
        .expect("gaps");
    let records = audit_layer::integrity::verify(&client)
        .await
        .expect("verify records");
    let mut seal_client = connect(&standby.url("postgres")).await;
    let sealed_after = sealer.seal(&mut seal_client).await;
    let log = auditd::seal::verify_log(&client, &[sealer.key().verifier()], &[])
        .await
        .expect("verify log");

    let emitted = emitted.load(Ordering::Relaxed);
    let exactly_once = rows == distinct && distinct as u64 == emitted;
    if exactly_once {
        println!("{name}: {emitted} of {emitted} exactly once");
    } else {
        println!(
            "{name}: {distinct} of {emitted} arrived ({} lost), {} written twice",
            emitted as i64 - distinct,
            rows - distinct
        );
    }
    println!(
        "{name}:   writes paused {:.0} ms ({} ms standby stalled from record {emitted_before_stall}, \
         kill, {} ms to decide, promote took {} ms); writer retries {}, spooled {}, dropped {}; \
         all committed {:.1} s after the kill",
        pause * 1000.0,
        stall.as_millis(),
        decide.as_millis(),
        promote_took.as_millis(),
        stats.retries,
        stats.spooled,
        stats.dropped,
        after_kill.as_secs_f64()
    );
    println!(
        "{name}:   records {} ({} proven, {} finding(s)); signed log {} (checkpoint of {} batches before the kill, {} after{}); gaps: {}",
        if records.intact() { "intact" } else { "NOT intact" },
        records.proven,
        records.findings.len(),
        if log.intact() { "intact" } else { "NOT intact" },
        sealed_before.tree_size,
        log.tree_size,
        match &sealed_after {
            Ok(_) => String::new(),
            Err(e) => format!(", the seal after failed: {e}"),
        },
        if gaps.is_empty() {
            "none".to_owned()
        } else {
            gaps.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        }
    );
}
