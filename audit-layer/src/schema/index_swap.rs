//! Index changes too large for a migration's transaction.
//!
//! A migration runs in one transaction, and `CREATE INDEX` in a transaction holds off every
//! writer while it reads the table. So a migration that replaces an index of a large table
//! only declares the new one on the parent (`ON ONLY`), and [`complete_index_swaps`] builds
//! it partition by partition, `CONCURRENTLY`, then drops the index it replaces once the new
//! one serves every partition. `auditd migrate` runs it after the migrations, and `auditd
//! serve`'s upkeep every `--upkeep-interval`, so a database upgraded in place finishes the
//! swap while writes go on.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::partitioned_index::{ident, PartitionedIndex};
use crate::error::Error;

/// What [`complete_index_swaps`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexSwapReport {
    /// Partitions whose new indexes were built in this run, one entry per index built, in
    /// the order they were built.
    pub built: Vec<String>,
    /// Invalid indexes left by an earlier, interrupted build, dropped and built again.
    pub rebuilt: Vec<String>,
    /// Replaced indexes dropped in this run.
    pub dropped: Vec<String>,
    /// Replaced indexes not dropped yet: their lock was not granted within a few tries
    /// (a long query or transaction holds the table). The next run tries again.
    pub still_to_drop: Vec<String>,
    /// Another process was completing the swaps; this run did nothing.
    pub busy: bool,
}

/// New indexes, declared on the parent by a migration, and the index they replace.
struct Swap {
    indexes: &'static [PartitionedIndex],
    replaces: &'static str,
}

/// Every swap, in migration order. The definitions are the migrations' own, word for
/// word: PostgreSQL attaches a partition's index to the parent's only when they match.
const SWAPS: &[Swap] = &[Swap {
    // Migration 0011.
    indexes: &[
        PartitionedIndex {
            name: "audit_logs_severity_partial",
            partition_suffix: "severity_partial",
            definition: "(severity, created_at DESC, id DESC) WHERE severity <> 'info'",
        },
        PartitionedIndex {
            name: "audit_logs_above_info",
            partition_suffix: "above_info",
            definition: "(created_at DESC, id DESC) WHERE severity <> 'info'",
        },
    ],
    replaces: "audit_logs_severity_idx",
}];

/// The session lock that keeps two processes from building the same index at once
/// ("auditix" in ASCII).
const SWAP_LOCK: i64 = 0x0061_7564_6974_6978;

/// How many times, a second apart, a replaced index's drop waits up to `DROP_LOCK_TIMEOUT`
/// for its lock before it is left to the next run.
const DROP_ATTEMPTS: u32 = 5;
const DROP_LOCK_TIMEOUT: &str = "2s";

/// Builds what the migrations applied so far declared and did not build, partition by
/// partition without blocking writers, then drops the indexes they replace. Idempotent,
/// and quick when there is nothing to do.
///
/// Needs the table owner's role. Each partition's build reads the partition (about ten
/// seconds per three million records on a small server), and waits first for the
/// transactions running when it starts. Dropping a replaced index takes, for a moment, a
/// lock that writers wait for; it is asked for with a short lock timeout, so that a long
/// query holding the table delays the drop rather than the writes. Progress is logged per
/// partition.
///
/// ```no_run
/// # async fn run() -> Result<(), audit_layer::Error> {
/// let (client, connection) =
///     tokio_postgres::connect("postgres://owner@localhost/app", tokio_postgres::NoTls).await?;
/// tokio::spawn(connection);
/// audit_layer::schema::migrate(&client).await?;
/// let report = audit_layer::schema::complete_index_swaps(&client).await?;
/// println!("built {} partitions' indexes", report.built.len());
/// # Ok(()) }
/// ```
pub async fn complete_index_swaps(client: &Client) -> Result<IndexSwapReport, Error> {
    // Taken without waiting, and never waited for inside a statement: a statement waiting
    // here would hold a snapshot, which the other process's CREATE INDEX CONCURRENTLY
    // would in turn wait for.
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SWAP_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(IndexSwapReport {
            busy: true,
            ..IndexSwapReport::default()
        });
    }
    let result = swap_all(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SWAP_LOCK])
        .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn swap_all(client: &Client) -> Result<IndexSwapReport, Error> {
    let mut report = IndexSwapReport::default();
    for swap in SWAPS {
        let mut complete = true;
        for index in swap.indexes {
            if !index.exists(client).await? {
                // The migration that declares it is not applied.
                complete = false;
                continue;
            }
            let built = index.build_missing(client).await?;
            report.built.extend(built.built);
            report.rebuilt.extend(built.rebuilt);
            complete &= index.is_complete(client).await?;
        }
        if complete {
            drop_replaced(client, swap.replaces, &mut report).await?;
        }
    }
    Ok(report)
}

async fn drop_replaced(
    client: &Client,
    index: &str,
    report: &mut IndexSwapReport,
) -> Result<(), Error> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_class WHERE relname = $1 AND relkind = 'I' \
               AND relnamespace = (SELECT relnamespace FROM pg_class \
                                   WHERE oid = 'audit_logs'::regclass)",
            &[&index],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(());
    }
    for attempt in 1..=DROP_ATTEMPTS {
        let dropped = client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'; \
                 DROP INDEX IF EXISTS {}; COMMIT",
                ident(index)
            ))
            .await;
        match dropped {
            Ok(()) => {
                tracing::info!(index, "replaced index dropped");
                report.dropped.push(index.to_owned());
                return Ok(());
            }
            Err(e) => {
                // The failed transaction must end before this connection is used again.
                client.batch_execute("ROLLBACK").await?;
                if e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    return Err(e.into());
                }
                tracing::info!(index, attempt, "replaced index busy; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::warn!(
        index,
        "replaced index not dropped: a long query or transaction holds audit_logs; \
         the next run of the index swaps tries again"
    );
    report.still_to_drop.push(index.to_owned());
    Ok(())
}
