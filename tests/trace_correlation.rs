//! Trace correlation (audit-layer's `opentelemetry` feature; run with
//! `cargo test --all-features`): a record emitted inside an OpenTelemetry span carries the
//! span's trace and span ids, and auditd finds the records of a trace.

mod support;

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::http::TestServer;
use support::{builder, TestDb};
use tracing::{info, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;

#[tokio::test]
async fn a_record_emitted_in_an_opentelemetry_span_carries_its_trace_and_auditd_finds_it() {
    let db = TestDb::migrated("trace_correlation").await;
    // An SDK tracer with no exporter: spans get real ids, and go nowhere.
    let provider = SdkTracerProvider::builder().build();
    let (audit, handle) = builder(&db.url).build().unwrap();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(audit),
    );
    let (trace_id, span_id, inner_span_id) = tracing::dispatcher::with_default(&dispatch, || {
        let request = info_span!("request", username = "alice", ip_address = "10.1.2.3");
        let _in_request = request.enter();
        info!(target: "audit", event_type = "authentication", "User login");
        let onboarding = info_span!("onboard");
        let inner = onboarding.clone();
        let _in_onboarding = onboarding.enter();
        info!(target: "audit", event_type = "onboarding", "Device onboarded");
        // The application's own field wins over the span's.
        info!(target: "audit", event_type = "sync", trace_id = "from-the-event", "Synced");
        let ids = |span: &tracing::Span| {
            let context = span.context();
            let ids = context.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        };
        let (trace_id, span_id) = ids(&request);
        let (_, inner_span_id) = ids(&inner);
        (trace_id, span_id, inner_span_id)
    });
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", event_type = "system", "Outside any span");
        // An explicit parent already closed: no ids, and no panic in the caller.
        let gone = info_span!("gone", username = "bob");
        let id = gone.id();
        drop(gone);
        info!(target: "audit", parent: id, event_type = "late", "After its span");
    });
    handle.shutdown(Duration::from_secs(30)).await.unwrap();

    assert_eq!(trace_id.len(), 32);
    let stored = db.records().await;
    let find = |event_type: &str| stored.iter().find(|r| r.event_type == event_type).unwrap();
    let login = find("authentication");
    assert_eq!(login.metadata["trace_id"], trace_id.as_str());
    assert_eq!(login.metadata["span_id"], span_id.as_str());
    let onboarding = find("onboarding");
    assert_eq!(
        onboarding.metadata["trace_id"],
        trace_id.as_str(),
        "one trace"
    );
    assert_eq!(
        onboarding.metadata["span_id"],
        inner_span_id.as_str(),
        "its own span"
    );
    assert_ne!(span_id, inner_span_id);
    assert_eq!(find("sync").metadata["trace_id"], "from-the-event");
    assert!(find("system").metadata.get("trace_id").is_none());
    assert!(find("late").metadata.get("trace_id").is_none());

    // The filter is spelled as the partial index of migration 0009 is, and uses it.
    let indexes: Vec<String> = db
        .client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_logs_trace_id'::regclass",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!indexes.is_empty(), "each partition has the index");
    db.client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = db
        .client
        .query(
            "EXPLAIN SELECT id FROM audit_logs \
             WHERE metadata ? 'trace_id' AND length(metadata->>'trace_id') = 32 \
               AND metadata->>'trace_id' = $1",
            &[&trace_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        indexes.iter().any(|index| plan.contains(index.as_str())),
        "{plan}"
    );

    let server = TestServer::start_quiet(&db).await;
    let page = server
        .get_json(&format!(
            "/api/v1/logs?trace_id={}",
            trace_id.to_uppercase()
        ))
        .await;
    let mut found: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    found.sort_unstable();
    assert_eq!(found, ["authentication", "onboarding"]);
    let (status, _, _) = server.get("/api/v1/logs?trace_id=not-a-trace").await;
    assert_eq!(status, hyper::StatusCode::BAD_REQUEST);
    server.stop().await;
}
