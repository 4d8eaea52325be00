//! The optional trigram index on `message`, for substring search.
//!
//! Without it, a search for a rare substring (auditd's `q`) reads the table newest first
//! until it has a page: hundreds of milliseconds on 10 million rows. With it, the search is
//! an index lookup. It is not among the migrations because it costs every write: ingest
//! measured about 40 % slower with it (BENCHMARKS.md). Whoever needs fast text search more
//! than the last part of write throughput creates it with `auditd text-index`, or [`create`].
//!
//! It is built without blocking writers: an index on the parent table alone first, then
//! each partition's index `CONCURRENTLY`, attached as soon as it is ready; once every
//! partition has one, PostgreSQL marks the parent's valid, and partitions created later get
//! theirs with them. A build cut short (a lost connection, a cancelled command) leaves an
//! invalid index behind, which the next run drops and builds again.
//!
//! ```no_run
//! # async fn run() -> Result<(), audit_layer::Error> {
//! let (client, connection) =
//!     tokio_postgres::connect("postgres://owner@localhost/app", tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let report = audit_layer::schema::text_index::create(&client).await?;
//! println!("indexed {} partitions", report.built.len());
//! assert!(audit_layer::schema::text_index::is_complete(&client).await?);
//! # Ok(()) }
//! ```

use tokio_postgres::Client;

use crate::error::Error;

/// The parent table's trigram index; each partition's is named after the partition.
pub const INDEX_NAME: &str = "audit_logs_message_trgm";

/// What [`create`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextIndexReport {
    /// Partitions whose index was built in this run, in the order they were built.
    pub built: Vec<String>,
    /// Invalid indexes left by an earlier, interrupted build, dropped and built again.
    pub rebuilt: Vec<String>,
}

/// Partitions of `audit_logs` without an index attached to the parent trigram index.
const MISSING: &str = "\
    SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
    WHERE i.inhparent = 'audit_logs'::regclass AND NOT EXISTS ( \
        SELECT 1 FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid \
        WHERE ii.inhparent = to_regclass($1) AND x.indrelid = c.oid) \
    ORDER BY c.relname DESC";

/// Every partition of `audit_logs`.
const PARTITIONS: &str = "\
    SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
    WHERE i.inhparent = 'audit_logs'::regclass";

/// Whether an index of this name exists next to `audit_logs`, and is valid.
const INDEX_STATE: &str = "\
    SELECT x.indisvalid FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid \
    WHERE c.relname = $1 \
      AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'audit_logs'::regclass)";

/// Creates the trigram index on `audit_logs.message`, partition by partition, without
/// blocking writers. Idempotent: a second run finds nothing to do.
///
/// Needs the table owner's role and `pg_trgm` (in PostgreSQL's contrib, installed with the
/// server on most systems; a trusted extension, so the database owner may create it). Each
/// partition's build reads the whole partition: expect minutes on tens of millions of rows.
/// Progress is logged (tracing target `audit_layer::schema::text_index`) as each partition is done.
pub async fn create(client: &Client) -> Result<TextIndexReport, Error> {
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await?;
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON ONLY audit_logs USING gin (message gin_trgm_ops)",
            ident(INDEX_NAME)
        ))
        .await?;
    let mut report = TextIndexReport::default();
    // A partition created while this runs gets its index from the parent's; the loop
    // sees it as done. One that appears without one is picked up by the next round.
    loop {
        let missing: Vec<String> = client
            .query(MISSING, &[&INDEX_NAME])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if missing.is_empty() {
            break;
        }
        for partition in missing {
            let index = child_index_name(&partition);
            if let Some(valid) = client
                .query_opt(INDEX_STATE, &[&index])
                .await?
                .map(|row| row.get::<_, bool>(0))
            {
                if !valid {
                    // Left by a build that did not finish; it would never become usable.
                    client
                        .batch_execute(&format!("DROP INDEX CONCURRENTLY {}", ident(&index)))
                        .await?;
                    report.rebuilt.push(index.clone());
                }
            }
            client
                .batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING gin (message gin_trgm_ops)",
                    ident(&index),
                    ident(&partition)
                ))
                .await?;
            client
                .batch_execute(&format!(
                    "ALTER INDEX {} ATTACH PARTITION {}",
                    ident(INDEX_NAME),
                    ident(&index)
                ))
                .await?;
            tracing::info!(partition = %partition, index = %index, "trigram index built");
            report.built.push(partition);
        }
    }
    Ok(report)
}

/// Drops the trigram index from the table and every partition, including indexes an
/// interrupted [`create`] left unattached or invalid. Returns whether there was any.
///
/// Dropping the parent's index takes a lock that makes writers wait a moment (nothing is
/// rebuilt); the leftovers are dropped `CONCURRENTLY`.
pub async fn remove(client: &Client) -> Result<bool, Error> {
    let existed = client
        .query_opt(INDEX_STATE, &[&INDEX_NAME])
        .await?
        .is_some();
    client
        .batch_execute(&format!("DROP INDEX IF EXISTS {}", ident(INDEX_NAME)))
        .await?;
    let leftovers: Vec<String> = client
        .query(PARTITIONS, &[])
        .await?
        .iter()
        .map(|row| child_index_name(&row.get::<_, String>(0)))
        .collect();
    let mut removed_leftover = false;
    for index in leftovers {
        if client.query_opt(INDEX_STATE, &[&index]).await?.is_some() {
            client
                .batch_execute(&format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    ident(&index)
                ))
                .await?;
            removed_leftover = true;
        }
    }
    Ok(existed || removed_leftover)
}

/// Whether the trigram index exists and serves every partition.
pub async fn is_complete(client: &Client) -> Result<bool, Error> {
    Ok(client
        .query_opt(INDEX_STATE, &[&INDEX_NAME])
        .await?
        .is_some_and(|row| row.get::<_, bool>(0)))
}

/// The name of a partition's trigram index: the partition's name with a suffix, cut to
/// PostgreSQL's 63-byte limit as the server itself would cut it.
fn child_index_name(partition: &str) -> String {
    let mut name = format!("{partition}_message_trgm");
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
