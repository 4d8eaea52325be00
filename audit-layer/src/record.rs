//! The audit record: what one row of `audit_logs` holds.
//!
//! [`AuditLog`] is the single record type of the project. The layer builds it, the writer
//! copies it into PostgreSQL, and auditd reads it back; nothing else defines the columns.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use tokio_postgres::Row;

/// The columns of `audit_logs` a record is made of, in the order the writer copies them
/// and [`AuditLog::from_row`] reads them (a macro, so that SQL text can be built with
/// `concat!`).
#[macro_export]
#[doc(hidden)]
macro_rules! record_columns {
    () => {
        "username, user_id, event_type, message, ip_address, resource_type, resource_id, \
         resource_name, severity, metadata, created_at"
    };
}

/// The record's columns, comma-separated, for `SELECT` lists: `username, user_id, ...`.
pub const RECORD_COLUMNS: &str = record_columns!();

/// One audit record: who did what, from where, to which resource, with what outcome.
///
/// Field names and meanings are those of the `audit_logs` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLog {
    /// Who acted: a user name, or `"system"` for the application itself.
    pub username: String,
    /// The acting user's numeric id, when known.
    pub user_id: Option<i64>,
    /// What kind of event: `authentication`, `onboarding`, `backup`, ...
    pub event_type: String,
    /// What happened, in words.
    pub message: String,
    /// Where the request came from.
    pub ip_address: Option<IpAddr>,
    /// The kind of resource acted on: `device`, `credential`, ...
    pub resource_type: Option<String>,
    /// The resource's identifier.
    pub resource_id: Option<String>,
    /// The resource's human-readable name.
    pub resource_name: Option<String>,
    /// How serious the event is.
    pub severity: Severity,
    /// Every other field of the event, as typed JSON. Empty maps are stored as NULL.
    pub metadata: Map<String, Value>,
    /// When the event happened (UTC), stamped on the emitting thread.
    pub created_at: DateTime<Utc>,
}

impl AuditLog {
    /// A record with the given required fields, severity `info`, stamped now.
    ///
    /// ```
    /// use audit_layer::{AuditLog, Severity};
    ///
    /// let log = AuditLog::new("alice", "authentication", "User login");
    /// assert_eq!(log.severity, Severity::Info);
    /// assert!(log.metadata.is_empty());
    /// ```
    pub fn new(
        username: impl Into<String>,
        event_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        AuditLog {
            username: username.into(),
            user_id: None,
            event_type: event_type.into(),
            message: message.into(),
            ip_address: None,
            resource_type: None,
            resource_id: None,
            resource_name: None,
            severity: Severity::Info,
            metadata: Map::new(),
            created_at: Utc::now(),
        }
    }

    /// Reads a record from a row selected with [`RECORD_COLUMNS`] (by column name, so
    /// other columns such as `id` may be selected too).
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        let severity: String = row.try_get("severity")?;
        let metadata: Option<Value> = row.try_get("metadata")?;
        Ok(AuditLog {
            username: row.try_get("username")?,
            user_id: row.try_get("user_id")?,
            event_type: row.try_get("event_type")?,
            message: row.try_get("message")?,
            ip_address: row.try_get("ip_address")?,
            resource_type: row.try_get("resource_type")?,
            resource_id: row.try_get("resource_id")?,
            resource_name: row.try_get("resource_name")?,
            // The column's CHECK constraint admits only the four names.
            severity: severity.parse().unwrap_or(Severity::Info),
            metadata: match metadata {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            },
            created_at: row.try_get("created_at")?,
        })
    }

    /// The record as one JSON object with the column names as keys.
    ///
    /// This is the form kept in `audit_logs_rejected`; auditd serves the same fields
    /// through [`write_json_fields`](Self::write_json_fields).
    pub fn to_json(&self) -> Value {
        let mut text = Vec::with_capacity(256);
        text.push(b'{');
        self.write_json_fields(&mut text);
        text.push(b'}');
        // What write_json_fields writes is JSON by construction.
        serde_json::from_slice(&text).unwrap_or(Value::Null)
    }

    /// Reads a record back from the form [`to_json`](Self::to_json) writes; `None` when
    /// a required field is missing or has the wrong type.
    pub fn from_json(value: &Value) -> Option<Self> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(AuditLog {
            username: text("username")?,
            user_id: match value.get("user_id") {
                None | Some(Value::Null) => None,
                Some(id) => Some(id.as_i64()?),
            },
            event_type: text("event_type")?,
            message: text("message")?,
            ip_address: match text("ip_address") {
                None => None,
                Some(ip) => Some(ip.parse().ok()?),
            },
            resource_type: text("resource_type"),
            resource_id: text("resource_id"),
            resource_name: text("resource_name"),
            severity: text("severity")?.parse().ok()?,
            metadata: match value.get("metadata") {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            },
            created_at: DateTime::parse_from_rfc3339(&text("created_at")?)
                .ok()?
                .with_timezone(&Utc),
        })
    }

    /// Appends the record's fields as JSON object members, without the braces, so callers
    /// can add their own members around them: `"username":"alice",...,"created_at":"..."`.
    ///
    /// `created_at` is RFC 3339 in UTC with microseconds; an empty `metadata` is `null`.
    pub fn write_json_fields(&self, out: &mut Vec<u8>) {
        RecordView {
            username: &self.username,
            user_id: self.user_id,
            event_type: &self.event_type,
            message: &self.message,
            ip_address: self.ip_address,
            resource_type: self.resource_type.as_deref(),
            resource_id: self.resource_id.as_deref(),
            resource_name: self.resource_name.as_deref(),
            severity: self.severity,
            metadata: (!self.metadata.is_empty()).then_some(MetadataView::Map(&self.metadata)),
            created_at: self.created_at,
        }
        .write_json_fields(out);
    }
}

/// A record's fields, borrowed from an [`AuditLog`] or from a queued record, for the one
/// writer of the record's JSON form.
pub(crate) struct RecordView<'a> {
    pub(crate) username: &'a str,
    pub(crate) user_id: Option<i64>,
    pub(crate) event_type: &'a str,
    pub(crate) message: &'a str,
    pub(crate) ip_address: Option<IpAddr>,
    pub(crate) resource_type: Option<&'a str>,
    pub(crate) resource_id: Option<&'a str>,
    pub(crate) resource_name: Option<&'a str>,
    pub(crate) severity: Severity,
    /// `None` for no metadata.
    pub(crate) metadata: Option<MetadataView<'a>>,
    pub(crate) created_at: DateTime<Utc>,
}

/// Metadata as a map.
pub(crate) enum MetadataView<'a> {
    Map(&'a Map<String, Value>),
}

impl RecordView<'_> {
    /// See [`AuditLog::write_json_fields`].
    pub(crate) fn write_json_fields(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, value: &str) {
            // Serializing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
        fn member(out: &mut Vec<u8>, name: &str, first: bool) {
            if !first {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        }
        fn optional(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
            member(out, name, false);
            match value {
                Some(v) => string(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        member(out, "created_at", true);
        string(
            out,
            &self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        member(out, "username", false);
        string(out, self.username);
        member(out, "user_id", false);
        match self.user_id {
            Some(id) => out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        member(out, "event_type", false);
        string(out, self.event_type);
        member(out, "severity", false);
        string(out, self.severity.as_str());
        member(out, "message", false);
        string(out, self.message);
        optional(
            out,
            "ip_address",
            self.ip_address.map(|ip| ip.to_string()).as_deref(),
        );
        optional(out, "resource_type", self.resource_type);
        optional(out, "resource_id", self.resource_id);
        optional(out, "resource_name", self.resource_name);
        member(out, "metadata", false);
        match self.metadata {
            None => out.extend_from_slice(b"null"),
            Some(MetadataView::Map(map)) => {
                let _ = serde_json::to_writer(&mut *out, map);
            }
        }
    }
}

/// How serious an event is; the values allowed in the `severity` column.
///
/// Ordered from least to most serious, so `severity >= Severity::Error` reads naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Normal operations.
    Info,
    /// Potential issues.
    Warning,
    /// Errors that need attention.
    Error,
    /// Critical failures.
    Critical,
}

impl Severity {
    /// Every severity, least serious first.
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    /// The value stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The severity a tracing level maps to when the event does not set one:
    /// `ERROR` is `error`, `WARN` is `warning`, everything else is `info`.
    pub fn from_level(level: tracing::Level) -> Self {
        match level {
            tracing::Level::ERROR => Severity::Error,
            tracing::Level::WARN => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error returned when parsing a [`Severity`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSeverity(pub String);

impl fmt::Display for UnknownSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown severity {:?} (expected info, warning, error or critical)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSeverity {}

impl FromStr for Severity {
    type Err = UnknownSeverity;

    /// Parses a severity name, ignoring ASCII case; `warn` is accepted for `warning`.
    ///
    /// ```
    /// use audit_layer::Severity;
    /// assert_eq!("CRITICAL".parse::<Severity>(), Ok(Severity::Critical));
    /// assert_eq!("warn".parse::<Severity>(), Ok(Severity::Warning));
    /// assert!("fatal".parse::<Severity>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        for (name, severity) in [
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("warn", Severity::Warning),
            ("error", Severity::Error),
            ("critical", Severity::Critical),
        ] {
            if s.eq_ignore_ascii_case(name) {
                return Ok(severity);
            }
        }
        Err(UnknownSeverity(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_every_field() {
        let mut log = AuditLog::new("alice", "onboarding", "Device \"x\"\nadded");
        log.user_id = Some(42);
        log.ip_address = Some("2001:db8::1".parse().unwrap());
        log.resource_type = Some("device".into());
        log.resource_id = Some("d-1".into());
        log.resource_name = Some("edge-fra1-01".into());
        log.severity = Severity::Critical;
        log.metadata.insert("attempts".into(), 3.into());
        log.metadata
            .insert("nested".into(), serde_json::json!({"a": [1, "b"]}));
        // Microseconds: PostgreSQL's precision, and the JSON form's.
        log.created_at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let back = AuditLog::from_json(&log.to_json()).unwrap();
        assert_eq!(back, log);
        assert_eq!(
            AuditLog::from_json(&serde_json::json!({"username": "x"})),
            None
        );
    }
}
