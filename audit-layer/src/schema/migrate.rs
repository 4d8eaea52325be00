//! Applying the schema: the numbered SQL files of `audit-migrations`, in order.
//!
//! Applying is safe when several processes start at once: everything happens in one
//! transaction that first takes an advisory lock, so one process applies and the others
//! wait, then find nothing left to do. Each applied migration is recorded with a checksum
//! in `audit_schema_migrations`; a database carrying a migration this binary does not know
//! is refused, and so is one whose recorded migration differs from the embedded file.

use tokio_postgres::Client;

use audit_migrations::{Migration, MIGRATIONS};

use super::partitions;
use crate::error::Error;

/// The advisory lock key that serialises migrations ("audit" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_7564_6974;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Versions applied by this call, in order (empty when the schema was current).
    pub applied: Vec<i32>,
    /// The schema version now.
    pub version: i32,
    /// Partitions created by the upkeep that follows migrating.
    pub partitions_created: i32,
    /// A migration left an index to build partition by partition, without blocking
    /// writers, on a table too large to build it in its transaction: run
    /// [`complete_index_swaps`](super::complete_index_swaps) (as `auditd migrate` does).
    /// Until then the index it replaces serves the queries.
    pub index_swaps_pending: bool,
}

/// Brings the schema up to date, then makes sure partitions exist ahead of time.
///
/// Needs a role that may create tables. Applications whose role may only insert leave
/// this to `auditd migrate` and never call it.
pub async fn migrate(client: &Client) -> Result<MigrationReport, Error> {
    migrate_to(client, MIGRATIONS).await
}

/// [`migrate`] with an explicit list, so that tests can play an older or newer binary.
#[doc(hidden)]
pub async fn migrate_to(
    client: &Client,
    migrations: &[Migration],
) -> Result<MigrationReport, Error> {
    client.batch_execute("BEGIN").await?;
    match apply_pending(client, migrations).await {
        Ok((applied, version)) => {
            client.batch_execute("COMMIT").await?;
            let partitions_created =
                partitions::ensure_partitions(client, partitions::DEFAULT_MONTHS_AHEAD).await?;
            Ok(MigrationReport {
                applied,
                version,
                partitions_created,
                index_swaps_pending: super::index_swap::pending(client, version).await?,
            })
        }
        Err(e) => {
            // The original error matters more than a failed rollback on a broken connection.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn apply_pending(
    client: &Client,
    migrations: &[Migration],
) -> Result<(Vec<i32>, i32), Error> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS audit_schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   bigint NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM audit_schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let known = migrations.last().map_or(0, |m| m.version);
    let mut current = 0;
    for row in &rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let checksum: i64 = row.get(2);
        if version > known {
            return Err(Error::SchemaTooNew {
                database: version,
                known,
            });
        }
        match migrations.iter().find(|m| m.version == version) {
            Some(m) if checksum_of(m.sql) == checksum => {}
            _ => return Err(Error::MigrationChanged { version, name }),
        }
        current = current.max(version);
    }
    let mut applied = Vec::new();
    let already = current;
    for m in migrations.iter().filter(|m| m.version > already) {
        client.batch_execute(m.sql).await?;
        client
            .execute(
                "INSERT INTO audit_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &checksum_of(m.sql)],
            )
            .await?;
        applied.push(m.version);
        current = m.version;
    }
    Ok((applied, current))
}

/// FNV-1a, 64 bits: enough to notice an edited migration, with no dependency.
fn checksum_of(sql: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}
