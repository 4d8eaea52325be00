//! Index changes too large for a migration's transaction.
//!
//! A migration runs in one transaction, and `CREATE INDEX` in a transaction holds off every
//! writer while it reads the table. So a migration that replaces an index of a large table
//! leaves the work here: [`complete_index_swaps`] builds each partition's new index
//! `CONCURRENTLY`, then in one short transaction creates the parent's (adopting them) and
//! drops the index it replaces. Until then the old index serves the queries. `auditd
//! migrate` runs it after the migrations, and `auditd serve`'s upkeep every
//! `--upkeep-interval`, so a database upgraded in place finishes the swap while writes go
//! on.

use tokio_postgres::Client;

use super::partitioned_index::{ident, without_statement_timeout, PartitionedIndex};
use super::version::schema_version;
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
    /// Indexes whose last step (creating a new one on the parent, or dropping a replaced
    /// one: a moment's lock on `audit_logs`) was not granted within a few tries, because a
    /// long query or transaction held the table. What was built is kept, and the next run
    /// takes the step.
    pub waiting_for_locks: Vec<String>,
    /// Another process was completing the swaps; this run did nothing.
    pub busy: bool,
}

/// New indexes, and the index they replace, from migration `since_version` on.
struct Swap {
    since_version: i32,
    indexes: &'static [PartitionedIndex],
    replaces: &'static str,
}

/// Every swap, in migration order. The definitions are the migrations' own, word for
/// word: PostgreSQL adopts a partition's index for the parent's only when they match.
const SWAPS: &[Swap] = &[Swap {
    since_version: 11,
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

/// Builds what the migrations applied so far left to build, partition by partition without
/// blocking writers, then drops the indexes it replaces. Idempotent, and quick when there
/// is nothing to do.
///
/// Needs the table owner's role. Each partition's build reads the partition (about ten
/// seconds per three million records on a small server) after waiting for the
/// transactions running when it starts; the session's `statement_timeout` is off while it
/// runs, and put back after. The last step takes, for a moment, locks that writers wait
/// for: each is asked for with a 200 ms timeout, and if a long query holds the table
/// through ten tries, the step is left to the next run ([`IndexSwapReport::waiting_for_locks`]).
/// Progress is logged per partition.
///
/// ```no_run
/// # async fn run() -> Result<(), audit_layer::Error> {
/// let (client, connection) =
///     tokio_postgres::connect("postgres://owner@localhost/app", tokio_postgres::NoTls).await?;
/// tokio::spawn(connection);
/// let migrated = audit_layer::schema::migrate(&client).await?;
/// if migrated.index_swaps_pending {
///     let report = audit_layer::schema::complete_index_swaps(&client).await?;
///     println!("built {} partitions' indexes", report.built.len());
/// }
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
    let result = without_statement_timeout(client, swap_all(client)).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SWAP_LOCK])
        .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

/// Whether a migration up to `version` has left an index swap to [`complete_index_swaps`].
pub(crate) async fn pending(client: &Client, version: i32) -> Result<bool, Error> {
    for swap in SWAPS.iter().filter(|s| s.since_version <= version) {
        if index_exists(client, swap.replaces).await? {
            return Ok(true);
        }
        for index in swap.indexes {
            if !index.is_complete(client).await? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn swap_all(client: &Client) -> Result<IndexSwapReport, Error> {
    let mut report = IndexSwapReport::default();
    let version = schema_version(client).await?;
    for swap in SWAPS.iter().filter(|s| s.since_version <= version) {
        let mut all_built = true;
        for index in swap.indexes {
            match index.build(client).await? {
                Some(built) => {
                    report.built.extend(built.built);
                    report.rebuilt.extend(built.rebuilt);
                }
                None => {
                    report.waiting_for_locks.push(index.name.to_owned());
                    all_built = false;
                }
            }
        }
        if !all_built || !index_exists(client, swap.replaces).await? {
            continue;
        }
        let drop = format!("DROP INDEX IF EXISTS {}", ident(swap.replaces));
        if swap.indexes[0].with_short_locks(client, &drop).await? {
            tracing::info!(index = swap.replaces, "replaced index dropped");
            report.dropped.push(swap.replaces.to_owned());
        } else {
            report.waiting_for_locks.push(swap.replaces.to_owned());
        }
    }
    Ok(report)
}

async fn index_exists(client: &Client, index: &str) -> Result<bool, Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_class WHERE relname = $1 AND relkind IN ('i', 'I') \
               AND relnamespace = (SELECT relnamespace FROM pg_class \
                                   WHERE oid = 'audit_logs'::regclass)",
            &[&index],
        )
        .await?
        .is_some())
}
