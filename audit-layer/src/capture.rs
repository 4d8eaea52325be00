//! Reading tracing fields into a draft record.
//!
//! Fields named like a column fill that column; every other field goes into `metadata` as
//! typed JSON (numbers stay numbers, booleans stay booleans). Secrets are replaced here,
//! before their value is ever formatted into memory the layer keeps.

use std::fmt;

use serde_json::{Map, Number, Value};
use tracing::field::{Field, Visit};

use crate::redact::{Redactor, REDACTED};

/// What a column-named field holds before it is checked and sized by `sanitize`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Draft {
    pub(crate) username: Option<String>,
    pub(crate) user_id: Option<Value>,
    pub(crate) event_type: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) resource_type: Option<String>,
    pub(crate) resource_id: Option<String>,
    pub(crate) resource_name: Option<String>,
    pub(crate) severity: Option<String>,
    pub(crate) metadata: Map<String, Value>,
}

/// The columns a span may carry for the events inside it.
pub(crate) const INHERITED_COLUMNS: &[&str] = &[
    "username",
    "user_id",
    "ip_address",
    "resource_type",
    "resource_id",
    "resource_name",
];

impl Draft {
    /// Fills what this draft does not set from an enclosing span's fields.
    ///
    /// Called innermost span first, so the innermost value wins and the event's own
    /// fields win over all.
    pub(crate) fn inherit(&mut self, span: &Draft) {
        fill(&mut self.username, &span.username);
        fill(&mut self.user_id, &span.user_id);
        fill(&mut self.ip_address, &span.ip_address);
        fill(&mut self.resource_type, &span.resource_type);
        fill(&mut self.resource_id, &span.resource_id);
        fill(&mut self.resource_name, &span.resource_name);
        for (key, value) in &span.metadata {
            if !self.metadata.contains_key(key) {
                self.metadata.insert(key.clone(), value.clone());
            }
        }
    }

    /// Overwrites this span draft with values recorded later (`Span::record`).
    pub(crate) fn update(&mut self, later: Draft) {
        replace(&mut self.username, later.username);
        replace(&mut self.user_id, later.user_id);
        replace(&mut self.ip_address, later.ip_address);
        replace(&mut self.resource_type, later.resource_type);
        replace(&mut self.resource_id, later.resource_id);
        replace(&mut self.resource_name, later.resource_name);
        self.metadata.extend(later.metadata);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_none()
            && self.user_id.is_none()
            && self.event_type.is_none()
            && self.message.is_none()
            && self.ip_address.is_none()
            && self.resource_type.is_none()
            && self.resource_id.is_none()
            && self.resource_name.is_none()
            && self.severity.is_none()
            && self.metadata.is_empty()
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, from: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(from);
    }
}

fn replace<T>(slot: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *slot = later;
    }
}

/// Which fields a [`Capture`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// An audit event, or a span with the audit target: every field.
    Everything,
    /// Any other span: only the columns it may pass on to events.
    InheritedColumns,
}

/// A [`Visit`]or that writes fields into a [`Draft`].
pub(crate) struct Capture<'a> {
    draft: &'a mut Draft,
    redactor: &'a Redactor,
    scope: Scope,
}

enum Slot {
    Text(fn(&mut Draft) -> &mut Option<String>),
    UserId,
    Metadata,
    Ignore,
}

impl<'a> Capture<'a> {
    pub(crate) fn new(draft: &'a mut Draft, redactor: &'a Redactor, scope: Scope) -> Self {
        Capture {
            draft,
            redactor,
            scope,
        }
    }

    fn slot(&self, name: &str) -> Slot {
        let inherited = match name {
            "username" => Some(Slot::Text(|d| &mut d.username)),
            "user_id" => Some(Slot::UserId),
            "ip_address" => Some(Slot::Text(|d| &mut d.ip_address)),
            "resource_type" => Some(Slot::Text(|d| &mut d.resource_type)),
            "resource_id" => Some(Slot::Text(|d| &mut d.resource_id)),
            "resource_name" => Some(Slot::Text(|d| &mut d.resource_name)),
            _ => None,
        };
        if let Some(slot) = inherited {
            return slot;
        }
        if self.scope == Scope::InheritedColumns {
            return Slot::Ignore;
        }
        match name {
            "event_type" => Slot::Text(|d| &mut d.event_type),
            "message" => Slot::Text(|d| &mut d.message),
            "severity" => Slot::Text(|d| &mut d.severity),
            _ => Slot::Metadata,
        }
    }

    fn put(&mut self, field: &Field, value: Value) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::UserId => self.draft.user_id = Some(value),
            Slot::Text(column) => {
                *column(self.draft) = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            Slot::Metadata => self.put_metadata(field, value),
        }
    }

    fn put_metadata(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.redactor.is_secret(name) {
            self.draft
                .metadata
                .insert(name.to_owned(), Value::String(REDACTED.to_owned()));
            return;
        }
        // `metadata = %json` is how the original design passed extra context: merge it.
        if name == "metadata" {
            if let Value::String(text) = &value {
                if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) {
                    redact_nested(self.redactor, &mut map);
                    self.draft.metadata.extend(map);
                    return;
                }
            }
        }
        self.draft.metadata.insert(name.to_owned(), value);
    }

    /// Whether formatting the value is needed at all: skips work for ignored fields and
    /// never formats a secret.
    fn wants_text(&self, field: &Field) -> Wanted {
        match self.slot(field.name()) {
            Slot::Ignore => Wanted::Nothing,
            Slot::Metadata if self.redactor.is_secret(field.name()) => Wanted::Redacted,
            _ => Wanted::Value,
        }
    }
}

/// Replaces secrets at any depth of a JSON object.
fn redact_nested(redactor: &Redactor, map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if redactor.is_secret_dynamic(key) {
            *value = Value::String(REDACTED.to_owned());
        } else {
            redact_value(redactor, value);
        }
    }
}

fn redact_value(redactor: &Redactor, value: &mut Value) {
    match value {
        Value::Object(map) => redact_nested(redactor, map),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(redactor, v)),
        _ => {}
    }
}

enum Wanted {
    Nothing,
    Redacted,
    Value,
}

impl Visit for Capture<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.wants_text(field) {
            Wanted::Nothing => {}
            Wanted::Redacted => self.put_metadata(field, Value::Null),
            Wanted::Value => self.put(field, Value::String(format!("{value:?}"))),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.wants_text(field) {
            Wanted::Nothing => {}
            Wanted::Redacted => self.put_metadata(field, Value::Null),
            Wanted::Value => self.put(field, Value::String(value.to_owned())),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match self.wants_text(field) {
            Wanted::Nothing => {}
            Wanted::Redacted => self.put_metadata(field, Value::Null),
            Wanted::Value => {
                let mut text = value.to_string();
                let mut source = value.source();
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                self.put(field, Value::String(text))
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Number(value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Number(value.into()));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => match u64::try_from(value) {
                Ok(v) => self.record_u64(field, v),
                // Beyond what JSON numbers carry exactly: keep every digit as text.
                Err(_) => self.put(field, Value::String(value.to_string())),
            },
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.put(field, Value::String(value.to_string())),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; keep them readable rather than dropping them.
        let json = Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, json);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}
