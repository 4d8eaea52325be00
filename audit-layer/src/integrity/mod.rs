//! Record integrity: what makes a stored audit record provable.
//!
//! | piece | module |
//! |---|---|
//! | the bytes PostgreSQL prints for `jsonb`, computed from the text sent | `canonical_json` ([`jsonb_text`]) |
//! | a stored record's canonical encoding (version 1) and its leaf hash | `record` ([`StoredRecord`]) |
//! | RFC 6962 / RFC 9162 Merkle trees: heads, inclusion and consistency proofs | [`merkle`] |
//!
//! These are shared by the writer and by a verifier: the writer will hash each record
//! before `COPY` and commit each batch's root with it, and a verifier recompute both from
//! the stored rows. Neither is wired in yet: this module is the encoding and the tree,
//! each proved on its own (`tests/integrity_encoding.rs` against PostgreSQL).

mod canonical_json;
pub mod merkle;
mod record;

pub use canonical_json::{jsonb_text, NotJsonb};
pub use record::{StoredRecord, RECORD_ENCODING_V1};

/// Lowercase hex of a hash, as the verifier and the API show them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
