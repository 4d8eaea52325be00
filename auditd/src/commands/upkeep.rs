//! Keeping partitions ahead of time, and finishing the migrations' index swaps, while
//! auditd runs.

use std::time::Duration;

use deadpool_postgres::Pool;

/// Runs the partition upkeep and the index swaps now and then every `interval`, until the
/// task is dropped. The swaps get a connection of their own to `swap_url` for each run
/// (a build may take long, and should not hold one of the pool's), closed after it, which
/// also lets go of their session lock if the task is dropped mid-way.
/// Failures (a read-only role, a database restart) are reported and tried again next time.
pub async fn run(pool: Pool, interval: Duration, months_ahead: i32, swap_url: String) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let attempt = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            audit_layer::schema::ensure_partitions(&client, months_ahead)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(60), attempt).await {
            Ok(Ok(created)) => {
                if created > 0 {
                    tracing::info!(created, "partitions created ahead of time");
                }
            }
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "partition upkeep failed (it needs the table owner's role; \
                 run `auditd partitions` with it, or disable upkeep with --upkeep-interval 0)"
            ),
            Err(_) => tracing::warn!("partition upkeep did not finish within 60s"),
        }
        // A migration on a large table leaves its new index to be built here, partition
        // by partition and without blocking writers: as long as that takes.
        let swaps = async {
            let client = crate::db::connect(&swap_url, Duration::from_secs(30))
                .await
                .map_err(|e| format!("{e:#}"))?;
            audit_layer::schema::complete_index_swaps(&client)
                .await
                .map_err(|e| e.to_string())
        };
        match swaps.await {
            Ok(report) => super::schema::log_index_swaps(&report),
            Err(e) => tracing::warn!(
                error = %e,
                "completing the index swaps failed (they need the table owner's role on \
                 the primary: run `auditd migrate` with it); tried again next time"
            ),
        }
    }
}
