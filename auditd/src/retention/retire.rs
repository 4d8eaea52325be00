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
use tokio_postgres::{Client, GenericClient};

use super::archive::{in_runs, write_archive, write_durably, ArchiveError, ArchivePaths, Written};
use super::check::check_archive;
use super::holds::active_holds;
use super::manifest::{sign_manifest, ArchiveFile, LogProof, Manifest, ManifestBatch};
use super::plan::{plan, touches, Keep, Partition, Planned, DETACHED_BY_RETENTION};
use crate::seal::{latest_checkpoint, load_leaves, Checkpoint, SigningKey, VerifierKey};

/// How a run goes.
#[derive(Debug)]
pub struct RetentionOptions {
    /// The window kept online.
    pub keep: Keep,
    /// Where archives go.
    pub archive_dir: PathBuf,
    /// The log's signing key, which signs each manifest: a retirement counts only
    /// through that signature.
    pub signing_key: SigningKey,
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

impl From<audit_layer::Error> for RetireError {
    fn from(e: audit_layer::Error) -> Self {
        match e {
            audit_layer::Error::Db(e) => RetireError::Database(e),
            other => RetireError::Other(other.to_string()),
        }
    }
}

impl From<crate::seal::SealError> for RetireError {
    fn from(e: crate::seal::SealError) -> Self {
        RetireError::Other(e.to_string())
    }
}

/// Runs retention once. Only one run at a time: a second one finds the lock taken and
/// says so.
pub async fn run(
    client: &mut Client,
    options: &RetentionOptions,
    now: DateTime<Utc>,
) -> Result<RunReport, RetireError> {
    let locked = super::lock::try_lock(client).await?;
    if !locked {
        return Err(RetireError::Other(
            "another retention run holds the lock".to_owned(),
        ));
    }
    let result = run_locked(client, options, now).await;
    super::lock::unlock(client).await;
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
            // Left detached by a run that failed, and now to be kept (a hold placed
            // since): back into the table.
            if !planned.partition.attached {
                if let Err(e) = reattach(client, &planned.partition, options).await {
                    report.failed.push((
                        planned.partition.clone(),
                        format!("left detached, and not re-attached: {e}"),
                    ));
                }
            }
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
    let archived = archive_and_check(client, partition, options, &stem, now).await?;
    if partition.attached {
        detach(client, partition, options).await?;
    }
    // From here on the partition is out of the table: a failure puts it back, so that its
    // records are neither lost nor missing for `auditd verify`.
    match drop_archived(client, partition, options, &stem, archived, now).await {
        Ok(retired) => Ok(retired),
        Err(e) => match reattach(client, partition, options).await {
            Ok(()) => Err(e),
            Err(again) => Err(RetireError::Other(format!(
                "{e}; and the partition, detached, could not be re-attached ({again}): the next run finishes or re-attaches it"
            ))),
        },
    }
}

/// The files, the retirement row and the drop, once the partition is detached: the
/// archive again first if records arrived before the detach; the retirement recorded and
/// the table dropped in one transaction, after checking that nothing changed and that no
/// hold was placed meanwhile.
async fn drop_archived(
    client: &mut Client,
    partition: &Partition,
    options: &RetentionOptions,
    stem: &str,
    archived: (ArchivePaths, Written, Manifest, Vec<u8>),
    now: DateTime<Utc>,
) -> Result<Retired, RetireError> {
    let (mut paths, mut written, mut manifest, mut bytes) = archived;
    if tally_of(&*client, partition).await? != (written.tally.rows, written.tally.id_sum) {
        // A record of the month, written after the archive was read, went into the
        // partition before the detach: archive the detached table, which nothing can
        // change now.
        tracing::info!(partition = %partition.name, "records arrived while archiving: archiving the detached partition again");
        let _ = std::fs::remove_file(&paths.archive);
        (paths, written, manifest, bytes) =
            archive_and_check(client, partition, options, &format!("{stem}-2"), now).await?;
    }
    let signature = sign_manifest(&manifest, &bytes, &options.signing_key);
    let files = |e: std::io::Error, path: &Path| {
        RetireError::Other(format!("cannot write {}: {e}", path.display()))
    };
    let recorded = async {
        write_durably(&paths.manifest, &bytes).map_err(|e| files(e, &paths.manifest))?;
        write_durably(&paths.signature, signature.as_bytes())
            .map_err(|e| files(e, &paths.signature))?;
        let tx = client.transaction().await?;
        // Nothing may change it now, and a hold placed since the plan still counts.
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE; LOCK TABLE audit_legal_holds IN SHARE MODE",
            partition.table()
        ))
        .await?;
        if tally_of(&tx, partition).await? != (written.tally.rows, written.tally.id_sum) {
            return Err(RetireError::Other(
                "the partition changed after it was archived".to_owned(),
            ));
        }
        let held = holds_on(&tx, partition).await?;
        if !held.is_empty() {
            return Err(RetireError::Other(format!(
                "held by {}, placed during the run",
                held.join(", ")
            )));
        }
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
        Ok(retirement_id)
    }
    .await;
    match recorded {
        Ok(retirement_id) => Ok(Retired {
            partition: partition.clone(),
            rows: written.tally.rows,
            archive: written.path,
            manifest: paths.manifest,
            sha256: written.sha256,
            retirement_id,
        }),
        Err(e) => {
            // No signed manifest is left behind for a retirement that did not happen: it
            // would pass for one if a superuser recorded it.
            let _ = std::fs::remove_file(&paths.signature);
            let _ = std::fs::remove_file(&paths.manifest);
            let _ = std::fs::remove_file(&paths.archive);
            Err(e)
        }
    }
}

/// Writes the archive, builds its manifest, and checks the file on disk against the
/// manifest as it will be stored (read back from its bytes, as `auditd verify --archive`
/// reads it). An archive that does not check is kept, with its manifest beside it as
/// `….unverified.json`, for whoever looks into it.
async fn archive_and_check(
    client: &Client,
    partition: &Partition,
    options: &RetentionOptions,
    stem: &str,
    now: DateTime<Utc>,
) -> Result<(ArchivePaths, Written, Manifest, Vec<u8>), RetireError> {
    let mut keys = options.trusted.clone();
    keys.push(options.signing_key.verifier());
    let checkpoint = match latest_checkpoint(client).await? {
        None => None,
        Some((_, note)) => {
            let (checkpoint, _) = Checkpoint::open(&note, &keys).map_err(|e| {
                RetireError::Other(format!("the latest checkpoint cannot be trusted: {e}"))
            })?;
            Some((note, checkpoint))
        }
    };
    let paths = ArchivePaths::new(&options.archive_dir, stem);
    let written = write_archive(client, partition, &paths.archive)
        .await
        .map_err(RetireError::Archive)?;
    let built = build_manifest(client, partition, &written, checkpoint, options, now).await;
    let bytes = match built {
        Ok(manifest) => manifest.to_bytes(),
        Err(e) => {
            let _ = std::fs::remove_file(&paths.archive);
            return Err(e);
        }
    };
    let manifest = Manifest::parse(&bytes)
        .map_err(|e| RetireError::Other(format!("the manifest does not read back: {e}")))?;
    let checking = {
        let (path, manifest, keys) = (paths.archive.clone(), manifest.clone(), keys.clone());
        tokio::task::spawn_blocking(move || check_archive(&path, &manifest, Some(&keys)))
    };
    let report = checking
        .await
        .map_err(|e| RetireError::Other(format!("the check stopped: {e}")))?
        .map_err(|e| {
            RetireError::Other(format!("cannot read back {}: {e}", paths.archive.display()))
        })?;
    if !report.intact() {
        let kept = options.archive_dir.join(format!("{stem}.unverified.json"));
        let _ = write_durably(&kept, &bytes);
        return Err(RetireError::Unverified(report.findings));
    }
    Ok((paths, written, manifest, bytes))
}

/// The manifest of an archive just written: the batches its records came from, each
/// sealed under the latest checkpoint, and one proof of their entries in the log.
async fn build_manifest(
    client: &Client,
    partition: &Partition,
    written: &Written,
    checkpoint: Option<(String, Checkpoint)>,
    options: &RetentionOptions,
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
        log: Some(checkpoint.as_ref().map_or_else(
            || options.signing_key.name().to_owned(),
            |(_, c)| c.origin.clone(),
        )),
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
        checkpoint: checkpoint.as_ref().map(|(note, _)| note.clone()),
    };
    // The size the checkpoint signs, not what a row says.
    let Some(size) = checkpoint.map(|(_, c)| c.size) else {
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
        // Every ledger row of the stream overlapping the run: a malformed one is a
        // finding of `auditd verify`, so it stops the retirement rather than turn its
        // records into unproven ones.
        let rows = client
            .query(
                &format!(
                    "SELECT t.position, b.leaves, b.encoding, {columns} FROM audit_writer_batches b \
                     LEFT JOIN audit_log_tree t USING (stream_id, batch_id) \
                     WHERE b.stream_id = $1 AND b.first_seq <= $3 AND b.last_seq >= $2 AND b.rows > 0"
                ),
                &[&run.stream_id, &run.first_seq, &run.last_seq],
            )
            .await?;
        let mut covered = 0u64;
        for row in &rows {
            let position: Option<i64> = row.try_get(0)?;
            let leaves: Option<Vec<u8>> = row.try_get(1)?;
            let encoding: Option<i16> = row.try_get(2)?;
            if encoding.is_none() {
                // Written without integrity: its records are unproven, as verify says.
                continue;
            }
            let malformed = |what: &str| {
                RetireError::Unverified(vec![format!(
                    "a ledger row of stream {} overlapping seqs {}..={} is {what}: `auditd verify` reports it",
                    run.stream_id, run.first_seq, run.last_seq
                )])
            };
            let entry = BatchEntry::from_row(row)?.ok_or_else(|| malformed("malformed"))?;
            let seqs = leaves
                .as_deref()
                .and_then(|l| {
                    batch_leaves(l, entry.rows, Some(entry.first_seq), Some(entry.last_seq))
                })
                .ok_or_else(|| malformed("malformed"))?;
            let here = seqs
                .iter()
                .filter(|(seq, _)| {
                    (run.first_seq..=run.last_seq).contains(seq)
                        && in_runs(&written.tally.runs, entry.stream_id, *seq)
                })
                .count() as u64;
            covered += here;
            if here == 0 || !seen.insert((entry.stream_id, entry.batch_id)) {
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
            let in_archive = seqs
                .iter()
                .filter(|(seq, _)| in_runs(&written.tally.runs, entry.stream_id, *seq))
                .count();
            manifest.proven += in_archive as u64;
            manifest.batches.push(ManifestBatch {
                position,
                entry,
                leaves: if in_archive < seqs.len() {
                    leaves
                } else {
                    None
                },
            });
        }
        // A record of a stream written with integrity is in one of its batches, or it is
        // what `auditd verify` calls added: never retired as merely unproven.
        let run_len = (run.last_seq - run.first_seq) as u64 + 1;
        if covered < run_len && stream_has_integrity(client, run.stream_id).await? {
            return Err(RetireError::Unverified(vec![format!(
                "{} record(s) of stream {} (seqs {}..={}) are in no committed batch: `auditd verify` reports them added",
                run_len - covered,
                run.stream_id,
                run.first_seq,
                run.last_seq
            )]));
        }
    }
    manifest.unproven = manifest.rows - manifest.proven.min(manifest.rows);
    manifest.batches.sort_by_key(|b| b.position);
    if let (Some(first), Some(last)) = (manifest.batches.first(), manifest.batches.last()) {
        let (start, end) = (first.position, last.position + 1);
        let leaves = load_leaves(client, size.min(i64::MAX as u64) as i64).await?;
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

/// Whether any batch of `stream_id` was written with integrity.
async fn stream_has_integrity(client: &Client, stream_id: i64) -> Result<bool, RetireError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM audit_writer_batches \
                            WHERE stream_id = $1 AND rows > 0 AND encoding IS NOT NULL)",
            &[&stream_id],
        )
        .await?
        .try_get(0)?)
}

/// The holds in force that touch `partition`.
async fn holds_on(
    client: &impl GenericClient,
    partition: &Partition,
) -> Result<Vec<String>, RetireError> {
    let mut held = Vec::new();
    for hold in active_holds(client).await? {
        if touches(client, &hold, partition).await? {
            held.push(hold.name);
        }
    }
    Ok(held)
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
                 ALTER TABLE audit_logs DETACH PARTITION {table}; \
                 COMMENT ON TABLE {table} IS '{DETACHED_BY_RETENTION}'; \
                 SELECT audit_counts_mark_stale('{start}', '{end}'); COMMIT",
                table = partition.table(),
                start = partition
                    .start
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                end = partition
                    .end
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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
async fn tally_of(
    client: &impl GenericClient,
    partition: &Partition,
) -> Result<(u64, i128), RetireError> {
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

/// Puts a partition detached by a run back into `audit_logs`, with any records of its
/// month that arrived meanwhile (they went to DEFAULT). Indexes it lacks and a constraint
/// matching the bound are added first, on the detached table alone, so that the attach
/// itself builds and scans nothing while it holds `audit_logs` against writes.
pub async fn reattach(
    client: &Client,
    partition: &Partition,
    options: &RetentionOptions,
) -> Result<(), RetireError> {
    let table = partition.table();
    let bound = format!("\"{}_bound\"", partition.name);
    // Times we print ourselves from the partition's name: no outside text.
    let (start, end) = (
        partition
            .start
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        partition
            .end
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    // Indexes made on audit_logs while the month was away (a migration's, the trigram
    // index) are built here, without blocking writers, or the attach would build them
    // while it holds the table.
    audit_layer::schema::build_indexes_for_attach(client, &partition.name).await?;
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {bound}; \
             ALTER TABLE {table} ADD CONSTRAINT {bound} \
                 CHECK (created_at >= '{start}' AND created_at < '{end}')"
        ))
        .await?;
    let timeout_ms = options.lock_timeout.as_millis().max(1);
    let attached = client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {timeout_ms}; \
             LOCK TABLE audit_logs IN SHARE ROW EXCLUSIVE MODE; \
             SELECT set_config('audit.upkeep', 'on', true); \
             WITH moved AS (DELETE FROM audit_logs_default \
                            WHERE created_at >= '{start}' AND created_at < '{end}' RETURNING *) \
             INSERT INTO {table} SELECT * FROM moved; \
             SELECT set_config('audit.upkeep', '', true); \
             ALTER TABLE audit_logs ATTACH PARTITION {table} FOR VALUES FROM ('{start}') TO ('{end}'); \
             COMMENT ON TABLE {table} IS NULL; \
             SELECT audit_counts_mark_stale('{start}', '{end}'); COMMIT"
        ))
        .await;
    if let Err(e) = attached {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    tracing::info!(partition = %partition.name, "partition re-attached");
    Ok(())
}
