//! Keeping monthly partitions ahead of time.
//!
//! The routine itself is the SQL function `audit_logs_ensure_partitions` (migration 0001),
//! so that psql, pg_cron, the migration step and auditd all run the same code. It needs
//! the table owner's rights; an application whose role may only insert never calls it, and
//! still writes: rows for a month without a partition land in `audit_logs_default` until
//! the next upkeep moves them.

use tokio_postgres::Client;

use crate::error::Error;

/// How many months after the current one get a partition by default.
pub const DEFAULT_MONTHS_AHEAD: i32 = 2;

/// Creates the partitions for the current month and `months_ahead` months after it.
///
/// Returns how many partitions were created (0 when all existed).
pub async fn ensure_partitions(client: &Client, months_ahead: i32) -> Result<i32, Error> {
    let row = client
        .query_one(
            "SELECT audit_logs_ensure_partitions(now(), $1)",
            &[&months_ahead],
        )
        .await?;
    Ok(row.get(0))
}
