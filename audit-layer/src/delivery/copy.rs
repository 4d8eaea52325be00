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

use super::hashing::ProofBuilder;
use super::retry::{classify, FailureKind};
use crate::error::describe_db_error;
use crate::integrity::RECORD_ENCODING_V1;
use crate::queue::Queued;
use crate::submit::IdempotencyKey;

const COPY_STATEMENT: &str = concat!(
    "COPY audit_logs (",
    crate::record_columns!(),
    ", stream_id, seq) FROM STDIN (FORMAT binary)"
);

const COPY_TYPES: [Type; 13] = [
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
    Type::INT8,
    Type::INT8,
];

const KEEP_REJECTED: &str = "INSERT INTO audit_logs_rejected \
     (sqlstate, reason, record, stream_id, seq) VALUES ($1, $2, $3, $4, $5)";

const RECORD_BATCH: &str =
    "INSERT INTO audit_writer_batches (stream_id, batch_id, rows) VALUES ($1, $2, $3)";

/// The ledger row of a batch with its proof (migration 0004).
const RECORD_PROVEN_BATCH: &str = "INSERT INTO audit_writer_batches \
     (stream_id, batch_id, rows, encoding, leaves, root, first_seq, last_seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The ledger rows of a batch sent under an idempotency key (migration 0008): statements
/// of their own, so that a schema without that migration still takes every other batch.
const RECORD_KEYED_BATCH: &str = "INSERT INTO audit_writer_batches \
     (stream_id, batch_id, rows, idempotency_key, request_digest) VALUES ($1, $2, $3, $4, $5)";

const RECORD_PROVEN_KEYED_BATCH: &str = "INSERT INTO audit_writer_batches \
     (stream_id, batch_id, rows, encoding, leaves, root, first_seq, last_seq, \
      idempotency_key, request_digest) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const FENCE_BATCH: &str = "INSERT INTO audit_writer_batches (stream_id, batch_id, rows) \
     VALUES ($1, $2, 0) ON CONFLICT DO NOTHING RETURNING rows";

macro_rules! commit_channel {
    () => {
        "audit_logs_committed"
    };
}

/// The channel on which the writer sends a notice (`NOTIFY`) after each batch it commits.
///
/// A reader that follows new records (auditd's tail) can `LISTEN` on it and look at once,
/// rather than at its next poll. The notice carries no payload: what was committed is read
/// from the table, so a missed notice delays a reader, never misleads it.
pub const COMMIT_CHANNEL: &str = commit_channel!();

const NOTIFY: &str = concat!("NOTIFY ", commit_channel!());

/// How long a batch's commit notice may take before it is given up.
const NOTIFY_WAIT: Duration = Duration::from_secs(1);

const CLAIMED_DIGEST: &str =
    "SELECT request_digest FROM audit_writer_batches WHERE idempotency_key = $1";

/// Whether a batch's ledger row stands for records committed (rows, or a submission's key
/// even when PostgreSQL refused every record of it) rather than a fence (rows = 0, no key).
/// `to_jsonb` reads the key without naming its column, so the query also runs on a schema
/// from before migration 0008.
const BATCH_COMMITTED: &str = "SELECT b.rows > 0 OR to_jsonb(b) ->> 'idempotency_key' IS NOT NULL \
     FROM audit_writer_batches b WHERE b.stream_id = $1 AND b.batch_id = $2";

/// The key of part `side` (0 or 1) of `parent` when it is split: in the parent's stream
/// (its records keep their `stream_id`, also when the parent came from another process's
/// spool), from a range of batch ids of its own (negative: a writer numbers its batches
/// from 1), and the same every time the same batch is split, so that a part written before
/// a crash is found in the ledger when the batch is replayed and split again.
pub(crate) fn part_key(parent: BatchKey, side: u64) -> BatchKey {
    let mut x = (parent.batch_id as u64)
        ^ (parent.stream_id as u64).rotate_left(17)
        ^ side.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser: every bit of the parent's key moves every bit of the part's.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    BatchKey {
        stream_id: parent.stream_id,
        batch_id: -((x >> 2) as i64) - 1,
    }
}

/// A batch's place in the ledger: whose it is and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchKey {
    pub(crate) stream_id: i64,
    pub(crate) batch_id: i64,
}

/// What became of a batch whose commit outcome was unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It committed: its records are in the table.
    Committed,
    /// It did not commit, and now never will: send its records again, under a new key.
    Fenced,
}

/// Why a database call failed, and what to do about it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    /// Whether the call got far enough that it may have committed (false when no
    /// connection could even be had).
    pub(crate) maybe_committed: bool,
    pub(crate) sqlstate: Option<String>,
    pub(crate) message: String,
}

impl Failure {
    fn from_db(e: &tokio_postgres::Error) -> Self {
        Failure {
            kind: classify(e),
            maybe_committed: true,
            sqlstate: e.code().map(|c| c.code().to_owned()),
            message: describe_db_error(e),
        }
    }

    fn no_connection(message: String) -> Self {
        Failure {
            kind: FailureKind::Transient,
            maybe_committed: false,
            sqlstate: None,
            message,
        }
    }
}

/// The writer's access to PostgreSQL.
pub(crate) struct Sink {
    pool: Pool,
    timeout: Duration,
    /// Whether each batch commits its records' leaves and root.
    integrity: bool,
}

impl Sink {
    pub(crate) fn new(pool: Pool, timeout: Duration, integrity: bool) -> Self {
        Sink {
            pool,
            timeout,
            integrity,
        }
    }

    pub(crate) async fn client(&self) -> Result<Object, Failure> {
        match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(Failure::no_connection(format!(
                "no database connection: {e}"
            ))),
            Err(_) => Err(Failure::no_connection(format!(
                "no database connection within {:?}",
                self.timeout
            ))),
        }
    }

    /// Writes all `records`, and the batch's ledger row, in one transaction, or nothing.
    pub(crate) async fn copy(&self, key: BatchKey, records: &[Queued]) -> Result<(), Failure> {
        self.copy_claimed(key, records, &[], None).await
    }

    /// Writes `records`, the `refused` ones into `audit_logs_rejected` with their reasons,
    /// and the batch's ledger row (under `claim`, a submission's idempotency key), in one
    /// transaction, or nothing: a submission commits whole, so its key never stands for
    /// part of it.
    pub(crate) async fn copy_claimed(
        &self,
        key: BatchKey,
        records: &[Queued],
        refused: &[(&Queued, &Failure)],
        claim: Option<&IdempotencyKey>,
    ) -> Result<(), Failure> {
        let client = self.client().await?;
        let outcome = tokio::time::timeout(
            self.timeout,
            copy_batch(&client, key, records, refused, claim, self.integrity),
        )
        .await;
        self.settle(client, outcome, "COPY into audit_logs")
    }

    /// Whether PostgreSQL takes `records`: they are copied in a transaction that is rolled
    /// back. How the records of a submission that PostgreSQL refuses are told apart from
    /// the others without committing any part of it.
    pub(crate) async fn probe(&self, stream_id: i64, records: &[Queued]) -> Result<(), Failure> {
        let client = self.client().await?;
        let work = async {
            client.batch_execute("BEGIN").await?;
            let copied = copy_rows(&client, stream_id, records, None).await;
            let _ = client.batch_execute("ROLLBACK").await;
            copied
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        self.settle(client, outcome, "a trial COPY into audit_logs")
    }

    /// The request digest of the batch committed under `claim`'s key, if one is.
    pub(crate) async fn claimed_digest(
        &self,
        claim: &IdempotencyKey,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let client = self.client().await?;
        let mut digest = None;
        let work = async {
            let row = client.query_opt(CLAIMED_DIGEST, &[&claim.as_str()]).await?;
            digest = row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0));
            Ok(())
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        self.settle(client, outcome, "reading a submission's ledger row")?;
        Ok(digest)
    }

    /// Settles the fate of a batch whose outcome is unknown (see migration 0003).
    pub(crate) async fn fence(&self, key: BatchKey) -> Result<Fate, Failure> {
        let client = self.client().await?;
        let mut fate = Fate::Fenced;
        let work = async {
            let params: [&(dyn ToSql + Sync); 2] = [&key.stream_id, &key.batch_id];
            if client.query_opt(FENCE_BATCH, &params).await?.is_some() {
                fate = Fate::Fenced;
                return Ok(());
            }
            // The key was there already: committed by the batch itself (rows > 0), or by an
            // earlier fence of ours whose answer was lost (rows = 0). A new statement sees
            // rows committed while the insert above waited for them.
            let committed: bool = client.query_one(BATCH_COMMITTED, &params).await?.get(0);
            fate = if committed {
                Fate::Committed
            } else {
                Fate::Fenced
            };
            Ok(())
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        self.settle(client, outcome, "fencing a batch")?;
        Ok(fate)
    }

    /// Keeps a record PostgreSQL refused in `audit_logs_rejected`, with the reason.
    pub(crate) async fn keep_rejected(
        &self,
        stream_id: i64,
        record: &Queued,
        reason: &Failure,
    ) -> Result<(), Failure> {
        let client = self.client().await?;
        let outcome = tokio::time::timeout(
            self.timeout,
            insert_rejected(&client, stream_id, record, reason),
        )
        .await;
        self.settle(client, outcome, "INSERT into audit_logs_rejected")
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
                if !matches!(
                    failure.kind,
                    FailureKind::Data | FailureKind::AlreadyCommitted | FailureKind::Duplicate
                ) {
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
                    maybe_committed: true,
                    sqlstate: None,
                    message: format!("{what} did not finish within {:?}", self.timeout),
                })
            }
        }
    }
}

/// Keeps `record` in `audit_logs_rejected` with the reason PostgreSQL gave.
async fn insert_rejected(
    client: &tokio_postgres::Client,
    stream_id: i64,
    record: &Queued,
    reason: &Failure,
) -> Result<(), tokio_postgres::Error> {
    let json = record.log.to_log().to_json();
    let params: [&(dyn ToSql + Sync); 5] = [
        &reason.sqlstate,
        &reason.message,
        &Json(&json),
        &stream_id,
        &record.seq,
    ];
    client.execute(KEEP_REJECTED, &params).await.map(|_| ())
}

async fn copy_batch(
    client: &tokio_postgres::Client,
    key: BatchKey,
    records: &[Queued],
    refused: &[(&Queued, &Failure)],
    claim: Option<&IdempotencyKey>,
    integrity: bool,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let work = async {
        // A batch whose every record was refused has nothing to prove, only its key.
        let prove = integrity && !records.is_empty();
        let mut proof = prove.then(|| ProofBuilder::new(key.stream_id, records.len()));
        if !records.is_empty() {
            copy_rows(client, key.stream_id, records, proof.as_mut()).await?;
        }
        for (record, reason) in refused {
            insert_rejected(client, key.stream_id, record, reason).await?;
        }
        let proof = proof.map(ProofBuilder::finish);
        let rows = i32::try_from(records.len()).unwrap_or(i32::MAX);
        let claim_key = claim.map(IdempotencyKey::as_str);
        let claim_digest = claim.map(|c| &c.request_digest()[..]);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key.stream_id, &key.batch_id, &rows];
        let proven = proof.as_ref().map(|proof| {
            (
                i16::from(RECORD_ENCODING_V1),
                &proof.leaves,
                &proof.root[..],
                records.first().map(|r| r.seq),
                records.last().map(|r| r.seq),
            )
        });
        if let Some((encoding, leaves, root, first_seq, last_seq)) = &proven {
            params.extend([
                encoding as &(dyn ToSql + Sync),
                leaves,
                root,
                first_seq,
                last_seq,
            ]);
        }
        if claim.is_some() {
            params.extend([&claim_key as &(dyn ToSql + Sync), &claim_digest]);
        }
        let statement = match (proven.is_some(), claim.is_some()) {
            (true, true) => RECORD_PROVEN_KEYED_BATCH,
            (true, false) => RECORD_PROVEN_BATCH,
            (false, true) => RECORD_KEYED_BATCH,
            (false, false) => RECORD_BATCH,
        };
        client.execute(statement, &params).await?;
        client.batch_execute("COMMIT").await?;
        // Readers that LISTEN (auditd's tail) look at once instead of at their next poll.
        // Sent after the commit, on its own: a full notification queue (a listener that
        // stopped reading) must never fail a batch, and batch commits must not queue
        // behind PostgreSQL's notification lock. A notice lost here only delays a reader.
        let _ = tokio::time::timeout(NOTIFY_WAIT, client.batch_execute(NOTIFY)).await;
        Ok(())
    };
    let result = work.await;
    if result.is_err() && !client.is_closed() {
        // Leave the connection usable; if this fails too, the connection is discarded
        // anyway by the caller for any failure but a data error.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn copy_rows(
    client: &tokio_postgres::Client,
    stream_id: i64,
    records: &[Queued],
    mut proof: Option<&mut ProofBuilder>,
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in(COPY_STATEMENT).await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    for Queued { seq, log: r } in records {
        let metadata = r.metadata().map(RawJsonb);
        writer
            .as_mut()
            .write(&[
                &r.username(),
                &r.user_id,
                &r.event_type(),
                &r.message(),
                &r.ip_address,
                &r.resource_type(),
                &r.resource_id(),
                &r.resource_name(),
                &r.severity.as_str(),
                &metadata,
                &r.created_at,
                &stream_id,
                seq,
            ])
            .await?;
        if let Some(proof) = proof.as_deref_mut() {
            proof.add(*seq, r);
        }
    }
    writer.finish().await?;
    Ok(())
}

/// JSON text sent as `jsonb` as it is: the binary format is a version byte and the text.
#[derive(Debug)]
struct RawJsonb<'a>(&'a str);

impl ToSql for RawJsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    tokio_postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_key_is_the_same_each_time_in_its_parents_stream_and_apart_from_counted_ids() {
        let parent = BatchKey {
            stream_id: 7_000_000_001,
            batch_id: 42,
        };
        let (a, b) = (part_key(parent, 0), part_key(parent, 1));
        assert_eq!(a, part_key(parent, 0), "the same every time");
        assert_ne!(a, b);
        assert_eq!(
            (a.stream_id, b.stream_id),
            (parent.stream_id, parent.stream_id)
        );
        assert!(
            a.batch_id < 0 && b.batch_id < 0,
            "never a writer's own 1, 2, 3..."
        );
        // Parts of parts, and parts of another batch, differ.
        assert_ne!(part_key(a, 0), a);
        assert_ne!(
            part_key(
                BatchKey {
                    batch_id: 43,
                    ..parent
                },
                0
            ),
            a
        );
    }
}
