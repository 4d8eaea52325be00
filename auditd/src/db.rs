//! One plain database connection, for the commands that make a few calls and exit and
//! for the sealer, which holds one of its own (a seal is one transaction, outside the
//! query pool so that readers never wait for it).

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// Connects, waiting at most `timeout`; the connection's failure is logged when it ends.
pub async fn connect(url: &str, timeout: Duration) -> Result<Client> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(timeout, connecting)
        .await
        .with_context(|| format!("no answer from the database within {timeout:?}"))?
        .context("cannot connect to the database")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}
