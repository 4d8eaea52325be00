//! Through PgBouncer, as many deployments put one in front of PostgreSQL: the writer
//! (binary COPY and its ledger, exactly once), migrations (a transaction-scoped advisory
//! lock), and auditd (its pool's statement timeout, queries, the tail's LISTEN), in
//! session mode, the mode the README recommends.

mod support;

use std::time::Duration;

use pg_provision::{Cluster, ClusterOptions, Pgbouncer, PoolMode};
use serde_json::Value;
use support::http::TestServer;
use support::{assert_exactly_once, builder, connect, dispatch, TestDb};

async fn behind_pgbouncer(mode: PoolMode) -> (Cluster, Pgbouncer, TestDb) {
    let (cluster, bouncer) = tokio::task::spawn_blocking(move || {
        let cluster = Cluster::start_new(&ClusterOptions::default()).expect("cluster");
        let bouncer = Pgbouncer::start(cluster.port(), mode).expect("pgbouncer");
        (cluster, bouncer)
    })
    .await
    .expect("start-up");
    let url = bouncer.url("postgres");
    let client = connect(&url).await;
    audit_layer::schema::migrate(&client)
        .await
        .expect("migrations through pgbouncer");
    (cluster, bouncer, TestDb { url, client })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_and_auditd_work_through_pgbouncer_in_session_mode() {
    let (cluster, _bouncer, db) = behind_pgbouncer(PoolMode::Session).await;
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(300));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..2_000 {
            tracing::info!(target: "audit", username = "alice", event_type = "pooled", i, "through pgbouncer");
        }
    });
    let stream = handle.stream_id();
    let stats = handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("committed");
    assert_eq!((stats.written, stats.retries), (2_000, 0), "{stats:?}");
    // Read on the server itself, not through the pooler.
    let direct = connect(&cluster.url("postgres")).await;
    assert_exactly_once(&direct, stream, 2_000).await;

    // auditd's pool sets its statement timeout on each connection, which PgBouncer 1.18
    // would refuse in the startup packet.
    let pool = audit_layer::pool::connect_pool(
        &db.url,
        &audit_layer::pool::PoolOptions {
            statement_timeout: Some(Duration::from_millis(4_321)),
            ..Default::default()
        },
    )
    .unwrap();
    let timeout: String = pool
        .get()
        .await
        .expect("a pooled connection through pgbouncer")
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "4321ms");

    let server = TestServer::start(&db).await;
    let page = server
        .get_json("/api/v1/logs?event_type=pooled&limit=100")
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(100), "{page}");
    let tail = server
        .get_json("/api/v1/logs/tail?wait=0s&event_type=pooled&limit=500")
        .await;
    let cursor = tail["next_cursor"].as_str().unwrap().to_owned();
    // A commit after the cursor wakes a waiting tail through the LISTEN connection.
    let waiting = {
        let url = format!("/api/v1/logs/tail?wait=20s&event_type=late&cursor={cursor}");
        let server = std::sync::Arc::new(server);
        let waiting_server = server.clone();
        (
            server,
            tokio::spawn(async move { waiting_server.get_json(&url).await }),
        )
    };
    let (server, waiting) = waiting;
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message) VALUES ('bob', 'late', 'after the cursor')",
        )
        .await
        .unwrap();
    let woken: Value = waiting.await.unwrap();
    assert_eq!(woken["items"].as_array().map(Vec::len), Some(1), "{woken}");
    let access = direct
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_access'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(access >= 1, "access records written through pgbouncer");
    std::sync::Arc::try_unwrap(server)
        .ok()
        .expect("one owner")
        .stop()
        .await;
}
