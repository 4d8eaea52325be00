//! Retention: monthly partitions older than a window leave the database, each into an
//! archive that stays provable against the signed log, unless a legal hold keeps it.
//!
//! | piece | module |
//! |---|---|
//! | which partitions go, which stay and why (window, current month, holds) | `plan` |
//! | legal holds: placed, listed, lifted | `holds` |
//! | the archive file: zstd NDJSON, written by the export's streaming path, read back | `archive` |
//! | the manifest beside it, and its signature | `manifest` |
//! | checking an archive against its manifest and the log, offline | `check` |
//! | one run at a time, no restore beside one | `lock` |
//! | a run: archive, check, sign, detach, record, drop | `retire` |
//! | an archive back into its partition, for an investigation | `restore` |
//! | the retirements `auditd verify` trusts: those whose manifest is signed | `retirements` |
//!
//! The batch ledger and the signed log are never retired: they prove the archives, and
//! let `auditd verify` tell a retired record from a missing one.

mod archive;
mod check;
mod holds;
mod lock;
mod manifest;
mod plan;
mod restore;
mod retire;
mod retirements;

pub use archive::{
    write_archive, ArchiveError, ArchivePaths, ArchivedRecord, SeqRun, Tally, Written,
    ARCHIVE_SUFFIX,
};
pub use check::{check_archive, ArchiveReport};
pub use holds::{active_holds, all_holds, lift, place, Hold, HoldError};
pub use manifest::{
    check_manifest_signature, manifest_is_signed, Manifest, ManifestSignatureError, MANIFEST_FORMAT,
};
pub use plan::{partitions, plan, Keep, Kept, Partition, Planned, DETACHED_BY_RETENTION};
pub use restore::{restore, RestoreError, Restored};
pub use retire::{reattach, run, RetentionOptions, RetireError, Retired, RunReport};
pub use retirements::{retirements, Retirement, Retirements};
