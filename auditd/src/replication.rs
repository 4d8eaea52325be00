//! Reads from a hot standby, writes to the primary: the check that refuses to write to a
//! standby, and the replication lag that /metrics shows.
//!
//! `--database-url` may name a standby: queries, exports, tails, stats and proofs are
//! served from it. What writes (access records, ingest and its idempotency lookups,
//! seals, partition upkeep, retention, and the `LISTEN` of commit notices, which a
//! standby refuses) goes to `--audit-database-url`, which must reach the primary. A
//! standby follows the primary's transactions (the same xid space, its snapshots built
//! from the primary's running transactions), so the tail's horizon
//! (`pg_snapshot_xmin(pg_current_snapshot())`) is as safe there as on the primary; it
//! only runs behind by the replication lag, which is what this module measures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use deadpool_postgres::Pool;

/// Refuses a write database that is a standby (in recovery), with what to do instead.
///
/// A database that does not answer is not refused: the writers retry, and a primary that
/// is restarting must not keep auditd from starting.
pub async fn refuse_standby_for_writes(write_url: &str, timeout: Duration) -> Result<()> {
    let client = match crate::db::connect(write_url, timeout).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot check the write database now; the writers retry until it answers"
            );
            return Ok(());
        }
    };
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0);
    if in_recovery {
        bail!(
            "the database auditd writes to is a hot standby (in recovery), which takes no \
             writes: access records, ingested records, seals, partitions and retention \
             would all fail. Keep --database-url on the standby for reads, and give the \
             primary with --audit-database-url (a multi-host URL with \
             target_session_attrs=read-write follows a failover)"
        );
    }
    Ok(())
}

/// The latest sample of replication between the write and the read database.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// The read database is a standby.
    pub reads_from_standby: bool,
    /// Seconds the read database runs behind: since the last commit it replayed, while
    /// it has WAL left to replay; 0 when caught up (and always on a primary). A standby
    /// that has stopped receiving has nothing left to replay and shows 0 here: `bytes`
    /// is the figure that grows then.
    pub seconds: f64,
    /// WAL bytes between the write database's current position and what the read
    /// database has replayed (0 when they are one database).
    pub bytes: f64,
    /// Standbys streaming from the write database.
    pub standbys: i64,
    /// Of those, the ones whose confirmation commits wait for (synchronous replication).
    /// PostgreSQL shows `sync_state` only to roles with `pg_read_all_stats` (or
    /// `pg_monitor`); for others this is 0.
    pub synchronous_standbys: i64,
}

/// The replication sample, renewed by [`watch`], read by /metrics.
#[derive(Debug, Default)]
pub struct Replication {
    latest: Mutex<Option<(Lag, Instant)>>,
}

impl Replication {
    /// The latest sample and its age, once one has been taken.
    pub fn latest(&self) -> Option<(Lag, Duration)> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.map(|(lag, taken)| (lag, taken.elapsed()))
    }

    fn store(&self, lag: Lag) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some((lag, Instant::now()));
    }
}

/// Samples replication every `every` until dropped. `writes` is the primary's pool when it
/// is not the read database. A failed sample is logged and the previous one kept (its
/// age in /metrics grows).
pub async fn watch(reads: Pool, writes: Option<Pool>, into: Arc<Replication>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        match tokio::time::timeout(
            every.max(Duration::from_secs(5)),
            sample(&reads, writes.as_ref()),
        )
        .await
        {
            Ok(Ok(lag)) => {
                failing = false;
                into.store(lag);
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = e, "cannot sample replication lag; retrying");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("the replication lag sample took too long; retrying");
            }
            _ => {}
        }
    }
}

async fn sample(reads: &Pool, writes: Option<&Pool>) -> Result<Lag, String> {
    let describe = |e: tokio_postgres::Error| audit_layer::describe_db_error(&e);
    let mut lag = Lag::default();
    // The primary's position first, so that the standby's distance from it is never
    // understated by the time between the two reads.
    let primary_position = match writes {
        Some(writes) => {
            let client = writes.get().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one(
                    "SELECT pg_current_wal_lsn()::text, \
                            (SELECT count(*) FROM pg_stat_replication), \
                            (SELECT count(*) FROM pg_stat_replication \
                              WHERE sync_state IN ('sync', 'quorum'))",
                    &[],
                )
                .await
                .map_err(describe)?;
            lag.standbys = row.get(1);
            lag.synchronous_standbys = row.get(2);
            Some(row.get::<_, String>(0))
        }
        None => None,
    };
    let client = reads.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    CASE WHEN NOT pg_is_in_recovery() \
                              OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
                         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) \
                    END::float8, \
                    CASE WHEN $1::text IS NULL OR NOT pg_is_in_recovery() THEN 0 \
                         ELSE greatest(pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn()), 0) \
                    END::float8",
            &[&primary_position],
        )
        .await
        .map_err(describe)?;
    lag.reads_from_standby = row.get(0);
    lag.seconds = row.get(1);
    lag.bytes = row.get(2);
    if writes.is_none() && !lag.reads_from_standby {
        // One database: its own standbys are what there is to show.
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')) \
                 FROM pg_stat_replication",
                &[],
            )
            .await
            .map_err(describe)?;
        lag.standbys = row.get(0);
        lag.synchronous_standbys = row.get(1);
    }
    Ok(lag)
}
