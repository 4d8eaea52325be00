//! Delivery through database faults, each against a PostgreSQL cluster the test controls:
//! every emitted record must be present exactly once, and nothing else.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{
    assert_exactly_once, assert_intact_when_sealed, builder, connect, dispatch, own_cluster, TestDb,
};
use tracing::info;

/// Emits `n` records from a thread, about `per_ms` per millisecond, while `during` runs.
async fn emit_while<F: std::future::Future<Output = ()>>(
    dispatch: tracing::Dispatch,
    n: i64,
    per_ms: i64,
    during: F,
) {
    let emitter = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            for seq in 1..=n {
                info!(target: "audit", username = "u", event_type = "fault", seq, "steady");
                if seq % per_ms == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    });
    during.await;
    tokio::task::spawn_blocking(move || emitter.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_crash_and_restart_mid_stream_loses_and_duplicates_nothing() {
    let (cluster, url) = own_cluster().await;
    let cluster = Arc::new(cluster);
    let (dispatch, handle) = dispatch(builder(&url).queue_capacity(200_000));
    let restarter = cluster.clone();
    emit_while(dispatch, 30_000, 20, async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || {
            restarter.stop("immediate").unwrap();
            std::thread::sleep(Duration::from_millis(500));
            restarter.start().unwrap();
        })
        .await
        .unwrap();
    })
    .await;
    let stats = handle.shutdown(Duration::from_secs(120)).await.unwrap();
    assert_eq!((stats.written, stats.dropped), (30_000, 0), "{stats:?}");
    assert!(stats.retries > 0, "the crash went unnoticed: {stats:?}");
    assert_exactly_once(&connect(&url).await, handle.stream_id(), 30_000).await;
    assert_intact_when_sealed(&url).await;
}

#[tokio::test]
async fn backends_killed_mid_copy_lose_and_duplicate_nothing() {
    let (_cluster, url) = own_cluster().await;
    let (dispatch, handle) = dispatch(builder(&url).queue_capacity(200_000).batch_size(2000));
    let killing = Arc::new(AtomicBool::new(true));
    let killer = {
        let killing = killing.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let admin = connect(&url).await;
            let mut killed = 0i64;
            while killing.load(Ordering::Relaxed) {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'audit-layer' AND state = 'active'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                killed += n;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed
        })
    };
    emit_while(dispatch, 40_000, 40, async {}).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    killing.store(false, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    let stats = handle.shutdown(Duration::from_secs(120)).await.unwrap();
    assert!(killed > 0, "no backend was killed mid-write");
    assert_eq!((stats.written, stats.dropped), (40_000, 0), "{stats:?}");
    assert_exactly_once(&connect(&url).await, handle.stream_id(), 40_000).await;
    assert_intact_when_sealed(&url).await;
}

#[tokio::test]
async fn a_table_locked_for_seconds_delays_but_loses_and_duplicates_nothing() {
    let db = TestDb::migrated("fault_lock").await;
    let (dispatch, handle) = dispatch(
        builder(&db.url)
            .queue_capacity(200_000)
            .db_timeout(Duration::from_millis(700)),
    );
    let url = db.url.clone();
    emit_while(dispatch, 20_000, 20, async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let locker = connect(&url).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        locker.batch_execute("COMMIT").await.unwrap();
    })
    .await;
    let stats = handle.shutdown(Duration::from_secs(120)).await.unwrap();
    assert_eq!((stats.written, stats.dropped), (20_000, 0), "{stats:?}");
    assert!(
        stats.retries > 0,
        "the lock never made a write time out: {stats:?}"
    );
    assert_exactly_once(&db.client, handle.stream_id(), 20_000).await;
    assert_intact_when_sealed(&db.url).await;
}

#[tokio::test]
async fn a_batch_that_commits_after_its_call_timed_out_is_not_written_again() {
    let db = TestDb::migrated("fault_commit_unknown").await;
    // The first batch's COMMIT takes 1.5 s, past the writer's 1 s timeout: the writer
    // gives up on the call, yet the server commits. Resending would write it twice.
    db.client
        .batch_execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.rows > 0 AND NEW.batch_id = 1 THEN PERFORM pg_sleep(1.5); END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON audit_writer_batches
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let (dispatch, handle) = dispatch(
        builder(&db.url)
            .batch_max_wait(Duration::from_secs(3600))
            .db_timeout(Duration::from_secs(1)),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 1..=1000 {
            info!(target: "audit", username = "u", event_type = "fault", seq, "m");
        }
    });
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!((stats.written, stats.batches), (1000, 1), "{stats:?}");
    assert_eq!(stats.unsettled_batches, 1, "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("did not finish"),
        "the commit never timed out: {stats:?}"
    );
    assert_exactly_once(&db.client, handle.stream_id(), 1000).await;
    assert_intact_when_sealed(&db.url).await;
    let ledger = db
        .count("SELECT rows::bigint FROM audit_writer_batches WHERE batch_id = 1")
        .await;
    assert_eq!(ledger, 1000, "batch 1 committed with its rows");
}

#[tokio::test]
async fn the_server_down_at_start_then_up_delivers_everything_exactly_once() {
    let (cluster, url) = own_cluster().await;
    cluster.stop("immediate").unwrap();
    let (dispatch, handle) = dispatch(builder(&url).queue_capacity(50_000));
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 1..=5000 {
            info!(target: "audit", username = "u", event_type = "fault", seq, "m");
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start().unwrap();
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stats.written, 5000, "{stats:?}");
    assert_exactly_once(&connect(&url).await, handle.stream_id(), 5000).await;
    assert_intact_when_sealed(&url).await;
}

#[tokio::test]
async fn dropped_records_leave_a_visible_gap_and_an_audit_dropped_record() {
    let (cluster, url) = own_cluster().await;
    cluster.stop("immediate").unwrap();
    let (dispatch, handle) = dispatch(builder(&url).queue_capacity(100).batch_size(50));
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 1..=1000 {
            info!(target: "audit", username = "u", event_type = "fault", seq, "m");
        }
    });
    cluster.start().unwrap();
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert!(stats.dropped_queue_full > 0, "{stats:?}");
    let client = connect(&url).await;
    let row = client
        .query_one(
            "SELECT count(*), max(seq) FROM audit_logs WHERE stream_id = $1 AND event_type = 'fault'",
            &[&handle.stream_id()],
        )
        .await
        .unwrap();
    let (kept, max_seq): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(kept as u64 + stats.dropped_queue_full, 1000);
    let notices = client
        .query(
            "SELECT (metadata->>'dropped')::bigint FROM audit_logs \
             WHERE stream_id = $1 AND event_type = 'audit_dropped'",
            &[&handle.stream_id()],
        )
        .await
        .unwrap();
    let reported: i64 = notices.iter().map(|r| r.get::<_, i64>(0)).sum();
    // The writer numbers its notices from the same sequence, possibly mid-stream.
    assert!(max_seq <= 1000 + notices.len() as i64, "{max_seq}");
    assert_eq!(
        reported as u64, stats.dropped_queue_full,
        "every drop is on record"
    );
    let gaps: i64 = client
        .query_one(
            "SELECT 1000 - count(*) FROM audit_logs WHERE stream_id = $1 AND event_type = 'fault'",
            &[&handle.stream_id()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        gaps, reported,
        "the gap in seq is exactly the dropped records"
    );
}
