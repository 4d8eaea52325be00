//! The errors of this crate.

use std::fmt;

/// Everything that can go wrong when building, migrating, flushing or shutting down.
///
/// Problems while *writing* records are not returned to the caller (it never waits on the
/// database); they are retried or recorded, and show up in [`Stats`](crate::Stats).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work, for example an unparsable database URL.
    Config(String),
    /// The writer thread or its runtime could not be started.
    Spawn(std::io::Error),
    /// PostgreSQL answered with an error, or the connection failed.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(deadpool_postgres::PoolError),
    /// The database carries a migration this binary does not know: it was migrated by a
    /// newer version. Running an older binary against it could write what the new schema
    /// forbids, so it is refused.
    SchemaTooNew {
        /// The highest migration version recorded in the database.
        database: i32,
        /// The highest migration version this binary knows.
        known: i32,
    },
    /// A migration recorded as applied differs from the one embedded in this binary.
    MigrationChanged {
        /// The migration's version.
        version: i32,
        /// The migration's name.
        name: String,
    },
    /// Shutdown did not finish in time; `unwritten` records were not yet committed.
    ShutdownTimeout {
        /// Records accepted by the layer but not committed when the time ran out.
        unwritten: u64,
    },
    /// The writer has stopped (after shutdown), so the request cannot be served.
    WriterStopped,
    /// A schema step needs a moment's lock on `audit_logs`, and a long query or transaction
    /// held the table through every try (writers would have queued behind the wait). The
    /// work done so far is kept; running the step again finishes it.
    TableBusy {
        /// The step left to do.
        step: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Spawn(e) => write!(f, "cannot start the audit writer thread: {e}"),
            Error::Db(e) => write!(f, "database error: {}", describe_db_error(e)),
            Error::Pool(e) => write!(f, "no database connection: {e}"),
            Error::SchemaTooNew { database, known } => write!(
                f,
                "the database schema is at migration {database}, but this binary only knows \
                 migrations up to {known}: upgrade this binary before using this database"
            ),
            Error::MigrationChanged { version, name } => write!(
                f,
                "migration {version} ({name}) applied to the database differs from the one in \
                 this binary; migrations must never be edited once released"
            ),
            Error::ShutdownTimeout { unwritten } => write!(
                f,
                "audit writer shutdown timed out with {unwritten} record(s) not yet committed"
            ),
            Error::WriterStopped => f.write_str("the audit writer has stopped"),
            Error::TableBusy { step } => write!(
                f,
                "a long query or transaction held audit_logs through every try; \
                 {step} is left to the next run"
            ),
        }
    }
}

/// Every message is complete on its own (the server's message, SQLSTATE and detail
/// included), so no variant also reports a `source`: error reporters that walk the chain
/// would print it twice.
impl std::error::Error for Error {}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Pool(e)
    }
}

/// A tokio-postgres error with the server's message, SQLSTATE and detail when there are
/// some (its own `Display` says only "db error"); otherwise the error and its causes.
///
/// ```
/// # async fn run() {
/// match tokio_postgres::connect("host=/nonexistent user=nobody", tokio_postgres::NoTls).await {
///     Ok(_) => {}
///     Err(e) => eprintln!("{}", audit_layer::describe_db_error(&e)),
/// }
/// # }
/// ```
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}
