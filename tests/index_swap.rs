//! Migration 0011's index swap (the full severity btree for a partial one) on a database
//! that already holds data, while the layer writes: built partition by partition without
//! blocking a writer, every record still there exactly once, the old index gone, and the
//! new one serving the severity pages. On a small database, the migration swaps at once.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_layer::schema::{self, MIGRATIONS};
use support::TestDb;

/// Partitions with a valid index of the same predicate attached to each of 0011's.
const SERVED: &str = "SELECT count(*) FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = 'audit_logs'::regclass AND ( \
       SELECT count(*) FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid \
       WHERE ii.inhparent IN (to_regclass('audit_logs_severity_partial'), \
                              to_regclass('audit_logs_above_info')) \
         AND x.indrelid = c.oid AND x.indisvalid AND pg_get_expr(x.indpred, x.indrelid) \
             = '((severity)::text <> ''info''::text)') = 2";

/// How many of 0011's two indexes on `audit_logs` are valid.
const BOTH_VALID: &str = "SELECT count(*) FROM pg_index WHERE indisvalid AND indexrelid IN \
     ('audit_logs_severity_partial'::regclass, 'audit_logs_above_info'::regclass)";

const PARTITIONS: &str =
    "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass";

/// A database at migration 0010 holding 120,000 records over three months (70 % info, 20 %
/// warning, 10 % error, 0.1 % critical): past the 100,000 above which 0011 leaves the
/// build to `complete_index_swaps`.
async fn large_at_0010(name: &str) -> TestDb {
    let db = TestDb::empty(name).await;
    schema::migrate_to(&db.client, &MIGRATIONS[..10])
        .await
        .unwrap();
    db.client
        .batch_execute(
            "SELECT audit_logs_ensure_partitions(date_trunc('month', now()) - interval '2 months', 4);
             INSERT INTO audit_logs (created_at, username, event_type, severity, message)
             SELECT now() - (i * interval '30 seconds'), 'user' || (i % 50), 'event' || (i % 7),
                    CASE WHEN i % 1000 = 9 THEN 'critical'
                         ELSE (ARRAY['info','info','info','info','info','info','info','warning','warning','error'])[1 + i % 10] END,
                    'seeded'
             FROM generate_series(1, 120000) AS i;",
        )
        .await
        .unwrap();
    db
}

async fn exists(db: &TestDb, index: &str) -> bool {
    db.client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&index])
        .await
        .unwrap()
        .get(0)
}

/// The ids of the newest page of records of these severities, as PostgreSQL plans it.
async fn page_of(db: &TestDb, severities: &[String]) -> Vec<i64> {
    db.client
        .query(
            "SELECT id FROM audit_logs WHERE severity = ANY($1) \
             ORDER BY created_at DESC, id DESC LIMIT 101",
            &[&severities],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The plan PostgreSQL picks for a page of records matching `condition`, as text.
async fn plan_of_severity_page(db: &TestDb, condition: &str) -> String {
    db.client
        .query(
            &format!(
                "EXPLAIN SELECT * FROM audit_logs WHERE {condition} \
                 ORDER BY created_at DESC, id DESC LIMIT 101"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_large_table_gets_the_partial_index_while_the_layer_writes_and_nothing_waits_for_it() {
    let db = large_at_0010("index_swap_live").await;

    // The layer writes from here to the end, as fast as it goes.
    let (dispatch, handle) = support::dispatch(support::builder(&db.url));
    let stream = handle.stream_id();
    let stop = Arc::new(AtomicBool::new(false));
    let emitter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut emitted = 0i64;
            tracing::dispatcher::with_default(&dispatch, || {
                while !stop.load(Ordering::Relaxed) {
                    tracing::info!(target: "audit", event_type = "write_during_swap", "written");
                    emitted += 1;
                    // Well within what the writer takes (nothing dropped for a full queue).
                    if emitted % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            });
            emitted
        })
    };

    // Applying 0011 on this table leaves the build to complete_index_swaps.
    let migrated = schema::migrate(&db.client).await.unwrap();
    assert!(migrated.index_swaps_pending);
    assert!(!exists(&db, "audit_logs_severity_partial").await);
    assert!(!exists(&db, "audit_logs_above_info").await);
    assert!(
        exists(&db, "audit_logs_severity_idx").await,
        "kept until the new ones are built"
    );
    assert_eq!(db.count(SERVED).await, 0);

    // A writer's transaction stays open: a concurrent build waits for it (a plain CREATE
    // INDEX would wait too, and make every writer after it wait behind its lock).
    let holder = support::connect(&db.url).await;
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    holder
        .batch_execute(
            "BEGIN; INSERT INTO audit_logs (username, event_type, message) \
             VALUES ('holder', 'open_transaction', 'held')",
        )
        .await
        .unwrap();
    // On a connection with a statement timeout far shorter than the build's wait (as a
    // pool's are): the swap turns it off while it runs, and puts it back.
    let swapping = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let client = support::connect(&url).await;
            client
                .batch_execute("SET statement_timeout = '300ms'")
                .await
                .unwrap();
            let report = schema::complete_index_swaps(&client).await;
            let after: String = client
                .query_one("SHOW statement_timeout", &[])
                .await
                .unwrap()
                .get(0);
            (report, after)
        })
    };
    // Once the build waits for the open transaction...
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let build_waits = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
           AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND {holder_pid} = ANY(pg_blocking_pids(pid))"
    );
    while db.count(&build_waits).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never waited for the open transaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...another writer still goes through, and the layer goes on committing.
    let writer = support::connect(&db.url).await;
    writer
        .batch_execute(
            "SET lock_timeout = '5s'; \
             INSERT INTO audit_logs (username, event_type, message) \
             VALUES ('writer', 'during_build', 'not blocked')",
        )
        .await
        .expect("a write during the build is not blocked by it");
    let committed = format!("SELECT count(*) FROM audit_logs WHERE stream_id = {stream}");
    let when_the_build_waited = db.count(&committed).await;
    while db.count(&committed).await <= when_the_build_waited {
        assert!(
            std::time::Instant::now() < deadline,
            "the layer committed nothing while the build waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        db.count(&build_waits).await > 0,
        "the build still waits (the layer wrote during it, not after)"
    );
    // Longer than the connection's statement timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    holder.batch_execute("COMMIT").await.unwrap();

    let (report, timeout_after) = swapping.await.unwrap();
    let report = report.unwrap();
    assert_eq!(
        timeout_after, "300ms",
        "the session's statement timeout is put back"
    );
    let partitions = db.count(PARTITIONS).await;
    assert_eq!(report.built.len() as i64, 2 * partitions, "{report:?}");
    assert_eq!(report.dropped, ["audit_logs_severity_idx"]);
    assert!(report.waiting_for_locks.is_empty() && !report.busy);
    assert_eq!(db.count(SERVED).await, partitions);
    assert!(!exists(&db, "audit_logs_severity_idx").await);
    assert_eq!(db.count(BOTH_VALID).await, 2);

    // Every record the layer wrote, through the build and after, exactly once.
    stop.store(true, Ordering::Relaxed);
    let emitted = emitter.join().unwrap();
    let stats = handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("every record committed");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    support::assert_exactly_once(&db.client, stream, emitted).await;

    // Pages by severity come from the new index, and hold what the table holds.
    db.client.batch_execute("ANALYZE audit_logs").await.unwrap();
    // A rare severity (0.1 % of the records) from its own index; a list in time order.
    let plan = plan_of_severity_page(&db, "severity = 'critical'").await;
    assert!(plan.contains("_severity_partial"), "{plan}");
    let plan = plan_of_severity_page(&db, "severity = ANY('{error,critical}')").await;
    assert!(plan.contains("_above_info"), "{plan}");
    for severities in [
        &["info"][..],
        &["warning"],
        &["error"],
        &["critical"],
        &["error", "critical"],
        &["info", "critical"],
    ] {
        let severities: Vec<String> = severities.iter().map(|s| s.to_string()).collect();
        let page = page_of(&db, &severities).await;
        db.client
            .batch_execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
            .await
            .unwrap();
        let scanned = page_of(&db, &severities).await;
        db.client
            .batch_execute("RESET enable_indexscan; RESET enable_bitmapscan")
            .await
            .unwrap();
        assert_eq!(page, scanned, "{severities:?}");
        assert_eq!(page.len(), 101);
    }

    // Done: a second run finds nothing to do.
    let again = schema::complete_index_swaps(&db.client).await.unwrap();
    assert_eq!(again, schema::IndexSwapReport::default());
}

#[tokio::test]
async fn an_interrupted_build_is_dropped_and_built_again() {
    let db = large_at_0010("index_swap_interrupted").await;
    schema::migrate(&db.client).await.unwrap();
    let leftover = support::leave_an_invalid_index(&db, "severity_partial").await;

    let report = schema::complete_index_swaps(&db.client).await.unwrap();
    assert_eq!(report.rebuilt, [leftover]);
    assert_eq!(db.count(SERVED).await, db.count(PARTITIONS).await);
    assert!(!exists(&db, "audit_logs_severity_idx").await);
}

#[tokio::test]
async fn a_small_table_swaps_in_the_migration_itself() {
    let db = TestDb::migrated("index_swap_small").await;
    assert!(!exists(&db, "audit_logs_severity_idx").await);
    assert_eq!(db.count(SERVED).await, db.count(PARTITIONS).await);
    let report = schema::complete_index_swaps(&db.client).await.unwrap();
    assert_eq!(report, schema::IndexSwapReport::default());
    // Partitions created later get it with them.
    let before = db.count(PARTITIONS).await;
    schema::ensure_partitions(&db.client, 14).await.unwrap();
    assert!(db.count(PARTITIONS).await > before);
    assert_eq!(db.count(SERVED).await, db.count(PARTITIONS).await);
}

#[tokio::test]
async fn a_month_detached_before_its_index_was_built_leaves_the_swap_complete() {
    // Retention detaches a month; if it goes before its new index is built, the parent's
    // index must still come out valid (PostgreSQL re-checks validity only on an attach).
    let db = large_at_0010("index_swap_detached").await;
    schema::migrate(&db.client).await.unwrap();
    let oldest: String = db
        .client
        .query_one(
            "SELECT tableoid::regclass::text FROM audit_logs ORDER BY created_at LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bounds: String = db
        .client
        .query_one(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1",
            &[&oldest],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .batch_execute(&format!("ALTER TABLE audit_logs DETACH PARTITION {oldest}"))
        .await
        .unwrap();

    let report = schema::complete_index_swaps(&db.client).await.unwrap();
    assert_eq!(report.dropped, ["audit_logs_severity_idx"]);
    assert_eq!(db.count(SERVED).await, db.count(PARTITIONS).await);
    assert!(
        !schema::migrate(&db.client)
            .await
            .unwrap()
            .index_swaps_pending
    );

    // Back again, as retention's reattach does: the indexes it lacks are built first,
    // concurrently, so that the attach (which holds the table) adopts them, building none.
    let built = schema::build_indexes_for_attach(&db.client, &oldest)
        .await
        .unwrap();
    assert_eq!(
        built,
        ["audit_logs_above_info", "audit_logs_severity_partial"],
        "exactly the indexes made while it was away"
    );
    let indexes_of_month =
        format!("SELECT count(*) FROM pg_index WHERE indrelid = '{oldest}'::regclass");
    let before_attach = db.count(&indexes_of_month).await;
    db.client
        .batch_execute(&format!(
            "ALTER TABLE audit_logs ATTACH PARTITION {oldest} {bounds}"
        ))
        .await
        .unwrap();
    assert_eq!(
        db.count(&indexes_of_month).await,
        before_attach,
        "none built by the attach"
    );
    assert_eq!(db.count(SERVED).await, db.count(PARTITIONS).await);
    assert_eq!(db.count(BOTH_VALID).await, 2);
}
