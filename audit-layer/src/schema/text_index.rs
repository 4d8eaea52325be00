//! The optional trigram index on `message`, for substring search.
//!
//! Without it, a search for a rare substring (auditd's `q`) reads the table newest first
//! until it has a page: hundreds of milliseconds on 10 million rows. With it, the search is
//! an index lookup. It is not among the migrations because it costs every write: ingest
//! measured about 40 % slower with it (BENCHMARKS.md). Whoever needs fast text search more
//! than the last part of write throughput creates it with `auditd text-index`, or [`create`].
//!
//! It is built without blocking writers, partition by partition, each `CONCURRENTLY` (as
//! migration 0011's index swap is): a build cut short is dropped and built again by the next
//! run, and partitions created later get theirs with them.
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

use super::partitioned_index::{without_statement_timeout, PartitionedIndex};
use crate::error::Error;

pub use super::partitioned_index::IndexBuildReport as TextIndexReport;

/// The parent table's trigram index; each partition's is named after the partition.
pub const INDEX_NAME: &str = "audit_logs_message_trgm";

const TRIGRAM: PartitionedIndex = PartitionedIndex {
    name: INDEX_NAME,
    partition_suffix: "message_trgm",
    definition: "USING gin (message gin_trgm_ops)",
};

/// Creates the trigram index on `audit_logs.message`, partition by partition, without
/// blocking writers. Idempotent: a second run finds nothing to do.
///
/// Needs the table owner's role and `pg_trgm` (in PostgreSQL's contrib, installed with the
/// server on most systems; a trusted extension, so the database owner may create it). Each
/// partition's build reads the whole partition: expect minutes on tens of millions of rows.
/// Progress is logged (tracing target `audit_layer::schema::partitioned_index`) as each
/// partition is done.
pub async fn create(client: &Client) -> Result<TextIndexReport, Error> {
    without_statement_timeout(client, async {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .await?;
        TRIGRAM
            .build(client)
            .await?
            .ok_or_else(|| Error::TableBusy {
                step: "creating the trigram index on audit_logs from its partitions' own".into(),
            })
    })
    .await
}

/// Drops the trigram index from the table and every partition, including indexes an
/// interrupted [`create`] left unattached or invalid. Returns whether there was any.
///
/// Dropping the parent's index takes a lock that makes writers wait a moment (nothing is
/// rebuilt); the leftovers are dropped `CONCURRENTLY`.
pub async fn remove(client: &Client) -> Result<bool, Error> {
    TRIGRAM.remove(client).await
}

/// Whether the trigram index exists and serves every partition.
pub async fn is_complete(client: &Client) -> Result<bool, Error> {
    TRIGRAM.is_complete(client).await
}
