//! Reading tracing fields into a draft record: the [`Visit`] implementation.
//!
//! Fields named like a column fill that column; every other field goes into `metadata` as
//! typed JSON (numbers stay numbers, booleans stay booleans). Secrets are replaced here,
//! before their value is ever formatted into memory the layer keeps.
//!
//! Column values go into one text buffer and metadata into one buffer of JSON object
//! members, both kept per thread and reused by the layer: no map, and no allocation per
//! field or per event (allocations were most of what an event cost its caller, see
//! BENCHMARKS.md). Where each field goes is decided once per callsite (`plan`). Values
//! PostgreSQL would refuse (NUL) or that are over the cap are repaired as they are
//! written, and noted for the record's `_fixups`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde_json::Value;
use tracing::field::{Field, Visit};

use super::draft::{Column, Draft};
use super::json::{json_string, JsonText};
use super::plan::{CallsitePlan, FieldPlan, Slot};
use super::redact::{Redactor, REDACTED};

/// The most causes of an error field written out.
const MAX_CAUSES: usize = 32;

/// Which fields a [`Capture`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// An audit event, or a span with the audit target: every field.
    Everything,
    /// Any other span: only the columns it may pass on to events.
    InheritedColumns,
}

/// A [`Visit`]or that writes fields into a [`Draft`], following its callsite's plan.
pub(crate) struct Capture<'a> {
    draft: &'a mut Draft,
    redactor: &'a Redactor,
    plan: &'a CallsitePlan,
    scope: Scope,
    max_value_bytes: usize,
}

/// A field's value on its way into a column.
enum ColumnValue<'v> {
    Str(&'v str),
    Debug(&'v dyn fmt::Debug),
    Json(Value),
}

/// Where one field goes in this capture.
enum Route<'p> {
    Ignore,
    Column(Slot),
    Metadata(Cow<'p, FieldPlan>),
}

impl<'a> Capture<'a> {
    pub(crate) fn new(
        draft: &'a mut Draft,
        redactor: &'a Redactor,
        plan: &'a CallsitePlan,
        scope: Scope,
        max_value_bytes: usize,
    ) -> Self {
        Capture {
            draft,
            redactor,
            plan,
            scope,
            max_value_bytes,
        }
    }

    #[inline(always)]
    fn route(&self, field: &Field) -> Route<'a> {
        let plan = self.plan.field(field);
        if self.scope == Scope::InheritedColumns && !plan.inherited {
            return Route::Ignore;
        }
        match plan.slot {
            Slot::Metadata => Route::Metadata(plan),
            slot => Route::Column(slot),
        }
    }

    /// Stores a value in its column slot; text is written straight into the draft.
    fn put_column(&mut self, name: &str, slot: Slot, value: ColumnValue<'_>) {
        match (slot, value) {
            (Slot::Metadata, _) => {}
            (Slot::UserId, ColumnValue::Str(s)) => {
                self.draft.user_id = Some(Value::String(s.to_owned()))
            }
            (Slot::UserId, ColumnValue::Debug(d)) => {
                let mut text = String::new();
                let written = write!(text, "{d:?}");
                self.note_if_failed(name, written, text.len());
                self.draft.user_id = Some(Value::String(text));
            }
            (Slot::UserId, ColumnValue::Json(v)) => self.draft.user_id = Some(v),
            (Slot::Text(column), ColumnValue::Str(s)) => self.draft.set(column, s),
            (Slot::Text(column), ColumnValue::Debug(d)) => self.format_column(name, column, d),
            (Slot::Text(column), ColumnValue::Json(Value::String(s))) => self.draft.set(column, &s),
            (Slot::Text(column), ColumnValue::Json(v)) => self.draft.set_with(column, |text| {
                let _ = write!(text, "{v}");
            }),
        }
    }

    /// Formats a value straight into its column, noting a formatting failure.
    fn format_column(&mut self, name: &str, column: Column, value: &dyn fmt::Debug) {
        let mut written = Ok(());
        let mut bytes = 0;
        self.draft.set_with(column, |text| {
            let start = text.len();
            written = write!(text, "{value:?}");
            bytes = text.len() - start;
        });
        self.note_if_failed(name, written, bytes);
    }

    /// A value's `Display` or `Debug` may return an error (a bug in the type, or a
    /// formatter that gives up): what it wrote before is kept, and the failure is noted
    /// like every other repair, never stored silently as if it were the whole value.
    #[cold]
    fn formatting_failed(&mut self, prefix: &str, name: &str, kept: usize) {
        self.draft.notes.push(format!(
            "{prefix}{name}: formatting the value failed (its Display or Debug returned an \
             error); kept the {kept} bytes written before the failure"
        ));
    }

    #[inline(always)]
    fn note_if_failed(&mut self, name: &str, written: fmt::Result, kept: usize) {
        if written.is_err() {
            self.formatting_failed("", name, kept);
        }
    }

    /// Starts the metadata member of a field, or writes `[REDACTED]` and returns `false`.
    #[inline(always)]
    fn meta_key(&mut self, plan: &FieldPlan) -> bool {
        if !plan.key_notes.is_empty() {
            self.draft.notes.extend(plan.key_notes.iter().cloned());
        }
        self.draft.metadata.raw_key(&plan.key);
        if plan.secret {
            json_string(&mut self.draft.metadata.0, REDACTED);
            return false;
        }
        true
    }

    /// A metadata value given as text, escaped and repaired as it is written.
    fn meta_text(
        &mut self,
        plan: &FieldPlan,
        name: &str,
        write: impl FnOnce(&mut JsonText<'_>) -> fmt::Result,
    ) {
        if !self.meta_key(plan) {
            return;
        }
        let mut text = JsonText::new(&mut self.draft.metadata.0, self.max_value_bytes);
        let written = write(&mut text);
        let kept = text.kept();
        text.finish(name, &mut self.draft.notes);
        if written.is_err() {
            self.formatting_failed("metadata.", name, kept);
        }
    }

    /// A metadata value that is a number or boolean, written as JSON text.
    #[inline(always)]
    fn meta_raw(&mut self, plan: &FieldPlan, value: &str) {
        if self.meta_key(plan) {
            self.draft.metadata.0.push_str(value);
        }
    }

    /// `metadata = %json`: the original design's way of passing a dict. An object is
    /// merged member by member (secrets redacted at any depth); other JSON is kept as its
    /// text with the secrets inside redacted; text that is not JSON is kept as it is,
    /// unless it names a secret anywhere (then it cannot be redacted in part, and is
    /// replaced whole, noted). Secrets never reach the table by way of `metadata`.
    fn metadata(&mut self, plan: &FieldPlan, name: &str, text: &str) {
        if self.merge_json(text) {
            return;
        }
        match serde_json::from_str::<Value>(text) {
            // A JSON string is text like any other (below).
            Ok(mut value) if !value.is_string() => {
                self.redactor.redact_value(&mut value);
                let text = value.to_string();
                self.meta_text(plan, name, |t| t.write_str(&text));
            }
            _ if self.redactor.is_secret(text) => {
                self.draft.notes.push(format!(
                    "metadata.{name}: not a JSON object, and it names a secret; stored as {REDACTED}"
                ));
                self.meta_text(plan, name, |t| t.write_str(REDACTED));
            }
            _ => self.meta_text(plan, name, |t| t.write_str(text)),
        }
    }

    /// Merges a JSON object's members into the metadata; `false` when `text` is not one.
    fn merge_json(&mut self, text: &str) -> bool {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        self.draft
            .merge_object(map, self.redactor, self.max_value_bytes);
        true
    }
}

impl Visit for Capture<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) if field.name() == "metadata" => {
                let mut text = String::new();
                if write!(text, "{value:?}").is_err() {
                    // Not all of it: not JSON to merge, kept as text with the failure
                    // noted (all of it replaced if it names a secret).
                    let kept = if self.redactor.is_secret(&text) {
                        REDACTED
                    } else {
                        &text
                    };
                    self.meta_text(&plan, field.name(), |t| {
                        t.write_str(kept)?;
                        Err(fmt::Error)
                    });
                } else {
                    self.metadata(&plan, field.name(), &text);
                }
            }
            Route::Metadata(plan) => {
                self.meta_text(&plan, field.name(), |t| write!(t, "{value:?}"))
            }
            // The message and other text columns, formatted straight into the draft.
            Route::Column(Slot::Text(column)) => self.format_column(field.name(), column, value),
            Route::Column(slot) => self.put_column(field.name(), slot, ColumnValue::Debug(value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) if field.name() == "metadata" => {
                self.metadata(&plan, field.name(), value)
            }
            Route::Metadata(plan) => self.meta_text(&plan, field.name(), |t| t.write_str(value)),
            // The common case, straight into the draft.
            Route::Column(Slot::Text(column)) => self.draft.set(column, value),
            Route::Column(slot) => self.put_column(field.name(), slot, ColumnValue::Str(value)),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = |out: &mut dyn fmt::Write| -> fmt::Result {
            write!(out, "{value}")?;
            // At most so many causes: a chain that loops back on itself must end.
            for cause in std::iter::successors(value.source(), |c| c.source()).take(MAX_CAUSES) {
                write!(out, ": {cause}")?;
            }
            Ok(())
        };
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_text(&plan, field.name(), |t| chain(t)),
            Route::Column(slot) => {
                let mut text = String::new();
                let written = chain(&mut text);
                self.note_if_failed(field.name(), written, text.len());
                self.put_column(field.name(), slot, ColumnValue::Str(&text))
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, itoa::Buffer::new().format(value)),
            Route::Column(slot) => self.put_column(
                field.name(),
                slot,
                ColumnValue::Json(Value::Number(value.into())),
            ),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, itoa::Buffer::new().format(value)),
            Route::Column(slot) => self.put_column(
                field.name(),
                slot,
                ColumnValue::Json(Value::Number(value.into())),
            ),
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => match u64::try_from(value) {
                Ok(v) => self.record_u64(field, v),
                // Beyond what JSON numbers carry exactly: keep every digit as text.
                Err(_) => self.record_str(field, &value.to_string()),
            },
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.record_str(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !value.is_finite() {
            // JSON has no NaN or infinity; keep them readable rather than dropping them.
            return self.record_str(field, &value.to_string());
        }
        match self.route(field) {
            Route::Ignore => {}
            // The shortest round-trip form, as serde_json writes it (`1.0`, `1e300`): valid
            // JSON that reads back as a float.
            Route::Metadata(plan) => self.meta_raw(&plan, zmij::Buffer::new().format_finite(value)),
            Route::Column(slot) => {
                let number = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
                self.put_column(field.name(), slot, ColumnValue::Json(number))
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, if value { "true" } else { "false" }),
            Route::Column(slot) => {
                self.put_column(field.name(), slot, ColumnValue::Json(Value::Bool(value)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn floats_stay_floats() {
        // Metadata floats are written by zmij; jsonb and serde_json must read them back
        // as floats, not integers, and 1e300 must not become 300 digits.
        let mut buffer = zmij::Buffer::new();
        assert_eq!(buffer.format_finite(1.0), "1.0");
        assert_eq!(buffer.format_finite(0.5), "0.5");
        let big = buffer.format_finite(1e300).to_owned();
        assert!(big.len() < 10, "{big}");
        assert!(serde_json::from_str::<Value>(&big).unwrap().is_f64());
    }
}
