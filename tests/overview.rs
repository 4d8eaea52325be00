//! `GET /api/v1/overview` against what PostgreSQL holds, whether its counts (migration
//! 0010) are caught up, behind, or made stale by a month detached: the answer must be
//! the same as counting `audit_logs` itself, bucket by bucket and value by value.

mod support;

use serde_json::{json, Value};
use support::http::TestServer;
use support::TestDb;

/// 6,000 records from 2026-02-26 to 2026-03-05, at scattered seconds, with 40 users, five
/// event types, every severity and a resource type that is sometimes missing.
async fn seed(db: &TestDb, first: i64, count: i64) {
    db.client
        .execute(
            "INSERT INTO audit_logs (created_at, username, event_type, severity, resource_type, \
                 message, ip_address) \
             SELECT timestamptz '2026-02-26 00:00:00Z' + ((i * 7919) % 604800) * interval '1 second' \
                        + (i % 1000) * interval '1 millisecond', \
                    'user' || (i * 31 % 40), 'event' || (i % 5), \
                    (ARRAY['info', 'info', 'info', 'warning', 'error', 'critical'])[1 + i % 6], \
                    CASE WHEN i % 4 = 0 THEN NULL ELSE 'type' || (i % 3) END, 'm', \
                    ('10.0.0.' || (i % 7))::inet \
             FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS i",
            &[&first, &count],
        )
        .await
        .unwrap();
}

/// Counts every record written so far, and returns how many the catch-ups counted. The
/// horizon is the cluster's oldest open transaction, and the other tests' servers (in
/// other databases of the same cluster) keep opening some: one call may stop short of the
/// newest records, so call again until the horizon has passed them.
async fn catch_up(db: &TestDb) -> i64 {
    let newest = db
        .count("SELECT coalesce(max(tx_id), 0) FROM audit_logs")
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut counted = 0;
    loop {
        counted += db.count("SELECT audit_counts_catch_up()").await;
        let horizon = db
            .count("SELECT counted_below_tx FROM audit_counts_state")
            .await;
        if horizon > newest {
            return counted;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the horizon stayed at {horizon}, below the newest record's transaction {newest}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every seeded record is in exactly one hourly and one daily bucket of each table.
async fn assert_counted_once(db: &TestDb) {
    let seeded = db
        .count("SELECT count(*) FROM audit_logs WHERE created_at < '2026-06-01'")
        .await;
    for (table, level) in [
        ("audit_counts_by_kind", 3600),
        ("audit_counts_by_kind", 86_400),
        ("audit_counts_by_user", 3600),
        ("audit_counts_by_user", 86_400),
    ] {
        let counted = db
            .count(&format!(
                "SELECT coalesce(sum(n), 0)::bigint FROM {table} \
                 WHERE bucket_seconds = {level} AND bucket < '2026-06-01'"
            ))
            .await;
        assert_eq!(counted, seeded, "{table} by {level} s");
    }
}

/// Asks for the overview of `query` and checks every bucket and facet against SQL over
/// `audit_logs` with `condition` (the same filter, in SQL), for the window given.
async fn assert_exact(
    server: &TestServer,
    db: &TestDb,
    (since, until): (&str, &str),
    query: &str,
    condition: &str,
) -> Value {
    let overview = server
        .get_json(&format!(
            "/api/v1/overview?since={since}&until={until}&facet_values=50&{query}"
        ))
        .await;
    let width = overview["bucket_seconds"].as_i64().unwrap();
    let window = format!("created_at >= '{since}' AND created_at < '{until}' AND {condition}");
    let mut total = 0;
    for bucket in overview["histogram"].as_array().unwrap() {
        let start = bucket["start"].as_str().unwrap();
        for severity in ["info", "warning", "error", "critical"] {
            let expected = db
                .count(&format!(
                    "SELECT count(*) FROM audit_logs WHERE {window} AND severity = '{severity}' \
                     AND created_at >= '{start}' \
                     AND created_at < '{start}'::timestamptz + {width} * interval '1 second'"
                ))
                .await;
            assert_eq!(
                bucket[severity], expected,
                "{query}: {severity} in the bucket from {start} ({width} s)"
            );
            total += expected;
        }
    }
    assert_eq!(
        total,
        db.count(&format!("SELECT count(*) FROM audit_logs WHERE {window}"))
            .await,
        "{query}: the buckets hold the whole window"
    );
    assert_eq!(overview["total"], total, "{query}");
    for facet in ["event_type", "severity", "username", "resource_type"] {
        let rows = db
            .client
            .query(
                &format!(
                    "SELECT {facet}::text, count(*) FROM audit_logs WHERE {window} \
                     GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50"
                ),
                &[],
            )
            .await
            .unwrap();
        let expected: Vec<Value> = rows
            .iter()
            .map(|r| json!({"value": r.get::<_, Option<String>>(0), "count": r.get::<_, i64>(1)}))
            .collect();
        assert_eq!(
            overview["facets"][facet],
            json!(expected),
            "{query}: {facet}"
        );
    }
    overview
}

/// Windows with ragged ends, and requests whose buckets are days, hours and half hours.
async fn assert_every_shape_exact(server: &TestServer, db: &TestDb) {
    let ragged = ("2026-02-26T13:17:05.250Z", "2026-03-04T08:42:10Z");
    let aligned = ("2026-02-27T00:00:00Z", "2026-03-02T00:00:00Z");
    // Ends half a second after a bucket's start, with a record in that half second.
    let just_after_an_edge = ("2026-02-26T13:17:05.250Z", "2026-03-04T09:00:00.5Z");
    for window in [ragged, aligned, just_after_an_edge] {
        for (query, condition) in [
            ("buckets=8", "true"),
            ("buckets=60", "true"),
            ("buckets=400", "true"),
            ("buckets=60&severity=error", "severity = 'error'"),
            (
                "buckets=8&event_type=event1&event_type=event3",
                "event_type IN ('event1', 'event3')",
            ),
            ("buckets=60&resource_type=type2", "resource_type = 'type2'"),
            ("buckets=8&username=user7", "username = 'user7'"),
            (
                "buckets=8&username=user7&min_severity=warning",
                "username = 'user7' AND severity <> 'info'",
            ),
            (
                "buckets=8&username=user7&event_type=event2",
                "username = 'user7' AND event_type = 'event2'",
            ),
            ("buckets=60&ip_address=10.0.0.3", "ip_address = '10.0.0.3'"),
        ] {
            assert_exact(server, db, window, query, condition).await;
        }
    }
}

#[tokio::test]
async fn the_overview_is_exact_before_during_and_after_counting_ahead() {
    let db = TestDb::migrated("overview_counted").await;
    seed(&db, 0, 6000).await;
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (created_at, username, event_type, severity, message) \
             VALUES ('2026-03-04 09:00:00.25Z', 'user1', 'event1', 'error', 'on the edge')",
        )
        .await
        .unwrap();
    let server = TestServer::start(&db).await;
    // Nothing counted yet: everything from audit_logs.
    assert_every_shape_exact(&server, &db).await;

    // (Beside the seeded records, the access records of the requests so far, which are
    // dated today: the checks below stay in the seeded weeks.)
    assert!(catch_up(&db).await >= 6000);
    assert_counted_once(&db).await;
    assert_every_shape_exact(&server, &db).await;

    // Records committed after the catch-up, many of them hours late (inside buckets
    // already counted): above the horizon, so counted from audit_logs.
    seed(&db, 6000, 1500).await;
    assert_every_shape_exact(&server, &db).await;
    // Counting them again adds each once.
    assert!(catch_up(&db).await >= 1500);
    assert_counted_once(&db).await;
    assert_every_shape_exact(&server, &db).await;
    server.stop().await;
}

#[tokio::test]
async fn a_month_detached_or_attached_is_counted_from_the_records_until_counted_again() {
    let db = TestDb::migrated("overview_stale").await;
    db.client
        .batch_execute("SELECT audit_logs_ensure_partitions('2026-02-01', 2)")
        .await
        .unwrap();
    seed(&db, 0, 6000).await;
    assert_eq!(catch_up(&db).await, 6000);
    assert_counted_once(&db).await;
    let server = TestServer::start(&db).await;
    let february = ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z");
    let whole = ("2026-02-20T00:00:00Z", "2026-03-10T00:00:00Z");
    let in_february = db
        .count("SELECT count(*) FROM audit_logs WHERE created_at < '2026-03-01'")
        .await;
    assert!(in_february > 0);

    // What retention does with a month (auditd/src/retention/retire.rs): detach it and
    // mark it stale in one transaction. The counts still hold its records.
    db.client
        .batch_execute(
            "BEGIN; ALTER TABLE audit_logs DETACH PARTITION audit_logs_2026m02; \
             SELECT audit_counts_mark_stale('2026-02-01Z', '2026-03-01Z'); COMMIT",
        )
        .await
        .unwrap();
    let gone = assert_exact(&server, &db, february, "buckets=4", "true").await;
    assert_eq!(
        gone["total"], 0,
        "the detached month's records are not counted"
    );
    assert_exact(&server, &db, whole, "buckets=20", "true").await;

    // The next catch-up counts the month again (to nothing) and clears the mark.
    catch_up(&db).await;
    assert_eq!(db.count("SELECT count(*) FROM audit_counts_stale").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_counts_by_kind WHERE bucket < '2026-03-01'")
            .await,
        0
    );
    assert_exact(&server, &db, whole, "buckets=20", "true").await;

    // Attached again (retention's reattach), its records count again, at once and after.
    db.client
        .batch_execute(
            "BEGIN; ALTER TABLE audit_logs ATTACH PARTITION audit_logs_2026m02 \
                 FOR VALUES FROM ('2026-02-01Z') TO ('2026-03-01Z'); \
             SELECT audit_counts_mark_stale('2026-02-01Z', '2026-03-01Z'); COMMIT",
        )
        .await
        .unwrap();
    let back = assert_exact(&server, &db, february, "buckets=4", "true").await;
    assert_eq!(back["total"], in_february);
    catch_up(&db).await;
    let back = assert_exact(&server, &db, february, "buckets=4", "true").await;
    assert_eq!(back["total"], in_february);
    assert_exact(
        &server,
        &db,
        whole,
        "buckets=20&severity=critical",
        "severity = 'critical'",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn counts_written_by_someone_else_do_not_survive_a_recount() {
    // The counts are a cache, not evidence: a role that may write them can make the
    // overview lie, and a recount from audit_logs puts it right.
    let db = TestDb::migrated("overview_forged").await;
    seed(&db, 0, 2000).await;
    catch_up(&db).await;
    let server = TestServer::start(&db).await;
    let window = ("2026-02-27T00:00:00Z", "2026-03-02T00:00:00Z");
    db.client
        .batch_execute(
            "UPDATE audit_counts_by_kind SET n = n + 1000000 \
             WHERE bucket_seconds = 86400 AND bucket = '2026-02-28Z'",
        )
        .await
        .unwrap();
    let forged = server
        .get_json(&format!(
            "/api/v1/overview?since={}&until={}&buckets=3",
            window.0, window.1
        ))
        .await;
    let truth = db
        .count(&format!(
            "SELECT count(*) FROM audit_logs WHERE created_at >= '{}' AND created_at < '{}'",
            window.0, window.1
        ))
        .await;
    assert_ne!(
        forged["total"], truth,
        "the forged counts are what it reads"
    );
    db.client
        .batch_execute("SELECT audit_counts_recount('-infinity', 'infinity')")
        .await
        .unwrap();
    let recounted = assert_exact(&server, &db, window, "buckets=3", "true").await;
    assert_eq!(recounted["total"], truth);
    server.stop().await;
}

#[tokio::test]
async fn a_reader_granted_audit_logs_alone_gets_an_exact_overview_and_pages_without_seal_marks() {
    let db = TestDb::migrated("overview_reader").await;
    seed(&db, 0, 3000).await;
    catch_up(&db).await;
    let reader = format!("overview_reader_{}", std::process::id());
    db.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {reader}; CREATE ROLE {reader} LOGIN PASSWORD '{reader}';
             GRANT SELECT ON audit_logs TO {reader};"
        ))
        .await
        .unwrap();
    // Queries as the reader; access records written as the owner.
    let server = TestServer::start_on_standby(&support::url_as(&db.url, &reader), &db.url).await;
    let window = ("2026-02-26T13:17:05Z", "2026-03-04T08:42:10Z");
    for (query, condition) in [
        ("buckets=60", "true"),
        ("buckets=8&username=user7", "username = 'user7'"),
    ] {
        assert_exact(&server, &db, window, query, condition).await;
    }
    let page = server
        .get_json("/api/v1/logs?seal_status=true&limit=5")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{page}");
    assert!(
        items.iter().all(|r| r.get("seal_status").is_none()),
        "{page}"
    );
    server.stop().await;
    db.client
        .batch_execute(&format!("DROP OWNED BY {reader}; DROP ROLE {reader}"))
        .await
        .unwrap();
}
