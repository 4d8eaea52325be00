//! Records that come from outside tracing: a [`Submission`] of JSON objects, written as
//! one batch under an optional idempotency key, and the [`Receipt`] that says what became
//! of it.
//!
//! This is how auditd's HTTP ingest writes what services in other languages send: each
//! object gets every guarantee an event gets (fix-ups, redaction, the spool, exactly-once,
//! integrity), and a sender that retries because it never saw the answer gets its records
//! committed once. The key is kept in the batch's ledger row (migration 0008), which
//! commits with the records, so a retry is recognised after a restart too, and by any
//! writer of the same database.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::capture::{self, ClockSkew, Draft, Members, Redactor, SENDER_KEY};
use crate::queue::Pending;

/// How far ahead of this process's clock a record's `created_at` may be by default: five
/// minutes, Kerberos's tolerance, well beyond what NTP leaves between servers.
pub const DEFAULT_MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// How far behind it a record's `created_at` may be by default: a day, so that a sender
/// that held records through an outage still files them at their own time.
pub const DEFAULT_MAX_BEHIND: Duration = Duration::from_secs(24 * 3600);

/// The key a batch is committed under, at most once: a sender's retry of a batch already
/// committed is recognised by it and not written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub(crate) key: String,
    pub(crate) digest: [u8; 32],
}

impl IdempotencyKey {
    /// The longest key accepted, in bytes.
    pub const MAX_BYTES: usize = 512;

    /// A key (unique among everything every sender ever sends to this database: scope it,
    /// as auditd does with the sender's token name) and the SHA-256 of what it was sent
    /// with, so that a key reused for different records can be told from a retry.
    ///
    /// Returns `None` for an empty key or one longer than [`MAX_BYTES`](Self::MAX_BYTES).
    ///
    /// ```
    /// use audit_layer::IdempotencyKey;
    ///
    /// assert!(IdempotencyKey::new("billing:7f3e-0001", [0; 32]).is_some());
    /// assert!(IdempotencyKey::new("", [0; 32]).is_none());
    /// ```
    pub fn new(key: impl Into<String>, request_digest: [u8; 32]) -> Option<Self> {
        let key = key.into();
        (!key.is_empty() && key.len() <= Self::MAX_BYTES && !key.contains('\0')).then_some(
            IdempotencyKey {
                key,
                digest: request_digest,
            },
        )
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The SHA-256 of the request it came with.
    pub fn request_digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// Records built from JSON objects, to be written together by
/// [`AuditHandle::submit`](crate::AuditHandle::submit). Made by
/// [`AuditHandle::submission`](crate::AuditHandle::submission), which gives it the layer's
/// redaction, caps and clock.
///
/// ```no_run
/// use serde_json::json;
///
/// # async fn run(handle: audit_layer::AuditHandle) -> Result<(), audit_layer::Error> {
/// let mut submission = handle
///     .submission()
///     .sent_by("billing", Some("10.0.0.7".parse().unwrap()));
/// let record = json!({
///     "username": "alice",
///     "event_type": "authentication",
///     "message": "User login",
///     "metadata": {"method": "password"},
/// });
/// if let serde_json::Value::Object(object) = record {
///     submission.push_object(object);
/// }
/// let receipt = handle.submit(submission).await?;
/// println!("{} records {:?}", receipt.records, receipt.outcome);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Submission {
    pub(crate) records: Vec<Pending>,
    pub(crate) fixups: u64,
    pub(crate) key: Option<IdempotencyKey>,
    sender: Members,
    draft: Draft,
    redactor: Redactor,
    max_value_bytes: usize,
    clock: Option<fn() -> DateTime<Utc>>,
    skew: ClockSkew,
}

impl Submission {
    pub(crate) fn new(
        redactor: Redactor,
        max_value_bytes: usize,
        clock: Option<fn() -> DateTime<Utc>>,
    ) -> Self {
        Submission {
            records: Vec::new(),
            fixups: 0,
            key: None,
            sender: Members::default(),
            draft: Draft::default(),
            redactor,
            max_value_bytes,
            clock,
            skew: ClockSkew {
                ahead: DEFAULT_MAX_AHEAD,
                behind: DEFAULT_MAX_BEHIND,
            },
        }
    }

    /// Commits these records at most once under `key`.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Names who handed these records over, in each record's metadata under
    /// [`SENDER_KEY`](crate::SENDER_KEY) (`{"name": ..., "address": ...}`), apart from the
    /// `username` the record itself names. A record cannot set that member itself: its
    /// own is kept as [`RENAMED_SENDER_KEY`](crate::RENAMED_SENDER_KEY).
    ///
    /// Set it before pushing records: it applies to those pushed after.
    pub fn sent_by(mut self, name: &str, address: Option<IpAddr>) -> Self {
        let mut sender = Map::new();
        sender.insert("name".into(), Value::String(name.to_owned()));
        if let Some(address) = address {
            sender.insert("address".into(), json!(address.to_string()));
        }
        self.sender = Members::default();
        self.sender.key(SENDER_KEY);
        self.sender.0.push_str(&Value::Object(sender).to_string());
        self
    }

    /// How far from this process's clock a record's `created_at` may be: `ahead` of it
    /// (default [`DEFAULT_MAX_AHEAD`]) and `behind` it (default [`DEFAULT_MAX_BEHIND`]).
    /// A time outside, or one that is not RFC 3339, is replaced by the time the record was
    /// pushed, and noted as a fix-up; a record without one is stamped then.
    pub fn max_clock_skew(mut self, ahead: Duration, behind: Duration) -> Self {
        self.skew = ClockSkew { ahead, behind };
        self
    }

    /// Adds a record given as a JSON object: members named like a column
    /// ([`RECORD_COLUMNS`](crate::RECORD_COLUMNS)) fill it, `metadata` (an object) and
    /// every other member go into the metadata, as a tracing event's fields would.
    /// Nothing is refused: what PostgreSQL would refuse is repaired and noted under
    /// [`FIXUPS_KEY`](crate::FIXUPS_KEY), and secrets are redacted. Returns the number of
    /// fix-ups the record needed.
    pub fn push_object(&mut self, object: Map<String, Value>) -> u64 {
        let now = self.clock.map_or_else(Utc::now, |now| now());
        let (record, fixups) = capture::record_of(
            object,
            &mut self.draft,
            &self.redactor,
            self.max_value_bytes,
            &self.sender,
            now,
            self.skew,
        );
        self.records.push(record);
        self.fixups += fixups;
        fixups
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none were pushed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Fix-ups applied to the records pushed so far.
    pub fn fixups(&self) -> u64 {
        self.fixups
    }
}

/// What became of a [`Submission`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// Committed, spooled, or a duplicate of one committed earlier.
    pub outcome: Outcome,
    /// Records submitted.
    pub records: usize,
    /// Of those, records PostgreSQL refused; each is kept in `audit_logs_rejected`.
    pub rejected: usize,
    /// Fix-ups applied to them.
    pub fixups: u64,
    /// The stream their `seq` numbers belong to.
    pub stream_id: i64,
    /// The seq of the first and of the last record (none for an empty submission).
    pub seqs: Option<(i64, i64)>,
}

/// Where a submission's records are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// In `audit_logs` (or, refused by PostgreSQL, in `audit_logs_rejected`).
    Committed,
    /// On disk in the spool, fsynced, to be written in order once the database takes
    /// them, also after a restart.
    Spooled,
    /// Not written: a batch under the same idempotency key was committed before (an
    /// earlier attempt whose answer the sender never saw). An `audit_duplicate_suppressed`
    /// record names the seqs this one had taken.
    Duplicate,
    /// Not written: a batch under the same idempotency key, with other content (another
    /// request digest), was committed before. The key was reused by mistake; an
    /// `audit_submission_refused` record names the seqs this one had taken.
    KeyReused,
}

/// The writer's side of a submission: its records, numbered, and where to report back.
pub(crate) struct Submitted {
    pub(crate) records: Vec<crate::queue::Queued>,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) reply: tokio::sync::oneshot::Sender<BatchFate>,
    /// Its share of the room for submissions, given back once its fate is known.
    pub(crate) held: tokio::sync::OwnedSemaphorePermit,
}

/// What became of a batch, as the writer tells the submitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchFate {
    pub(crate) rejected: usize,
    pub(crate) spooled: bool,
    pub(crate) duplicate: bool,
    pub(crate) key_reused: bool,
}

impl BatchFate {
    pub(crate) fn outcome(&self) -> Outcome {
        if self.duplicate {
            Outcome::Duplicate
        } else if self.key_reused {
            Outcome::KeyReused
        } else if self.spooled {
            Outcome::Spooled
        } else {
            Outcome::Committed
        }
    }
}

/// Shared by the handle and the layer: so that the records submitted carry the layer's
/// own redaction and caps.
#[derive(Debug, Clone)]
pub(crate) struct SubmissionSettings {
    pub(crate) redactor: Redactor,
    pub(crate) max_value_bytes: usize,
    pub(crate) clock: Option<fn() -> DateTime<Utc>>,
}

impl SubmissionSettings {
    pub(crate) fn submission(&self) -> Submission {
        Submission::new(self.redactor.clone(), self.max_value_bytes, self.clock)
    }
}
