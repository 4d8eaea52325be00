//! Stage one, on the emitting thread: an event and its spans become a record.
//!
//! | step | module |
//! |---|---|
//! | where each field of a callsite goes, decided once per callsite | `plan` |
//! | which field names are secrets, and replacing them | `redact` |
//! | fields read into a draft (columns as text, metadata as JSON members) | `visit`, `draft` |
//! | JSON text written and capped as it is formatted | `json` |
//! | values PostgreSQL would refuse repaired and noted | `fixups` |
//! | the draft finished into one queued buffer | `sanitize` |
//! | a record sent as a JSON object (auditd's ingest) read into a draft the same way | `object` |
//!
//! The `Layer` itself (`crate::layer`) drives these for each event and span; a
//! [`Submission`](crate::Submission) drives `object` for each record sent.

mod draft;
mod fixups;
mod json;
mod object;
mod plan;
mod redact;
mod sanitize;
mod visit;

pub(crate) use draft::{is_inherited_field, Draft};
pub(crate) use json::Members;
pub(crate) use object::{record_of, ClockSkew};
pub(crate) use plan::CallsitePlan;
pub(crate) use redact::Redactor;
pub(crate) use sanitize::finish;
pub(crate) use visit::{Capture, Scope};

pub use fixups::{FIXUPS_KEY, RENAMED_FIXUPS_KEY, RENAMED_SENDER_KEY, SENDER_KEY};
pub use redact::{DEFAULT_SECRET_PATTERNS, REDACTED};
pub use sanitize::{column_limits, DEFAULT_MAX_MESSAGE_BYTES, UNKNOWN};
