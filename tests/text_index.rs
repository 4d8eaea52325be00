//! The optional trigram index: built partition by partition, complete, idempotent, finished
//! after an interruption, inherited by later partitions, and used by substring search.

mod support;

use audit_layer::schema::text_index;
use support::http::TestServer;
use support::TestDb;

const PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1";

/// Partitions with a GIN index attached to the parent trigram index.
const INDEXED: &str = "SELECT count(*) FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = 'audit_logs'::regclass AND EXISTS ( \
       SELECT 1 FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid \
       JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam \
       WHERE ii.inhparent = 'audit_logs_message_trgm'::regclass \
         AND x.indrelid = c.oid AND x.indisvalid AND am.amname = 'gin')";

async fn partitions(db: &TestDb) -> Vec<String> {
    texts(db, PARTITIONS).await
}

/// The first column of every row `sql` returns.
async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    db.client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn insert(db: &TestDb, username: &str, message: &str) {
    db.client
        .execute(
            "INSERT INTO audit_logs (username, event_type, message) VALUES ($1, 'test', $2)",
            &[&username, &message],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_index_serves_every_partition_and_a_second_run_has_nothing_to_do() {
    let db = TestDb::migrated("text_index_complete").await;
    insert(&db, "alice", "Device edge-fra1-01 onboarded").await;
    insert(&db, "bob", "Backup of core-ams2-07 failed").await;
    assert!(!text_index::is_complete(&db.client).await.unwrap());

    let report = text_index::create(&db.client).await.unwrap();
    let mut built = report.built.clone();
    built.sort();
    assert_eq!(
        built,
        partitions(&db).await,
        "every partition, the default one too"
    );
    assert!(report.rebuilt.is_empty());
    assert!(text_index::is_complete(&db.client).await.unwrap());
    assert_eq!(db.count(INDEXED).await, partitions(&db).await.len() as i64);

    let again = text_index::create(&db.client).await.unwrap();
    assert_eq!(again, text_index::TextIndexReport::default());

    // Substring search uses it (the planner would pick a scan on a table this small).
    db.client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan = texts(
        &db,
        "EXPLAIN SELECT id FROM audit_logs WHERE message ILIKE '%core-ams2%'",
    )
    .await;
    assert!(
        plan.iter().any(|line| line.contains("message_trgm")),
        "{plan:#?}"
    );
    let found = db
        .count("SELECT count(*) FROM audit_logs WHERE message ILIKE '%core-ams2%'")
        .await;
    assert_eq!(found, 1);

    assert!(text_index::remove(&db.client).await.unwrap());
    assert!(!text_index::is_complete(&db.client).await.unwrap());
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%message_trgm'")
            .await,
        0,
        "removed from every partition"
    );
}

#[tokio::test]
async fn an_interrupted_build_is_finished_by_the_next_run() {
    let db = TestDb::migrated("text_index_interrupted").await;
    let leftover = {
        insert(&db, "same", "first").await;
        insert(&db, "same", "second").await;
        support::leave_an_invalid_index(&db, "message_trgm").await
    };

    let report = text_index::create(&db.client).await.unwrap();
    assert_eq!(report.rebuilt, vec![leftover]);
    assert!(text_index::is_complete(&db.client).await.unwrap());
    assert_eq!(db.count(INDEXED).await, partitions(&db).await.len() as i64);
}

#[tokio::test]
async fn partitions_created_later_get_the_index() {
    let db = TestDb::migrated("text_index_later").await;
    text_index::create(&db.client).await.unwrap();
    let before = partitions(&db).await.len();
    let created = audit_layer::schema::ensure_partitions(&db.client, 6)
        .await
        .unwrap();
    assert!(created > 0);
    assert_eq!(partitions(&db).await.len(), before + created as usize);
    assert!(text_index::is_complete(&db.client).await.unwrap());
    assert_eq!(db.count(INDEXED).await, partitions(&db).await.len() as i64);
}

#[tokio::test]
async fn removing_also_drops_what_an_interrupted_build_left() {
    let db = TestDb::migrated("text_index_leftover").await;
    {
        insert(&db, "same", "first").await;
        insert(&db, "same", "second").await;
        support::leave_an_invalid_index(&db, "message_trgm").await
    };
    assert!(text_index::remove(&db.client).await.unwrap());
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%message_trgm'")
            .await,
        0
    );
    assert!(
        !text_index::remove(&db.client).await.unwrap(),
        "nothing left"
    );
}

#[tokio::test]
async fn a_search_narrowed_to_its_rare_part_finds_exactly_the_rows_containing_all_of_it() {
    let db = TestDb::migrated("text_narrowed").await;
    // "edge-" is in almost every message; "-42 " in a few, not all of which say "edge-42 ".
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message) \
             SELECT 'u' || i, 'backup', 'Device edge-' || i || ' backed up' \
             FROM generate_series(0, 999) AS i; \
             INSERT INTO audit_logs (username, event_type, message) VALUES \
               ('a', 'system', 'Switch core-42 rebooted'), \
               ('b', 'system', 'Link core-42 edge-7 flapped'), \
               ('c', 'backup', 'EDGE-42 restored from backup');",
        )
        .await
        .unwrap();
    text_index::create(&db.client).await.unwrap();
    let server = TestServer::start_quiet(&db).await;
    let sampled = async {
        loop {
            let (_, _, body) = server.get("/metrics").await;
            let metrics = String::from_utf8_lossy(&body).into_owned();
            if !metrics.contains("auditd_text_search_sample_messages 0\n") {
                return metrics;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let metrics = tokio::time::timeout(std::time::Duration::from_secs(20), sampled)
        .await
        .expect("the server samples messages once the trigram index is complete");
    assert!(
        metrics.contains("auditd_text_search_sample_messages 1003\n"),
        "{metrics}"
    );

    let page = server.get_json("/api/v1/logs?q=edge-42%20&limit=100").await;
    let found: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    let expected = texts(
        &db,
        "SELECT message FROM audit_logs WHERE message ILIKE '%edge-42 %' \
         ORDER BY created_at DESC, id DESC",
    )
    .await;
    assert_eq!(
        found,
        ["EDGE-42 restored from backup", "Device edge-42 backed up"]
    );
    assert_eq!(found, expected);
    let (_, _, body) = server.get("/metrics").await;
    assert!(String::from_utf8_lossy(&body).contains("auditd_text_searches_narrowed_total 1\n"));
    server.stop().await;
}

#[tokio::test]
async fn an_index_declared_on_the_parent_alone_by_an_older_release_is_built_again_whole() {
    // Earlier releases declared the parent's index ON ONLY and attached each partition's;
    // one left that way (interrupted) is dropped and built by the current way.
    let db = TestDb::migrated("text_index_on_only").await;
    insert(&db, "alice", "Device edge-fra1-01 onboarded").await;
    db.client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             CREATE INDEX audit_logs_message_trgm ON ONLY audit_logs \
                 USING gin (message gin_trgm_ops)",
        )
        .await
        .unwrap();
    assert!(!text_index::is_complete(&db.client).await.unwrap());
    let report = text_index::create(&db.client).await.unwrap();
    assert_eq!(report.rebuilt, ["audit_logs_message_trgm"]);
    assert!(text_index::is_complete(&db.client).await.unwrap());
    assert_eq!(db.count(INDEXED).await, partitions(&db).await.len() as i64);
}
