//! Which failures are worth retrying, and how long to wait between attempts.
//!
//! A failure about the data (SQLSTATE classes 22, 23, 54 and P0: bad value, constraint,
//! limit, trigger `RAISE`) fails the same way every time, so the rows are never retried as
//! they are: the batch is split to isolate the bad record. A call that was too slow
//! (client timeout, or `statement_timeout`, 57014) is retried in halves, so that a batch
//! too big to write in time still gets through. Everything else (connection lost, server
//! restarting, pool timeout, missing table or permission that an operator can fix, a
//! trigger raising a custom SQLSTATE) is retried with capped exponential backoff.

use std::time::Duration;

/// How a failed database call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Try again later with the same rows.
    Transient,
    /// The rows themselves were refused.
    Data,
    /// The call took too long: try again with fewer rows.
    TooSlow,
    /// The batch's key is already in the ledger: an earlier attempt committed it.
    AlreadyCommitted,
    /// The batch's idempotency key is already in the ledger: another batch (an earlier
    /// attempt of the sender's) committed under it, or this one did and its answer was
    /// lost; fencing tells which.
    Duplicate,
}

/// The primary key of the batch ledger (migration 0003).
const LEDGER_KEY: &str = "audit_writer_batches_pkey";

/// An undefined column: the schema predates a migration the statement needs.
pub(crate) const UNDEFINED_COLUMN: &str = "42703";

/// The unique index on idempotency keys (migration 0008).
const IDEMPOTENCY_KEY: &str = "audit_writer_batches_idempotency_key";

pub(crate) fn classify(e: &tokio_postgres::Error) -> FailureKind {
    if let Some(db) = e.as_db_error() {
        if db.code().code() == "23505" {
            match db.constraint() {
                Some(LEDGER_KEY) => return FailureKind::AlreadyCommitted,
                Some(IDEMPOTENCY_KEY) => return FailureKind::Duplicate,
                _ => {}
            }
        }
    }
    match e.code() {
        Some(state) => classify_sqlstate(state.code()),
        None => FailureKind::Transient,
    }
}

pub(crate) fn classify_sqlstate(code: &str) -> FailureKind {
    match code.get(..2) {
        Some("22" | "23" | "54" | "P0") => FailureKind::Data,
        _ if code == "57014" => FailureKind::TooSlow,
        _ => FailureKind::Transient,
    }
}

/// Capped exponential backoff with a little jitter, so restarted writers do not retry in
/// lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial,
            initial,
            max,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Up to +10%.
        delay + delay.mul_f64(f64::from(nanos % 1000) / 10_000.0)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Whether the failure is about reaching the server (no SQLSTATE, or classes 08, 53, 57,
/// 58) rather than about what was asked of it.
pub(crate) fn is_connection_problem(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(state) => matches!(state.code().get(..2), Some("08" | "53" | "57" | "58")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_classes_22_23_54_and_p0() {
        assert_eq!(classify_sqlstate("22021"), FailureKind::Data); // bad encoding
        assert_eq!(classify_sqlstate("23514"), FailureKind::Data); // check violation
        assert_eq!(classify_sqlstate("54000"), FailureKind::Data); // index row too big
        assert_eq!(classify_sqlstate("P0001"), FailureKind::Data); // trigger RAISE
        assert_eq!(classify_sqlstate("08006"), FailureKind::Transient);
        assert_eq!(classify_sqlstate("57P01"), FailureKind::Transient);
        assert_eq!(classify_sqlstate("42P01"), FailureKind::Transient);
        assert_eq!(classify_sqlstate("57014"), FailureKind::TooSlow);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((100..=110).contains(&delays[0]), "{delays:?}");
        assert!((200..=220).contains(&delays[1]), "{delays:?}");
        assert!((350..=385).contains(&delays[2]), "{delays:?}");
        assert!((350..=385).contains(&delays[3]), "{delays:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(111));
    }
}
