//! What an audit event costs the thread that emits it, next to the ecosystem's usual
//! choice (tracing-subscriber's JSON fmt layer through tracing-appender's non_blocking
//! writer), and what a non-audit event costs with the layer installed.
//!
//! `cargo bench --bench caller`
//!
//! The audit layer's writer runs as usual but discards what it takes off the queue
//! (`discard_records_for_benchmarks`), so the figures are the emitting side alone:
//! building the record, merging span context, sanitizing, queueing. The JSON baseline
//! writes to /dev/null through non_blocking, which likewise only queues on this thread.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tracing::{info, info_span};
use tracing_subscriber::prelude::*;

fn audit_dispatch() -> (tracing::Dispatch, audit_layer::AuditHandle) {
    let (layer, handle) = audit_layer::AuditLayer::builder()
        // Never connected to: the writer discards.
        .database_url("postgres://bench@127.0.0.1:9/none")
        .queue_capacity(1 << 20)
        .discard_records_for_benchmarks()
        .build()
        .expect("layer");
    (
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

fn ten_field_audit_event(i: u64) {
    info!(
        target: "audit",
        event_type = "onboarding",
        resource_type = "device",
        resource_id = "5f0c1a2e",
        resource_name = "edge-fra1-01",
        site = "fra1",
        attempts = 3u64,
        dry_run = false,
        duration_ms = 12.5,
        sequence = black_box(i),
        request_id = "r-8f2c",
        "Device onboarded to Nautobot"
    );
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("caller");

    let (audit, handle) = audit_dispatch();
    tracing::dispatcher::with_default(&audit, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _g = span.enter();
        let mut i = 0;
        group.bench_function("audit event, 10 fields, 1 span", |b| {
            b.iter(|| {
                i += 1;
                ten_field_audit_event(i)
            })
        });
        let inner = info_span!("job", user_id = 42, resource_type = "device");
        let _g2 = inner.enter();
        group.bench_function("audit event, 10 fields, 2 nested spans", |b| {
            b.iter(|| {
                i += 1;
                ten_field_audit_event(i)
            })
        });
        group.bench_function("non-audit event, audit layer installed", |b| {
            b.iter(|| {
                info!(
                    user = "alice",
                    attempt = black_box(1u64),
                    "ordinary log line"
                )
            })
        });
    });
    let stats = handle.stats();
    assert_eq!(
        stats.dropped, 0,
        "the queue overflowed: the figures would be of the drop path"
    );

    let none = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::dispatcher::with_default(&none, || {
        group.bench_function("non-audit event, no layer", |b| {
            b.iter(|| {
                info!(
                    user = "alice",
                    attempt = black_box(1u64),
                    "ordinary log line"
                )
            })
        });
    });

    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let (writer, _guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1 << 20)
        .finish(sink);
    let json = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    );
    tracing::dispatcher::with_default(&json, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _g = span.enter();
        let mut i = 0;
        group.bench_function("JSON fmt + non_blocking, 10 fields, 1 span", |b| {
            b.iter(|| {
                i += 1;
                ten_field_audit_event(i)
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the queue (a million records) must absorb every event without dropping,
    // or the figures would be of the drop path.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
