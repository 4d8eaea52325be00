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
    let (writer, handle) = dispatch(builder(&db.url).batch_size(300));
    tracing::dispatcher::with_default(&writer, || {
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

    // Polling once an hour: only the writer's commit notice, heard through the LISTEN
    // connection auditd holds through PgBouncer, can wake the waiting tail in time.
    let limits = auditd::Limits {
        tail_poll_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let tokens = auditd::Tokens::parse([format!("ops:{}", support::http::TOKEN).as_str()]).unwrap();
    let server = std::sync::Arc::new(TestServer::start_with(&db, tokens, limits).await);
    let page = server
        .get_json("/api/v1/logs?event_type=pooled&limit=100")
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(100), "{page}");
    let listening = format!("LISTEN {}", audit_layer::COMMIT_CHANNEL);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
            &[&listening],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "auditd never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = server
        .get_json("/api/v1/logs/tail?wait=0s&event_type=late")
        .await;
    let cursor = start["next_cursor"].as_str().unwrap().to_owned();
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            let asked = std::time::Instant::now();
            let page = server
                .get_json(&format!(
                    "/api/v1/logs/tail?wait=20s&event_type=late&cursor={cursor}"
                ))
                .await;
            (page, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (late, late_handle) = dispatch(builder(&db.url));
    tracing::dispatcher::with_default(&late, || {
        tracing::info!(target: "audit", username = "bob", event_type = "late", "after the cursor");
    });
    late_handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("committed");
    let (woken, waited): (Value, Duration) = waiting.await.unwrap();
    assert_eq!(woken["items"].as_array().map(Vec::len), Some(1), "{woken}");
    assert!(
        waited < Duration::from_secs(15),
        "woken by the notice, not by the end of the wait: {waited:?}"
    );
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
