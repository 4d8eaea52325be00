//! `Idempotency-Key`: a sender that retries a `POST /api/v1/events` it never saw answered
//! gets its records committed once (the IETF httpapi draft "The Idempotency-Key HTTP
//! Header Field": 409 while the first attempt is still in progress, 422 for a key reused
//! with other content).
//!
//! A key is scoped to the token that sent it (two senders may pick the same key) and kept
//! in the ledger row of the batch that committed its records, with the SHA-256 of the
//! request (`audit_layer::IdempotencyKey`). A retry is answered from that row, also after
//! a restart and from any auditd writing to the same database; the writer refuses a second
//! batch under the same key even when two attempts race past the lookup.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;
use hyper::StatusCode;

use crate::http::ApiError;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The longest key a sender may give (a UUID is 36).
pub const MAX_KEY_BYTES: usize = 255;

/// The key of a request's header, checked: 1 to [`MAX_KEY_BYTES`] visible ASCII
/// characters. `None` when the request has none.
pub fn key_of(header: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    // The draft gives the key as a structured-field string; its quotes are optional here.
    let bytes = match bytes {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_BYTES
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters (a UUID will do)"
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The key as the ledger keeps it: the sender's token name, a colon, its key. Token names
/// hold no colon, so two senders' keys never meet.
pub fn scoped(token: &str, key: &str) -> String {
    format!("{token}:{key}")
}

/// The keys of requests being handled now, so that a retry racing its first attempt is
/// told to wait (409) instead of being written beside it.
#[derive(Debug, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// A key held while its attempt is under way; released when dropped.
pub struct Held {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// Holds `key`, or `None` when another attempt holds it.
    pub fn hold(&self, key: &str) -> Option<Held> {
        let mut keys = self.keys.lock().ok()?;
        keys.insert(key.to_owned()).then(|| Held {
            keys: self.keys.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

/// What the ledger says of a key already committed.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Records its batch wrote.
    pub rows: i32,
    /// When.
    pub committed_at: DateTime<Utc>,
    /// The SHA-256 of the request that sent them.
    pub request_digest: Option<Vec<u8>>,
}

/// The committed batch of `key`, if there is one.
pub async fn committed(
    client: &tokio_postgres::Client,
    key: &str,
) -> Result<Option<Committed>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT rows, committed_at, request_digest FROM audit_writer_batches \
             WHERE idempotency_key = $1",
            &[&key],
        )
        .await?;
    Ok(row.map(|row| Committed {
        rows: row.get(0),
        committed_at: row.get(1),
        request_digest: row.get(2),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let key = |v: &str| key_of(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(key("7f3e-0001").unwrap().as_deref(), Some("7f3e-0001"));
        assert_eq!(key("\"quoted\"").unwrap().as_deref(), Some("quoted"));
        assert_eq!(key_of(None).unwrap(), None);
        for bad in ["", "\"\"", "with space", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(key(bad).is_err(), "{bad:?}");
        }
        assert!(key_of(Some(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())).is_err());
    }

    #[test]
    fn a_key_is_held_by_one_request_at_a_time() {
        let in_flight = InFlight::default();
        let held = in_flight.hold("billing:1").expect("free");
        assert!(in_flight.hold("billing:1").is_none());
        assert!(in_flight.hold("crm:1").is_some());
        drop(held);
        assert!(in_flight.hold("billing:1").is_some());
    }
}
