//! Bringing an archive back into `audit_logs`, for an investigation: its month's
//! partition is created again and its records inserted as they were (the same ids,
//! times, streams, seqs and transaction ids), so that `auditd verify` proves them
//! against the ledger as before. A record already present is skipped, never doubled:
//! restoring twice, or into a month that was never dropped, is harmless.
//!
//! The caller checks the archive first (`check_archive`). The next retention run retires
//! the month again unless a legal hold keeps it.

use std::path::Path;

use tokio_postgres::Client;

use super::archive::ArchiveLines;
use super::manifest::Manifest;
use super::plan::{Partition, DETACHED_BY_RETENTION};

/// Lines inserted per statement.
const LINES_PER_INSERT: usize = 5_000;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The partition restored into.
    pub partition: String,
    /// Records inserted.
    pub inserted: u64,
    /// Records that were there already.
    pub present: u64,
}

/// Why an archive could not be restored.
#[derive(Debug)]
pub enum RestoreError {
    /// The database refused (a role that is not the table owner, a record it rejects).
    Database(tokio_postgres::Error),
    /// The archive could not be read.
    Io(std::io::Error),
    /// Not now, or not here (a retention run in progress, a partition it left detached).
    Refused(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Database(e) => write!(f, "database: {e}"),
            RestoreError::Io(e) => write!(f, "cannot read the archive: {e}"),
            RestoreError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<tokio_postgres::Error> for RestoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        RestoreError::Database(e)
    }
}

/// Restores the records of the archive at `path`, which `manifest` describes.
pub async fn restore(
    client: &Client,
    path: &Path,
    manifest: &Manifest,
) -> Result<Restored, RestoreError> {
    // Never beside a retention run, which could drop the partition under it.
    let locked = super::lock::try_lock(client).await?;
    if !locked {
        return Err(RestoreError::Refused(
            "a retention run is in progress: restore when it has ended".to_owned(),
        ));
    }
    let restored = restore_locked(client, path, manifest).await;
    super::lock::unlock(client).await;
    restored
}

async fn restore_locked(
    client: &Client,
    path: &Path,
    manifest: &Manifest,
) -> Result<Restored, RestoreError> {
    let partition = Partition::from_name(&manifest.partition, true).ok_or_else(|| {
        RestoreError::Refused(format!(
            "{:?} is not a monthly partition",
            manifest.partition
        ))
    })?;
    let detached: bool = client
        .query_one(
            "SELECT coalesce(obj_description(to_regclass($1), 'pg_class') = $2, false)",
            &[&partition.table(), &DETACHED_BY_RETENTION],
        )
        .await?
        .try_get(0)?;
    if detached {
        return Err(RestoreError::Refused(format!(
            "{} was left detached by a retention run that did not finish: run auditd retention, which re-attaches or retires it, then restore",
            partition.name
        )));
    }
    // The month's partition first, so that the records land in it, not in DEFAULT.
    client
        .execute(
            "SELECT audit_logs_ensure_partitions($1, 0)",
            &[&manifest.range.0],
        )
        .await?;
    // Restored rows keep the transaction ids they were counted under: the month is
    // counted again for the overview (now if this run ends, else by auditd's next catch-up).
    client
        .execute(
            "SELECT audit_counts_mark_stale($1, $2)",
            &[&manifest.range.0, &manifest.range.1],
        )
        .await?;
    let insert = client
        .prepare(
            "WITH records AS ( \
                 SELECT r.* FROM unnest($1::text[]) AS l(line), \
                        jsonb_populate_record(NULL::audit_logs, l.line::jsonb) AS r), \
             inserted AS ( \
                 INSERT INTO audit_logs OVERRIDING SYSTEM VALUE \
                 SELECT * FROM records n WHERE NOT EXISTS \
                     (SELECT 1 FROM audit_logs o WHERE o.created_at = n.created_at AND o.id = n.id) \
                 RETURNING 1) \
             SELECT count(*) FROM inserted, (SELECT audit_counts_mark_stale($2, $3)) marked",
        )
        .await?;
    let mut lines = ArchiveLines::open(path).map_err(RestoreError::Io)?;
    let (mut inserted, mut total) = (0u64, 0u64);
    let mut chunk: Vec<String> = Vec::with_capacity(LINES_PER_INSERT);
    loop {
        let line = lines.next_line().map_err(RestoreError::Io)?;
        let done = line.is_none();
        if let Some(line) = line {
            chunk.push(line.to_owned());
        }
        if chunk.len() == LINES_PER_INSERT || (done && !chunk.is_empty()) {
            // Each chunk marks the month in its own transaction: a catch-up that recounted
            // it since does not miss the rows that came after.
            let n: i64 = client
                .query_one(&insert, &[&chunk, &manifest.range.0, &manifest.range.1])
                .await?
                .try_get(0)?;
            inserted += n as u64;
            total += chunk.len() as u64;
            chunk.clear();
        }
        if done {
            break;
        }
    }
    client
        .execute(
            "SELECT audit_counts_recount($1, $2)",
            &[&manifest.range.0, &manifest.range.1],
        )
        .await?;
    Ok(Restored {
        partition: manifest.partition.clone(),
        inserted,
        present: total - inserted,
    })
}
