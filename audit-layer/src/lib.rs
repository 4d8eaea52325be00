//! Audit logging for Rust services: a [`tracing`] layer that writes audit events to
//! PostgreSQL, without ever making the application wait on the database.
//!
//! An application emits audit events with the ordinary tracing macros and the target
//! `audit`; spans carry request context such as the user and the client IP:
//!
//! ```no_run
//! use std::time::Duration;
//! use tracing_subscriber::prelude::*;
//!
//! # async fn run() -> Result<(), audit_layer::Error> {
//! let (audit, handle) = audit_layer::AuditLayer::builder()
//!     .database_url("postgres://app@localhost/app")
//!     .build()?;
//! tracing_subscriber::registry().with(audit).init();
//!
//! let request = tracing::info_span!("request", username = "alice", ip_address = "10.1.2.3");
//! let _guard = request.enter();
//! tracing::info!(target: "audit", event_type = "authentication", "User login");
//! tracing::warn!(
//!     target: "audit",
//!     event_type = "onboarding",
//!     resource_type = "device",
//!     resource_name = "edge-fra1-01",
//!     attempts = 3,
//!     "Device onboarding failed"
//! );
//!
//! handle.shutdown(Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # How a record travels
//!
//! The modules are folders by the stage a record is in:
//!
//! | stage | where | module |
//! |---|---|---|
//! | event fields and span fields are read, secrets replaced, metadata written as JSON, following a plan made once per callsite; values PostgreSQL would refuse are fixed and noted; the record becomes one buffer | emitting thread | `layer`, `capture/` |
//! | the record is numbered and handed to a bounded queue, never waiting; its buffer later comes back for reuse | emitting thread → writer thread | `queue/` |
//! | records are batched by size and time and written with binary `COPY` and a ledger row, exactly once; refused records are isolated; batches the database cannot take wait on disk | writer thread | `delivery/` |
//! | each batch's record hashes and Merkle root committed with it; stored records checked against them | writer thread; a verifier | [`integrity`] |
//! | the schema applied, partitions kept ahead, the optional text index | whoever owns the table | [`schema`] |
//! | records sent as JSON by other processes, written as one batch under an idempotency key | the submitter's task → writer thread | `submit` ([`Submission`]) |
//!
//! Fields named like a column (`username`, `user_id`, `event_type`, `ip_address`,
//! `resource_type`, `resource_id`, `resource_name`, `severity`) fill that column; the
//! event's message is `message`; every other field goes into `metadata` as typed JSON.
//! Severity follows the level (`ERROR` → error, `WARN` → warning, others → info) unless the
//! event sets `severity` (that is how `critical` is written).
//!
//! # Guarantees
//!
//! * Every record reaches PostgreSQL exactly once, through lost connections, crashes and
//!   commits whose answer was lost: each batch commits a row in a ledger under its own key,
//!   and a retry under the same key is refused if the first attempt did commit.
//! * The emitting thread never blocks (with the default [`OverflowPolicy::Drop`]): when the
//!   queue is full the record is dropped, counted ([`Stats::dropped_queue_full`]), and
//!   recorded as an `audit_dropped` record; every record carries a `seq`, so a drop is a
//!   visible gap. With [`AuditLayerBuilder::spool_dir`], batches wait on disk instead.
//! * A record is never refused for its content: NUL bytes, over-long values, unknown
//!   severities, missing fields are fixed on the way in, counted, and noted in the record's
//!   metadata under [`FIXUPS_KEY`].
//! * One bad record never blocks the others: a refused batch is split until the record is
//!   isolated; it is kept in `audit_logs_rejected` with the reason.
//! * Transient failures are retried with capped backoff, and every database call has a
//!   timeout. An application may start while the database is down.
//! * [`AuditHandle::flush`] and [`AuditHandle::shutdown`] return once everything emitted
//!   before them is committed.

#![warn(missing_docs)]

mod builder;
mod capture;
mod delivery;
mod error;
mod handle;
pub mod integrity;
mod layer;
pub mod pool;
mod queue;
mod record;
pub mod schema;
mod stats;
mod submit;
#[cfg(feature = "opentelemetry")]
mod trace;

pub use builder::{AuditLayerBuilder, FilteredAuditLayer};
pub use capture::{
    column_limits, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SECRET_PATTERNS, FIXUPS_KEY, REDACTED,
    RENAMED_FIXUPS_KEY, RENAMED_SENDER_KEY, SENDER_KEY, UNKNOWN,
};
pub use delivery::COMMIT_CHANNEL;
pub use error::{describe_db_error, Error};
pub use handle::AuditHandle;
pub use layer::{AuditFilter, AuditLayer, DEFAULT_TARGET};
pub use queue::OverflowPolicy;
pub use record::{AuditLog, Severity, UnknownSeverity, RECORD_COLUMNS};
pub use stats::Stats;
pub use submit::{
    IdempotencyKey, Outcome, Receipt, Submission, DEFAULT_MAX_AHEAD, DEFAULT_MAX_BEHIND,
};
#[cfg(feature = "opentelemetry")]
pub use trace::{SPAN_ID_KEY, TRACE_ID_KEY};
