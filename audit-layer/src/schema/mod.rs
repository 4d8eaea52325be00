//! The database side: applying the schema, keeping partitions ahead of time, and the
//! optional trigram index. These need the table owner's role; writers need none of them.
//!
//! The SQL itself is the `audit-migrations` crate (the repository's `migrations/` folder),
//! so that the layer and auditd apply exactly the same files.

mod migrate;
mod partitions;
pub mod text_index;

#[doc(hidden)]
pub use migrate::migrate_to;
pub use migrate::{latest_version, migrate, schema_version, MigrationReport};
pub use partitions::{ensure_partitions, DEFAULT_MONTHS_AHEAD};

pub use audit_migrations::{Migration, MIGRATIONS};
