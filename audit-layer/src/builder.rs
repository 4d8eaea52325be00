//! Configuring and starting the pipeline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tracing::Subscriber;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::capture::{Redactor, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SECRET_PATTERNS};
use crate::delivery::{Sink, Spool, Writer, WriterConfig};
use crate::error::Error;
use crate::handle::AuditHandle;
use crate::layer::{AuditFilter, AuditLayer, DEFAULT_TARGET};
use crate::pool::{connect_pool, PoolOptions};
use crate::queue::{OverflowPolicy, RecordSender, Sequence};
use crate::stats::Counters;
use crate::submit::SubmissionSettings;

/// Spool segments are this big at most, so replayed space is given back as replay goes.
const SPOOL_SEGMENT_BYTES: u64 = 64 << 20;

/// Longer settings are cut to this: a day is longer than anyone means, and adding
/// `Duration::MAX` to an `Instant` would overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The layer as added to a subscriber: [`AuditLayer`] behind its per-layer [`AuditFilter`].
pub type FilteredAuditLayer<S> = Filtered<AuditLayer, AuditFilter, S>;

enum Database {
    Url(String),
    Pool(Pool),
}

/// Configures an [`AuditLayer`] and its writer. Every setting has a default chosen for high
/// throughput and sub-second latency; only the database is required.
///
/// ```no_run
/// use std::time::Duration;
/// use tracing_subscriber::prelude::*;
///
/// # async fn run() -> Result<(), audit_layer::Error> {
/// let (audit, handle) = audit_layer::AuditLayer::builder()
///     .database_url("postgres://app@localhost/app")
///     .batch_size(4096)
///     .batch_max_wait(Duration::from_millis(200))
///     .build()?;
/// tracing_subscriber::registry().with(audit).init();
///
/// tracing::info!(target: "audit", event_type = "system", username = "system", "Started");
/// handle.shutdown(Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct AuditLayerBuilder {
    database: Option<Database>,
    pool_options: PoolOptions,
    queue_capacity: usize,
    writer: WriterConfig,
    db_timeout: Duration,
    secret_patterns: Vec<String>,
    max_message_bytes: usize,
    target: String,
    drop_flush_timeout: Duration,
    overflow: OverflowPolicy,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: u64,
    integrity: bool,
    clock: Option<fn() -> DateTime<Utc>>,
}

/// A random positive id for this layer's stream of records.
fn new_stream_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mixing in the time and pid separates layers
    // created in the same process and processes started at the same instant.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 1) as i64
}

impl Default for AuditLayerBuilder {
    fn default() -> Self {
        AuditLayerBuilder {
            database: None,
            pool_options: PoolOptions {
                // One per batch in flight, and one for keeping a rejected record.
                max_size: 3,
                ..PoolOptions::default()
            },
            queue_capacity: 65_536,
            writer: WriterConfig {
                batch_size: 8192,
                batch_max_wait: Duration::from_millis(200),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_secs(5),
                run_migrations: false,
                migrate_timeout: Duration::from_secs(60),
                max_in_flight: 2,
                discard: false,
            },
            db_timeout: Duration::from_secs(10),
            secret_patterns: DEFAULT_SECRET_PATTERNS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            target: DEFAULT_TARGET.to_owned(),
            drop_flush_timeout: Duration::from_secs(5),
            overflow: OverflowPolicy::Drop,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            integrity: true,
            clock: None,
        }
    }
}

impl AuditLayer {
    /// Starts configuring a layer.
    pub fn builder() -> AuditLayerBuilder {
        AuditLayerBuilder::default()
    }
}

impl AuditLayerBuilder {
    /// The database to write to, as a `postgres://` URL or `key=value` string. The writer
    /// builds its own pool, with bounded timeouts (see [`pool_options`](Self::pool_options)).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database = Some(Database::Url(url.into()));
        self
    }

    /// Writes through a pool the application already has, instead of a URL. Set its
    /// timeouts: deadpool's default is to wait forever.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.database = Some(Database::Pool(pool));
        self
    }

    /// Pool settings used with [`database_url`](Self::database_url). Default: 3 connections,
    /// 5 s wait, create and recycle timeouts.
    pub fn pool_options(mut self, options: PoolOptions) -> Self {
        self.pool_options = options;
        self
    }

    /// Records held in memory between the application and the writer. Default 65,536.
    /// When full, new records are counted as dropped rather than blocking the caller.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Most records per `COPY`. Default 8,192.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.writer.batch_size = size.max(1);
        self
    }

    /// Most batches written at once, each over its own connection. Default 2: while
    /// PostgreSQL ingests one `COPY`, the next streams in, so the server uses more than one
    /// core. The pool needs at least this many connections.
    pub fn max_in_flight(mut self, batches: usize) -> Self {
        self.writer.max_in_flight = batches.max(1);
        self
    }

    /// Longest time a record waits for its batch to fill. Default 200 ms; at most a day.
    pub fn batch_max_wait(mut self, wait: Duration) -> Self {
        self.writer.batch_max_wait = wait.min(MAX_DURATION);
        self
    }

    /// Longest time any one database call may take before it is abandoned and retried.
    /// Default 10 s.
    pub fn db_timeout(mut self, timeout: Duration) -> Self {
        self.db_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// Backoff between retries: starts at `initial`, doubles, never exceeds `max`.
    /// Default 100 ms to 5 s.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.writer.retry_initial = initial.min(MAX_DURATION);
        self.writer.retry_max = max.max(initial).min(MAX_DURATION);
        self
    }

    /// Whether the writer applies the schema migrations (and partition upkeep) before its
    /// first write. Default `false`: the schema belongs to `auditd migrate`, and an
    /// application whose role may only insert must not need DDL rights. When it is on and
    /// fails for lack of rights, the writer reports it and writes anyway.
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.writer.run_migrations = run;
        self
    }

    /// Field-name patterns whose values are stored as `"[REDACTED]"`; matching ignores
    /// ASCII case, `_` and `-`. Replaces the default list
    /// ([`DEFAULT_SECRET_PATTERNS`](crate::DEFAULT_SECRET_PATTERNS)).
    pub fn secret_patterns<I, P>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.secret_patterns = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Cap on `message`, and on each metadata text value, in bytes. Default 64 KiB; longer
    /// values are cut at a character boundary and the record is marked.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max.max(4);
        self
    }

    /// The tracing target of audit events. Default `"audit"`; sub-targets such as
    /// `"audit::auth"` are included.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// How long dropping the [`AuditHandle`] outside an async runtime may wait for the
    /// flush. Default 5 s.
    pub fn drop_flush_timeout(mut self, timeout: Duration) -> Self {
        self.drop_flush_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// What happens to a record when the queue is full. Default [`OverflowPolicy::Drop`]:
    /// the caller never waits; the loss is counted, recorded as an `audit_dropped` record
    /// and visible as a gap in the stream's `seq`.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = match policy {
            OverflowPolicy::Block(wait) => OverflowPolicy::Block(wait.min(MAX_DURATION)),
            drop => drop,
        };
        self
    }

    /// Keeps batches the database cannot take in files under `dir` (created if needed), and
    /// replays them once it can, in order, including after a restart. Off by default.
    /// Use a directory of this process's own: the spool locks it, and `build` fails when
    /// another process holds it.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Most bytes the spool may hold on disk. Default 1 GiB; beyond it batches wait in
    /// memory, and then the overflow policy applies.
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool_max_bytes = bytes;
        self
    }

    /// Whether each batch commits its records' hashes and their Merkle root in its ledger
    /// row, so that a verifier can prove every stored record unchanged (on by default: an
    /// audit log should not need to be asked). Hashing runs on the writer thread, never on
    /// the emitting one. Needs migration 4 (`audit_layer::schema::migrate`).
    ///
    /// ```
    /// let builder = audit_layer::AuditLayer::builder()
    ///     .database_url("postgres://app@localhost/app")
    ///     .integrity(false);
    /// # drop(builder);
    /// ```
    pub fn integrity(mut self, on: bool) -> Self {
        self.integrity = on;
        self
    }

    /// The time stamped on each record as it is emitted; the system clock unless set. For
    /// tests of what depends on a record's age (retention, partitions) and for tools that
    /// replay history; a service has no reason to set it.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    ///
    /// fn fourteen_months_ago() -> DateTime<Utc> {
    ///     Utc::now() - chrono::Months::new(14)
    /// }
    /// let builder = audit_layer::AuditLayer::builder()
    ///     .database_url("postgres://app@localhost/app")
    ///     .clock(fourteen_months_ago);
    /// # drop(builder);
    /// ```
    pub fn clock(mut self, now: fn() -> DateTime<Utc>) -> Self {
        self.clock = Some(now);
        self
    }

    /// For benchmarks of the emitting side: the writer takes records off the queue as usual
    /// and counts them as written without touching the database. Never use it otherwise.
    #[doc(hidden)]
    pub fn discard_records_for_benchmarks(mut self) -> Self {
        self.writer.discard = true;
        self
    }

    /// Starts the writer thread and returns the layer to add to a subscriber, and the
    /// handle to flush and shut down. Needs no async runtime: the writer brings its own.
    pub fn build<S>(self) -> Result<(FilteredAuditLayer<S>, AuditHandle), Error>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let pool = match self.database {
            Some(Database::Pool(pool)) => pool,
            Some(Database::Url(url)) => connect_pool(&url, &self.pool_options)?,
            None => {
                return Err(Error::Config(
                    "no database: call database_url() or pool() on the builder".to_owned(),
                ))
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("audit-writer")
            .build()
            .map_err(Error::Spawn)?;
        let spool = match &self.spool_dir {
            Some(dir) => Some(
                Spool::open(dir, self.spool_max_bytes, SPOOL_SEGMENT_BYTES).map_err(|e| {
                    Error::Config(format!(
                        "cannot open the spool directory {}: {e}",
                        dir.display()
                    ))
                })?,
            ),
            None => None,
        };
        let counters = Arc::new(Counters::default());
        let seq = Arc::new(Sequence::default());
        let stream_id = new_stream_id();
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let writer = Writer::new(
            rx,
            Sink::new(pool, self.db_timeout, self.integrity),
            counters.clone(),
            seq.clone(),
            stream_id,
            spool,
            self.writer,
        );
        std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || runtime.block_on(writer.run()))
            .map_err(Error::Spawn)?;

        let target: Arc<str> = self.target.into();
        static NEXT_LAYER_ID: AtomicUsize = AtomicUsize::new(0);
        let layer = AuditLayer {
            id: NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed),
            sender: RecordSender::new(tx.clone(), counters.clone(), seq.clone(), self.overflow),
            redactor: Redactor::new(&self.secret_patterns),
            target: target.clone(),
            max_message_bytes: self.max_message_bytes,
            counters: counters.clone(),
            clock: self.clock,
            #[cfg(feature = "opentelemetry")]
            otel: crate::trace::Subscriber::default(),
        };
        let handle = AuditHandle {
            tx,
            counters,
            stream_id,
            drop_flush_timeout: self.drop_flush_timeout,
            stopped: AtomicBool::new(false),
            seq: seq.clone(),
            submitted: Arc::new(tokio::sync::Semaphore::new(self.queue_capacity)),
            submissions: SubmissionSettings {
                redactor: layer.redactor.clone(),
                max_value_bytes: self.max_message_bytes,
                clock: self.clock,
            },
        };
        Ok((layer.with_filter(AuditFilter::new(target)), handle))
    }
}
