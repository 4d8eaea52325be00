//! The retirements recorded in `audit_retirements`, as `auditd verify` reads them: each
//! trusted only through its manifest's signature by the log's key, so that a row added
//! by hand does not turn a deleted record into a retired one.

use audit_layer::integrity::RetiredRun;
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::manifest::{manifest_is_signed, Manifest};
use crate::seal::VerifierKey;

/// One retirement, as its signed manifest states it.
#[derive(Debug, Clone)]
pub struct Retirement {
    /// Its row's id.
    pub id: i64,
    /// When it was made.
    pub retired_at: DateTime<Utc>,
    /// Its manifest.
    pub manifest: Manifest,
    /// Whether its signature was checked (a key was given and it verified).
    pub signature_checked: bool,
}

/// The retirements to trust, and what is wrong with the others.
#[derive(Debug, Default)]
pub struct Retirements {
    /// Trusted: their records are retired, not missing.
    pub trusted: Vec<Retirement>,
    /// Each retirement not trusted, and why (its records are then reported missing).
    pub findings: Vec<String>,
}

impl Retirements {
    /// The (stream, seq) runs of the trusted retirements.
    pub fn runs(&self) -> Vec<RetiredRun> {
        self.trusted
            .iter()
            .flat_map(|r| {
                r.manifest.runs.iter().map(|run| RetiredRun {
                    stream_id: run.stream_id,
                    first_seq: run.first_seq,
                    last_seq: run.last_seq,
                    retirement: r.id,
                })
            })
            .collect()
    }
}

/// Reads every retirement, checking each manifest's signature with `keys`; with no keys
/// (`verify --no-signatures`, or a log never sealed) each is taken at its word.
pub async fn retirements(
    client: &impl GenericClient,
    keys: &[VerifierKey],
) -> Result<Retirements, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, retired_at, manifest, signature FROM audit_retirements ORDER BY id",
            &[],
        )
        .await?;
    let mut found = Retirements::default();
    for row in &rows {
        let id: i64 = row.try_get(0)?;
        let retired_at: DateTime<Utc> = row.try_get(1)?;
        let text: String = row.try_get(2)?;
        let signature: Option<String> = row.try_get(3)?;
        let manifest = match Manifest::parse(text.as_bytes()) {
            Ok(manifest) => manifest,
            Err(e) => {
                found.findings.push(format!("retirement {id}: its manifest is unreadable ({e}): its records count as missing"));
                continue;
            }
        };
        let signature_checked = if keys.is_empty() {
            false
        } else {
            let checked =
                manifest_is_signed(&manifest, text.as_bytes(), signature.as_deref(), keys);
            if let Err(why) = checked {
                found.findings.push(format!(
                    "retirement {id} of {}: {why}: its records count as missing",
                    manifest.partition
                ));
                continue;
            }
            true
        };
        found.trusted.push(Retirement {
            id,
            retired_at,
            manifest,
            signature_checked,
        });
    }
    Ok(found)
}
