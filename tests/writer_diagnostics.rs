//! The writer's own diagnostics never become audit records, even when the audit layer is
//! the global subscriber that receives them. (Its own test binary: a global subscriber
//! can be set once per process.)

mod support;

use std::time::Duration;

use support::{builder, TestDb};
use tracing::info;
use tracing_subscriber::prelude::*;

#[tokio::test]
async fn writer_diagnostics_are_not_audit_records() {
    let db = TestDb::migrated("diagnostics").await;
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let (layer, handle) = builder(&db.url).build().unwrap();
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .init();
    for message in ["fine", "poison", "fine"] {
        info!(target: "audit", username = "u", event_type = "e", "{message}");
    }
    // The rejection makes the writer log an error (on its own thread, to the global
    // subscriber), and so do tokio-postgres' internals.
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!((stats.written, stats.rejected), (2, 1));
    assert_eq!(
        stats.enqueued, 3,
        "a diagnostic was taken for an audit event"
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 2);
}
