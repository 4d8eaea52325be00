//! Beyond one PostgreSQL: auditd reading from a real hot standby while it writes to the
//! primary, and the writer failing over to a promoted standby with nothing lost or
//! written twice. Each test streams from a primary of its own to a standby made with
//! `pg_basebackup -R`, on loopback.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_provision::{Cluster, ClusterOptions, Replication};
use serde_json::Value;
use support::http::TestServer;
use support::{assert_exactly_once, assert_intact_when_sealed, builder, connect, dispatch};
use tokio_postgres::Client;

/// A primary and its hot standby, with one migrated database on both.
struct Pair {
    primary: Cluster,
    standby: Cluster,
    database: &'static str,
}

impl Pair {
    async fn start(replication: Replication) -> Pair {
        let (primary, standby) = tokio::task::spawn_blocking(move || {
            let primary = Cluster::start_new(&ClusterOptions {
                replication,
                ..ClusterOptions::default()
            })
            .expect("primary");
            let standby = primary
                .start_standby(&ClusterOptions::default())
                .expect("standby");
            (primary, standby)
        })
        .await
        .expect("clusters");
        let database = "app";
        let admin = connect(&primary.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        audit_layer::schema::migrate(&connect(&primary.url(database)).await)
            .await
            .expect("migrations apply");
        let pair = Pair {
            primary,
            standby,
            database,
        };
        pair.wait_for_standby("SELECT count(*) FROM audit_schema_migrations", 1)
            .await;
        pair
    }

    fn primary_url(&self) -> String {
        self.primary.url(self.database)
    }

    fn standby_url(&self) -> String {
        self.standby.url(self.database)
    }

    /// Both servers, primary first: what a client configured for failover names.
    fn failover_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
            self.primary.port(),
            self.standby.port(),
            self.database
        )
    }

    /// Waits until `count_sql` counts at least `at_least` on the standby (the database
    /// itself appears there only once replayed).
    async fn wait_for_standby(&self, count_sql: &str, at_least: i64) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((client, connection)) =
                tokio_postgres::connect(&self.standby_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                loop {
                    match client.query_one(count_sql, &[]).await {
                        Ok(row) if row.get::<_, i64>(0) >= at_least => return client,
                        _ if Instant::now() > deadline => {
                            panic!("the standby did not replay `{count_sql}` >= {at_least} in 30 s")
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the standby database never appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes `n` records of `event_type` to `url` through the layer and waits until they
/// are committed.
async fn write_records(url: &str, event_type: &str, n: usize) {
    let (dispatch, handle) = dispatch(builder(url));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..n {
            tracing::info!(target: "audit", username = "alice", event_type, i, "replicated");
        }
    });
    handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("records committed");
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect()
}

/// The value of the metric `name` in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_served_by_the_standby_while_access_records_go_to_the_primary() {
    let pair = Pair::start(Replication::Asynchronous).await;
    write_records(&pair.primary_url(), "replicated", 25).await;
    let standby = pair
        .wait_for_standby(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'replicated'",
            25,
        )
        .await;
    let primary = connect(&pair.primary_url()).await;
    let server = TestServer::start_on_standby(&pair.standby_url(), &pair.primary_url()).await;

    let page = server
        .get_json("/api/v1/logs?event_type=replicated&limit=100")
        .await;
    assert_eq!(ids(&page).len(), 25, "the standby's rows: {page}");
    // Every read is audited, on the primary (a standby takes no writes), and reaches the
    // standby from there.
    let access = "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_access'";
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary
        .query_one(access, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no access record on the primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.wait_for_standby(access, 1).await;

    // The lag is visible: with the standby's replay paused, what the primary commits
    // meanwhile is WAL the standby has not replayed.
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    write_records(&pair.primary_url(), "while_paused", 200).await;
    let lagging = wait_for_metrics(&server, |page| {
        metric(page, "auditd_db_replication_lag_bytes").is_some_and(|b| b > 0.0)
            && metric(page, "auditd_db_replication_lag_seconds").is_some_and(|s| s > 0.0)
    })
    .await;
    assert_eq!(metric(&lagging, "auditd_db_reads_from_standby"), Some(1.0));
    assert_eq!(metric(&lagging, "auditd_db_standbys"), Some(1.0));
    assert_eq!(
        metric(&lagging, "auditd_db_synchronous_standbys"),
        Some(0.0)
    );
    assert!(
        metric(&lagging, "auditd_db_replication_lag_seconds").is_some_and(|s| s > 0.0),
        "lag in seconds while replay is paused:\n{lagging}"
    );
    let page = server
        .get_json("/api/v1/logs?event_type=while_paused&limit=10")
        .await;
    assert_eq!(ids(&page), Vec::<i64>::new(), "the paused standby's view");

    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_for_metrics(&server, |page| {
        metric(page, "auditd_db_replication_lag_bytes") == Some(0.0)
            && metric(page, "auditd_db_replication_lag_seconds") == Some(0.0)
    })
    .await;
    server.stop().await;
}

async fn wait_for_metrics(server: &TestServer, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = server.get("/metrics").await;
        let page = String::from_utf8(body.to_vec()).expect("metrics text");
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_the_standby_holds_back_rows_behind_a_transaction_open_on_the_primary() {
    let pair = Pair::start(Replication::Asynchronous).await;
    let server = TestServer::start_on_standby(&pair.standby_url(), &pair.primary_url()).await;
    let start = server
        .get_json("/api/v1/logs/tail?wait=0s&event_type=tail")
        .await;
    let mut cursor = start["next_cursor"].as_str().unwrap().to_owned();

    // On the primary, the first transaction takes the smaller id but commits last.
    let early = connect(&pair.primary_url()).await;
    let late = connect(&pair.primary_url()).await;
    early.batch_execute("BEGIN").await.unwrap();
    let first_id: i64 = early
        .query_one("INSERT INTO audit_logs (username, event_type, message) VALUES ('a', 'tail', 'first id, commits last') RETURNING id", &[])
        .await.unwrap().get(0);
    late.batch_execute("BEGIN").await.unwrap();
    let second_id: i64 = late
        .query_one("INSERT INTO audit_logs (username, event_type, message) VALUES ('b', 'tail', 'second id, commits first') RETURNING id", &[])
        .await.unwrap().get(0);
    late.batch_execute("COMMIT").await.unwrap();
    pair.wait_for_standby(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'tail'",
        1,
    )
    .await;

    // The standby has the later row, and its snapshot still counts the primary's open
    // transaction as running: the tail must not hand the later row out and then skip
    // the earlier one.
    let page = server
        .get_json(&format!(
            "/api/v1/logs/tail?wait=300ms&event_type=tail&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page), Vec::<i64>::new());
    cursor = page["next_cursor"].as_str().unwrap().to_owned();

    early.batch_execute("COMMIT").await.unwrap();
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered.len() < 2 && Instant::now() < deadline {
        let page = server
            .get_json(&format!(
                "/api/v1/logs/tail?wait=2s&event_type=tail&cursor={cursor}"
            ))
            .await;
        delivered.extend(ids(&page));
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    delivered.sort();
    assert_eq!(delivered, vec![first_id, second_id]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_fails_over_to_the_promoted_standby_with_every_record_once_and_the_log_intact() {
    let pair = Pair::start(Replication::Synchronous).await;
    let primary = connect(&pair.primary_url()).await;
    let (dispatch, handle) = dispatch(builder(&pair.failover_url()).batch_size(200));
    let stream = handle.stream_id();
    let emitted = Arc::new(AtomicU64::new(0));
    let promoted = Arc::new(AtomicBool::new(false));
    // A steady producer, about 3,000 records a second, through the whole failover.
    let producer = {
        let emitted = emitted.clone();
        let promoted = promoted.clone();
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                // Until 1,000 more after the promotion.
                let mut after_promotion = 0;
                for i in 0u64.. {
                    if promoted.load(Ordering::Relaxed) {
                        after_promotion += 1;
                        if after_promotion > 1_000 {
                            break;
                        }
                    }
                    tracing::info!(target: "audit", username = "alice", event_type = "failover", i, "steady");
                    emitted.fetch_add(1, Ordering::Relaxed);
                    if i % 30 == 29 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
    };
    // A checkpoint signed before the failover, which the log after it must extend.
    let mut sealer = support::test_sealer();
    let mut seal_client = connect(&pair.primary_url()).await;
    let committed = "SELECT count(*) FROM audit_logs WHERE event_type = 'failover'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary
        .query_one(committed, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 1_500
    {
        assert!(Instant::now() < deadline, "the writer never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sealer
        .seal(&mut seal_client)
        .await
        .expect("seal on the primary");
    assert!(before.tree_size > 0, "a checkpoint before the failover");

    let killed_at = emitted.load(Ordering::Relaxed);
    pair.primary.kill().expect("kill the primary");
    // An operator (or Patroni) takes a moment to decide; the producer goes on meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pair.standby.promote().expect("promote the standby");
    promoted.store(true, Ordering::Relaxed);

    producer.join().expect("producer");
    let emitted = emitted.load(Ordering::Relaxed);
    assert!(
        killed_at < emitted,
        "records emitted after the kill: {killed_at} before, {emitted} in all"
    );
    let stats = handle
        .shutdown(Duration::from_secs(60))
        .await
        .expect("every record committed after the failover");
    assert_eq!(stats.dropped, 0, "nothing dropped: {stats:?}");
    assert!(stats.retries > 0, "the failover was felt: {stats:?}");

    let promoted = connect(&pair.standby_url()).await;
    assert_exactly_once(&promoted, stream, emitted as i64).await;
    // The checkpoint signed by the old primary is in the new one's log, and everything
    // since extends it.
    assert_intact_when_sealed(&pair.standby_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_asynchronous_replication_what_the_standby_never_received_is_lost_and_reported() {
    let pair = Pair::start(Replication::Asynchronous).await;
    let (dispatch, handle) = dispatch(builder(&pair.failover_url()));
    let stream = handle.stream_id();
    let emit = |from: u64, to: u64| {
        tracing::dispatcher::with_default(&dispatch, || {
            for i in from..to {
                tracing::info!(target: "audit", username = "alice", event_type = "async", i, "steady");
            }
        })
    };
    let count = "SELECT count(*) FROM audit_logs WHERE event_type = 'async'";
    emit(0, 1_000);
    handle.flush().await.expect("first thousand committed");
    pair.wait_for_standby(count, 1_000).await;

    // The standby stops receiving; the primary confirms 500 more, which only it holds.
    pair.standby
        .hold_replication(true)
        .expect("hold the WAL receiver");
    emit(1_000, 1_500);
    handle.flush().await.expect("confirmed by the primary");
    let primary = connect(&pair.primary_url()).await;
    assert_eq!(
        primary
            .query_one(count, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1_500
    );
    pair.primary.kill().expect("kill the primary");
    // What was on its way is lost with the connection.
    pair.standby
        .cut_replication()
        .expect("cut the WAL receiver");
    pair.standby.promote().expect("promote the standby");

    emit(1_500, 1_700);
    let stats = handle
        .shutdown(Duration::from_secs(60))
        .await
        .expect("the rest committed on the promoted standby");
    assert_eq!(
        stats.dropped, 0,
        "the writer lost nothing it knew of: {stats:?}"
    );

    let promoted = connect(&pair.standby_url()).await;
    assert_eq!(
        promoted
            .query_one(count, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1_200,
        "the 500 the standby never received are gone"
    );
    // Not silently: the stream's seqs say exactly which, and that no drop explains them.
    let gaps = audit_layer::integrity::stream_gaps(&promoted)
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].stream_id, stream);
    assert_eq!(gaps[0].runs, vec![(1_001, 1_500)]);
    assert_eq!(gaps[0].unexplained(), 500);
}
