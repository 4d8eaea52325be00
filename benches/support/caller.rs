//! The event both caller benchmarks emit, and the subscribers they compare.

use std::hint::black_box;

use tracing::info;
use tracing_subscriber::prelude::*;

/// An audit event with 10 fields and a message: the onboarding record of the original
/// design, with the kinds of values real events carry (text, integers, a bool, a float).
pub fn ten_field_audit_event(i: u64) {
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

/// A registry with only the audit layer, whose writer takes records off the queue and
/// discards them: what is measured is the emitting thread alone.
pub fn audit_dispatch(queue_capacity: usize) -> (tracing::Dispatch, audit_layer::AuditHandle) {
    let (layer, handle) = audit_layer::AuditLayer::builder()
        // Never connected to: the writer discards.
        .database_url("postgres://bench@127.0.0.1:9/none")
        .queue_capacity(queue_capacity)
        .discard_records_for_benchmarks()
        .build()
        .expect("layer");
    (
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

/// The ecosystem's usual choice: tracing-subscriber's JSON fmt layer writing to /dev/null
/// through tracing-appender's `non_blocking`, which likewise only queues on the emitting
/// thread. Keep the guard alive while measuring.
pub fn json_dispatch(
    buffered_lines: usize,
) -> (
    tracing::Dispatch,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(buffered_lines)
        .finish(sink);
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    );
    (dispatch, guard)
}

/// The peer users pick today for structured logs: OpenTelemetry's tracing appender
/// (`opentelemetry-appender-tracing`) into the SDK's batch log processor, exporting to an
/// exporter that drops every batch. The processor's own thread takes records off its
/// queue, so this too measures what the emitting thread pays. Keep the provider alive
/// while measuring.
pub fn otel_logs_dispatch(
    queue_capacity: usize,
) -> (
    tracing::Dispatch,
    opentelemetry_sdk::logs::SdkLoggerProvider,
) {
    use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};

    let processor = BatchLogProcessor::builder(DiscardLogs)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(queue_capacity)
                .build(),
        )
        .build();
    let provider = SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .build();
    let bridge = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&provider);
    (
        tracing::Dispatch::new(tracing_subscriber::registry().with(bridge)),
        provider,
    )
}

/// A log exporter that drops what it is given: the export is not the caller's cost.
#[derive(Debug)]
struct DiscardLogs;

impl opentelemetry_sdk::logs::LogExporter for DiscardLogs {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}
