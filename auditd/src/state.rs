//! The state every handler shares: the database pool, the tokens, the limits, the
//! counters, the shutdown signal, where access records go. Handlers take it as an argument
//! (as axum's `State`) and know nothing of the router.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_layer::AuditHandle;
use deadpool_postgres::{Object, Pool};
use hyper::StatusCode;
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::Dispatch;

use crate::access::{AccessLog, Caller};
use crate::admission::Connections;
use crate::auth::TokenStore;
use crate::http::ApiError;
use crate::idempotency::InFlight;
use crate::metrics::Metrics;
use crate::query::{CommitNotices, Filters, Params, SharedSample};
use crate::rate::RecordRate;
use crate::seal::LogLeaves;

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest time to answer a request (streams: to start answering).
    pub request_timeout: Duration,
    /// Reads served at once; more get 503 at once rather than queueing. Health, metrics
    /// and the OpenAPI document are not counted, so they answer under load.
    pub max_concurrent_requests: usize,
    /// Exports and event streams open at once: each holds a database connection until it
    /// ends, so they are bounded apart from (and below) the pool.
    pub max_streams: usize,
    /// How often a tail checks for newly committed rows.
    pub tail_poll_interval: Duration,
    /// Longest long-poll wait a client may ask for.
    pub max_tail_wait: Duration,
    /// How often an idle event stream sends a keep-alive comment.
    pub stream_keepalive: Duration,
    /// Longest a streamed response (export, event stream) waits for its client to take
    /// the next chunk; then it ends (408 in its access record).
    pub stalled_client_timeout: Duration,
    /// How long one event stream may last; then it ends, and the client reconnects with
    /// `Last-Event-ID` where it left off (browsers do so by themselves). It bounds how long
    /// one client holds one of the `max_streams` slots.
    pub max_stream_duration: Duration,
    /// Connections open at once; one beyond is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Longest a client may take to send a request's headers, and longest a keep-alive
    /// connection may wait idle for its next request (slow-header clients, idle
    /// connections held open).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) read; a larger one is answered
    /// 431 and the connection closed.
    pub max_header_bytes: usize,
    /// How often the message sample that tunes text search is renewed
    /// (`query/text_search.rs`).
    pub text_sample_interval: Duration,
    /// How often the replication lag shown in /metrics is sampled.
    pub replication_sample_interval: Duration,
    /// The bounds of `POST /api/v1/events`.
    pub ingest: IngestLimits,
}

/// The bounds of `POST /api/v1/events`.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest request body; beyond it, 413.
    pub max_body_bytes: usize,
    /// Most records in one request; beyond it, 413.
    pub max_records: usize,
    /// Records a second each token may send (0: no limit); beyond it, 429 with
    /// `Retry-After`.
    pub records_per_second: u64,
    /// How far ahead of auditd's clock a record's `created_at` may be.
    pub max_ahead: Duration,
    /// How far behind it.
    pub max_behind: Duration,
    /// Writes handled at once, apart from the reads' bound (so that writers never take
    /// the readers' slots); beyond it, 503 at once. Each holds its body (up to
    /// `max_body_bytes`) and its parsed records in memory while it is handled.
    pub max_concurrent: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_bytes: 16 << 20,
            max_records: 10_000,
            records_per_second: 50_000,
            max_ahead: audit_layer::DEFAULT_MAX_AHEAD,
            max_behind: audit_layer::DEFAULT_MAX_BEHIND,
            max_concurrent: 16,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 64,
            max_streams: 8,
            tail_poll_interval: Duration::from_millis(250),
            max_tail_wait: Duration::from_secs(60),
            stream_keepalive: Duration::from_secs(15),
            max_stream_duration: Duration::from_secs(3600),
            stalled_client_timeout: Duration::from_secs(30),
            text_sample_interval: Duration::from_secs(600),
            max_connections: 4096,
            max_connections_per_ip: 512,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            replication_sample_interval: Duration::from_secs(5),
            ingest: IngestLimits::default(),
        }
    }
}

/// Everything a request handler may use.
pub struct App {
    /// The database pool for queries (a hot standby's, possibly).
    pub pool: Pool,
    /// The primary's pool, when `pool` is not (see [`App::write_client`]).
    pub write_pool: Option<Pool>,
    /// How far the read database runs behind the write database, for /metrics.
    pub replication: Arc<crate::replication::Replication>,
    /// The bearer tokens in force, replaceable while serving.
    pub tokens: Arc<TokenStore>,
    /// The timeouts, bounds and intervals in force.
    pub limits: Limits,
    /// Request, latency and row counters, rendered at /metrics.
    pub metrics: Metrics,
    permits: Arc<Semaphore>,
    stream_permits: Arc<Semaphore>,
    /// Becomes `true` when the server shuts down: streams and long polls end early.
    pub stopping: watch::Receiver<bool>,
    /// Where access records go.
    pub access: AccessLog,
    /// The access-audit writer, for its counters in /metrics.
    pub audit_handle: Option<Arc<AuditHandle>>,
    /// Commit notices from the audit writers (`None`: tails rely on polling alone).
    pub commit_notices: Option<CommitNotices>,
    /// The open connections, bounded by `limits` (read by the server and by /metrics).
    pub connections: Arc<Connections>,
    /// Messages sampled to tune text search, renewed by the server.
    pub text_sample: Arc<SharedSample>,
    /// The signed log's leaves, held for proofs.
    pub log_leaves: LogLeaves,
    /// The rate of records each token may send.
    pub record_rate: RecordRate,
    /// Idempotency keys of the writes being handled now.
    pub in_flight_keys: InFlight,
    ingest_permits: Arc<Semaphore>,
    narrowed_text_searches: AtomicU64,
}

impl App {
    /// The shared state of a server: `pools` are the query pool and, when it reads from
    /// a standby, the primary's; the concurrency bounds come from `limits`.
    pub fn new(
        (pool, write_pool): (Pool, Option<Pool>),
        tokens: Arc<TokenStore>,
        limits: Limits,
        stopping: watch::Receiver<bool>,
        access_audit: Option<Dispatch>,
        audit_handle: Option<Arc<AuditHandle>>,
        commit_notices: Option<CommitNotices>,
    ) -> Self {
        let record_rate =
            RecordRate::new(limits.ingest.records_per_second, limits.ingest.max_records);
        let ingest_permits = Arc::new(Semaphore::new(limits.ingest.max_concurrent));
        App {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            connections: Connections::new(
                limits.max_connections,
                limits.max_connections_per_ip,
                true,
            ),
            stream_permits: Arc::new(Semaphore::new(limits.max_streams)),
            pool,
            write_pool,
            replication: Arc::default(),
            tokens,
            limits,
            metrics: Metrics::default(),
            stopping,
            access: AccessLog::new(access_audit),
            audit_handle,
            commit_notices,
            text_sample: Arc::default(),
            log_leaves: LogLeaves::default(),
            record_rate,
            in_flight_keys: InFlight::default(),
            ingest_permits,
            narrowed_text_searches: AtomicU64::new(0),
        }
    }

    /// The filters of a request, taken out of `params`, with text search tuned to the
    /// current message sample.
    pub fn filters(&self, params: &mut Params) -> Result<Filters, ApiError> {
        let mut filters = Filters::parse(params)?;
        if filters.narrow_text_search(&self.text_sample.current()) {
            self.narrowed_text_searches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(filters)
    }

    /// A slot for an export or event stream, held until it ends; or 503.
    pub fn stream_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.stream_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("exports and event streams"))
    }

    /// Returns once every export and event stream has ended and written its access record
    /// (each holds its slot until then).
    pub async fn streams_finished(&self) {
        let all = u32::try_from(self.limits.max_streams).unwrap_or(u32::MAX);
        // Acquired and released at once: only the waiting matters.
        let _ = self.stream_permits.acquire_many(all).await;
    }

    /// A pooled connection for a read, or 503.
    pub async fn client(&self) -> Result<Object, ApiError> {
        Self::client_of(&self.pool).await
    }

    /// A pooled connection to the primary, for what must see every commit at once (the
    /// ingest's idempotency lookups), or 503.
    pub async fn write_client(&self) -> Result<Object, ApiError> {
        Self::client_of(self.write_pool.as_ref().unwrap_or(&self.pool)).await
    }

    async fn client_of(pool: &Pool) -> Result<Object, ApiError> {
        pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "no database connection for a request");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "no database connection is available; try again",
            )
        })
    }

    /// A slot among the reads served at once, or `None` when all are taken.
    pub fn read_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A slot among the writes handled at once, or `None` when all are taken.
    pub fn ingest_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.ingest_permits.clone().try_acquire_owned().ok()
    }

    /// Reads being served now.
    pub fn reads_in_flight(&self) -> usize {
        self.limits.max_concurrent_requests - self.permits.available_permits()
    }

    /// Text searches so far whose index lookup was narrowed by the sample.
    pub fn narrowed_text_searches(&self) -> u64 {
        self.narrowed_text_searches.load(Ordering::Relaxed)
    }

    /// Counts the rows a read served and writes its access record.
    pub fn record_read(
        &self,
        caller: &Caller,
        route: &'static str,
        filters: &Value,
        rows: u64,
        status: StatusCode,
    ) {
        self.metrics.rows_served(route, rows);
        self.access.read(caller, route, filters, rows, status);
    }
}
