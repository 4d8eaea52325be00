//! The PostgreSQL schema of `audit-layer` and `auditd`: the numbered SQL files beside this
//! crate's manifest, embedded.
//!
//! The files live in the repository's top-level `migrations/` folder, which is this crate,
//! so that each exists once and the packaged crate carries them. Applying them (under an
//! advisory lock, with checksums) is `audit_layer::schema::migrate`'s job; this crate only
//! hands out the text, in order.
//!
//! ```
//! use audit_migrations::MIGRATIONS;
//!
//! assert_eq!(MIGRATIONS[0].version, 1);
//! assert!(MIGRATIONS[0].sql.contains("CREATE TABLE audit_logs"));
//! assert_eq!(audit_migrations::latest_version() as usize, MIGRATIONS.len());
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), no_std)]

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number, from the file name; applied in increasing order.
    pub version: i32,
    /// Its file name.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal => $file:literal),* $(,)?) => {
        /// Every migration, in the order they are applied.
        pub const MIGRATIONS: &[Migration] = &[
            $(Migration { version: $version, name: $file, sql: include_str!(concat!("../", $file)) },)*
        ];
    };
}

migrations! {
    1 => "0001_audit_logs.sql",
    2 => "0002_commit_order.sql",
    3 => "0003_exactly_once.sql",
    4 => "0004_integrity.sql",
    5 => "0005_sealed_log.sql",
    6 => "0006_append_only.sql",
    7 => "0007_retention.sql",
    8 => "0008_idempotent_submissions.sql",
    9 => "0009_trace_index.sql",
    10 => "0010_overview_counts.sql",
    11 => "0011_partial_severity_indexes.sql",
}

/// The highest migration version embedded.
pub const fn latest_version() -> i32 {
    match MIGRATIONS.last() {
        Some(m) => m.version,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the migrations directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}
