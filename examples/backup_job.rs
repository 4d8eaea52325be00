//! A scheduled backup job's system events, with counts in metadata, as the original
//! design's `log_system_event` recorded them: `cargo run --example backup_job`.
//!
//! Numbers stay numbers in `metadata` (jsonb), so they can be queried:
//! `SELECT * FROM audit_logs WHERE (metadata->>'failed_count')::int > 0`.

mod common;

use std::time::Duration;

use tracing::{error, info};
use tracing_subscriber::prelude::*;

struct BackupResult {
    success_count: u64,
    failed_count: u64,
    total_devices: u64,
}

fn perform_backup(run: u32) -> Result<BackupResult, String> {
    match run {
        0 => Ok(BackupResult {
            success_count: 48,
            failed_count: 0,
            total_devices: 48,
        }),
        1 => Ok(BackupResult {
            success_count: 46,
            failed_count: 2,
            total_devices: 48,
        }),
        _ => Err("backup storage unreachable: connection refused".to_owned()),
    }
}

fn backup_devices_task(run: u32) {
    match perform_backup(run) {
        Ok(result) => info!(
            target: "audit",
            event_type = "backup",
            username = "system",
            success_count = result.success_count,
            failed_count = result.failed_count,
            total_devices = result.total_devices,
            "Backup completed: {} devices backed up", result.success_count
        ),
        Err(e) => error!(
            target: "audit",
            event_type = "backup",
            username = "system",
            // `critical` has no tracing level of its own: set it as a field.
            severity = "critical",
            "Backup failed: {e}"
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), common::Error> {
    let db = common::database().await?;
    let (audit, handle) = audit_layer::AuditLayer::builder()
        .database_url(&db.url)
        .build()?;
    tracing_subscriber::registry().with(audit).init();

    for run in 0..3 {
        backup_devices_task(run);
    }

    handle.shutdown(Duration::from_secs(10)).await?;
    common::print_records(&db.url, 10).await
}
