//! The database side: applying the schema, finishing the index swaps too large for a
//! migration's transaction, keeping partitions ahead of time, and the optional trigram
//! index. These need the table owner's role; writers need none of them.
//!
//! The SQL itself is the `audit-migrations` crate (the repository's `migrations/` folder),
//! so that the layer and auditd apply exactly the same files.

mod index_swap;
mod migrate;
mod partitioned_index;
mod partitions;
pub mod text_index;
mod version;

pub use index_swap::{complete_index_swaps, IndexSwapReport};
pub use partitioned_index::build_indexes_for_attach;

#[doc(hidden)]
pub use migrate::migrate_to;
pub use migrate::{migrate, MigrationReport};
pub use partitions::{ensure_partitions, DEFAULT_MONTHS_AHEAD};
pub use version::{latest_version, schema_version};

pub use audit_migrations::{Migration, MIGRATIONS};
