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
    /// This is the form kept in `audit_logs_rejected` and written by exports.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::with_capacity(11);
        obj.insert("username".into(), self.username.clone().into());
        obj.insert("user_id".into(), self.user_id.into());
        obj.insert("event_type".into(), self.event_type.clone().into());
        obj.insert("message".into(), self.message.clone().into());
        obj.insert(
            "ip_address".into(),
            self.ip_address.map(|ip| ip.to_string()).into(),
        );
        obj.insert("resource_type".into(), self.resource_type.clone().into());
        obj.insert("resource_id".into(), self.resource_id.clone().into());
        obj.insert("resource_name".into(), self.resource_name.clone().into());
        obj.insert("severity".into(), self.severity.as_str().into());
        obj.insert(
            "metadata".into(),
            if self.metadata.is_empty() {
                Value::Null
            } else {
                Value::Object(self.metadata.clone())
            },
        );
        obj.insert(
            "created_at".into(),
            self.created_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
        );
        Value::Object(obj)
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
