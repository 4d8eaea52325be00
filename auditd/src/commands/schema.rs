//! The `migrate`, `partitions` and `text-index` commands: the schema work that needs the
//! owner's role.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::Client;

pub use crate::db::connect;

/// Applies pending migrations, creates partitions ahead of time, and completes the index
/// swaps the migrations leave to be built concurrently.
pub async fn migrate(client: &Client, timeout: Duration) -> Result<()> {
    let report = tokio::time::timeout(timeout, audit_layer::schema::migrate(client))
        .await
        .with_context(|| format!("migrations did not finish within {timeout:?}"))?
        .context("migrations failed")?;
    if report.applied.is_empty() {
        tracing::info!(version = report.version, "schema already up to date");
    } else {
        tracing::info!(applied = ?report.applied, version = report.version, "migrations applied");
    }
    if report.partitions_created > 0 {
        tracing::info!(created = report.partitions_created, "partitions created");
    }
    if report.index_swaps_pending {
        tracing::info!(
            "building the new indexes partition by partition, without blocking writers \
             (progress below; as long as the table's size needs)"
        );
    }
    // No timeout: each partition's build takes as long as its size needs, logged as it
    // goes, and never blocks writers.
    let swaps = audit_layer::schema::complete_index_swaps(client)
        .await
        .context("completing the index swaps of the migrations")?;
    log_index_swaps(&swaps);
    Ok(())
}

/// Logs what [`audit_layer::schema::complete_index_swaps`] did, when it did anything.
pub fn log_index_swaps(swaps: &audit_layer::schema::IndexSwapReport) {
    if swaps.busy {
        tracing::info!("another process is completing the index swaps");
    }
    if !swaps.built.is_empty() || !swaps.dropped.is_empty() {
        tracing::info!(
            built = ?swaps.built,
            rebuilt = ?swaps.rebuilt,
            dropped = ?swaps.dropped,
            "index swaps completed"
        );
    }
    if !swaps.waiting_for_locks.is_empty() {
        tracing::warn!(
            indexes = ?swaps.waiting_for_locks,
            "index swaps not finished: a long query or transaction held audit_logs through \
             every try; `auditd migrate` or the upkeep finishes them"
        );
    }
}

/// Runs the partition upkeep once.
pub async fn ensure_partitions(
    client: &Client,
    months_ahead: i32,
    timeout: Duration,
) -> Result<i32> {
    let created = tokio::time::timeout(
        timeout,
        audit_layer::schema::ensure_partitions(client, months_ahead),
    )
    .await
    .with_context(|| format!("partition upkeep did not finish within {timeout:?}"))?
    .context("partition upkeep failed")?;
    tracing::info!(created, months_ahead, "partitions ensured");
    Ok(created)
}

/// Creates (or removes) the optional trigram index on `message`. No timeout: building
/// reads every partition, which takes as long as the table is large; progress is logged
/// partition by partition.
pub async fn text_index(client: &Client, remove: bool) -> Result<()> {
    use audit_layer::schema::text_index;
    if remove {
        let existed = text_index::remove(client)
            .await
            .context("cannot remove the trigram index")?;
        tracing::info!(existed, "trigram index removed");
        return Ok(());
    }
    tracing::info!("building the trigram index on audit_logs.message, partition by partition");
    let report = text_index::create(client)
        .await
        .context("cannot build the trigram index")?;
    tracing::info!(
        built = report.built.len(),
        rebuilt_after_interruption = report.rebuilt.len(),
        complete = text_index::is_complete(client).await?,
        "trigram index ready; substring search (q) uses it"
    );
    Ok(())
}
