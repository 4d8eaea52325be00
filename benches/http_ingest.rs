//! Ingest over HTTP against the layer's own rate, in the same run: records posted to
//! auditd's `POST /api/v1/events` as NDJSON in batches of 1,000 (each under its own
//! `Idempotency-Key`, each answered once committed) by several connections, against the
//! same records emitted through the tracing macros by as many threads into the layer,
//! timed until committed. Target: HTTP at least half the layer's rate.
//!
//! `cargo bench --bench http_ingest -- [--records N] [--senders S] [--batch B] [--pairs P]`
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway cluster with PostgreSQL's default
//! durability on this machine. Each measurement gets a fresh database; the two ways
//! alternate, `--pairs` times each, since this VM drifts by a third within minutes.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::http::Client;
use support::{arg, connect, connect_migrated, emit_backups, peak_rss_mib, serve_in_process_with};
use tracing_subscriber::prelude::*;

const TOKEN: &str = "bench-write-0123456789abcdef";

fn main() {
    let records = arg("--records", 400_000);
    let senders = arg("--senders", 4);
    let batch = arg("--batch", 1000);
    let pairs = arg("--pairs", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = support::postgres().await;
        let mut pairs_measured = Vec::new();
        for pair in 0..pairs {
            let layer_url = server
                .create_database(&format!("bench_http_ingest_layer_{pair}"))
                .await
                .expect("database");
            connect_migrated(&layer_url).await;
            let layer = layer_rate(&layer_url, records, senders).await;
            let http_url = server
                .create_database(&format!("bench_http_ingest_http_{pair}"))
                .await
                .expect("database");
            connect_migrated(&http_url).await;
            let http = http_rate(&http_url, records, senders, batch).await;
            println!(
                "pair {}: layer {:.0} records/s, HTTP {:.0} records/s: {:.2} x",
                pair + 1,
                layer,
                http,
                http / layer
            );
            pairs_measured.push((layer, http));
        }
        let ratios: Vec<f64> = pairs_measured.iter().map(|(l, h)| h / l).collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let layer: f64 = pairs_measured.iter().map(|p| p.0).sum();
        let http: f64 = pairs_measured.iter().map(|p| p.1).sum();
        println!(
            "HTTP ingest vs the layer, {records} records from {senders} senders, HTTP batches of {batch}: \
             {:.2} x overall (pairs {low:.2}-{high:.2}); target >= 0.5 x; peak memory {:.0} MiB",
            http / layer,
            peak_rss_mib()
        );
    });
}

/// Records a second through the tracing macros: `senders` threads, until committed.
async fn layer_rate(url: &str, records: u64, senders: u64) -> f64 {
    // A queue deep enough that nothing is dropped (as `benches/ingest.rs`): this measures
    // how fast the layer commits, not what overload does.
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(url)
        .queue_capacity(1 << 20)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let started = Instant::now();
    let emitting = dispatch.clone();
    tokio::task::spawn_blocking(move || emit_backups(&emitting, senders, records / senders))
        .await
        .expect("emitters");
    let stats = handle
        .shutdown(Duration::from_secs(600))
        .await
        .expect("committed");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_committed(url, records / senders * senders).await;
    (records / senders * senders) as f64 / elapsed
}

/// Records a second posted to auditd: `senders` connections, each posting batches of
/// `batch` records one after the other, each answered once committed.
async fn http_rate(url: &str, records: u64, senders: u64, batch: u64) -> f64 {
    let tokens = auditd::Tokens::parse([format!("bench:{TOKEN}:write").as_str()]).expect("token");
    let (addr, stop, serving) = serve_in_process_with(url, url, tokens).await;
    let per_sender = records / senders / batch;
    // The bodies are built before the clock starts: the sender's cost is not auditd's.
    let bodies: Vec<Vec<Bytes>> = (0..senders)
        .map(|sender| {
            (0..per_sender)
                .map(|n| body(sender, n * batch, batch))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (sender, bodies) in bodies.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for (n, body) in bodies.into_iter().enumerate() {
                let key = format!("bench-{sender}-{n}");
                let (_, status, answer) = client
                    .post_ndjson("/api/v1/events", TOKEN, &key, body)
                    .await;
                assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = per_sender * batch * senders;
    assert_committed(url, sent).await;
    serving.stop(stop).await;
    sent as f64 / elapsed
}

/// `count` records as the layer's bench emits them (a request span's user and address,
/// the same columns and metadata), one NDJSON line each.
fn body(sender: u64, first: u64, count: u64) -> Bytes {
    let mut out = String::with_capacity(count as usize * 220);
    for seq in first..first + count {
        out.push_str(
            &serde_json::json!({
                "username": "bench",
                "ip_address": "192.0.2.1",
                "event_type": "benchmark",
                "resource_type": "device",
                "resource_id": "dev-1",
                "message": "Device configuration backed up",
                "metadata": {"thread": sender, "seq": seq},
            })
            .to_string(),
        );
        out.push('\n');
    }
    Bytes::from(out)
}

async fn assert_committed(url: &str, expected: u64) {
    let stored: i64 = connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'benchmark'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored as u64, expected, "every record committed, once");
}
