//! A retention run: for each partition the plan retires, write its archive, build and
//! check its manifest against the signed log (from the file on disk, as `auditd verify
//! --archive` would), sign it, detach the partition, make sure nothing arrived since the
//! archive was read, then record the retirement and drop the table in one transaction.
//! Any failure before that transaction drops nothing and says why; a partition detached
//! by a run that failed later is finished by the next one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit_layer::integrity::merkle::{range_proof, Hash};
use audit_layer::integrity::{batch_leaves, BatchEntry, BATCH_ENTRY_COLUMNS};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::archive::{write_archive, ArchiveError, SeqRun, Written, ARCHIVE_SUFFIX};
use super::check::check_archive;
use super::manifest::{sign_manifest, ArchiveFile, LogProof, Manifest, ManifestBatch};
use super::plan::{plan, Keep, Partition, Planned};
use crate::seal::{latest_checkpoint, load_leaves, Checkpoint, SigningKey, VerifierKey};

/// How a run goes.
#[derive(Debug)]
pub struct RetentionOptions {
    /// The window kept online.
    pub keep: Keep,
    /// Where archives go.
    pub archive_dir: PathBuf,
    /// The log's signing key, which signs each manifest; needed once the log is sealed.
    pub signing_key: Option<SigningKey>,
    /// Earlier keys of the log (after a rotation), trusted for its checkpoints.
    pub trusted: Vec<VerifierKey>,
    /// The longest a detach waits for its lock: writers queue behind it meanwhile, so it
    /// is short, and retried.
    pub lock_timeout: Duration,
    /// How often a detach is tried before the partition is left for the next run.
    pub lock_attempts: u32,
}

/// A partition retired.
#[derive(Debug, Clone)]
pub struct Retired {
    /// The partition.
    pub partition: Partition,
    /// Its records.
    pub rows: u64,
    /// The archive, manifest and signature files.
    pub archive: PathBuf,
    /// The manifest file.
    pub manifest: PathBuf,
    /// The archive's SHA-256.
    pub sha256: Hash,
    /// Its row in `audit_retirements`.
    pub retirement_id: i64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Retired, in order.
    pub retired: Vec<Retired>,
    /// Kept, and why.
    pub kept: Vec<Planned>,
    /// Not retired because something failed, and what: nothing of these was dropped.
    pub failed: Vec<(Partition, String)>,
}

/// Why a partition was not retired.
#[derive(Debug)]
pub enum RetireError {
    /// The archive could not be written.
    Archive(ArchiveError),
    /// The database failed.
    Database(tokio_postgres::Error),
    /// Some of its records' batches are not sealed yet.
    NotSealed(String),
    /// The archive does not check against the log.
    Unverified(Vec<String>),
    /// Something else (a key, a lock, a file).
    Other(String),
}

impl std::fmt::Display for RetireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetireError::Archive(e) => write!(f, "{e}"),
            RetireError::Database(e) => write!(f, "database: {e}"),
            RetireError::NotSealed(why) => write!(f, "{why}; retried at the next run"),
            RetireError::Unverified(findings) => write!(
                f,
                "the archive does not check against the signed log: {}",
                findings.join("; ")
            ),
            RetireError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RetireError {}

impl From<tokio_postgres::Error> for RetireError {
    fn from(e: tokio_postgres::Error) -> Self {
        RetireError::Database(e)
    }
}

impl From<crate::seal::SealError> for RetireError {
    fn from(e: crate::seal::SealError) -> Self {
        RetireError::Other(e.to_string())
    }
}

/// The plan, without doing anything (`--dry-run`).
pub async fn dry_run(
    client: &Client,
    keep: Keep,
    now: DateTime<Utc>,
) -> Result<Vec<Planned>, tokio_postgres::Error> {
    plan(client, keep, now).await
}

/// Runs retention once. Only one run at a time: a second one finds the lock taken and
/// says so.
pub async fn run(
    client: &mut Client,
    options: &RetentionOptions,
    now: DateTime<Utc>,
) -> Result<RunReport, RetireError> {
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('auditd retention'))",
            &[],
        )
        .await?
        .try_get(0)?;
    if !locked {
        return Err(RetireError::Other(
            "another retention run holds the lock".to_owned(),
        ));
    }
    let result = run_locked(client, options, now).await;
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('auditd retention'))",
            &[],
        )
        .await;
    result
}

async fn run_locked(
    client: &mut Client,
    options: &RetentionOptions,
    now: DateTime<Utc>,
) -> Result<RunReport, RetireError> {
    let mut report = RunReport::default();
    for planned in plan(&*client, options.keep, now).await? {
        if planned.kept.is_some() {
            report.kept.push(planned);
            continue;
        }
        let partition = planned.partition;
        match retire(client, &partition, options, now).await {
            Ok(retired) => {
                record_retirement(&retired);
                report.retired.push(retired);
            }
            Err(e) => {
                tracing::warn!(partition = %partition.name, error = %e, "partition not retired; nothing was dropped");
                report.failed.push((partition, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// The audit record of a retirement: what left, how many records, into which archive.
fn record_retirement(retired: &Retired) {
    let metadata = serde_json::json!({
        "partition": retired.partition.name,
        "range": {
            "start": crate::seal::time_micros(retired.partition.start.timestamp_micros()),
            "end": crate::seal::time_micros(retired.partition.end.timestamp_micros()),
        },
        "rows": retired.rows,
        "archive": retired.archive.display().to_string(),
        "archive_sha256": crate::hex::encode(&retired.sha256),
        "manifest": retired.manifest.display().to_string(),
        "retirement_id": retired.retirement_id,
    })
    .to_string();
    tracing::warn!(
        target: "audit",
        event_type = "audit_retention",
        username = "auditd",
        resource_type = "audit_logs_partition",
        resource_id = %retired.partition.name,
        metadata = %metadata,
        "Retired {} records of {} into {}",
        retired.rows,
        retired.partition.name,
        retired.archive.display()
    );
}

async fn retire(
    client: &mut Client,
    partition: &Partition,
    options: &RetentionOptions,
    now: DateTime<Utc>,
) -> Result<Retired, RetireError> {
    let stem = format!("{}.{}", partition.name, now.format("%Y%m%dT%H%M%SZ"));
    let (mut written, mut manifest) =
        archive_and_check(client, partition, options, &stem, now).await?;
    if partition.attached {
        detach(client, partition, options).await?;
    }
    // A record of the month written after the archive was read went into the partition
    // before the detach: archive the detached table again, which nothing can change now.
    let (rows, id_sum) = tally_of(client, partition).await?;
    if (rows, id_sum) != (written.tally.rows, written.tally.id_sum) {
        tracing::info!(partition = %partition.name, "records arrived while archiving: archiving the detached partition again");
        let _ = std::fs::remove_file(&written.path);
        (written, manifest) =
            archive_and_check(client, partition, options, &format!("{stem}-2"), now).await?;
    }
    let bytes = manifest.to_bytes();
    let signature = options
        .signing_key
        .as_ref()
        .map(|key| sign_manifest(&manifest, &bytes, key));
    let manifest_path = options.archive_dir.join(format!("{stem}.manifest.json"));
    write_durably(&manifest_path, &bytes)?;
    if let Some(signature) = &signature {
        write_durably(
            &options.archive_dir.join(format!("{stem}.manifest.sig")),
            signature.as_bytes(),
        )?;
    }
    // The retirement and the drop commit together, or neither does.
    let tx = client.transaction().await?;
    let retirement_id: i64 = tx
        .query_one(
            "INSERT INTO audit_retirements \
               (partition_name, range_start, range_end, rows, archive, archive_sha256, manifest, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &partition.name,
                &partition.start,
                &partition.end,
                &(written.tally.rows as i64),
                &manifest.archive.name,
                &crate::hex::encode(&written.sha256),
                &String::from_utf8_lossy(&bytes).into_owned(),
                &signature,
            ],
        )
        .await?
        .try_get(0)?;
    tx.batch_execute(&format!("DROP TABLE {}", partition.table()))
        .await?;
    tx.commit().await?;
    Ok(Retired {
        partition: partition.clone(),
        rows: written.tally.rows,
        archive: written.path,
        manifest: manifest_path,
        sha256: written.sha256,
        retirement_id,
    })
}

/// Writes the archive, builds its manifest, and checks the file on disk against it.
async fn archive_and_check(
    client: &Client,
    partition: &Partition,
    options: &RetentionOptions,
    stem: &str,
    now: DateTime<Utc>,
) -> Result<(Written, Manifest), RetireError> {
    let mut keys = options.trusted.clone();
    keys.extend(options.signing_key.as_ref().map(SigningKey::verifier));
    let checkpoint = match latest_checkpoint(client).await? {
        None => None,
        Some((size, note)) => {
            if options.signing_key.is_none() {
                return Err(RetireError::Other(
                    "the log is sealed: retention needs its signing key (--signing-key) to sign what it retires".to_owned(),
                ));
            }
            let (checkpoint, _) = Checkpoint::open(&note, &keys).map_err(|e| {
                RetireError::Other(format!("the latest checkpoint cannot be trusted: {e}"))
            })?;
            Some((size, note, checkpoint))
        }
    };
    let path = options.archive_dir.join(format!("{stem}{ARCHIVE_SUFFIX}"));
    let written = write_archive(client, &partition.table(), &path)
        .await
        .map_err(RetireError::Archive)?;
    let built = build_manifest(client, partition, &written, checkpoint, now).await;
    let manifest = match built {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let checking = {
        let (path, manifest, keys) = (path.clone(), manifest.clone(), keys.clone());
        tokio::task::spawn_blocking(move || check_archive(&path, &manifest, Some(&keys)))
    };
    let report = checking
        .await
        .map_err(|e| RetireError::Other(format!("the check stopped: {e}")))?
        .map_err(|e| RetireError::Other(format!("cannot read back {}: {e}", path.display())))?;
    if !report.intact() {
        // Kept for whoever looks into it.
        return Err(RetireError::Unverified(report.findings));
    }
    Ok((written, manifest))
}

/// The manifest of an archive just written: the batches its records came from, each
/// sealed under the latest checkpoint, and one proof of their entries in the log.
async fn build_manifest(
    client: &Client,
    partition: &Partition,
    written: &Written,
    checkpoint: Option<(u64, String, Checkpoint)>,
    now: DateTime<Utc>,
) -> Result<Manifest, RetireError> {
    let archive = ArchiveFile {
        name: written
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: written.sha256,
        bytes: written.bytes,
    };
    let mut manifest = Manifest {
        log: checkpoint.as_ref().map(|(_, _, c)| c.origin.clone()),
        partition: partition.name.clone(),
        range: (partition.start, partition.end),
        archived_at: now,
        archive,
        rows: written.tally.rows,
        proven: 0,
        unproven: written.tally.rows,
        runs: written.tally.runs.clone(),
        batches: Vec::new(),
        log_proof: None,
        checkpoint: checkpoint.as_ref().map(|(_, note, _)| note.clone()),
    };
    let Some((size, _, _)) = checkpoint else {
        // A log never sealed: nothing proves these records beyond their ledger rows.
        return Ok(manifest);
    };
    let columns = BATCH_ENTRY_COLUMNS
        .split(", ")
        .map(|c| format!("b.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut seen = std::collections::HashSet::new();
    for run in &written.tally.runs {
        let rows = client
            .query(
                &format!(
                    "SELECT t.position, b.leaves, {columns} FROM audit_writer_batches b \
                     LEFT JOIN audit_log_tree t USING (stream_id, batch_id) \
                     WHERE b.stream_id = $1 AND b.first_seq <= $3 AND b.last_seq >= $2 \
                       AND b.rows > 0 AND b.encoding IS NOT NULL"
                ),
                &[&run.stream_id, &run.first_seq, &run.last_seq],
            )
            .await?;
        for row in &rows {
            let position: Option<i64> = row.try_get(0)?;
            let leaves: Option<Vec<u8>> = row.try_get(1)?;
            let Some(entry) = BatchEntry::from_row(row)? else {
                continue;
            };
            if !seen.insert((entry.stream_id, entry.batch_id)) {
                continue;
            }
            let Some(seqs) = leaves.as_deref().and_then(|l| {
                batch_leaves(l, entry.rows, Some(entry.first_seq), Some(entry.last_seq))
            }) else {
                return Err(RetireError::Unverified(vec![format!(
                    "the ledger row of batch {} (stream {}) is malformed",
                    entry.batch_id, entry.stream_id
                )]));
            };
            let here = seqs
                .iter()
                .filter(|(seq, _)| in_runs(&written.tally.runs, entry.stream_id, *seq))
                .count() as u64;
            if here == 0 {
                continue;
            }
            let position = match position {
                Some(p) if (p as u64) < size => p as u64,
                _ => {
                    return Err(RetireError::NotSealed(format!(
                        "{here} records of batch {} (stream {}) are not sealed yet",
                        entry.batch_id, entry.stream_id
                    )))
                }
            };
            manifest.proven += here;
            let partial = here < seqs.len() as u64;
            manifest.batches.push(ManifestBatch {
                position,
                entry,
                leaves: if partial { leaves } else { None },
            });
        }
    }
    manifest.unproven = manifest.rows - manifest.proven.min(manifest.rows);
    manifest.batches.sort_by_key(|b| b.position);
    if let (Some(first), Some(last)) = (manifest.batches.first(), manifest.batches.last()) {
        let (start, end) = (first.position, last.position + 1);
        let leaves = load_leaves(client, size as i64).await?;
        let proof = range_proof(&leaves, start as usize, end as usize).ok_or_else(|| {
            RetireError::Other("the log has fewer leaves than its checkpoint".to_owned())
        })?;
        let ours: std::collections::HashSet<u64> =
            manifest.batches.iter().map(|b| b.position).collect();
        manifest.log_proof = Some(LogProof {
            start,
            other_leaves: (start..end)
                .filter(|p| !ours.contains(p))
                .map(|p| (p, leaves[p as usize]))
                .collect(),
            proof,
        });
    }
    Ok(manifest)
}

/// Whether (stream, seq) is in one of `runs` (merged, sorted).
pub fn in_runs(runs: &[SeqRun], stream_id: i64, seq: i64) -> bool {
    let at = runs.partition_point(|r| (r.stream_id, r.first_seq) <= (stream_id, seq));
    at.checked_sub(1)
        .map(|i| runs[i])
        .is_some_and(|r| r.stream_id == stream_id && seq <= r.last_seq)
}

/// Detaches the partition, waiting at most `lock_timeout` for its lock each time, so
/// that writers, queued behind the detach while it waits, wait no longer than that.
/// (`DETACH ... CONCURRENTLY` would not block them at all, but PostgreSQL refuses it on
/// a table with a DEFAULT partition, which audit_logs keeps so that no insert ever fails.)
async fn detach(
    client: &Client,
    partition: &Partition,
    options: &RetentionOptions,
) -> Result<(), RetireError> {
    let timeout_ms = options.lock_timeout.as_millis().max(1);
    let mut wait = Duration::from_millis(200);
    let mut last = None;
    for _ in 0..options.lock_attempts.max(1) {
        let attempt = client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = {timeout_ms}; \
                 ALTER TABLE audit_logs DETACH PARTITION {}; COMMIT",
                partition.table()
            ))
            .await;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                if e.code() != Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    return Err(e.into());
                }
                last = Some(e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    Err(RetireError::Other(format!(
        "could not detach {} within {timeout_ms} ms in {} tries (a long transaction on audit_logs?): {}",
        partition.name,
        options.lock_attempts,
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// How many records a table holds, and the sum of their ids.
async fn tally_of(client: &Client, partition: &Partition) -> Result<(u64, i128), RetireError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(id), 0)::text FROM ONLY {}",
                partition.table()
            ),
            &[],
        )
        .await?;
    let rows: i64 = row.try_get(0)?;
    let sum: String = row.try_get(1)?;
    Ok((
        rows as u64,
        sum.parse()
            .map_err(|_| RetireError::Other("the sum of ids is not a number".to_owned()))?,
    ))
}

/// Writes a small file so that it survives a crash: a temporary name, synced, renamed,
/// the directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), RetireError> {
    use std::io::Write;
    let fail =
        |e: std::io::Error| RetireError::Other(format!("cannot write {}: {e}", path.display()));
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(fail)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(e));
    }
    std::fs::rename(&partial, path).map_err(fail)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(fail)
}
