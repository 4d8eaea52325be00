//! A record given as a JSON object instead of a tracing event: how producers outside the
//! process (auditd's HTTP ingest, services in other languages) hand records over.
//!
//! Its members are read into a draft as an event's fields are: a member named like a
//! column fills that column, `metadata` (an object) and every other member go into
//! metadata, secrets are redacted at any depth, and `sanitize` finishes the record with the
//! same repairs and notes. Only `created_at` is the sender's to give, and only within a
//! bounded skew of the receiver's clock: a time outside it is replaced by the time
//! received, and noted, so a sender can neither post-date a record nor file it among
//! months already retired.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::draft::{Column, Draft, USER_ID_FIELD};
use super::fixups::quote;
use super::redact::Redactor;
use super::sanitize::finish;
use super::Members;
use crate::queue::{EventTime, Pending};

/// How far from the receiver's clock a sender's `created_at` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockSkew {
    /// Ahead of the receiver's clock (a sender's clock running fast).
    pub(crate) ahead: Duration,
    /// Behind it (a sender's clock running slow, or records it held while it could not
    /// send them).
    pub(crate) behind: Duration,
}

/// The member that fills a record's time.
const CREATED_AT: &str = "created_at";

/// The member whose object is merged into the metadata.
const METADATA: &str = "metadata";

/// Builds a record from a JSON object, repairing what PostgreSQL would refuse; returns it
/// and the number of fix-ups noted in it. `sender` is the metadata member that names who
/// handed it over (`"_sent_by":{...}`), written after everything the object holds.
pub(crate) fn record_of(
    object: Map<String, Value>,
    draft: &mut Draft,
    redactor: &Redactor,
    max_value_bytes: usize,
    sender: &Members,
    now: DateTime<Utc>,
    skew: ClockSkew,
) -> (Pending, u64) {
    draft.clear();
    let mut created_at = None;
    let mut metadata = Map::new();
    let mut others = Map::new();
    for (name, value) in object {
        if value.is_null() && name != METADATA {
            // An absent value, as a field never set.
            continue;
        }
        if name == CREATED_AT {
            created_at = Some(value);
        } else if name == USER_ID_FIELD {
            draft.user_id = Some(value);
        } else if let Some(column) = Column::of_field(&name) {
            match value {
                Value::String(text) => draft.set(column, &text),
                // As a tracing field of another type: its JSON text, with the secrets in
                // it redacted as they would be in metadata.
                mut other => {
                    redactor.redact_value(&mut other);
                    draft.set(column, &other.to_string());
                }
            }
        } else if name == METADATA {
            match value {
                Value::Object(members) => metadata = members,
                Value::Null => {}
                // Not an object to merge: kept like any other member, under its name.
                other => {
                    others.insert(name, other);
                }
            }
        } else {
            others.insert(name, value);
        }
    }
    // The object's own metadata first, then the other members: in jsonb the last of two
    // equal keys wins, as a tracing field wins over its span's.
    draft.merge_object(metadata, redactor, max_value_bytes);
    draft.merge_object(others, redactor, max_value_bytes);
    draft.metadata.extend(sender);
    let time = time_of(created_at, now, skew, &mut draft.notes);
    finish(
        draft,
        &Members::default(),
        tracing::Level::INFO,
        EventTime::from_datetime(time),
        max_value_bytes,
    )
}

/// The sender's time when it is one and within the skew; else the time received, noted.
fn time_of(
    raw: Option<Value>,
    now: DateTime<Utc>,
    skew: ClockSkew,
    notes: &mut Vec<String>,
) -> DateTime<Utc> {
    let Some(raw) = raw else {
        return now;
    };
    let parsed = raw
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc));
    let shown = match &raw {
        Value::String(text) => quote(text),
        other => quote(&other.to_string()),
    };
    let Some(time) = parsed else {
        notes.push(format!(
            "created_at: not an RFC 3339 time: {shown}, stored as the time received"
        ));
        return now;
    };
    // A bound too far to add to `now` is no bound.
    let latest = chrono::Duration::from_std(skew.ahead)
        .ok()
        .and_then(|ahead| now.checked_add_signed(ahead));
    let earliest = chrono::Duration::from_std(skew.behind)
        .ok()
        .and_then(|behind| now.checked_sub_signed(behind));
    if latest.is_some_and(|latest| time > latest) {
        notes.push(format!(
            "created_at: {shown} is more than {}s ahead of the receiver's clock, stored as the time received",
            skew.ahead.as_secs()
        ));
        return now;
    }
    if earliest.is_some_and(|earliest| time < earliest) {
        notes.push(format!(
            "created_at: {shown} is more than {}s behind the receiver's clock, stored as the time received",
            skew.behind.as_secs()
        ));
        return now;
    }
    time
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;
    use serde_json::json;

    use super::*;
    use crate::capture::{DEFAULT_SECRET_PATTERNS, FIXUPS_KEY, REDACTED};
    use crate::record::Severity;

    const SKEW: ClockSkew = ClockSkew {
        ahead: Duration::from_secs(300),
        behind: Duration::from_secs(86_400),
    };

    fn build(object: Value, now: DateTime<Utc>) -> (crate::record::AuditLog, u64) {
        let Value::Object(object) = object else {
            panic!("an object");
        };
        let redactor = Redactor::new(DEFAULT_SECRET_PATTERNS);
        let mut sender = Members::default();
        sender.key("_sent_by");
        sender.0.push_str(r#"{"name":"billing"}"#);
        let (pending, fixups) = record_of(
            object,
            &mut Draft::default(),
            &redactor,
            1024,
            &sender,
            now,
            SKEW,
        );
        (pending.to_log(), fixups)
    }

    #[test]
    fn members_fill_columns_and_the_rest_is_metadata_with_secrets_redacted() {
        let now = Utc::now();
        let (log, fixups) = build(
            json!({
                "username": "alice",
                "user_id": 42,
                "event_type": "authentication",
                "message": "User login",
                "ip_address": "10.1.2.3",
                "severity": "warning",
                "resource_type": "session",
                "metadata": {"method": "password", "password": "hunter2", "nested": {"api_key": "k"}},
                "browser": "firefox",
                "client_secret": "s3cr3t",
            }),
            now,
        );
        assert_eq!(fixups, 0);
        assert_eq!(log.username, "alice");
        assert_eq!(log.user_id, Some(42));
        assert_eq!(log.severity, Severity::Warning);
        assert_eq!(log.ip_address, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(log.resource_type.as_deref(), Some("session"));
        assert_eq!(log.metadata["method"], "password");
        assert_eq!(log.metadata["password"], REDACTED);
        assert_eq!(log.metadata["nested"]["api_key"], REDACTED);
        assert_eq!(log.metadata["browser"], "firefox");
        assert_eq!(log.metadata["client_secret"], REDACTED);
        assert_eq!(log.metadata["_sent_by"]["name"], "billing");
        assert_eq!(log.created_at, EventTime::from_datetime(now).to_datetime());
    }

    #[test]
    fn a_sender_cannot_pose_as_another_sender_or_as_the_layers_notes() {
        let (log, fixups) = build(
            json!({
                "username": "mallory",
                "event_type": "x",
                "_sent_by": {"name": "admin"},
                "metadata": {"_fixups": ["none, honest"]},
            }),
            Utc::now(),
        );
        assert_eq!(log.metadata["_sent_by"]["name"], "billing");
        assert_eq!(log.metadata["_sent_by_from_event"]["name"], "admin");
        assert_eq!(log.metadata["_fixups_from_event"][0], "none, honest");
        assert_eq!(fixups, 2, "{:?}", log.metadata[FIXUPS_KEY]);
    }

    #[test]
    fn a_time_within_the_skew_is_kept_and_one_outside_is_replaced_and_noted() {
        let now = Utc::now();
        let earlier = now - chrono::Duration::hours(2);
        let (log, fixups) = build(
            json!({"event_type": "x", "username": "a", "created_at": earlier.to_rfc3339()}),
            now,
        );
        assert_eq!(fixups, 0);
        assert_eq!(
            log.created_at,
            EventTime::from_datetime(earlier).to_datetime()
        );

        for (raw, problem) in [
            (json!("2020-01-01T00:00:00Z"), "behind"),
            (
                json!((now + chrono::Duration::hours(1)).to_rfc3339()),
                "ahead",
            ),
            (json!("yesterday"), "not an RFC 3339 time"),
            (json!(1_700_000_000), "not an RFC 3339 time"),
        ] {
            let (log, fixups) = build(
                json!({"event_type": "x", "username": "a", "created_at": raw}),
                now,
            );
            assert_eq!(fixups, 1);
            assert_eq!(log.created_at, EventTime::from_datetime(now).to_datetime());
            let note = log.metadata[FIXUPS_KEY][0].as_str().unwrap();
            assert!(
                note.starts_with("created_at: ") && note.contains(problem),
                "{note}"
            );
        }
    }

    #[test]
    fn a_column_given_as_an_object_is_its_text_with_the_secrets_redacted() {
        let (log, _) = build(
            json!({"event_type": "x", "username": "a", "message": {"password": "hunter2", "step": 2}}),
            Utc::now(),
        );
        assert!(!log.message.contains("hunter2"), "{}", log.message);
        assert!(log.message.contains(r#""step":2"#), "{}", log.message);
    }

    #[test]
    fn a_skew_too_large_to_add_to_the_clock_is_no_bound() {
        let now = Utc::now();
        let redactor = Redactor::new(DEFAULT_SECRET_PATTERNS);
        let Value::Object(object) =
            json!({"event_type": "x", "username": "a", "created_at": "2001-01-01T00:00:00Z"})
        else {
            unreachable!()
        };
        let (pending, fixups) = record_of(
            object,
            &mut Draft::default(),
            &redactor,
            1024,
            &Members::default(),
            now,
            ClockSkew {
                ahead: Duration::MAX,
                behind: Duration::MAX,
            },
        );
        assert_eq!(fixups, 0);
        assert_eq!(pending.to_log().created_at.year(), 2001);
    }

    #[test]
    fn values_postgresql_would_refuse_are_repaired_and_noted() {
        let (log, fixups) = build(
            json!({
                "username": "a\u{0}b",
                "severity": "catastrophic",
                "user_id": "forty-two",
                "ip_address": "not an address",
                "metadata": "not an object",
            }),
            Utc::now(),
        );
        assert_eq!(log.username, "a\u{FFFD}b");
        assert_eq!(log.event_type, "unknown");
        assert_eq!(log.severity, Severity::Info);
        assert_eq!(log.user_id, None);
        assert_eq!(log.ip_address, None);
        assert_eq!(log.metadata["metadata"], "not an object");
        assert_eq!(fixups, 5, "{:?}", log.metadata[FIXUPS_KEY]);
    }
}
