//! The caller cost as a distribution: each event timed on its own, p50 to p99.9, for the
//! audit layer, for OpenTelemetry's tracing appender into the SDK's batch log processor,
//! and for JSON fmt through `non_blocking`, in the same run.
//!
//! `cargo bench --bench caller_latency -- --events 1000000`
//!
//! criterion (`--bench caller`) gives a mean per event; the target is stated as a median,
//! and the tail matters to an application too. Each event is timed with two `Instant`
//! readings; the median cost of an empty pair of readings, measured first, is subtracted.
//! `--only audit` (or `otel`, `json`) runs one subscriber alone, for
//! `valgrind --tool=callgrind`, whose instruction counts per event stay the same from run
//! to run when wall time does not.

mod support;

use std::time::Instant;

use support::arg;
use support::caller::{audit_dispatch, json_dispatch, otel_logs_dispatch, ten_field_audit_event};
use tracing::info_span;

const WARM_UP_EVENTS: u64 = 300_000;

fn main() {
    let events = arg("--events", 1_000_000);
    let args: Vec<String> = std::env::args().collect();
    // `--only audit|otel|json|none`: one subscriber alone, for callgrind.
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let timer = timer_overhead_ns(events);
    println!("caller_latency: {events} events each; timer overhead {timer} ns (subtracted)");

    // Room for every event: the figures must not be of the drop path.
    let room = usize::try_from(events + WARM_UP_EVENTS).unwrap_or(usize::MAX);
    if runs("audit") {
        let (audit, handle) = audit_dispatch(room);
        report("audit layer, 10 fields, 1 span", &audit, events, timer);
        assert_eq!(
            handle.stats().dropped,
            0,
            "the queue overflowed: the figures would be of the drop path"
        );
    }
    if runs("otel") {
        let (otel, _provider) = otel_logs_dispatch(room);
        report(
            "OpenTelemetry appender + batch log processor, same event",
            &otel,
            events,
            timer,
        );
    }
    if only.as_deref() == Some("none") {
        // The harness and tracing's own dispatch, with no layer: what the others' figures
        // include besides their own work.
        let none = tracing::Dispatch::new(tracing_subscriber::registry());
        report("no layer (harness and dispatch)", &none, events, timer);
    }
    if runs("json") {
        let (json, _guard) = json_dispatch(room);
        report("JSON fmt + non_blocking, same event", &json, events, timer);
    }
}

/// The median time of two back-to-back `Instant` readings.
fn timer_overhead_ns(samples: u64) -> u64 {
    let mut empty: Vec<u64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            elapsed_ns(start)
        })
        .collect();
    empty.sort_unstable();
    percentile(&empty, 0.5)
}

fn report(name: &str, dispatch: &tracing::Dispatch, events: u64, timer: u64) {
    let mut latencies = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    tracing::dispatcher::with_default(dispatch, || {
        let span = info_span!("request", username = "alice", ip_address = "192.0.2.10");
        let _entered = span.enter();
        // Warm-up, so that the queue's growth to its working depth is not measured.
        for i in 0..WARM_UP_EVENTS {
            ten_field_audit_event(i);
        }
        for i in 0..events {
            let start = Instant::now();
            ten_field_audit_event(i);
            latencies.push(elapsed_ns(start).saturating_sub(timer));
        }
    });
    latencies.sort_unstable();
    let mean = latencies.iter().sum::<u64>() as f64 / latencies.len().max(1) as f64;
    println!(
        "caller_latency: {name:<38} p50 {:>6} ns  p90 {:>6} ns  p99 {:>6} ns  p99.9 {:>7} ns  mean {mean:>7.0} ns",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
    );
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
