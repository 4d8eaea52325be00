//! One retention run at a time in a database, and no restore beside one: a session-level
//! advisory lock, taken without waiting (the second caller is told, not queued).

use tokio_postgres::Client;

const LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('auditd retention'))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('auditd retention'))";

/// Takes the lock; `false` when another session holds it.
pub(super) async fn try_lock(client: &Client) -> Result<bool, tokio_postgres::Error> {
    client.query_one(LOCK, &[]).await?.try_get(0)
}

/// Gives the lock back (ending the session would too).
pub(super) async fn unlock(client: &Client) {
    let _ = client.execute(UNLOCK, &[]).await;
}
