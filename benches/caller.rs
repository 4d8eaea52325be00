//! What an audit event costs the thread that emits it, next to the ecosystem's usual
//! choices (tracing-subscriber's JSON fmt layer through tracing-appender's non_blocking
//! writer; OpenTelemetry's tracing appender into the SDK's batch log processor), and what a
//! non-audit event costs with the layer installed.
//!
//! `cargo bench --bench caller`
//!
//! The audit layer's writer runs as usual but discards what it takes off the queue
//! (`discard_records_for_benchmarks`), so the figures are the emitting side alone:
//! building the record, merging span context, sanitizing, queueing. The JSON baseline
//! writes to /dev/null through non_blocking, which likewise only queues on this thread.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use support::caller::{audit_dispatch, json_dispatch, otel_logs_dispatch, ten_field_audit_event};
use tracing::{info, info_span};

/// Emits a burst before measuring, so that the first case does not also pay for the
/// subscriber's queue growing to its working depth (both queues allocate as they deepen).
fn warm_up() {
    for i in 0..WARM_UP_EVENTS {
        ten_field_audit_event(i);
    }
}

const WARM_UP_EVENTS: u64 = 300_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("caller");

    let (audit, handle) = audit_dispatch(1 << 20);
    tracing::dispatcher::with_default(&audit, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _g = span.enter();
        warm_up();
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

    let (otel, _provider) = otel_logs_dispatch(1 << 20);
    tracing::dispatcher::with_default(&otel, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _g = span.enter();
        warm_up();
        let mut i = 0;
        group.bench_function(
            "OpenTelemetry appender + batch log processor, 10 fields, 1 span",
            |b| {
                b.iter(|| {
                    i += 1;
                    ten_field_audit_event(i)
                })
            },
        );
    });

    let (json, _guard) = json_dispatch(1 << 20);
    tracing::dispatcher::with_default(&json, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _g = span.enter();
        warm_up();
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
