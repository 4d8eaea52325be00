//! Which schema version a database is at, and which this binary knows: asked by migrating,
//! by the index swaps (which build what a migration left to them), and by processes that
//! do not migrate but want to fail early.

use tokio_postgres::Client;

use crate::error::Error;

/// The highest migration version this binary knows.
pub fn latest_version() -> i32 {
    audit_migrations::latest_version()
}

/// The schema version recorded in the database (0 when never migrated), checked against
/// what this binary knows. For processes that do not migrate but want to fail early.
pub async fn schema_version(client: &Client) -> Result<i32, Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('audit_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM audit_schema_migrations", &[])
        .await?
        .get(0);
    let version = version.unwrap_or(0);
    if version > latest_version() {
        return Err(Error::SchemaTooNew {
            database: version,
            known: latest_version(),
        });
    }
    Ok(version)
}
