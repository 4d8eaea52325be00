//! `auditd verify`: the stored records against their batches
//! (`audit_layer::integrity::verify`) and the batches against the signed log
//! (`seal::verify_log`), with an exit status a script can act on.

use std::process::ExitCode;

use super::cli::VerifyArgs;
use std::io::IsTerminal;

use audit_layer::integrity::Scope;

use crate::retention::retirements;
use crate::seal::{check_bundle, verify_log, Bundle, Checkpoint, VerifierKey};

/// Checks the database and prints the report: exit 0 intact, 1 not, 2 not checked.
pub async fn run(args: &VerifyArgs) -> ExitCode {
    match check(args).await {
        Ok(intact) if intact => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("auditd verify: could not check: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn check(args: &VerifyArgs) -> anyhow::Result<bool> {
    let mut keys = Vec::new();
    for path in &args.public_key {
        keys.extend(VerifierKey::load_all(path)?);
    }
    if let Some(path) = &args.bundle {
        return check_bundle_file(path, &keys);
    }
    if let Some(path) = &args.archive {
        return check_archive(path, &keys, args.no_signatures).await;
    }
    let Some(database_url) = &args.database_url else {
        anyhow::bail!("no database: set DATABASE_URL or --database-url, or give --bundle");
    };
    let mut published = Vec::new();
    for path in &args.checkpoint {
        published.push(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        );
    }
    let client = crate::db::connect(database_url, args.db_timeout).await?;
    // Refused before the long work, not after it.
    let checkpoints: i64 = client
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await?
        .get(0);
    if keys.is_empty() && checkpoints > 0 && !args.no_signatures {
        anyhow::bail!(
            "the log has {checkpoints} signed checkpoint(s): give the log's public key \
             (--public-key), or --no-signatures to compare them with the log without checking \
             who signed them"
        );
    }
    let mut scope = Scope {
        committed_since: args.since,
        committed_until: args.until,
        from_tx: None,
    };
    if let Some(path) = &args.since_checkpoint {
        let note = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if keys.is_empty() {
            anyhow::bail!(
                "--since-checkpoint needs the public key that signed it: give --public-key"
            );
        }
        let (checkpoint, _) = Checkpoint::open(&note, &keys)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // The log must extend it (checked with the published ones); what it sealed is
        // every batch committed by a transaction up to its last leaf's.
        published.push(note);
        let last_sealed: Option<i64> = client
            .query_one(
                "SELECT max(b.tx_id) FROM audit_log_tree t \
                 JOIN audit_writer_batches b USING (stream_id, batch_id) WHERE t.position < $1",
                &[&(checkpoint.size.min(i64::MAX as u64) as i64)],
            )
            .await?
            .get(0);
        scope.from_tx = last_sealed.map(|tx| tx.saturating_add(1));
    }
    // Retired records are excused only by a retirement signed with a key given.
    let retired = retirements(&client, if args.no_signatures { &[] } else { &keys }).await?;
    let show_progress = std::io::stderr().is_terminal();
    let runs = retired.runs();
    let records = audit_layer::integrity::verify_retired(&client, &scope, &runs, |checked| {
        if show_progress {
            eprint!("\rauditd verify: {checked} records checked…");
        }
    })
    .await?;
    if show_progress {
        eprint!("\r\x1b[K");
    }
    let log = verify_log(&client, &keys, &published).await?;

    for finding in &records.findings {
        println!("{finding}");
    }
    for finding in &log.findings {
        println!("{finding}");
    }
    for finding in &retired.findings {
        println!("{finding}");
    }
    let intact = records.intact() && log.intact() && retired.findings.is_empty();
    let findings = records.findings.len() + log.findings.len() + retired.findings.len();
    let covered = if scope.is_everything() {
        String::new()
    } else {
        " (in scope: the batches committed in the window asked for, or sealed after the checkpoint given)".to_owned()
    };
    println!(
        "{}: {} records proven in {} batches{covered}; {} finding(s); {} record(s) written without integrity",
        if intact { "intact" } else { "NOT INTACT" },
        records.proven,
        records.batches,
        findings,
        records.unproven
    );
    for retirement in &retired.trusted {
        let Some(count) = records.retired.get(&retirement.id) else {
            continue;
        };
        let m = &retirement.manifest;
        println!(
            "{count} records retired by retention on {} into {} (sha256 {}){}",
            retirement.retired_at.format("%Y-%m-%d"),
            m.archive.name,
            crate::hex::encode(&m.archive.sha256),
            if retirement.signature_checked {
                ""
            } else {
                " (its signature NOT checked)"
            }
        );
    }
    // Not findings, never in a proof, but counted, so that a gap in a stream's seqs has
    // its explanation beside the report.
    let rejected: i64 = client
        .query_one("SELECT count(*) FROM audit_logs_rejected", &[])
        .await?
        .get(0);
    let dropped: i64 = client
        .query_one(
            "SELECT coalesce(sum(CASE WHEN jsonb_typeof(metadata->'dropped') = 'number' \
                                      THEN (metadata->>'dropped')::numeric END), 0)::bigint \
             FROM audit_logs WHERE event_type = 'audit_dropped'",
            &[],
        )
        .await?
        .get(0);
    println!(
        "not in any proof, by design: {rejected} record(s) refused by PostgreSQL (audit_logs_rejected), \
         {dropped} announced dropped by audit_dropped records"
    );
    // Not tampering, and so not a finding; but records a writer took and the table does
    // not hold are said, never left to be noticed.
    let gaps = audit_layer::integrity::stream_gaps(&client).await?;
    let unexplained: i64 = gaps.iter().map(|g| g.unexplained()).sum();
    if gaps.is_empty() {
        println!("streams complete: no gap in any stream's seqs between committed batches");
    } else {
        println!(
            "streams with seqs missing between committed batches: {}; {unexplained} record(s) \
             not accounted for by drops, rejections or unused seqs{}",
            gaps.len(),
            if unexplained > 0 {
                " (lost after the writer took them: a writer killed with a batch in flight, \
                 a failover to a standby that had not received them, or batches removed)"
            } else {
                ""
            }
        );
        for stream in gaps.iter().take(20) {
            println!("  {stream}");
        }
        if gaps.len() > 20 {
            println!("  and {} more stream(s)", gaps.len() - 20);
        }
    }
    match &log.latest {
        Some(latest) => println!(
            "signed log: {} batches ({} records) sealed, latest checkpoint size {} signed {}{}; {} batch(es) ({} records) not sealed yet",
            log.tree_size,
            log.sealed_records,
            latest.size,
            latest
                .time
                .map_or_else(|| "at an unknown time".to_owned(), |t| format!("at {t}")),
            if log.signatures_checked { "" } else { " (signatures NOT checked: no --public-key)" },
            log.unsealed_batches,
            log.unsealed_records
        ),
        None => println!(
            "signed log: no checkpoint yet; {} batch(es) ({} records) not sealed (run auditd seal, or serve --signing-key)",
            log.unsealed_batches, log.unsealed_records
        ),
    }
    Ok(intact)
}

/// Checks a proof bundle offline; `Ok(false)` when it does not prove what it holds.
fn check_bundle_file(path: &std::path::Path, keys: &[VerifierKey]) -> anyhow::Result<bool> {
    if keys.is_empty() {
        anyhow::bail!("a bundle is checked against the log's public key: give --public-key");
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    let bundle =
        Bundle::from_json(&value).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let report = check_bundle(&bundle, keys);
    for finding in &report.findings {
        println!("{finding}");
    }
    let intact = report.intact();
    let checkpoint = report.checkpoint.as_ref().map_or_else(
        || "no trusted checkpoint".to_owned(),
        |c| {
            format!(
                "checkpoint {} size {} signed {}",
                c.origin,
                c.size,
                c.time
                    .map_or_else(|| "at an unknown time".to_owned(), |t| t.to_string())
            )
        },
    );
    println!(
        "{}: {} record(s) in {} batch(es) proven genuine against {checkpoint}{}",
        if intact { "intact" } else { "NOT INTACT" },
        report.proven,
        report.batches,
        match report.complete_positions {
            Some((first, last)) if intact =>
                format!("; complete: no record is missing from log leaves {first} to {last}"),
            _ => String::new(),
        }
    );
    // What the bundle says of itself, beyond its proofs: auditd's word.
    if bundle.unsealed > 0 {
        println!(
            "the bundle says {} record(s) asked for were not sealed yet, so are not in it",
            bundle.unsealed
        );
    }
    if bundle.unproven > 0 {
        println!(
            "the bundle says {} record(s) asked for carry no proof (written without integrity), so are not in it",
            bundle.unproven
        );
    }
    if bundle.truncated {
        println!(
            "the bundle says it stopped at its record limit: complete only up to its last batch"
        );
    }
    Ok(intact)
}

/// Checks a retention archive offline; `Ok(false)` when it does not prove what it holds.
async fn check_archive(
    path: &std::path::Path,
    keys: &[VerifierKey],
    no_signatures: bool,
) -> anyhow::Result<bool> {
    if keys.is_empty() && !no_signatures {
        anyhow::bail!(
            "an archive is checked against the log's public key: give --public-key, or \
             --no-signatures to check it against its manifest alone"
        );
    }
    let (manifest, report) = super::retention::check_archive_file(path, keys).await?;
    for finding in &report.findings {
        println!("{finding}");
    }
    let intact = report.intact();
    let against = match manifest
        .checkpoint
        .as_deref()
        .map(Checkpoint::parse_unverified)
    {
        Some(Ok(c)) => format!(
            "the checkpoint of {} at size {}{}",
            c.origin,
            c.size,
            if keys.is_empty() {
                " (signatures NOT checked)"
            } else {
                ""
            }
        ),
        _ => "no checkpoint (the log was not sealed)".to_owned(),
    };
    println!(
        "{}: archive of {} ({} to {}): {} records, {} proven in {} batches against {against}, {} unproven",
        if intact { "intact" } else { "NOT INTACT" },
        manifest.partition,
        manifest.range.0,
        manifest.range.1,
        report.rows,
        report.proven,
        manifest.batches.len(),
        report.unproven
    );
    Ok(intact)
}
