//! Record integrity: what makes a stored audit record provable.
//!
//! | piece | module |
//! |---|---|
//! | the bytes PostgreSQL prints for `jsonb`, computed from the text sent | `canonical_json` ([`jsonb_text`]) |
//! | a stored record's canonical encoding (version 1) and its leaf hash | `record` ([`StoredRecord`]) |
//! | RFC 6962 / RFC 9162 Merkle trees: heads, inclusion and consistency proofs | [`merkle`] |
//! | a committed batch's entry in the signed log | `batch` ([`BatchEntry`]) |
//! | checking the stored records and batches against what was committed | `verify` ([`verify()`]) |
//! | seqs missing between a stream's committed batches, beside its announced drops | `gaps` ([`stream_gaps`]) |
//!
//! The writer and a verifier share them: the writer hashes each record before `COPY` and
//! commits each batch's leaves and root with it (on by default,
//! [`AuditLayerBuilder::integrity`](crate::AuditLayerBuilder::integrity)); a verifier
//! recomputes both from the stored rows ([`stored_leaf`]). auditd seals the committed
//! batches, in commit order, into one append-only tree whose checkpoints it signs; each
//! batch's leaf there is its [`BatchEntry`].

mod batch;
mod canonical_json;
mod gaps;
pub mod merkle;
mod record;
mod verify;

pub use batch::{batch_leaves, BatchEntry, BATCH_ENCODING_V1, BATCH_ENTRY_COLUMNS};
pub use canonical_json::{jsonb_text, NotJsonb};
pub use gaps::{stream_gaps, StreamGaps};
pub use record::{
    stored_encoding, stored_leaf, stored_record, NotAnEncoding, StoredRecord, RECORD_ENCODING_V1,
    STORED_RECORD_COLUMNS,
};
pub use verify::{verify, verify_retired, verify_scoped, Finding, Report, RetiredRun, Scope};
