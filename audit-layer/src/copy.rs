//! Where records are written: one binary `COPY` per batch, and the table for refused ones.
//!
//! Binary `COPY ... FROM STDIN` is the fastest way into PostgreSQL once batches pass about
//! a thousand rows. It is all-or-nothing, so the writer splits a refused batch to isolate
//! the bad record; this module only reports how a call failed.
//!
//! tokio-postgres has no query timeout, and a server-side `statement_timeout` is not
//! something a library can count on being set, so every call here runs under
//! `tokio::time::timeout`. A connection whose call failed for any reason but its data is
//! closed rather than returned to the pool: after a timeout it is in an unknown state, and
//! after an error it may be broken or attached to a server that is no longer the primary.

use std::pin::pin;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::error::describe_db_error;
use crate::record::AuditLog;
use crate::retry::{classify, FailureKind};

const COPY_STATEMENT: &str = concat!(
    "COPY audit_logs (",
    crate::record_columns!(),
    ") FROM STDIN (FORMAT binary)"
);

const COPY_TYPES: [Type; 11] = [
    Type::VARCHAR,
    Type::INT8,
    Type::VARCHAR,
    Type::TEXT,
    Type::INET,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::JSONB,
    Type::TIMESTAMPTZ,
];

const KEEP_REJECTED: &str =
    "INSERT INTO audit_logs_rejected (sqlstate, reason, record) VALUES ($1, $2, $3)";

/// Why a database call failed, and what to do about it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) sqlstate: Option<String>,
    pub(crate) message: String,
}

impl Failure {
    fn from_db(e: &tokio_postgres::Error) -> Self {
        Failure {
            kind: classify(e),
            sqlstate: e.code().map(|c| c.code().to_owned()),
            message: describe_db_error(e),
        }
    }

    fn transient(message: String) -> Self {
        Failure {
            kind: FailureKind::Transient,
            sqlstate: None,
            message,
        }
    }
}

/// The writer's access to PostgreSQL.
pub(crate) struct Sink {
    pool: Pool,
    timeout: Duration,
}

impl Sink {
    pub(crate) fn new(pool: Pool, timeout: Duration) -> Self {
        Sink { pool, timeout }
    }

    pub(crate) async fn client(&self) -> Result<Object, Failure> {
        match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(Failure::transient(format!("no database connection: {e}"))),
            Err(_) => Err(Failure::transient(format!(
                "no database connection within {:?}",
                self.timeout
            ))),
        }
    }

    /// Writes all `records` in one transaction, or none of them.
    pub(crate) async fn copy(&self, records: &[AuditLog]) -> Result<(), Failure> {
        let client = self.client().await?;
        let outcome = tokio::time::timeout(self.timeout, copy_rows(&client, records)).await;
        self.settle(client, outcome, "COPY into audit_logs")
    }

    /// Keeps a record PostgreSQL refused in `audit_logs_rejected`, with the reason.
    pub(crate) async fn keep_rejected(
        &self,
        record: &AuditLog,
        reason: &Failure,
    ) -> Result<(), Failure> {
        let client = self.client().await?;
        let json = record.to_json();
        let params: [&(dyn ToSql + Sync); 3] = [&reason.sqlstate, &reason.message, &Json(&json)];
        let outcome =
            tokio::time::timeout(self.timeout, client.execute(KEEP_REJECTED, &params)).await;
        self.settle(
            client,
            outcome.map(|r| r.map(|_| ())),
            "INSERT into audit_logs_rejected",
        )
    }

    fn settle(
        &self,
        client: Object,
        outcome: Result<Result<(), tokio_postgres::Error>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> Result<(), Failure> {
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let failure = Failure::from_db(&e);
                if failure.kind != FailureKind::Data {
                    // The next attempt gets a fresh connection: this one may be broken, or
                    // talking to a server that is no longer the primary.
                    drop(Object::take(client));
                }
                Err(failure)
            }
            Err(_) => {
                // Mid-call, in an unknown state: never hand it to anyone else.
                drop(Object::take(client));
                Err(Failure {
                    kind: FailureKind::TooSlow,
                    sqlstate: None,
                    message: format!("{what} did not finish within {:?}", self.timeout),
                })
            }
        }
    }
}

async fn copy_rows(
    client: &tokio_postgres::Client,
    records: &[AuditLog],
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in(COPY_STATEMENT).await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    for r in records {
        let metadata = (!r.metadata.is_empty()).then_some(Json(&r.metadata));
        writer
            .as_mut()
            .write(&[
                &r.username,
                &r.user_id,
                &r.event_type,
                &r.message,
                &r.ip_address,
                &r.resource_type,
                &r.resource_id,
                &r.resource_name,
                &r.severity.as_str(),
                &metadata,
                &r.created_at,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}
