//! Submissions: records sent as JSON objects (auditd's HTTP ingest), written as a batch of
//! their own under an idempotency key, committed at most once under it, whichever writer
//! sends them and whenever, with every guarantee an event gets.

mod support;

use std::time::Duration;

use audit_layer::{IdempotencyKey, Outcome, Receipt};
use serde_json::{json, Value};
use support::{assert_intact_when_sealed, builder, own_cluster, TestDb};

fn objects(n: usize, event_type: &str) -> Vec<serde_json::Map<String, Value>> {
    (0..n)
        .map(|i| {
            let Value::Object(object) = json!({
                "username": "alice",
                "event_type": event_type,
                "message": format!("record {i}"),
                "metadata": {"index": i, "password": "hunter2"},
            }) else {
                unreachable!()
            };
            object
        })
        .collect()
}

async fn submit(
    handle: &audit_layer::AuditHandle,
    key: Option<&str>,
    records: Vec<serde_json::Map<String, Value>>,
) -> Receipt {
    let mut submission = handle
        .submission()
        .sent_by("billing", Some("10.0.0.7".parse().unwrap()));
    if let Some(key) = key {
        submission = submission.idempotency_key(IdempotencyKey::new(key, [7; 32]).unwrap());
    }
    for object in records {
        submission.push_object(object);
    }
    tokio::time::timeout(Duration::from_secs(60), handle.submit(submission))
        .await
        .expect("submitted in time")
        .expect("submitted")
}

#[tokio::test]
async fn a_submission_commits_once_under_its_key_even_when_another_writer_sends_it_again() {
    let db = TestDb::migrated("submit_once").await;
    let (_, first) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let receipt = submit(&first, Some("billing:order-7"), objects(3, "payment")).await;
    assert_eq!(receipt.outcome, Outcome::Committed);
    assert_eq!((receipt.records, receipt.rejected), (3, 0));

    // Another process (auditd restarted, or a second one) gets the sender's retry.
    let (_, second) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let retry = submit(&second, Some("billing:order-7"), objects(3, "payment")).await;
    assert_eq!(retry.outcome, Outcome::Duplicate);
    second.flush().await.unwrap();
    assert_eq!(second.stats().suppressed_duplicates, 3);
    assert_eq!(second.stats().pending(), 0);

    let stored = db.records_where("event_type = 'payment'").await;
    assert_eq!(stored.len(), 3, "written once");
    assert_eq!(stored[0].metadata["password"], audit_layer::REDACTED);
    assert_eq!(stored[0].metadata["_sent_by"]["name"], "billing");
    assert_eq!(stored[0].metadata["_sent_by"]["address"], "10.0.0.7");
    let ledger = db
        .client
        .query_one(
            "SELECT stream_id, rows, request_digest FROM audit_writer_batches \
             WHERE idempotency_key = 'billing:order-7'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ledger.get::<_, i64>(0), first.stream_id());
    assert_eq!(ledger.get::<_, i32>(1), 3);
    assert_eq!(ledger.get::<_, Vec<u8>>(2), vec![7; 32]);

    // The seqs the suppressed retry had taken are explained in the table itself.
    let notice = db
        .records_where(&format!(
            "event_type = 'audit_duplicate_suppressed' AND stream_id = {}",
            second.stream_id()
        ))
        .await;
    assert_eq!(notice.len(), 1);
    let (low, high) = retry.seqs.unwrap();
    assert_eq!(notice[0].metadata["first_seq"], low);
    assert_eq!(notice[0].metadata["last_seq"], high);
    assert_eq!(notice[0].metadata["idempotency_key"], "billing:order-7");

    // Without a key, the same records are simply written again.
    let unkeyed = submit(&second, None, objects(2, "payment")).await;
    assert_eq!(unkeyed.outcome, Outcome::Committed);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'payment'")
            .await,
        5
    );
    for handle in [first, second] {
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
    }
    assert_intact_when_sealed(&db.url).await;
}

#[tokio::test]
async fn a_submission_spooled_while_the_database_is_down_keeps_its_key_on_disk() {
    let (cluster, url) = own_cluster().await;
    cluster.stop("fast").unwrap();
    let dir = std::env::temp_dir().join(format!("audit-submit-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_, spooling) = builder(&url)
        .spool_dir(&dir)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let receipt = submit(&spooling, Some("billing:order-8"), objects(4, "refund")).await;
    assert_eq!(receipt.outcome, Outcome::Spooled, "answered once on disk");
    assert!(spooling.stats().spool_bytes > 0);

    cluster.start().unwrap();
    tokio::time::timeout(Duration::from_secs(60), spooling.flush())
        .await
        .expect("replayed in time")
        .unwrap();
    // The key went to disk with the records and came back with them: the retry is known.
    let (_, other) = builder(&url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let retry = submit(&other, Some("billing:order-8"), objects(4, "refund")).await;
    assert_eq!(retry.outcome, Outcome::Duplicate);
    let client = support::connect(&url).await;
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'refund'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 4);
    for handle in [spooling, other] {
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
    }
    assert_intact_when_sealed(&url).await;
}

fn object(message: &str) -> serde_json::Map<String, Value> {
    let Value::Object(object) =
        json!({"username": "alice", "event_type": "settlement", "message": message})
    else {
        unreachable!()
    };
    object
}

#[tokio::test]
async fn a_submission_with_a_record_postgresql_refuses_commits_whole_and_a_retry_adds_nothing() {
    let db = TestDb::migrated("submit_refused").await;
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let records = || ["a", "b", "poison", "c", "d"].map(object).to_vec();
    let (_, first) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let receipt = submit(&first, Some("billing:settle-1"), records()).await;
    assert_eq!(receipt.outcome, Outcome::Committed);
    assert_eq!((receipt.records, receipt.rejected), (5, 1));
    // One transaction: the four records, the refused one kept aside, the key.
    let ledger = db
        .client
        .query_one(
            "SELECT count(*), sum(rows) FROM audit_writer_batches \
             WHERE stream_id = $1 AND rows > 0",
            &[&first.stream_id()],
        )
        .await
        .unwrap();
    assert_eq!(
        (ledger.get::<_, i64>(0), ledger.get::<_, i64>(1)),
        (1, 4),
        "one batch, not parts"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_writer_batches WHERE idempotency_key = 'billing:settle-1' AND rows = 4")
            .await,
        1
    );

    let (_, second) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let retry = submit(&second, Some("billing:settle-1"), records()).await;
    assert_eq!(retry.outcome, Outcome::Duplicate);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'settlement'")
            .await,
        4
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs_rejected").await,
        1,
        "the retry's refused record is not kept twice"
    );
    for handle in [first, second] {
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
    }
    assert_intact_when_sealed(&db.url).await;
}

#[tokio::test]
async fn a_key_reused_for_other_records_writes_nothing_and_says_so() {
    let db = TestDb::migrated("submit_reused").await;
    let (_, handle) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let key = |digest: u8| IdempotencyKey::new("billing:order-9", [digest; 32]).unwrap();
    let mut first = handle.submission().idempotency_key(key(1));
    first.push_object(object("first"));
    assert_eq!(
        handle.submit(first).await.unwrap().outcome,
        Outcome::Committed
    );
    let mut other = handle.submission().idempotency_key(key(2));
    other.push_object(object("other"));
    other.push_object(object("records"));
    let refused = handle.submit(other).await.unwrap();
    assert_eq!(refused.outcome, Outcome::KeyReused);
    handle.flush().await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'settlement'")
            .await,
        1
    );
    let notice = db
        .records_where("event_type = 'audit_submission_refused'")
        .await;
    assert_eq!(notice.len(), 1);
    let (low, high) = refused.seqs.unwrap();
    assert_eq!(
        (
            notice[0].metadata["first_seq"].as_i64(),
            notice[0].metadata["last_seq"].as_i64()
        ),
        (Some(low), Some(high))
    );
    handle.shutdown(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn a_submission_too_slow_to_write_whole_is_written_in_parts_rather_than_not_at_all() {
    let db = TestDb::migrated("submit_too_slow").await;
    // 2 ms a row: 400 records take 0.8 s, over the 300 ms timeout; 100 fit.
    support::slow_inserts(&db, 0.002).await;
    let (_, handle) = builder(&db.url)
        .db_timeout(Duration::from_millis(300))
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let records: Vec<_> = (0..400).map(|i| object(&format!("r{i}"))).collect();
    let receipt = submit(&handle, Some("billing:bulk-1"), records).await;
    assert_eq!(receipt.outcome, Outcome::Committed);
    assert_eq!(
        db.count("SELECT count(DISTINCT message) FROM audit_logs WHERE event_type = 'settlement'")
            .await,
        400
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'settlement'")
            .await,
        400
    );
    let stats = handle.stats();
    assert!(stats.batches >= 2, "in parts: {stats:?}");
    // Parts cannot carry a key that stands for the whole (an error is logged saying so).
    assert_eq!(
        db.count("SELECT count(*) FROM audit_writer_batches WHERE idempotency_key IS NOT NULL")
            .await,
        0
    );
    handle.shutdown(Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn a_submission_refused_whole_for_no_record_of_its_own_is_written_in_parts_rather_than_not_at_all(
) {
    let db = TestDb::migrated("submit_unlocalized").await;
    // A rule of the ledger's, not of any record: every batch sent under a key is refused,
    // while each record alone is fine.
    db.client
        .batch_execute(
            "CREATE FUNCTION no_keys() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN
                      IF NEW.idempotency_key IS NOT NULL THEN RAISE EXCEPTION 'no keys here'; END IF;
                      RETURN NEW;
                    END $$;
             CREATE TRIGGER no_keys BEFORE INSERT ON audit_writer_batches
                 FOR EACH ROW EXECUTE FUNCTION no_keys();",
        )
        .await
        .unwrap();
    let (_, handle) = builder(&db.url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let records: Vec<_> = (0..10).map(|i| object(&format!("r{i}"))).collect();
    let receipt = submit(&handle, Some("billing:locked-1"), records).await;
    assert_eq!(receipt.outcome, Outcome::Committed, "answered, not stuck");
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'settlement'")
            .await,
        10
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs_rejected").await,
        0
    );
    handle.shutdown(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn a_spooled_submission_whose_key_was_taken_meanwhile_for_other_records_is_written_without_it(
) {
    let (cluster, url) = own_cluster().await;
    // Another sender's records commit under the key first.
    let (_, first) = builder(&url)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let mut taken = first
        .submission()
        .idempotency_key(IdempotencyKey::new("billing:order-10", [1; 32]).unwrap());
    taken.push_object(object("first"));
    assert_eq!(
        first.submit(taken).await.unwrap().outcome,
        Outcome::Committed
    );

    // With the database down, this one is spooled, and its sender told so.
    cluster.stop("fast").unwrap();
    let dir = std::env::temp_dir().join(format!("audit-submit-reuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_, spooling) = builder(&url)
        .spool_dir(&dir)
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    let mut other = spooling
        .submission()
        .idempotency_key(IdempotencyKey::new("billing:order-10", [2; 32]).unwrap());
    other.push_object(object("other"));
    other.push_object(object("records"));
    assert_eq!(
        spooling.submit(other).await.unwrap().outcome,
        Outcome::Spooled
    );

    // Replayed, it meets the key taken for other records: it is written all the same
    // (its sender was told it was spooled), only not under that key.
    cluster.start().unwrap();
    tokio::time::timeout(Duration::from_secs(60), spooling.flush())
        .await
        .expect("replayed in time")
        .unwrap();
    let client = support::connect(&url).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT count(*) FROM audit_logs WHERE event_type = 'settlement' AND message IN ('other', 'records')").await,
        2
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM audit_writer_batches WHERE idempotency_key = 'billing:order-10'"
        )
        .await,
        1,
        "the key still stands for the first sender's records"
    );
    assert_eq!(
        count("SELECT count(*) FROM audit_logs WHERE event_type IN ('audit_submission_refused', 'audit_duplicate_suppressed')").await,
        0
    );
    for handle in [first, spooling] {
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
    }
    assert_intact_when_sealed(&url).await;
}
