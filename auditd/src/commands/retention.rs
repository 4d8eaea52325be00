//! `auditd retention`, `auditd hold`, `auditd restore`, and retention inside `auditd
//! serve`: the command-line side of `crate::retention`, with the audit records that say
//! who placed or lifted a hold and who restored what.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::cli::{HoldAction, HoldArgs, RestoreArgs, RetentionArgs};
use super::logging::{self, audited, shutdown_audit};
use crate::retention::{
    self, check_archive, manifest_is_signed, ArchivePaths, Hold, Keep, Kept, Manifest,
    RetentionOptions, ARCHIVE_SUFFIX,
};
use crate::seal::{SigningKey, VerifierKey};

/// Who runs a command: `--by`, else `$USER`.
fn operator(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|who| !who.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn options(
    keep: Keep,
    archive_dir: PathBuf,
    signing_key: &Option<PathBuf>,
    public_keys: &[PathBuf],
    lock_timeout: Duration,
) -> Result<RetentionOptions> {
    let mut trusted = Vec::new();
    for path in public_keys {
        trusted.extend(VerifierKey::load_all(path)?);
    }
    Ok(RetentionOptions {
        keep,
        archive_dir,
        signing_key: match signing_key {
            Some(path) => SigningKey::load(path)?,
            None => bail!(
                "retention signs what it retires, with the log's key: give --signing-key \
                 (from auditd keygen; the key that seals the log)"
            ),
        },
        trusted,
        lock_timeout,
        lock_attempts: 10,
    })
}

/// `auditd retention`: exit 0 when every partition due went (or `--dry-run`), 1 when
/// one stayed because something failed.
pub async fn run_retention(args: &RetentionArgs, log_filter: &str) -> Result<ExitCode> {
    let url = &args.database.database_url;
    if args.dry_run {
        logging::init(log_filter, None)?;
        let client = crate::db::connect(url, args.database.db_timeout).await?;
        let planned = retention::plan(&client, args.keep, chrono::Utc::now()).await?;
        for p in &planned {
            let verdict = match &p.kept {
                None => "would retire".to_owned(),
                Some(Kept::Current) => "stays: current or future month".to_owned(),
                Some(Kept::InWindow) => format!("stays: within {}", args.keep),
                Some(Kept::Held(holds)) => format!("stays: held by {}", holds.join(", ")),
            };
            let detached = if p.partition.attached {
                ""
            } else {
                " (detached by an unfinished run)"
            };
            println!("{}{detached}: {verdict}", p.partition.name);
        }
        let going = planned.iter().filter(|p| p.kept.is_none()).count();
        println!(
            "dry run: {going} of {} partition(s) would be retired; nothing was changed",
            planned.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dir) = &args.archive_dir else {
        bail!("retention archives what it retires: give --archive-dir");
    };
    let options = options(
        args.keep,
        dir.clone(),
        &args.signing_key,
        &args.public_key,
        args.lock_timeout,
    )?;
    check_archive_dir(dir)?;
    let handle = audited(url, log_filter)?;
    let outcome = async {
        let mut client = crate::db::connect(url, args.database.db_timeout).await?;
        anyhow::Ok(retention::run(&mut client, &options, chrono::Utc::now()).await?)
    }
    .await;
    shutdown_audit(&handle).await;
    let report = outcome?;
    for r in &report.retired {
        println!(
            "retired {}: {} records into {} (sha256 {})",
            r.partition.name,
            r.rows,
            r.archive.display(),
            crate::hex::encode(&r.sha256)
        );
    }
    for (partition, why) in &report.failed {
        println!(
            "NOT retired {}: {why} (nothing was dropped)",
            partition.name
        );
    }
    println!(
        "retention: {} partition(s) retired, {} kept, {} failed",
        report.retired.len(),
        report.kept.len(),
        report.failed.len()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Fails early, with the reason, when archives cannot be written into `dir`.
fn check_archive_dir(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".auditd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write archives into {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Retention inside `auditd serve`: a run a minute after the start, then every
/// `interval`; a failed run is reported and tried again at the next.
pub async fn retain_periodically(
    url: String,
    db_timeout: Duration,
    options: RetentionOptions,
    interval: Duration,
) {
    tokio::time::sleep(Duration::from_secs(60).min(interval)).await;
    loop {
        let outcome = async {
            check_archive_dir(&options.archive_dir)?;
            let mut client = crate::db::connect(&url, db_timeout).await?;
            anyhow::Ok(retention::run(&mut client, &options, chrono::Utc::now()).await?)
        }
        .await;
        match outcome {
            Ok(report) => tracing::info!(
                retired = report.retired.len(),
                kept = report.kept.len(),
                failed = report.failed.len(),
                "retention ran"
            ),
            Err(e) => tracing::error!(error = format!("{e:#}"), "retention did not run"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The options of retention inside `auditd serve`, when asked for.
pub fn serve_options(args: &super::cli::ServeArgs) -> Result<Option<RetentionOptions>> {
    let (Some(keep), Some(dir)) = (args.retention, &args.archive_dir) else {
        return Ok(None);
    };
    Ok(Some(options(
        keep,
        dir.clone(),
        &args.signing_key,
        &args.public_key,
        Duration::from_secs(2),
    )?))
}

/// `auditd hold`.
pub async fn run_hold(args: &HoldArgs, log_filter: &str) -> Result<()> {
    let url = &args.database.database_url;
    if let HoldAction::List = args.action {
        logging::init(log_filter, None)?;
        let client = crate::db::connect(url, args.database.db_timeout).await?;
        let holds = retention::all_holds(&client).await?;
        for h in &holds {
            let scope = [
                h.username.as_ref().map(|u| format!("user {u}")),
                h.resource_type
                    .as_ref()
                    .map(|t| format!("resource type {t}")),
                h.resource_id.as_ref().map(|i| format!("resource {i}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
            let state = match (&h.lifted_at, &h.lifted_by) {
                (Some(at), by) => format!("lifted {at} by {}", by.as_deref().unwrap_or("?")),
                (None, _) => "IN FORCE".to_owned(),
            };
            println!(
                "{}: {} to {}{}; placed {} by {}: {}; {state}",
                h.name,
                h.range_start,
                h.range_end,
                if scope.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", scope.join(", "))
                },
                h.placed_at,
                h.placed_by,
                h.reason
            );
        }
        println!("{} hold(s)", holds.len());
        return Ok(());
    }
    let handle = audited(url, log_filter)?;
    let outcome = async {
        let client = crate::db::connect(url, args.database.db_timeout).await?;
        match &args.action {
            HoldAction::Place {
                name,
                from,
                until,
                user,
                resource_type,
                resource_id,
                reason,
                by,
            } => {
                let hold = Hold {
                    name: name.clone(),
                    range_start: *from,
                    range_end: until.unwrap_or_else(chrono::Utc::now),
                    username: user.clone(),
                    resource_type: resource_type.clone(),
                    resource_id: resource_id.clone(),
                    reason: reason.clone(),
                    placed_by: operator(by),
                    placed_at: chrono::Utc::now(),
                    lifted_at: None,
                    lifted_by: None,
                };
                retention::place(&client, &hold).await?;
                record_hold("placed", &hold, reason);
                println!("hold {name} placed");
            }
            HoldAction::Lift { name, reason, by } => {
                let hold = retention::lift(&client, name, &operator(by)).await?;
                record_hold(
                    "lifted",
                    &Hold {
                        lifted_by: Some(operator(by)),
                        ..hold
                    },
                    reason,
                );
                println!("hold {name} lifted");
            }
            HoldAction::List => unreachable!("listed above"),
        }
        anyhow::Ok(())
    }
    .await;
    shutdown_audit(&handle).await;
    outcome
}

/// The audit record of a hold placed or lifted.
fn record_hold(what: &str, hold: &Hold, reason: &str) {
    let who = if what == "lifted" {
        hold.lifted_by.clone().unwrap_or_default()
    } else {
        hold.placed_by.clone()
    };
    let metadata = serde_json::json!({
        "action": what,
        "range": {
            "start": crate::seal::time_micros(hold.range_start.timestamp_micros()),
            "end": crate::seal::time_micros(hold.range_end.timestamp_micros()),
        },
        "username": hold.username,
        "resource_type": hold.resource_type,
        "resource_id": hold.resource_id,
        "reason": reason,
    })
    .to_string();
    tracing::warn!(
        target: "audit",
        event_type = "audit_legal_hold",
        username = %who,
        resource_type = "audit_legal_hold",
        resource_id = %hold.name,
        metadata = %metadata,
        "Legal hold {} {what}",
        hold.name
    );
}

/// An archive checked against its manifest and, with `keys`, the manifest's signature
/// beside it (which must then be there): the manifest, and the findings (none when
/// intact).
pub async fn check_archive_file(
    archive: &Path,
    keys: &[VerifierKey],
) -> Result<(Manifest, retention::ArchiveReport)> {
    let paths = ArchivePaths::of_archive(archive).with_context(|| {
        format!(
            "{} is not an archive (*{ARCHIVE_SUFFIX})",
            archive.display()
        )
    })?;
    let bytes = std::fs::read(&paths.manifest)
        .with_context(|| format!("cannot read the manifest {}", paths.manifest.display()))?;
    let manifest = Manifest::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", paths.manifest.display()))?;
    let path = archive.to_owned();
    let (checked_manifest, checked_keys) = (manifest.clone(), keys.to_vec());
    let mut report = tokio::task::spawn_blocking(move || {
        let keys = (!checked_keys.is_empty()).then_some(checked_keys.as_slice());
        check_archive(&path, &checked_manifest, keys)
    })
    .await?
    .with_context(|| format!("cannot read {}", archive.display()))?;
    if !keys.is_empty() {
        let signature = std::fs::read_to_string(&paths.signature).ok();
        if let Err(why) = manifest_is_signed(&manifest, &bytes, signature.as_deref(), keys) {
            report.findings.push(format!(
                "the manifest ({}): {why}",
                paths.signature.display()
            ));
        }
    }
    Ok((manifest, report))
}

/// `auditd restore`.
pub async fn run_restore(args: &RestoreArgs, log_filter: &str) -> Result<()> {
    let mut keys = Vec::new();
    for path in &args.public_key {
        keys.extend(VerifierKey::load_all(path)?);
    }
    let handle = audited(&args.database.database_url, log_filter)?;
    let outcome = async {
        let (manifest, report) = check_archive_file(&args.archive, &keys).await?;
        if !report.intact() {
            for finding in &report.findings {
                eprintln!("{finding}");
            }
            bail!(
                "{} does not check against its manifest: not restored",
                args.archive.display()
            );
        }
        let client =
            crate::db::connect(&args.database.database_url, args.database.db_timeout).await?;
        let restored = retention::restore(&client, &args.archive, &manifest).await?;
        let metadata = serde_json::json!({
            "archive": args.archive.display().to_string(),
            "archive_sha256": crate::hex::encode(&manifest.archive.sha256),
            "inserted": restored.inserted,
            "already_present": restored.present,
            "signatures_checked": !keys.is_empty(),
        })
        .to_string();
        tracing::warn!(
            target: "audit",
            event_type = "audit_restore",
            username = %operator(&args.by),
            resource_type = "audit_logs_partition",
            resource_id = %restored.partition,
            metadata = %metadata,
            "Restored {} records into {}",
            restored.inserted,
            restored.partition
        );
        println!(
            "restored {} records into {} ({} were there already)",
            restored.inserted, restored.partition, restored.present
        );
        anyhow::Ok(())
    }
    .await;
    shutdown_audit(&handle).await;
    outcome
}
