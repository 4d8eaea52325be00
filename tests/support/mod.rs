//! What every end-to-end test needs: a fresh migrated database on a real PostgreSQL, a
//! layer writing to it, and the rows read back.
#![allow(dead_code)]

pub mod csv;
pub mod generate;
pub mod http;

use std::time::Duration;

use audit_layer::{AuditHandle, AuditLayer, AuditLayerBuilder, AuditLog, Stats, RECORD_COLUMNS};
use tokio_postgres::{Client, NoTls};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

/// A database of its own for one test.
pub struct TestDb {
    pub url: String,
    pub client: Client,
}

impl TestDb {
    /// A new, empty database (no schema).
    pub async fn empty(name: &str) -> TestDb {
        let postgres = pg_provision::shared().expect("a PostgreSQL to test against");
        let url = postgres
            .create_database(name)
            .await
            .expect("create test database");
        let client = connect(&url).await;
        TestDb { url, client }
    }

    /// A new database with the schema applied.
    pub async fn migrated(name: &str) -> TestDb {
        let db = TestDb::empty(name).await;
        audit_layer::schema::migrate(&db.client)
            .await
            .expect("migrations apply");
        db
    }

    /// Every record in `audit_logs`, in id order.
    pub async fn records(&self) -> Vec<AuditLog> {
        self.records_where("true").await
    }

    pub async fn records_where(&self, condition: &str) -> Vec<AuditLog> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM audit_logs WHERE {condition} ORDER BY id");
        self.client
            .query(&sql, &[])
            .await
            .expect("select records")
            .iter()
            .map(|row| AuditLog::from_row(row).expect("decode record"))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .expect("count query")
            .get(0)
    }
}

/// Makes every row inserted into `audit_logs` cost the server `seconds` (a trigger), so
/// that a batch takes longer than a writer's timeout.
pub async fn slow_inserts(db: &TestDb, seconds: f64) {
    db.client
        .batch_execute(&format!(
            "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE INSERT ON audit_logs
                 FOR EACH ROW EXECUTE FUNCTION slow_row();"
        ))
        .await
        .expect("a slow trigger");
}

/// `url` logging in as `user`, whose password is its name (as the tests create roles):
/// `postgres://postgres@host:port/db` → `postgres://<user>:<user>@host:port/db`.
pub fn url_as(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL form");
    let (_, host_and_db) = rest.split_once('@').expect("URL with a user");
    format!("{scheme}://{user}:{user}@{host_and_db}")
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to test database");
    tokio::spawn(connection);
    client
}

/// Leaves an INVALID index named `<partition>_<suffix>` on the partition of the newest
/// record, as a cancelled concurrent build does (this one fails on duplicate user names,
/// which the table must hold); returns its name.
pub async fn leave_an_invalid_index(db: &TestDb, suffix: &str) -> String {
    let month: String = db
        .client
        .query_one(
            "SELECT tableoid::regclass::text FROM audit_logs ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let leftover = format!("{month}_{suffix}");
    let failed = db
        .client
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX CONCURRENTLY {leftover} ON {month} (username)"
        ))
        .await;
    assert!(failed.is_err(), "the build fails on duplicates");
    leftover
}

/// A builder for tests: short batch window so tests do not idle.
pub fn builder(url: &str) -> AuditLayerBuilder {
    AuditLayer::builder()
        .database_url(url)
        .batch_max_wait(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// A subscriber with only the audit layer, as a `Dispatch` to install per thread.
pub fn dispatch(builder: AuditLayerBuilder) -> (Dispatch, AuditHandle) {
    let (layer, handle) = builder.build().expect("build audit layer");
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

/// Emits with `emit` under a subscriber holding only the audit layer, shuts the writer
/// down (which commits everything), and returns the final counters.
pub async fn emit_and_flush(db: &TestDb, emit: impl FnOnce()) -> Stats {
    let (dispatch, handle) = dispatch(builder(&db.url));
    tracing::dispatcher::with_default(&dispatch, emit);
    handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("shutdown commits everything in time")
}

/// Asserts that stream `stream_id` holds exactly `n` records numbered 1..=n: none lost,
/// none written twice (the writer's own `audit_dropped` records aside).
pub async fn assert_exactly_once(client: &Client, stream_id: i64, n: i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0) \
             FROM audit_logs WHERE stream_id = $1 AND event_type <> 'audit_dropped'",
            &[&stream_id],
        )
        .await
        .expect("stream query");
    let (count, distinct, min, max): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (count, distinct, min, max),
        (n, n, 1.min(n), n),
        "(rows, distinct seq, min seq, max seq) of stream {stream_id}"
    );
}

/// A durable cluster of the test's own (tests that stop and restart the server), migrated,
/// and its URL. Durable: with synchronous_commit off a crash loses confirmed commits, which
/// no client can make up for.
pub async fn own_cluster() -> (pg_provision::Cluster, String) {
    let cluster = tokio::task::spawn_blocking(|| {
        pg_provision::Cluster::start_new(&pg_provision::ClusterOptions::durable())
    })
    .await
    .expect("cluster start-up")
    .expect("own cluster");
    let url = cluster.url("postgres");
    audit_layer::schema::migrate(&connect(&url).await)
        .await
        .expect("migrations apply");
    (cluster, url)
}

/// Seals until every committed batch is in the log, and returns what the seals did
/// together. Another test's open transaction, in any database of the cluster, holds the
/// horizon back for a moment: batches wait for it, as they should.
pub async fn seal_all(db: &TestDb, sealer: &mut auditd::seal::Sealer) -> auditd::seal::Sealed {
    let mut client = connect(&db.url).await;
    let mut total = sealer.seal(&mut client).await.expect("seal");
    for _ in 0..600 {
        let waiting = db
            .count(
                "SELECT count(*) FROM audit_writer_batches b WHERE rows > 0 AND NOT EXISTS
                   (SELECT 1 FROM audit_log_tree t WHERE (t.stream_id, t.batch_id) = (b.stream_id, b.batch_id))",
            )
            .await;
        if waiting == 0 {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let more = sealer.seal(&mut client).await.expect("seal");
        total.batches += more.batches;
        total.records += more.records;
        total.tree_size = more.tree_size;
        total.note = more.note.or(total.note);
    }
    panic!("batches still unsealed after 30 s");
}

/// A sealer with the test binary's one key, so that a database sealed twice (by two
/// sealers, or across a failover) is one log.
pub fn test_sealer() -> auditd::seal::Sealer {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        auditd::seal::SigningKey::generate("test.example/log")
            .expect("key")
            .to_text()
    });
    auditd::seal::Sealer::new(auditd::seal::SigningKey::parse(key).expect("key"))
}

/// Seals everything committed to the database at `url` and asserts that every record,
/// batch and checkpoint verifies: no false alarm after whatever the test put the writer
/// through.
pub async fn assert_intact_when_sealed(url: &str) {
    let db = TestDb {
        url: url.to_owned(),
        client: connect(url).await,
    };
    let mut sealer = test_sealer();
    seal_all(&db, &mut sealer).await;
    let log = auditd::seal::verify_log(&db.client, &[sealer.key().verifier()], &[])
        .await
        .expect("verify the log");
    assert!(log.intact(), "false alarm in the log: {:?}", log.findings);
    let records = audit_layer::integrity::verify(&db.client)
        .await
        .expect("verify the records");
    assert!(
        records.intact(),
        "false alarm in the records: {:?}",
        records.findings
    );
}
