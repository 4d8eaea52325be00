//! Delivery: flush and shutdown, poison records, an unreachable database, many threads,
//! and a role that may only insert. Every assertion is on the rows PostgreSQL holds.

mod support;

use std::time::Duration;

use audit_layer::Error;
use pg_provision::{Cluster, ClusterOptions};
use support::{builder, connect, dispatch, TestDb};
use tracing::info;

#[tokio::test]
async fn flush_returns_once_everything_emitted_before_it_is_committed() {
    let db = TestDb::migrated("flush").await;
    // A batch window far longer than the test: only flush can make the rows appear.
    let (dispatch, handle) = dispatch(builder(&db.url).batch_max_wait(Duration::from_secs(3600)));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..1000 {
            info!(target: "audit", username = "u", event_type = "e", seq = i, "m");
        }
    });
    handle.flush().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 1000);
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", seq = 1000, "m");
    });
    handle.flush().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 1001);
    let stats = handle.stats();
    assert_eq!(
        (stats.enqueued, stats.written, stats.dropped),
        (1001, 1001, 0)
    );
}

#[tokio::test]
async fn shutdown_commits_everything_and_later_records_are_counted_as_dropped() {
    let db = TestDb::migrated("shutdown").await;
    let (dispatch, handle) = dispatch(builder(&db.url).batch_max_wait(Duration::from_secs(3600)));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..5000 {
            info!(target: "audit", username = "u", event_type = "e", seq = i, "m");
        }
    });
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stats.written, 5000);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 5000);

    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "after shutdown");
    });
    let stats = handle.stats();
    assert_eq!(stats.dropped_writer_stopped, 1);
    assert!(matches!(handle.flush().await, Err(Error::WriterStopped)));
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 5000);
}

#[test]
fn flush_and_shutdown_work_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDb::migrated("current_thread").await;
        let (dispatch, handle) = dispatch(builder(&db.url));
        tracing::dispatcher::with_default(&dispatch, || {
            info!(target: "audit", username = "u", event_type = "e", "one");
        });
        handle.flush().await.unwrap();
        assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 1);
        tracing::dispatcher::with_default(&dispatch, || {
            info!(target: "audit", username = "u", event_type = "e", "two");
        });
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
        assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 2);
    });
}

#[test]
fn dropping_the_handle_outside_a_runtime_flushes_within_its_timeout() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::migrated("drop_handle"));
    let (dispatch, handle) = dispatch(
        builder(&db.url)
            .batch_max_wait(Duration::from_secs(3600))
            .drop_flush_timeout(Duration::from_secs(30)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "before drop");
    });
    drop(handle);
    let count = runtime.block_on(db.count("SELECT count(*) FROM audit_logs"));
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_poison_record_is_isolated_and_every_other_record_is_written() {
    let db = TestDb::migrated("poison").await;
    // A rule a DBA might add later: the layer cannot know it, PostgreSQL refuses the row.
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(10_000));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..10_000 {
            let message = if i == 6_789 { "poison" } else { "fine" };
            info!(target: "audit", username = "u", event_type = "e", seq = i, "{message}");
        }
    });
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!((stats.written, stats.rejected), (9_999, 1));
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 9_999);
    assert_eq!(
        db.count(
            "SELECT count(DISTINCT (metadata->>'seq')::int) FROM audit_logs WHERE message = 'fine'"
        )
        .await,
        9_999
    );
    let kept = db
        .client
        .query_one(
            "SELECT sqlstate, reason, record FROM audit_logs_rejected",
            &[],
        )
        .await
        .unwrap();
    let (sqlstate, reason, record): (String, String, serde_json::Value) =
        (kept.get(0), kept.get(1), kept.get(2));
    assert_eq!(sqlstate, "23514");
    assert!(reason.contains("no_poison"), "{reason}");
    assert_eq!(record["message"], "poison");
    assert_eq!(record["metadata"]["seq"], 6_789);
    assert!(stats.last_error.unwrap().contains("no_poison"));
}

#[tokio::test]
async fn records_emitted_while_the_database_is_down_are_written_once_it_is_up() {
    let cluster = Cluster::start_new(&ClusterOptions::default()).expect("own cluster");
    let url = cluster.url("postgres");
    {
        let client = connect(&url).await;
        audit_layer::schema::migrate(&client).await.unwrap();
    }
    cluster.stop("fast").unwrap();

    let (dispatch, handle) = dispatch(builder(&url));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..500 {
            info!(target: "audit", username = "u", event_type = "e", seq = i, "while down");
        }
    });
    // The writer keeps failing and retrying; nothing is lost meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handle.stats().retries < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writer never retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.stats();
    assert_eq!((stats.written, stats.dropped, stats.pending()), (0, 0, 500));
    assert!(stats.last_error.is_some());

    cluster.start().unwrap();
    tokio::time::timeout(Duration::from_secs(60), handle.flush())
        .await
        .expect("flush once the database is back")
        .unwrap();
    let client = connect(&url).await;
    let count: i64 = client
        .query_one(
            "SELECT count(DISTINCT (metadata->>'seq')::int) FROM audit_logs",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let total: i64 = client
        .query_one("SELECT count(*) FROM audit_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((count, total), (500, 500));
}

#[tokio::test]
async fn the_application_may_start_before_the_schema_exists_and_migrate_itself() {
    let db = TestDb::empty("self_migrate").await;
    let (dispatch, handle) = dispatch(builder(&db.url).run_migrations(true));
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "first ever");
    });
    handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 1);
    assert!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass")
            .await
            >= 3
    );
}

#[tokio::test]
async fn a_role_that_may_only_insert_still_writes() {
    let db = TestDb::migrated("insert_only").await;
    let app_url = insert_only_role(&db, "audit_app").await;
    let (dispatch, handle) = dispatch(builder(&app_url).run_migrations(false));
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "written by an insert-only role");
    });
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stats.written, 1);
    // A date far beyond the prepared partitions also lands, in the DEFAULT partition.
    let app = connect(&app_url).await;
    app.batch_execute(
        "INSERT INTO audit_logs (username, event_type, message, created_at) \
         VALUES ('u', 'e', 'far future', '2100-01-01Z')",
    )
    .await
    .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_default").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 2);
}

#[tokio::test]
async fn migrations_refused_by_a_role_without_ddl_rights_are_reported_and_writing_goes_on() {
    let db = TestDb::migrated("no_ddl").await;
    db.client
        .batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .await
        .unwrap();
    let app_url = insert_only_role(&db, "audit_noddl").await;
    let (dispatch, handle) = dispatch(builder(&app_url).run_migrations(true));
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "still written");
    });
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stats.written, 1);
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("migrations failed"),
        "{:?}",
        stats.last_error
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 1);
}

#[test]
fn a_hundred_thousand_events_from_eight_threads_arrive_exactly_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::migrated("eight_threads"));
    let (dispatch, handle) = dispatch(builder(&db.url).queue_capacity(200_000));
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for seq in 0..12_500 {
                        info!(target: "audit", username = "load", event_type = "load",
                              thread, seq, "event {seq} of thread {thread}");
                    }
                })
            });
        }
    });
    let stats = runtime
        .block_on(handle.shutdown(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(
        (stats.enqueued, stats.written, stats.dropped),
        (100_000, 100_000, 0)
    );
    runtime.block_on(async {
        assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 100_000);
        let distinct = db
            .count(
                "SELECT count(*) FROM (SELECT DISTINCT metadata->'thread', metadata->'seq' \
                 FROM audit_logs) d",
            )
            .await;
        assert_eq!(distinct, 100_000);
    });
}

/// A role with the grants the README gives applications (insert only, plus the batch
/// ledger), and the URL to log in as it.
async fn insert_only_role(db: &TestDb, prefix: &str) -> String {
    let role = format!("{prefix}_{}", std::process::id());
    db.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD '{role}';
             GRANT INSERT ON audit_logs, audit_logs_rejected, audit_writer_batches TO {role};
             GRANT SELECT ON audit_writer_batches TO {role};"
        ))
        .await
        .unwrap();
    support::url_as(&db.url, &role)
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking_the_caller() {
    // Nothing listens there: the writer retries its first batch, the queue fills up.
    let unreachable = "postgres://postgres@127.0.0.1:9/none?connect_timeout=1";
    let (dispatch, handle) = dispatch(builder(unreachable).queue_capacity(10).batch_size(5));
    let started = std::time::Instant::now();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..1000 {
            info!(target: "audit", username = "u", event_type = "e", seq = i, "m");
        }
    });
    // Not a timing assertion on speed: only that the caller did not wait on the database
    // (its connect timeout alone is a second).
    assert!(started.elapsed() < Duration::from_secs(1));
    let stats = handle.stats();
    assert_eq!(stats.enqueued + stats.dropped_queue_full, 1000);
    // In memory at most: the queue (10), the batches in flight (2 of 5), the full batch
    // waiting for a slot (5), and the rest of the records taken from the queue with it
    // (at most 4: the writer takes up to a batch's worth at once).
    assert!(stats.enqueued <= 10 + 5 * (2 + 1) + (5 - 1), "{stats:?}");
    assert_eq!(stats.written, 0);
}

#[tokio::test]
async fn a_partial_batch_is_written_when_its_time_is_up() {
    let db = TestDb::migrated("timer").await;
    let (dispatch, handle) = dispatch(
        builder(&db.url)
            .batch_size(1000)
            .batch_max_wait(Duration::from_millis(50)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "u", event_type = "e", "alone in its batch");
    });
    // No flush: only the batch timer can write it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The row is visible at COMMIT, a moment before the writer counts its batch.
    while db.count("SELECT count(*) FROM audit_logs").await == 0 || handle.stats().batches == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timer never fired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.stats().batches, 1);
}

#[tokio::test]
async fn a_batch_too_slow_for_the_timeout_is_written_in_smaller_parts() {
    let db = TestDb::migrated("too_slow").await;
    // Every row costs 2 ms on the server: a 1,000-row batch takes 2 s, far over 500 ms.
    support::slow_inserts(&db, 0.002).await;
    let (dispatch, handle) = dispatch(
        builder(&db.url)
            .batch_size(1000)
            .batch_max_wait(Duration::from_secs(3600))
            .db_timeout(Duration::from_millis(500)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..1000 {
            info!(target: "audit", username = "u", event_type = "e", seq = i, "m");
        }
    });
    let stats = handle.shutdown(Duration::from_secs(120)).await.unwrap();
    assert_eq!(stats.written, 1000);
    assert!(stats.retries >= 1, "{stats:?}");
    assert!(stats.batches >= 4, "{stats:?}");
    assert_eq!(
        db.count("SELECT count(DISTINCT (metadata->>'seq')::int) FROM audit_logs")
            .await,
        1000
    );
}
