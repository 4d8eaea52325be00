//! Property tests of the layer against real PostgreSQL: events with generated values of
//! every type tracing carries (text of any characters, NUL included; numbers at their
//! limits; NaN and infinities; errors; `Display` and `Debug` values), generated JSON in
//! `metadata = %json` (duplicate keys, secrets at any depth, the reserved `_fixups` key,
//! text that is not JSON), inside generated nestings of spans. Whatever comes:
//!
//! * every record is accepted by PostgreSQL and nothing reaches `audit_logs_rejected`;
//! * what is read back is what was sent, after the documented fix-ups (computed here from
//!   the README's rules, not by the layer's code), and each fix-up is noted.

mod support;

use std::net::{IpAddr, SocketAddr};

use audit_layer::{Severity, FIXUPS_KEY, REDACTED, RENAMED_FIXUPS_KEY};
use proptest::prelude::*;
use serde_json::{Map, Value};
use support::generate::{ip_text, json_value, key, object, severity_text, text};
use support::{emit_and_flush, TestDb};

/// The context an enclosing span carries.
#[derive(Debug, Clone)]
struct SpanContext {
    username: String,
    ip_address: String,
}

/// One generated event.
#[derive(Debug, Clone)]
struct Event {
    /// `None`: the event sets no column field, so spans and defaults fill them.
    columns: Option<Columns>,
    spans: Vec<SpanContext>,
    numbers: (i64, u64, i128, u128, f64, bool),
    texts: (String, String, String),
    metadata: String,
}

#[derive(Debug, Clone)]
struct Columns {
    username: String,
    event_type: String,
    message: String,
    ip_address: String,
    resource: (String, String, String),
    severity: String,
    user_id: i64,
}

fn metadata_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // An object, its keys at times repeated, `_fixups` among them now and then.
        4 => (proptest::collection::vec((key(), json_value()), 0..5), any::<bool>(), any::<bool>())
            .prop_map(|(mut members, repeat, reserved)| {
                if repeat {
                    if let Some(first) = members.first().cloned() {
                        members.push((first.0, "\"the later one\"".to_owned()));
                    }
                }
                if reserved {
                    members.push((FIXUPS_KEY.to_owned(), "[\"forged note\"]".to_owned()));
                }
                object(&members)
            }),
        // Anything else: kept as text, secrets redacted or the whole replaced.
        1 => text(30),
        1 => json_value(),
        1 => Just(r#"[{"token":"abc","n":1},{"k":{"password":"p"}}]"#.to_owned()),
        1 => Just(r#"{"password":"x","n":1e400}"#.to_owned()),
        1 => Just(r#"{"api_key":"x"} trailing"#.to_owned()),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let columns = (
        text(300),
        text(120),
        text(200),
        ip_text(),
        (text(120), text(300), text(40)),
        severity_text(),
        any::<i64>(),
    )
        .prop_map(
            |(username, event_type, message, ip_address, resource, severity, user_id)| Columns {
                username,
                event_type,
                message,
                ip_address,
                resource,
                severity,
                user_id,
            },
        );
    let span = (text(20), ip_text()).prop_map(|(username, ip_address)| SpanContext {
        username,
        ip_address,
    });
    (
        proptest::option::weighted(0.8, columns),
        proptest::collection::vec(span, 0..4),
        (
            any::<i64>(),
            any::<u64>(),
            any::<i128>(),
            any::<u128>(),
            any::<f64>(),
            any::<bool>(),
        ),
        (text(40), text(40), text(40)),
        metadata_text(),
    )
        .prop_map(|(columns, spans, numbers, texts, metadata)| Event {
            columns,
            spans,
            numbers,
            texts,
            metadata,
        })
}

#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Emits `event` inside its spans, outermost first.
fn emit(event: &Event, spans: &[SpanContext]) {
    match spans.split_first() {
        Some((outer, inner)) => {
            let span = tracing::info_span!(
                "request",
                username = %outer.username,
                ip_address = %outer.ip_address
            );
            let _guard = span.enter();
            emit(event, inner);
        }
        None => {
            let (i, u, wide, uwide, float, flag) = event.numbers;
            let (plain, shown, debugged) = &event.texts;
            let error = Failure(plain.clone());
            let error: &(dyn std::error::Error + 'static) = &error;
            match &event.columns {
                Some(c) => tracing::info!(
                    target: "audit",
                    username = %c.username,
                    event_type = %c.event_type,
                    ip_address = %c.ip_address,
                    resource_type = %c.resource.0,
                    resource_id = %c.resource.1,
                    resource_name = %c.resource.2,
                    severity = %c.severity,
                    user_id = c.user_id,
                    m_i64 = i,
                    m_u64 = u,
                    m_i128 = wide,
                    m_u128 = uwide,
                    m_f64 = float,
                    m_bool = flag,
                    m_str = plain.as_str(),
                    m_display = %shown,
                    m_debug = ?debugged,
                    m_error = error,
                    api_token = "s3cr3t",
                    metadata = %event.metadata,
                    "{}", c.message
                ),
                None => tracing::info!(
                    target: "audit",
                    m_i64 = i,
                    m_u64 = u,
                    m_i128 = wide,
                    m_u128 = uwide,
                    m_f64 = float,
                    m_bool = flag,
                    m_str = plain.as_str(),
                    m_display = %shown,
                    m_debug = ?debugged,
                    m_error = error,
                    api_token = "s3cr3t",
                    metadata = %event.metadata,
                ),
            }
        }
    }
}

// ---- The model: the README's fix-up rules, written out independently of the layer. ----

fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// The column text stored for `raw`, and whether that was a repair.
fn column(raw: &str, max_chars: usize) -> (String, bool) {
    let cleaned = no_nul(raw);
    let cut: String = cleaned.chars().take(max_chars).collect();
    let repaired = cut != raw;
    (cut, repaired)
}

fn ip_of(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| raw.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

fn is_secret(key: &str) -> bool {
    let normal: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "authorization",
    ]
    .iter()
    .any(|p| normal.contains(p))
}

/// A merged JSON value as stored: secrets redacted at any depth, NUL replaced in keys and
/// strings.
fn stored_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(no_nul(s)),
        Value::Array(items) => Value::Array(items.iter().map(stored_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret(k) {
                        Value::String(REDACTED.to_owned())
                    } else {
                        stored_json(v)
                    };
                    (no_nul(k), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `value` with the values of secret keys replaced, at any depth.
fn redact_in(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(k) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_in(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in),
        _ => {}
    }
}

/// The metadata a record must hold, and the fields whose repair must be noted.
fn expected_metadata(event: &Event) -> (Map<String, Value>, Vec<String>) {
    let (i, u, wide, uwide, float, flag) = event.numbers;
    let (plain, shown, debugged) = &event.texts;
    let mut notes = Vec::new();
    let mut m = Map::new();
    m.insert("m_i64".into(), i.into());
    m.insert("m_u64".into(), u.into());
    m.insert(
        "m_i128".into(),
        match (i64::try_from(wide), u64::try_from(wide)) {
            (Ok(v), _) => v.into(),
            (_, Ok(v)) => v.into(),
            _ => wide.to_string().into(),
        },
    );
    m.insert(
        "m_u128".into(),
        u64::try_from(uwide).map_or_else(|_| uwide.to_string().into(), Value::from),
    );
    m.insert(
        "m_f64".into(),
        if float.is_finite() {
            float.into()
        } else {
            float.to_string().into()
        },
    );
    m.insert("m_bool".into(), flag.into());
    for (name, value) in [
        ("m_str", plain.clone()),
        ("m_display", shown.clone()),
        ("m_debug", format!("{debugged:?}")),
        ("m_error", plain.clone()),
    ] {
        if value.contains('\0') {
            notes.push(format!("metadata.{name}"));
        }
        m.insert(name.into(), no_nul(&value).into());
    }
    m.insert("api_token".into(), REDACTED.into());
    match serde_json::from_str::<Value>(&event.metadata) {
        Ok(Value::Object(members)) => {
            for (key, value) in members {
                let stored_key = if key == FIXUPS_KEY {
                    notes.push("metadata".into());
                    RENAMED_FIXUPS_KEY.to_owned()
                } else {
                    no_nul(&key)
                };
                if key.contains('\0') {
                    notes.push("metadata key".into());
                }
                let value = if is_secret(&key) {
                    Value::String(REDACTED.to_owned())
                } else {
                    stored_json(&value)
                };
                m.insert(stored_key, value);
            }
        }
        // Other JSON but a string: its text, with the secrets inside redacted.
        Ok(mut value) if !value.is_string() => {
            redact_in(&mut value);
            let text = value.to_string();
            if text.contains('\0') {
                notes.push("metadata.metadata".into());
            }
            m.insert("metadata".into(), no_nul(&text).into());
        }
        // Text: as it is, unless it names a secret.
        _ if is_secret(&event.metadata) => {
            notes.push("metadata.metadata".into());
            m.insert("metadata".into(), REDACTED.into());
        }
        _ => {
            if event.metadata.contains('\0') {
                notes.push("metadata.metadata".into());
            }
            m.insert("metadata".into(), no_nul(&event.metadata).into());
        }
    }
    (m, notes)
}

/// JSON equality where a number is its value: jsonb keeps numbers as `numeric`, so a float
/// with an integral value (`-5.1e18`) reads back as an integer, the same number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

async fn check(db: &TestDb, events: &[Event]) -> Result<(), TestCaseError> {
    db.client
        // Each case starts empty: past the append-only trigger, as only a superuser can.
        .batch_execute(
            "SET session_replication_role = replica; DELETE FROM audit_logs; \
             RESET session_replication_role",
        )
        .await
        .unwrap();
    let stats = emit_and_flush(db, || {
        for event in events {
            emit(event, &event.spans);
        }
    })
    .await;
    prop_assert_eq!(stats.rejected, 0);
    prop_assert_eq!(
        db.count("SELECT count(*) FROM audit_logs_rejected").await,
        0
    );
    let records = db.records().await;
    prop_assert_eq!(records.len(), events.len());
    let mut notes_total = 0;
    for (record, event) in records.iter().zip(events) {
        let innermost = event.spans.last();
        let mut repaired: Vec<String> = Vec::new();
        let (username, event_type, message, ip, severity) = match &event.columns {
            Some(c) => {
                let (username, r) = column(&c.username, 255);
                if r {
                    repaired.push("username".into());
                }
                let (event_type, r) = column(&c.event_type, 100);
                if r {
                    repaired.push("event_type".into());
                }
                if c.message.contains('\0') {
                    repaired.push("message".into());
                }
                for (name, value, max) in [
                    ("resource_type", &c.resource.0, 100),
                    ("resource_id", &c.resource.1, 255),
                    ("resource_name", &c.resource.2, 255),
                ] {
                    let (stored, r) = column(value, max);
                    if r {
                        repaired.push(name.into());
                    }
                    let actual = match name {
                        "resource_type" => &record.resource_type,
                        "resource_id" => &record.resource_id,
                        _ => &record.resource_name,
                    };
                    prop_assert_eq!(actual.as_deref(), Some(stored.as_str()), "{}", name);
                }
                let ip = ip_of(&c.ip_address);
                if ip.is_none() {
                    repaired.push("ip_address".into());
                }
                let severity = c.severity.parse::<Severity>().unwrap_or(Severity::Info);
                if c.severity.parse::<Severity>().is_err() {
                    repaired.push("severity".into());
                }
                prop_assert_eq!(record.user_id, Some(c.user_id));
                (username, event_type, no_nul(&c.message), ip, severity)
            }
            None => {
                let username = match innermost {
                    Some(span) => {
                        let (username, r) = column(&span.username, 255);
                        if r {
                            repaired.push("username".into());
                        }
                        username
                    }
                    None => {
                        repaired.push("username".into());
                        "unknown".to_owned()
                    }
                };
                repaired.push("event_type".into());
                let ip = innermost.and_then(|s| {
                    let ip = ip_of(&s.ip_address);
                    if ip.is_none() {
                        repaired.push("ip_address".into());
                    }
                    ip
                });
                (
                    username,
                    "unknown".to_owned(),
                    String::new(),
                    ip,
                    Severity::Info,
                )
            }
        };
        prop_assert_eq!(&record.username, &username);
        prop_assert_eq!(&record.event_type, &event_type);
        prop_assert_eq!(&record.message, &message);
        prop_assert_eq!(record.ip_address, ip);
        prop_assert_eq!(record.severity, severity);

        let (mut expected, metadata_notes) = expected_metadata(event);
        repaired.extend(metadata_notes);
        let mut stored = record.metadata.clone();
        let notes: Vec<String> = match stored.remove(FIXUPS_KEY) {
            Some(Value::Array(notes)) => notes
                .into_iter()
                .map(|n| n.as_str().unwrap_or_default().to_owned())
                .collect(),
            Some(other) => return Err(TestCaseError::fail(format!("_fixups: {other}"))),
            None => Vec::new(),
        };
        expected.remove(FIXUPS_KEY);
        let (stored, expected) = (Value::Object(stored), Value::Object(expected));
        prop_assert!(
            same_json(&stored, &expected),
            "stored {} expected {}",
            stored,
            expected
        );
        for field in &repaired {
            prop_assert!(
                notes.iter().any(|n| n.starts_with(&format!("{field}:"))),
                "no note for {} in {:?}",
                field,
                notes
            );
        }
        notes_total += notes.len() as u64;
    }
    prop_assert_eq!(stats.fixups, notes_total);
    Ok(())
}

#[test]
fn whatever_the_fields_json_and_spans_postgresql_takes_every_record_as_documented() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::migrated("hostile_events"));
    let cases: u32 = std::env::var("AUDIT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let config = ProptestConfig {
        cases,
        // Each case is a round trip through PostgreSQL: shrink briefly.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    proptest!(config, |(events in proptest::collection::vec(event(), 1..8))| {
        runtime.block_on(check(&db, &events))?;
    });
}

#[tokio::test]
async fn a_secret_in_metadata_that_is_not_a_json_object_never_reaches_the_table() {
    let db = TestDb::migrated("hostile_metadata_secrets").await;
    let attempts = [
        r#"[{"token":"s3cr3t-1"}]"#,
        r#"{"password":"s3cr3t-2","n":1e400}"#,
        r#"{"api_key":"s3cr3t-3"} and then some"#,
        "password=s3cr3t-4",
        r#""authorization: Bearer s3cr3t-5""#,
    ];
    emit_and_flush(&db, || {
        for metadata in attempts {
            tracing::info!(target: "audit", username = "u", event_type = "e", metadata = %metadata, "m");
        }
        // A Debug value that is not JSON at all.
        tracing::info!(
            target: "audit",
            username = "u",
            event_type = "e",
            metadata = ?vec![("secret", "s3cr3t-6")],
            "m"
        );
    })
    .await;
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 6);
    let leaked = db
        .count("SELECT count(*) FROM audit_logs WHERE metadata::text LIKE '%s3cr3t%'")
        .await;
    assert_eq!(leaked, 0, "{:?}", db.records().await);
}
