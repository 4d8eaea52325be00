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
//!
//! The `Layer` itself (`crate::layer`) drives these for each event and span.

mod draft;
mod fixups;
mod json;
mod plan;
mod redact;
mod sanitize;
mod visit;

pub(crate) use draft::{is_inherited_field, Draft};
pub(crate) use json::Members;
pub(crate) use plan::CallsitePlan;
pub(crate) use redact::Redactor;
pub(crate) use sanitize::finish;
pub(crate) use visit::{Capture, Scope};

pub use fixups::{FIXUPS_KEY, RENAMED_FIXUPS_KEY};
pub use redact::{DEFAULT_SECRET_PATTERNS, REDACTED};
pub use sanitize::{column_limits, DEFAULT_MAX_MESSAGE_BYTES, UNKNOWN};
