//! `auditd seal`: one seal, for cron, with a summary a person or a script can read.

use anyhow::{Context, Result};

use super::cli::SealArgs;
use crate::seal::{publish, sealer_for, SigningKey};

/// Seals everything committed so far (a backlog over several transactions) and
/// publishes the checkpoint signed.
pub async fn run(args: &SealArgs) -> Result<()> {
    let key = SigningKey::load(&args.signing_key)?;
    let mut client =
        crate::db::connect(&args.database.database_url, args.database.db_timeout).await?;
    let mut sealer = sealer_for(key, &args.public_key, &args.publish)?;
    let (mut batches, mut records, mut note) = (0u64, 0u64, None);
    loop {
        let sealed = tokio::time::timeout(args.database.db_timeout * 4, sealer.seal(&mut client))
            .await
            .context("the seal took too long")??;
        batches += sealed.batches;
        records += sealed.records;
        if sealed.note.is_some() {
            note = sealed.note;
        }
        if sealed.batches < crate::seal::MAX_BATCHES_PER_SEAL as u64 {
            tracing::info!(
                tree_size = sealed.tree_size,
                batches,
                records,
                signed = note.is_some(),
                longest_wait = ?sealed.longest_wait,
                "sealed"
            );
            break;
        }
    }
    if let Some(note) = note {
        for destination in &args.publish {
            publish(destination, &note).await?;
        }
    }
    Ok(())
}
