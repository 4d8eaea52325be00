//! `auditd verify`: the stored records against their batches
//! (`audit_layer::integrity::verify`) and the batches against the signed log
//! (`seal::verify_log`), with an exit status a script can act on.

use std::process::ExitCode;

use super::cli::VerifyArgs;
use crate::seal::{verify_log, VerifierKey};

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
    let mut published = Vec::new();
    for path in &args.checkpoint {
        published.push(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        );
    }
    let client = crate::db::connect(&args.database.database_url, args.database.db_timeout).await?;
    let records = audit_layer::integrity::verify(&client).await?;
    let log = verify_log(&client, &keys, &published).await?;
    for finding in &records.findings {
        println!("{finding}");
    }
    for finding in &log.findings {
        println!("{finding}");
    }
    let intact = records.intact() && log.intact();
    let findings = records.findings.len() + log.findings.len();
    println!(
        "{}: {} records proven in {} batches; {} finding(s); {} record(s) written without integrity",
        if intact { "intact" } else { "NOT INTACT" },
        records.proven,
        records.batches,
        findings,
        records.unproven
    );
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
