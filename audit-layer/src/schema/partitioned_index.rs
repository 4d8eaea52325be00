//! An index on `audit_logs` built partition by partition, without blocking writers.
//!
//! `CREATE INDEX` on the partitioned table would hold off every write while it reads every
//! partition. Instead: an index on the parent table alone (`ON ONLY`, invalid, and cheap),
//! then each partition's own index `CONCURRENTLY`, attached to it as soon as it is ready.
//! Once every partition has one, PostgreSQL marks the parent's valid, and partitions
//! created later get theirs with them. A build cut short (a lost connection, a cancelled
//! command) leaves an invalid index behind, which the next run drops and builds again.
//! The trigram index (`text_index`) and the index swaps of migrations too large for a
//! transaction (`index_swap`) are both built this way.

use tokio_postgres::Client;

use crate::error::Error;

/// What building an index partition by partition did (the trigram index, the swaps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexBuildReport {
    /// Partitions whose index was built in this run, in the order they were built.
    pub built: Vec<String>,
    /// Invalid indexes left by an earlier, interrupted build, dropped and built again.
    pub rebuilt: Vec<String>,
}

/// An index of `audit_logs`: the parent's name, the suffix of each partition's, and what
/// follows `ON table` in `CREATE INDEX` (method, columns, predicate). Every part is a
/// constant of this crate, never input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionedIndex {
    pub name: &'static str,
    pub partition_suffix: &'static str,
    pub definition: &'static str,
}

/// Partitions of `audit_logs` without an index attached to the parent index `$1`.
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

impl PartitionedIndex {
    /// Declares the index on the parent table, then builds and attaches each partition's
    /// that is missing. Idempotent: a second run finds nothing to do.
    pub(crate) async fn build(&self, client: &Client) -> Result<IndexBuildReport, Error> {
        client
            .batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON ONLY audit_logs {}",
                ident(self.name),
                self.definition
            ))
            .await?;
        self.build_missing(client).await
    }

    /// Builds and attaches the index of each partition that lacks one, newest first, for
    /// a parent index that exists already.
    pub(crate) async fn build_missing(&self, client: &Client) -> Result<IndexBuildReport, Error> {
        let mut report = IndexBuildReport::default();
        // A partition created while this runs gets its index from the parent's; the loop
        // sees it as done. One that appears without one is picked up by the next round.
        loop {
            let missing: Vec<String> = client
                .query(MISSING, &[&self.name])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if missing.is_empty() {
                return Ok(report);
            }
            for partition in missing {
                let index = self.partition_index_name(&partition);
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
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}",
                        ident(&index),
                        ident(&partition),
                        self.definition
                    ))
                    .await?;
                client
                    .batch_execute(&format!(
                        "ALTER INDEX {} ATTACH PARTITION {}",
                        ident(self.name),
                        ident(&index)
                    ))
                    .await?;
                tracing::info!(partition = %partition, index = %index, "partition's index built");
                report.built.push(partition);
            }
        }
    }

    /// Drops the index from the table and every partition, including indexes an
    /// interrupted build left unattached or invalid. Returns whether there was any.
    ///
    /// Dropping the parent's index takes a lock that makes writers wait a moment (nothing
    /// is rebuilt); the leftovers are dropped `CONCURRENTLY`.
    pub(crate) async fn remove(&self, client: &Client) -> Result<bool, Error> {
        let existed = self.exists(client).await?;
        client
            .batch_execute(&format!("DROP INDEX IF EXISTS {}", ident(self.name)))
            .await?;
        let leftovers: Vec<String> = client
            .query(PARTITIONS, &[])
            .await?
            .iter()
            .map(|row| self.partition_index_name(&row.get::<_, String>(0)))
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

    /// Whether the parent's index exists (valid or not yet).
    pub(crate) async fn exists(&self, client: &Client) -> Result<bool, Error> {
        Ok(client
            .query_opt(INDEX_STATE, &[&self.name])
            .await?
            .is_some())
    }

    /// Whether the index exists and serves every partition.
    pub(crate) async fn is_complete(&self, client: &Client) -> Result<bool, Error> {
        Ok(client
            .query_opt(INDEX_STATE, &[&self.name])
            .await?
            .is_some_and(|row| row.get::<_, bool>(0)))
    }

    /// The name of a partition's index: the partition's name with the suffix, cut to
    /// PostgreSQL's 63-byte limit as the server itself would cut it.
    fn partition_index_name(&self, partition: &str) -> String {
        let mut name = format!("{partition}_{}", self.partition_suffix);
        if name.len() > MAX_IDENTIFIER_BYTES {
            let mut cut = MAX_IDENTIFIER_BYTES;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }
}

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
