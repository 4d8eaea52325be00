//! What every example needs before it can show the layer: a migrated PostgreSQL (your
//! `DATABASE_URL`, or a throwaway one), and a way to print what was stored. None of this
//! is needed in an application, whose database already exists.

use audit_layer::{AuditLog, RECORD_COLUMNS};
use pg_provision::{ClusterOptions, Postgres};
use tokio_postgres::NoTls;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A database with the audit schema; a throwaway one is removed when this is dropped.
pub struct ExampleDb {
    pub url: String,
    _server: Postgres,
}

pub async fn database() -> Result<ExampleDb, Error> {
    let server =
        tokio::task::spawn_blocking(|| Postgres::from_env_or_throwaway(&ClusterOptions::default()))
            .await??;
    let url = server.url().to_owned();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    audit_layer::schema::migrate(&client).await?;
    Ok(ExampleDb {
        url,
        _server: server,
    })
}

/// Prints the newest `limit` records, oldest first.
pub async fn print_records(url: &str, limit: i64) -> Result<(), Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let sql = format!(
        "SELECT * FROM (SELECT id, {RECORD_COLUMNS} FROM audit_logs \
         ORDER BY created_at DESC, id DESC LIMIT $1) newest ORDER BY created_at, id"
    );
    for row in client.query(&sql, &[&limit]).await? {
        let log = AuditLog::from_row(&row)?;
        let metadata = if log.metadata.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(log.metadata.clone()).to_string()
        };
        println!(
            "{:>3} {:<8} {:<15} {:<8} ip={:<15} resource={}/{} {:?} {}",
            row.get::<_, i64>("id"),
            log.severity,
            log.event_type,
            log.username,
            log.ip_address
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into()),
            log.resource_type.as_deref().unwrap_or("-"),
            log.resource_name.as_deref().unwrap_or("-"),
            log.message,
            metadata
        );
    }
    Ok(())
}
