//! The signed log: committed batches sealed, in commit order, into one append-only
//! RFC 6962 Merkle tree whose checkpoints are signed with an Ed25519 key the database
//! never sees, then published where the database cannot reach.
//!
//! | piece | module |
//! |---|---|
//! | the log's keys, in the signed-note key formats | `keys` |
//! | checkpoints as C2SP signed notes: writing, signing, reading, checking | `checkpoint` |
//! | appending batches and signing, one transaction per seal | `log` |
//! | copies of each checkpoint outside the database | `publish` |
//! | a record's proof up to the latest checkpoint; consistency between sizes | `proof` |
//! | records with their proofs, to check offline; checking them | `bundle` |
//! | the tree and its checkpoints, checked from what is stored | `verify` |
//!
//! Per-record proofs chain two trees: a record's leaf is in its batch's tree (root in
//! the ledger row, `audit_layer::integrity`), and the batch's entry is in this log.

mod bundle;
mod checkpoint;
mod keys;
mod log;
mod proof;
mod publish;
mod verify;

use std::time::Duration;

pub use bundle::{
    check_bundle, complete_bundle, entry_from_json, entry_json, hex_hash, parse_hash, parse_path,
    path_json, time_micros, Bundle, BundleReport, BUNDLE_FORMAT,
};
pub use checkpoint::{open_note, sign_note, Checkpoint, NoteError};
pub use keys::{valid_name as valid_key_name, KeyError, SigningKey, VerifierKey};
pub use log::{load_leaves, SealError, Sealed, Sealer, HEARTBEAT, MAX_BATCHES_PER_SEAL};
pub use proof::{
    consistency, latest_checkpoint, record_proof, record_proof_at, LogLeaves, Provable,
    RecordProof, SealedProof,
};
pub use publish::{publish, Destination};
pub use verify::{verify_log, LogFinding, LogReport};

/// The sealer a command runs: signing with `key`, also trusting the keys in
/// `earlier_keys` (files of public keys, for the checkpoints signed before a rotation),
/// and anchored on the checkpoint in the first file among `destinations` that exists, so
/// that it refuses to sign a log that does not extend what it published before.
pub fn sealer_for(
    key: SigningKey,
    earlier_keys: &[std::path::PathBuf],
    destinations: &[Destination],
) -> anyhow::Result<Sealer> {
    let mut trusted = Vec::new();
    for path in earlier_keys {
        trusted.extend(VerifierKey::load_all(path)?);
    }
    let mut sealer = Sealer::new(key).trusting(trusted);
    for destination in destinations {
        if let Destination::File(path) = destination {
            match std::fs::read_to_string(path) {
                Ok(note) => {
                    sealer = sealer
                        .anchored(&note)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
            }
        }
    }
    Ok(sealer)
}

/// After a failed seal, the wait before the next try, at first and at most.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// Seals every `interval`, and at once on SIGUSR1, for as long as it runs (auditd serve aborts it at shutdown; a
/// seal cut short is a transaction rolled back), publishing each new checkpoint.
pub async fn seal_periodically(
    database_url: String,
    db_timeout: Duration,
    mut sealer: Sealer,
    interval: Duration,
    destinations: Vec<Destination>,
) {
    let mut client = None;
    let mut wait = RETRY_AFTER;
    let mut on_demand =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let outcome = async {
            if client.is_none() {
                client = Some(crate::db::connect(&database_url, db_timeout).await?);
            }
            let Some(connected) = client.as_mut() else {
                unreachable!("connected just above");
            };
            let sealed = tokio::time::timeout(db_timeout * 4, sealer.seal(connected))
                .await
                .map_err(|_| anyhow::anyhow!("the seal took longer than {:?}", db_timeout * 4))??;
            anyhow::Ok(sealed)
        }
        .await;
        match outcome {
            Ok(sealed) => {
                wait = RETRY_AFTER;
                if let Some(note) = &sealed.note {
                    tracing::debug!(
                        tree_size = sealed.tree_size,
                        batches = sealed.batches,
                        records = sealed.records,
                        longest_wait = ?sealed.longest_wait,
                        "sealed"
                    );
                    for destination in &destinations {
                        if let Err(e) = publish(destination, note).await {
                            tracing::error!(error = format!("{e:#}"), "checkpoint not published");
                        }
                    }
                }
                // The interval, or at once on SIGUSR1 (a seal on demand, for instance
                // before handing an auditor a bundle).
                match on_demand.as_mut() {
                    Some(signals) => {
                        tokio::select! {
                            () = tokio::time::sleep(interval) => {}
                            _ = signals.recv() => tracing::info!("SIGUSR1 received: sealing now"),
                        }
                    }
                    None => tokio::time::sleep(interval).await,
                }
            }
            Err(e) => {
                // A broken connection is opened again; an inconsistent tree keeps
                // being reported until someone looks.
                client = None;
                tracing::error!(error = format!("{e:#}"), retry_in = ?wait, "not sealing");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_AFTER_MAX);
            }
        }
    }
}
