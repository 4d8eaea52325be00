//! An index on `audit_logs` built partition by partition, without blocking writers.
//!
//! `CREATE INDEX` on the partitioned table would hold off every write while it read every
//! partition. Instead each partition gets its own index first, `CONCURRENTLY`, as a plain
//! index of that table; then one short transaction creates the parent's index, which
//! PostgreSQL builds by adopting those (nothing is read again), valid at once, and
//! inherited by partitions created later. (Declaring the parent's index first, `ON ONLY`,
//! and attaching each partition's as it is built, would leave it invalid for good if a
//! partition still without one left the table meanwhile, as retention's detach does:
//! PostgreSQL re-checks validity only when an index is attached.) A build cut short (a lost
//! connection, a cancelled command) leaves an invalid index behind, which the next run
//! drops and builds again. The trigram index (`text_index`) and the index swaps of
//! migrations too large for a transaction (`index_swap`) are both built this way.

use std::time::Duration;

use tokio_postgres::error::SqlState;
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

/// Every partition of `audit_logs`, newest first.
const PARTITIONS: &str = "\
    SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
    WHERE i.inhparent = 'audit_logs'::regclass ORDER BY c.relname DESC";

/// Whether an index of this name exists next to `audit_logs`, and is valid.
const INDEX_STATE: &str = "\
    SELECT x.indisvalid FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid \
    WHERE c.relname = $1 \
      AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'audit_logs'::regclass)";

/// How one try of a short-locked step ended.
enum Attempt {
    Committed,
    Busy,
    PartitionWithoutIndex,
}

/// How long the last step waits for each of its locks, and how often it tries, a second
/// apart, before leaving the step to the next run: writers queue behind a lock request,
/// so it must not wait long.
pub(crate) const LOCK_TIMEOUT: &str = "200ms";
pub(crate) const LOCK_ATTEMPTS: u32 = 10;

impl PartitionedIndex {
    /// Builds the index: each partition's that is missing, `CONCURRENTLY`, then the parent's
    /// (adopting them) in a short transaction. Long builds must not be cut short by the
    /// session's `statement_timeout`: run it [`without_statement_timeout`]. Idempotent: once
    /// the parent's index exists and is valid, there is nothing to do. `Ok(None)` when the
    /// last step's locks were not granted within its tries: the partitions' indexes are
    /// kept, and the next run takes the step again.
    pub(crate) async fn build(&self, client: &Client) -> Result<Option<IndexBuildReport>, Error> {
        let mut report = IndexBuildReport::default();
        match self.state(client).await? {
            Some(true) => return Ok(Some(report)),
            Some(false) => {
                // Declared on the parent alone by the trigram index's earlier releases (ON
                // ONLY): start over, since it cannot be made valid if a partition without
                // one has left.
                if !self
                    .with_short_locks(client, &format!("DROP INDEX {}", ident(self.name)))
                    .await?
                {
                    return Ok(None);
                }
                report.rebuilt.push(self.name.to_owned());
            }
            None => {}
        }
        // The parent's index is created with the table locked against writes and attaches
        // (SHARE) for a moment, once every partition is seen to have its own: it then only
        // adopts them. A partition that appeared since the last round (an attach, upkeep)
        // would be built under that lock instead: seen, the transaction is rolled back, and
        // the loop builds that partition's first.
        let suffix = self.partition_suffix;
        let parent = format!(
            "LOCK TABLE audit_logs IN SHARE MODE; \
             DO $$ BEGIN IF EXISTS ( \
                 SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'audit_logs'::regclass AND NOT EXISTS ( \
                     SELECT FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid \
                     WHERE x.indrelid = c.oid AND x.indisvalid \
                       AND ic.relname = left(c.relname || '_{suffix}', {MAX_IDENTIFIER_BYTES}))) \
             THEN RAISE EXCEPTION 'a partition without its own index' \
                  USING ERRCODE = 'object_not_in_prerequisite_state'; \
             END IF; END $$; \
             CREATE INDEX {} ON audit_logs {}",
            ident(self.name),
            self.definition
        );
        for _ in 0..LOCK_ATTEMPTS {
            self.build_missing(client, &mut report).await?;
            match self.try_with_short_locks(client, &parent).await? {
                Attempt::Committed => return Ok(Some(report)),
                Attempt::PartitionWithoutIndex => continue,
                Attempt::Busy => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        Ok(None)
    }

    /// Builds, `CONCURRENTLY`, each partition's index that is missing or invalid, until a
    /// round finds none (a partition created meanwhile is picked up by the next round).
    async fn build_missing(
        &self,
        client: &Client,
        report: &mut IndexBuildReport,
    ) -> Result<(), Error> {
        loop {
            let mut missing = Vec::new();
            for partition in self.partitions(client).await? {
                let index = self.partition_index_name(&partition);
                match client
                    .query_opt(INDEX_STATE, &[&index])
                    .await?
                    .map(|row| row.get::<_, bool>(0))
                {
                    Some(true) => {}
                    Some(false) => {
                        // Left by a build that did not finish; it would never be usable.
                        client
                            .batch_execute(&format!(
                                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                                ident(&index)
                            ))
                            .await?;
                        report.rebuilt.push(index.clone());
                        missing.push((partition, index));
                    }
                    None => missing.push((partition, index)),
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            for (partition, index) in missing {
                client
                    .batch_execute(&format!(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}",
                        ident(&index),
                        ident(&partition),
                        self.definition
                    ))
                    .await?;
                tracing::info!(partition = %partition, index = %index, "partition's index built");
                report.built.push(partition);
            }
        }
    }

    /// Runs `sql` in a transaction whose every lock is waited for at most
    /// [`LOCK_TIMEOUT`], up to [`LOCK_ATTEMPTS`] times a second apart; whether it committed.
    pub(crate) async fn with_short_locks(&self, client: &Client, sql: &str) -> Result<bool, Error> {
        for _ in 0..LOCK_ATTEMPTS {
            match self.try_with_short_locks(client, sql).await? {
                Attempt::Committed => return Ok(true),
                Attempt::Busy => tokio::time::sleep(Duration::from_secs(1)).await,
                Attempt::PartitionWithoutIndex => {
                    return Err(Error::Config(format!(
                        "{}: a partition without its own index",
                        self.name
                    )))
                }
            }
        }
        tracing::warn!(
            index = self.name,
            "a long query or transaction holds audit_logs; the index's last step is left \
             to the next run"
        );
        Ok(false)
    }

    async fn try_with_short_locks(&self, client: &Client, sql: &str) -> Result<Attempt, Error> {
        let done = client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; {sql}; COMMIT"
            ))
            .await;
        let Err(e) = done else {
            return Ok(Attempt::Committed);
        };
        // The failed transaction must end before the connection is used again (and the
        // first error is the one that tells).
        let _ = client.batch_execute("ROLLBACK").await;
        match e.code() {
            Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::info!(index = self.name, "audit_logs busy; trying again");
                Ok(Attempt::Busy)
            }
            Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => Ok(Attempt::PartitionWithoutIndex),
            _ => Err(e.into()),
        }
    }

    /// Drops the index from the table and every partition, including the partitions' own
    /// indexes an interrupted build left. Returns whether there was any.
    ///
    /// Dropping the parent's index takes a lock that makes writers wait a moment (nothing
    /// is rebuilt); the leftovers are dropped `CONCURRENTLY`.
    pub(crate) async fn remove(&self, client: &Client) -> Result<bool, Error> {
        let existed = self.state(client).await?.is_some();
        client
            .batch_execute(&format!("DROP INDEX IF EXISTS {}", ident(self.name)))
            .await?;
        let mut removed_leftover = false;
        for partition in self.partitions(client).await? {
            let index = self.partition_index_name(&partition);
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

    /// Whether the parent's index exists, and if so whether it is valid.
    async fn state(&self, client: &Client) -> Result<Option<bool>, Error> {
        Ok(client
            .query_opt(INDEX_STATE, &[&self.name])
            .await?
            .map(|row| row.get(0)))
    }

    /// Whether the index exists and serves every partition.
    pub(crate) async fn is_complete(&self, client: &Client) -> Result<bool, Error> {
        Ok(self.state(client).await? == Some(true))
    }

    async fn partitions(&self, client: &Client) -> Result<Vec<String>, Error> {
        Ok(client
            .query(PARTITIONS, &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// The name of a partition's index: the partition's name with the suffix, cut to
    /// PostgreSQL's 63-byte limit as the server itself would cut it.
    fn partition_index_name(&self, partition: &str) -> String {
        cut_to_identifier(format!("{partition}_{}", self.partition_suffix))
    }
}

/// `name` cut to PostgreSQL's 63-byte limit as the server itself would cut it.
fn cut_to_identifier(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

/// Builds on `table` (a month detached from `audit_logs`, about to be attached again) each
/// index of `audit_logs` it lacks, so that the attach adopts them instead of building them
/// while it holds the table against writers: an index created on `audit_logs` while the
/// month was away, such as migration 0011's or the trigram index. Returns the names of
/// `audit_logs`' indexes it built a copy of. `table` is a name from the catalog, quoted
/// here.
///
/// ```no_run
/// # async fn run(client: &tokio_postgres::Client) -> Result<(), audit_layer::Error> {
/// let built = audit_layer::schema::build_indexes_for_attach(client, "audit_logs_2026m01").await?;
/// println!("built {built:?}; now ALTER TABLE audit_logs ATTACH PARTITION ...");
/// # Ok(()) }
/// ```
pub async fn build_indexes_for_attach(client: &Client, table: &str) -> Result<Vec<String>, Error> {
    // An index's definition after USING (method, columns, predicate) is the same text for
    // the parent's and a partition's; constraints' indexes (the primary key) stay with a
    // detached month.
    const DEFINITIONS: &str = "\
        SELECT c.relname::text, split_part(pg_get_indexdef(x.indexrelid), ' USING ', 2) \
        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
        WHERE x.indrelid = $1::text::regclass AND x.indisvalid AND NOT x.indisunique \
        ORDER BY 1";
    let parent = client.query(DEFINITIONS, &[&"audit_logs"]).await?;
    let quoted = ident(table);
    let own: Vec<String> = client
        .query(DEFINITIONS, &[&quoted])
        .await?
        .iter()
        .map(|row| row.get(1))
        .collect();
    let mut built = Vec::new();
    without_statement_timeout(client, async {
        for row in &parent {
            let (name, definition): (String, String) = (row.get(0), row.get(1));
            if definition.is_empty() || own.contains(&definition) {
                continue;
            }
            // Plainly, not CONCURRENTLY: nothing writes to a detached month, and a plain
            // build neither waits for every older snapshot nor leaves an invalid index when
            // cut short. PostgreSQL names it.
            client
                .batch_execute(&format!("CREATE INDEX ON {quoted} USING {definition}"))
                .await?;
            tracing::info!(table, index = %name, "index built before the attach");
            built.push(name);
        }
        Ok(())
    })
    .await?;
    Ok(built)
}

/// Runs `work` with the session's `statement_timeout` off (a pool's connections carry one,
/// which would cancel a partition's build), and puts the setting back afterwards, whatever
/// `work` returned.
pub(crate) async fn without_statement_timeout<T>(
    client: &Client,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let previous: String = client
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await?
        .get(0);
    client.batch_execute("SET statement_timeout = 0").await?;
    let result = work.await;
    let restored = client
        .execute(
            "SELECT set_config('statement_timeout', $1, false)",
            &[&previous],
        )
        .await;
    let value = result?;
    restored?;
    Ok(value)
}

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
