//! auditd's API through real HTTP against real PostgreSQL: filters, paging under concurrent
//! inserts, export, tail in commit order, authentication, bad input, access records.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};
use support::csv::parse_csv;
use support::http::{read_until, TestServer, TOKEN};
use support::TestDb;

/// Inserts a record with an explicit time; returns its id.
async fn insert(db: &TestDb, record: Value) -> i64 {
    let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
    let at = record
        .get("created_at")
        .and_then(Value::as_str)
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&chrono::Utc)
        })
        .unwrap_or_else(chrono::Utc::now);
    db.client
        .query_one(
            "INSERT INTO audit_logs (username, user_id, event_type, message, ip_address, \
             resource_type, resource_id, resource_name, severity, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5::text::inet, $6, $7, $8, $9, $10, $11) RETURNING id",
            &[
                &text("username").unwrap_or_else(|| "alice".into()),
                &record.get("user_id").and_then(Value::as_i64),
                &text("event_type").unwrap_or_else(|| "authentication".into()),
                &text("message").unwrap_or_else(|| "User login".into()),
                &text("ip_address"),
                &text("resource_type"),
                &text("resource_id"),
                &text("resource_name"),
                &text("severity").unwrap_or_else(|| "info".into()),
                &record.get("metadata").cloned(),
                &at,
            ],
        )
        .await
        .unwrap()
        .get(0)
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

async fn seeded() -> (TestDb, Vec<i64>) {
    let db = TestDb::migrated("http_filters").await;
    let rows = [
        json!({"username": "alice", "user_id": 2, "event_type": "authentication", "message": "User login",
               "ip_address": "10.1.2.3", "created_at": "2026-03-01T10:00:00Z"}),
        json!({"username": "alice", "event_type": "authentication", "message": "User login_failed",
               "severity": "warning", "ip_address": "203.0.113.9", "created_at": "2026-03-01T11:00:00Z"}),
        json!({"username": "bob", "user_id": 3, "event_type": "onboarding", "message": "Device 'edge-fra1-01' onboarded",
               "resource_type": "device", "resource_id": "d-1", "resource_name": "edge-fra1-01",
               "metadata": {"site": "fra1", "attempts": 3}, "created_at": "2026-03-02T09:00:00Z"}),
        json!({"username": "bob", "event_type": "onboarding", "message": "Device 'edge-ams1-02' onboarding FAILED",
               "severity": "error", "resource_type": "device", "resource_id": "d-2", "resource_name": "edge-ams1-02",
               "metadata": {"site": "ams1", "attempts": 1, "net": {"vlan": 7}}, "created_at": "2026-03-02T10:00:00Z"}),
        json!({"username": "system", "event_type": "backup", "message": "Backup failed: storage unreachable",
               "severity": "critical", "metadata": {"dry_run": false}, "created_at": "2026-03-03T00:00:00Z"}),
        json!({"username": "system", "event_type": "sync", "message": "Sync completed (100% done)",
               "ip_address": "10.9.9.9", "created_at": "2026-03-04T00:00:00Z"}),
    ];
    let mut ids = Vec::new();
    for row in rows {
        ids.push(insert(&db, row).await);
    }
    (db, ids)
}

#[tokio::test]
async fn each_filter_and_their_combinations_select_the_right_rows() {
    let (db, id) = seeded().await;
    let server = TestServer::start_quiet(&db).await;
    let cases: &[(&str, &[usize])] = &[
        ("", &[5, 4, 3, 2, 1, 0]),
        ("username=alice", &[1, 0]),
        ("user_id=3", &[2]),
        ("event_type=onboarding", &[3, 2]),
        ("event_type=backup,sync", &[5, 4]),
        ("event_type=backup&event_type=sync", &[5, 4]),
        ("severity=warning", &[1]),
        ("severity=error,critical", &[4, 3]),
        ("min_severity=error", &[4, 3]),
        ("min_severity=warning&username=alice", &[1]),
        ("resource_type=device", &[3, 2]),
        ("resource_type=device&resource_id=d-2", &[3]),
        ("resource_name=edge-fra1-01", &[2]),
        ("ip_address=10.1.2.3", &[0]),
        ("ip_address=10.0.0.0/8", &[5, 0]),
        ("since=2026-03-02T00:00:00Z", &[5, 4, 3, 2]),
        ("until=2026-03-02T00:00:00Z", &[1, 0]),
        (
            "since=2026-03-01T10:30:00Z&until=2026-03-02T09:30:00Z",
            &[2, 1],
        ),
        ("q=FAILED", &[4, 3, 1]),
        ("q=login_", &[1]),
        ("q=100%25", &[5]),
        ("meta.site=fra1", &[2]),
        ("meta.attempts=3", &[2]),
        ("meta.dry_run=false", &[4]),
        ("meta.net.vlan=7", &[3]),
        ("username=bob&meta.site=ams1&min_severity=error", &[3]),
        ("order=asc&username=system", &[4, 5]),
        ("username=nobody", &[]),
    ];
    for (query, expected) in cases {
        let page = server.get_json(&format!("/api/v1/logs?{query}")).await;
        let expected: Vec<i64> = expected.iter().map(|i| id[*i]).collect();
        assert_eq!(ids(&page), expected, "{query}");
        assert_eq!(page["next_cursor"], Value::Null, "{query}");
    }
    // Every column comes back as stored.
    let one = server.get_json(&format!("/api/v1/logs/{}", id[3])).await;
    assert_eq!(
        one,
        json!({"id": id[3], "created_at": "2026-03-02T10:00:00.000000Z", "username": "bob", "user_id": null,
               "event_type": "onboarding", "severity": "error", "message": "Device 'edge-ams1-02' onboarding FAILED",
               "ip_address": null, "resource_type": "device", "resource_id": "d-2", "resource_name": "edge-ams1-02",
               "metadata": {"site": "ams1", "attempts": 1, "net": {"vlan": 7}}})
    );
    let (status, _, _) = server.get("/api/v1/logs/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn reads_are_audited_with_who_which_filters_and_how_many_rows() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    server
        .get_json("/api/v1/logs?username=alice&min_severity=warning")
        .await;
    let (status, _, _) = server
        .request("/api/v1/logs", Some("wrong-token-0123456789"), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
    let access = db.records_where("event_type = 'audit_access'").await;
    assert_eq!(access.len(), 2, "{access:?}");
    assert_eq!(access[0].username, "ops");
    assert_eq!(access[0].ip_address, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        Value::Object(access[0].metadata.clone()),
        json!({"route": "/api/v1/logs", "rows": 1, "status": 200,
               "filters": {"username": "alice", "severity": ["warning", "error", "critical"]}})
    );
    assert_eq!(access[1].username, "anonymous");
    assert_eq!(access[1].severity, audit_layer::Severity::Warning);
    assert_eq!(access[1].metadata["credentials_presented"], true);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_in_json() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    for token in [None, Some("not-the-token-0123456789")] {
        for path in [
            "/api/v1/logs",
            "/api/v1/logs/1",
            "/api/v1/logs/export",
            "/api/v1/logs/tail",
            "/api/v1/stats",
            "/metrics",
        ] {
            let (status, headers, body) = server.request(path, token, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(headers["www-authenticate"], "Bearer realm=\"auditd\"");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        }
    }
    for path in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        let (status, _, _) = server.request(path, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_parameters_get_400_naming_the_parameter() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
        ("cursor=nonsense", "cursor"),
        ("severity=fatal", "severity"),
        ("min_severity=loud", "min_severity"),
        ("user_id=alice", "user_id"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("ip_address=999.1.1.1", "ip_address"),
        ("colour=blue", "colour"),
        ("username=a&username=b", "username"),
    ] {
        let (status, _, body) = server.get(&format!("/api/v1/logs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
    }
    let (status, _, body) = server.get("/api/v1/logs/abc").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = server.get("/api/v1/logs/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = server.get("/api/v1/logs/tail?wait=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = server.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn sql_injection_strings_are_inert() {
    let (db, _) = seeded().await;
    let server = TestServer::start_quiet(&db).await;
    for query in [
        "username=alice'%20OR%20'1'%3D'1",
        "username=alice%27%3B%20DROP%20TABLE%20audit_logs%3B%20--",
        "q=%27%29%20OR%201%3D1%20--",
        "q=%25",
        "meta.site%27%29%20OR%201%3D1--=x",
        "resource_id=d-1%22%20OR%20%221%22%3D%221",
        "event_type=onboarding%27%20OR%20%271%27%3D%271",
    ] {
        let page = server.get_json(&format!("/api/v1/logs?{query}")).await;
        // `%` is matched literally, like any other character.
        let expected = if query == "q=%25" { 1 } else { 0 };
        assert_eq!(ids(&page).len(), expected, "{query}");
    }
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 6);
    server.stop().await;
}

#[tokio::test]
async fn pages_never_skip_or_repeat_while_rows_are_inserted_in_both_orders() {
    let db = TestDb::migrated("http_paging").await;
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message, created_at)
             SELECT 'u' || (i % 7), 'paging', 'row ' || i,
                    '2026-01-01'::timestamptz + (i / 3) * interval '1 second'
             FROM generate_series(1, 2000) AS i",
        )
        .await
        .unwrap();
    let existing: HashSet<i64> = db
        .client
        .query("SELECT id FROM audit_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let server = TestServer::start(&db).await;
    // Rows keep arriving, some with times inside the range being paged.
    let writer_url = db.url.clone();
    let inserting = tokio::spawn(async move {
        let client = support::connect(&writer_url).await;
        for i in 0..300 {
            client
                .execute(
                    "INSERT INTO audit_logs (username, event_type, message, created_at) \
                     VALUES ('late', 'paging', 'late', now() - ($1::int * interval '1 day'))",
                    &[&(i % 400)],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/logs?event_type=paging&limit=37&order={order}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = server.get_json(&path).await;
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "{order}: a row was repeated");
        assert!(
            existing.is_subset(&unique),
            "{order}: a row that existed was skipped"
        );
    }
    inserting.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_single_huge_record_does_not_break_paging() {
    let db = TestDb::migrated("http_huge").await;
    for i in 0..25 {
        let message = if i == 12 {
            "x".repeat(64 * 1024)
        } else {
            format!("small {i}")
        };
        insert(&db, json!({"message": message, "metadata": {"blob": "y".repeat(if i == 12 { 60_000 } else { 1 })}})).await;
    }
    let server = TestServer::start(&db).await;
    let mut seen = 0;
    let mut cursor = String::new();
    loop {
        let page = server
            .get_json(&format!("/api/v1/logs?limit=5{cursor}"))
            .await;
        seen += ids(&page).len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, 25);
    server.stop().await;
}

async fn seed_for_export(db: &TestDb, rows: i64) {
    db.client
        .execute(
            "INSERT INTO audit_logs (username, event_type, message, ip_address, metadata, created_at)
             SELECT 'user' || (i % 10), 'export',
                    CASE i % 4 WHEN 0 THEN 'plain ' || i
                               WHEN 1 THEN 'comma, \"quote\" and ' || i
                               WHEN 2 THEN E'line\\nbreak ' || i
                               ELSE 'ünïcødé ✓ ' || i END,
                    CASE WHEN i % 2 = 0 THEN '10.0.0.1'::inet END,
                    jsonb_build_object('i', i, 'note', 'a,b \"c\"'),
                    '2026-02-01'::timestamptz + i * interval '1 millisecond'
             FROM generate_series(1, $1::int) AS i",
            &[&(rows as i32)],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn export_streams_100000_rows_as_valid_complete_ndjson() {
    let db = TestDb::migrated("http_export_ndjson").await;
    seed_for_export(&db, 100_000).await;
    let server = TestServer::start(&db).await;
    let (status, headers, body) = server.get("/api/v1/logs/export?event_type=export").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let text = std::str::from_utf8(&body).unwrap();
    let mut ids = HashSet::new();
    let mut previous: Option<(String, i64)> = None;
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).expect("every line is JSON");
        let i = record["metadata"]["i"].as_i64().unwrap();
        let expected_message = match i % 4 {
            0 => format!("plain {i}"),
            1 => format!("comma, \"quote\" and {i}"),
            2 => format!("line\nbreak {i}"),
            _ => format!("ünïcødé ✓ {i}"),
        };
        assert_eq!(record["message"], expected_message.as_str());
        assert!(record["cursor"].is_string());
        let key = (
            record["created_at"].as_str().unwrap().to_owned(),
            record["id"].as_i64().unwrap(),
        );
        if let Some(p) = &previous {
            assert!(key < *p, "newest first");
        }
        previous = Some(key);
        assert!(ids.insert(record["id"].as_i64().unwrap()), "repeated row");
    }
    assert_eq!(ids.len(), 100_000);
    server.stop().await;
    let access = db.records_where("event_type = 'audit_access'").await;
    assert_eq!(access[0].metadata["rows"], 100_000);
}

#[tokio::test]
async fn export_streams_100000_rows_as_valid_escaped_csv() {
    let db = TestDb::migrated("http_export_csv").await;
    seed_for_export(&db, 100_000).await;
    let server = TestServer::start(&db).await;
    let (status, headers, body) = server.get("/api/v1/logs/export?format=csv&order=asc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let records = parse_csv(std::str::from_utf8(&body).unwrap());
    assert_eq!(records[0][0], "id");
    assert_eq!(records.len(), 100_001);
    for record in &records[1..] {
        assert_eq!(record.len(), 13);
        let metadata: Value = serde_json::from_str(&record[11]).unwrap();
        let i = metadata["i"].as_i64().unwrap();
        assert_eq!(metadata["note"], "a,b \"c\"");
        let expected_message = match i % 4 {
            0 => format!("plain {i}"),
            1 => format!("comma, \"quote\" and {i}"),
            2 => format!("line\nbreak {i}"),
            _ => format!("ünïcødé ✓ {i}"),
        };
        assert_eq!(record[6], expected_message);
        assert_eq!(record[7], if i % 2 == 0 { "10.0.0.1" } else { "" });
    }
    server.stop().await;
}

#[tokio::test]
async fn an_export_resumes_from_the_cursor_of_its_last_record() {
    let db = TestDb::migrated("http_export_resume").await;
    seed_for_export(&db, 50).await;
    let server = TestServer::start(&db).await;
    let (_, _, first) = server.get("/api/v1/logs/export?order=asc&limit=20").await;
    let first: Vec<Value> = std::str::from_utf8(&first)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len(), 20);
    let cursor = first.last().unwrap()["cursor"].as_str().unwrap().to_owned();
    let (_, _, rest) = server
        .get(&format!("/api/v1/logs/export?order=asc&cursor={cursor}"))
        .await;
    let rest: Vec<Value> = std::str::from_utf8(&rest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let all: Vec<i64> = first
        .iter()
        .chain(&rest)
        .map(|r| r["metadata"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(all, (1..=50).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn the_tail_delivers_rows_committed_out_of_id_order_exactly_once() {
    let db = TestDb::migrated("http_tail").await;
    let server = TestServer::start(&db).await;
    let start = server
        .get_json("/api/v1/logs/tail?wait=0s&event_type=tail")
        .await;
    assert_eq!(ids(&start), Vec::<i64>::new());
    let mut cursor = start["next_cursor"].as_str().unwrap().to_owned();

    // The first transaction takes the smaller id but commits last.
    let early = support::connect(&db.url).await;
    let late = support::connect(&db.url).await;
    early.batch_execute("BEGIN").await.unwrap();
    let first_id: i64 = early
        .query_one("INSERT INTO audit_logs (username, event_type, message) VALUES ('a', 'tail', 'first id, commits last') RETURNING id", &[])
        .await.unwrap().get(0);
    late.batch_execute("BEGIN").await.unwrap();
    let second_id: i64 = late
        .query_one("INSERT INTO audit_logs (username, event_type, message) VALUES ('b', 'tail', 'second id, commits first') RETURNING id", &[])
        .await.unwrap().get(0);
    late.batch_execute("COMMIT").await.unwrap();
    assert!(first_id < second_id);

    // A naive "id > last" reader would hand out second_id now and later skip first_id.
    // The tail holds it back while the older transaction is open.
    let page = server
        .get_json(&format!(
            "/api/v1/logs/tail?wait=300ms&event_type=tail&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page), Vec::<i64>::new());
    cursor = page["next_cursor"].as_str().unwrap().to_owned();

    early.batch_execute("COMMIT").await.unwrap();
    let mut delivered = Vec::new();
    for _ in 0..3 {
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

#[tokio::test]
async fn a_waiting_tail_is_woken_by_the_writers_commit_notice() {
    // A cluster of its own: the tail only delivers rows below the cluster-wide snapshot
    // horizon, and other tests' open transactions would hold it back, silently.
    let (_cluster, url) = support::own_cluster().await;
    let db = TestDb {
        client: support::connect(&url).await,
        url,
    };
    // Polling once an hour, and a long poll that may wait 100 s: before that, only the
    // writer's commit notice can make it look again.
    let limits = auditd::Limits {
        tail_poll_interval: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(120),
        max_tail_wait: Duration::from_secs(120),
        ..Default::default()
    };
    let tokens = auditd::Tokens::parse([format!("ops:{TOKEN}").as_str()]).unwrap();
    let server = std::sync::Arc::new(TestServer::start_with(&db, tokens, limits).await);
    // auditd listens on a connection of its own, started with the server: wait until it
    // does, or the notice could go out before anyone hears it.
    let listening = format!("LISTEN {}", audit_layer::COMMIT_CHANNEL);
    for _ in 0..200 {
        let listeners = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query = $1",
                &[&listening],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if listeners > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = server
        .get_json("/api/v1/logs/tail?wait=0s&event_type=noticed")
        .await;
    let cursor = start["next_cursor"].as_str().unwrap().to_owned();

    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .get_json(&format!(
                    "/api/v1/logs/tail?wait=100s&event_type=noticed&cursor={cursor}"
                ))
                .await
        })
    };
    // Let the long poll make its first, empty, query before the record exists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::emit_and_flush(&db, || {
        tracing::info!(target: "audit", username = "nina", event_type = "noticed", "Written while a tail waits");
    })
    .await;

    // Not a speed check: woken by the notice, the answer comes in milliseconds; without
    // it, only at the end of the 100 s wait. 30 s tells the two apart on any machine.
    let page = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the tail answered before its wait ran out: the notice woke it")
        .unwrap();
    let messages: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["Written while a tail waits"], "{page}");
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn the_event_stream_sends_new_rows_and_resumes_after_last_event_id() {
    let db = TestDb::migrated("http_sse").await;
    let server = TestServer::start(&db).await;
    let response = server
        .send("/api/v1/logs/stream?event_type=sse", Some(TOKEN), &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    read_until(&mut body, Duration::from_secs(5), |t| t.contains("retry:")).await;
    // Let the stream take its starting point before anything is written.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = insert(
        &db,
        json!({"event_type": "sse", "message": "<script>alert(1)</script>"}),
    )
    .await;
    let text = read_until(&mut body, Duration::from_secs(10), |t| {
        t.contains("\n\n") && t.contains("data:")
    })
    .await;
    let event = text.split("\n\n").find(|e| e.contains("data:")).unwrap();
    let id_line = event
        .lines()
        .find(|l| l.starts_with("id: "))
        .unwrap()
        .to_owned();
    let data: Value = serde_json::from_str(
        event
            .lines()
            .find(|l| l.starts_with("data: "))
            .unwrap()
            .trim_start_matches("data: "),
    )
    .unwrap();
    assert_eq!(data["id"], first);
    assert_eq!(data["message"], "<script>alert(1)</script>");
    drop(body);

    let second = insert(&db, json!({"event_type": "sse", "message": "while away"})).await;
    let last_event_id = id_line.trim_start_matches("id: ");
    let response = server
        .send(
            "/api/v1/logs/stream?event_type=sse",
            Some(TOKEN),
            &[("last-event-id", last_event_id)],
        )
        .await;
    let mut body = response.into_body();
    let text = read_until(&mut body, Duration::from_secs(10), |t| {
        t.contains("while away")
    })
    .await;
    assert!(!text.contains("<script>"), "the first row was sent again");
    assert!(text.contains(&format!("\"id\":{second}")));
    drop(body);
    server.stop().await;
}

#[tokio::test]
async fn stats_count_by_event_type_and_severity_in_the_window() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    let stats = server
        .get_json("/api/v1/stats?since=2026-03-01T00:00:00Z&until=2026-03-03T00:00:01Z")
        .await;
    assert_eq!(stats["total"], 5);
    assert_eq!(
        stats["by_event_type"],
        json!({"authentication": 2, "onboarding": 2, "backup": 1})
    );
    assert_eq!(
        stats["by_severity"],
        json!({"info": 2, "warning": 1, "error": 1, "critical": 1})
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    server.get_json("/api/v1/logs").await;
    server.get("/api/v1/logs?limit=0").await;
    let (status, headers, body) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("auditd_http_requests_total{route=\"/api/v1/logs\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("auditd_http_requests_total{route=\"/api/v1/logs\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("auditd_rows_served_total{route=\"/api/v1/logs\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("auditd_http_request_duration_seconds_count{route=\"/api/v1/logs\"} 2"),
        "{text}"
    );
    assert!(text.contains("auditd_db_pool_max 8"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_promptly() {
    let db = TestDb::migrated("http_shutdown").await;
    let server = TestServer::start(&db).await;
    let addr = server.addr;
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get("/api/v1/logs/tail?wait=25s")
            .header("host", "x")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        (response.status(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let (status, elapsed) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_secs(10),
        "the long poll held shutdown for {elapsed:?}"
    );
}

#[tokio::test]
async fn serving_a_non_loopback_address_without_tokens_is_refused() {
    let db = TestDb::migrated("http_refuse").await;
    let pool = audit_layer::pool::connect_pool(&db.url, &Default::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let options = auditd::ServerOptions {
        tokens: std::sync::Arc::new(auditd::TokenStore::new(auditd::Tokens::none())),
        limits: auditd::Limits::default(),
        shutdown_grace: Duration::from_secs(1),
        access_audit: None,
        audit_handle: None,
        commit_notices: None,
        write_pool: None,
        tls: None,
    };
    let err = auditd::serve(listener, pool, options, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without bearer tokens"), "{err}");
}

#[tokio::test]
async fn requests_beyond_the_concurrency_bound_get_503_at_once() {
    let db = TestDb::migrated("http_overload").await;
    let limits = auditd::Limits {
        max_concurrent_requests: 1,
        ..Default::default()
    };
    let server = TestServer::start_with(
        &db,
        auditd::Tokens::parse([format!("ops:{TOKEN}").as_str()]).unwrap(),
        limits,
    )
    .await;
    // One long poll holds the only slot while another request comes in.
    let (holder, (status, headers, body)) = tokio::join!(
        server.send("/api/v1/logs/tail?wait=3s", Some(TOKEN), &[]),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.get("/api/v1/logs").await
        }
    );
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["retry-after"], "1");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(holder.status(), StatusCode::OK);
    // The slot is free again.
    server.get_json("/api/v1/logs").await;
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_parameter_the_server_takes() {
    let db = TestDb::migrated("http_openapi").await;
    let server = TestServer::start_quiet(&db).await;
    let (status, _, body) = server.request("/api/v1/openapi.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let documented: HashSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let served: HashSet<&str> = auditd::ROUTES.iter().map(|r| r.path).collect();
    assert_eq!(documented, served, "documented paths vs the router's table");

    for route in auditd::ROUTES {
        let method = match route.methods {
            auditd::Methods::Read => "get",
            auditd::Methods::Post => "post",
        };
        let operation = &doc["paths"][route.path][method];
        assert!(
            operation.is_object(),
            "{}: no {method} operation",
            route.path
        );
        let answers = operation["responses"].as_object().unwrap();
        assert_eq!(
            answers.contains_key("403"),
            route.protected,
            "{}: a protected route documents its 403 (a token without the scope)",
            route.path
        );
        if route.methods == auditd::Methods::Post {
            // Its parameters are a header and a body, checked by the ingest tests.
            continue;
        }
        let secured = operation
            .get("security")
            .is_some_and(|s| !s.as_array().unwrap().is_empty());
        assert_eq!(secured, route.protected, "{}: security", route.path);
        let path = route.path.replace("{id}", "1");
        let params = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for param in params.iter().filter(|p| p["in"] == "query") {
            let name = param["name"].as_str().unwrap();
            let value = match name {
                "order" => "asc".to_owned(),
                "limit" => "5".to_owned(),
                "format" => "csv".to_owned(),
                "wait" => "0s".to_owned(),
                "cursor" if route.path.ends_with("/stream") || route.path.ends_with("/tail") => {
                    auditd::TailCursor { tx_id: 1, id: 1 }.encode()
                }
                "cursor" => auditd::PageCursor {
                    created_at: chrono::Utc::now(),
                    id: 1,
                }
                .encode(),
                _ => param
                    .get("example")
                    .or_else(|| param["schema"].get("example"))
                    .map(|e| match e {
                        Value::String(s) => s.clone(),
                        Value::Array(items) => items
                            .iter()
                            .map(|i| {
                                i.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| i.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    })
                    .unwrap_or_else(|| panic!("{}: {name} has no example", route.path)),
            };
            let mut url = format!("{path}?{name}={}", auditd::encode_query_value(&value));
            if route.path.ends_with("/tail") && name != "wait" {
                url.push_str("&wait=0s");
            }
            let response = server.send(&url, Some(TOKEN), &[]).await;
            let status = response.status();
            if status == StatusCode::BAD_REQUEST {
                use http_body_util::BodyExt;
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let error: Value = serde_json::from_slice(&body).unwrap();
                assert_ne!(
                    error["error"]["message"], "unknown parameter",
                    "{url}: documented but refused"
                );
            }
        }
        // And the server refuses what is not documented, so the check above can fail.
        if !params.is_empty() || route.audited {
            let (status, _, body) = server.get(&format!("{path}?not_a_parameter=1")).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_download_link_exports_without_a_header_exactly_what_it_was_issued_for() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    let query = "event_type=onboarding&format=csv";
    let link = server
        .get_json(&format!("/api/v1/logs/export/link?{query}"))
        .await;
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/api/v1/logs/export?{query}&link_by=ops&")));
    // Values a browser would escape itself come back escaped, so the link survives it.
    let spelled = server
        .get_json("/api/v1/logs/export/link?q=Device+%27edge")
        .await;
    let spelled = spelled["url"].as_str().unwrap();
    assert!(spelled.starts_with("/api/v1/logs/export?q=Device%20%27edge&link_by=ops&"));
    let (status, _, body) = server.request(spelled, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 2);
    assert!(link["expires_at"].as_str().unwrap().ends_with('Z'));

    // Followed without a header, as a browser does: the same bytes as the export itself.
    let (status, headers, by_link) = server.request(&url, None, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&by_link)
    );
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"audit_logs.csv\""
    );
    let (_, _, by_header) = server.get(&format!("/api/v1/logs/export?{query}")).await;
    assert_eq!(by_link, by_header);
    assert_eq!(String::from_utf8_lossy(&by_link).lines().count(), 3);

    // Any change to what it grants, and it grants nothing.
    for tampered in [
        url.replace("event_type=onboarding", "event_type=backup"),
        url.replace("format=csv", "format=csv&username=bob"),
        url.replace("link_by=ops", "link_by=other"),
        format!("{url}0"),
    ] {
        let (status, _, _) = server.request(&tampered, None, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{tampered}");
    }
    // Signed with the right secret, but expired.
    let tokens = auditd::Tokens::parse([format!("ops:{TOKEN}").as_str()]).unwrap();
    let unsigned = format!("/api/v1/logs/export?{query}&link_by=ops&link_expires=1000000000");
    let signature = tokens.sign("ops", unsigned.as_bytes()).unwrap();
    let expired = format!("{unsigned}&link_signature={signature}");
    let (status, _, _) = server.request(&expired, None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Asking for a link needs the token; a bad filter is refused when asking.
    let (status, _, _) = server
        .request(&format!("/api/v1/logs/export/link?{query}"), None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = server.get("/api/v1/logs/export/link?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["parameter"],
        "format"
    );
    server.stop().await;

    // The download is recorded under the name of the token that asked for the link.
    let downloads = db
        .records_where(
            "event_type = 'audit_access' AND metadata->>'route' = '/api/v1/logs/export' \
             AND (metadata->>'status')::int = 200",
        )
        .await;
    assert_eq!(downloads.len(), 3, "{downloads:?}");
    assert!(downloads.iter().all(|r| r.username == "ops"));
    assert!(downloads.iter().all(|r| r.metadata["rows"] == 2));
    let refused = db
        .count(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_access' \
             AND severity = 'warning' AND metadata->>'route' = '/api/v1/logs/export' \
             AND (metadata->>'credentials_presented')::boolean",
        )
        .await;
    assert_eq!(refused, 5);
    let refused_links = db
        .count(
            "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_access' \
             AND severity = 'warning' AND metadata->>'route' = '/api/v1/logs/export/link'",
        )
        .await;
    assert_eq!(refused_links, 1);
}

/// A self-signed certificate for 127.0.0.1 and its key, made with the openssl command.
fn self_signed_certificate(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=auditd test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate: rustls refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command, to make a test certificate");
    assert!(status.success());
    (cert, key)
}

/// GET `path` over HTTPS from a client that trusts only the certificate in `trusted`.
async fn https_get(
    addr: std::net::SocketAddr,
    trusted: &std::path::Path,
    path: &str,
) -> Result<(StatusCode, bytes::Bytes), String> {
    use http_body_util::BodyExt;
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(trusted).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body))
}

#[tokio::test]
async fn over_tls_the_api_answers_a_renewed_certificate_is_taken_up_and_plain_http_gets_no_answer()
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = std::env::temp_dir().join(format!("auditd-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_certificate(&dir, "server");
    let (other_cert, other_key) = self_signed_certificate(&dir, "other");
    let mismatched = auditd::Certificate::load(&cert, &other_key).err().unwrap();
    assert!(
        format!("{mismatched:#}").contains("do not go together"),
        "{mismatched:#}"
    );
    let missing = auditd::Certificate::load(&dir.join("none.pem"), &key)
        .err()
        .unwrap();
    assert!(format!("{missing:#}").contains("none.pem"), "{missing:#}");

    let (db, seeded_ids) = seeded().await;
    let certificate = auditd::Certificate::load(&cert, &key).unwrap();
    let server = TestServer::start_tls(&db, certificate.acceptor().unwrap()).await;
    let (status, body) = https_get(server.addr, &cert, "/api/v1/logs?event_type=backup")
        .await
        .expect("a TLS handshake with the server's certificate");
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ids(&page), vec![seeded_ids[4]]);
    assert!(https_get(server.addr, &other_cert, "/healthz")
        .await
        .is_err());

    // Renewed on disk (here: replaced by the other one), then reloaded as SIGHUP does.
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    certificate.reload().unwrap();
    let (status, _) = https_get(server.addr, &other_cert, "/healthz")
        .await
        .expect("new connections get the renewed certificate");
    assert_eq!(status, StatusCode::OK);
    // A broken file is refused and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    assert!(certificate.reload().is_err());
    assert!(https_get(server.addr, &other_cert, "/healthz")
        .await
        .is_ok());

    // Plain HTTP to the TLS port: the handshake fails and no HTTP answer comes back.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn replaced_tokens_are_in_force_for_the_next_request() {
    let (db, _) = seeded().await;
    let server = TestServer::start(&db).await;
    let (status, _, _) = server.get("/api/v1/logs").await;
    assert_eq!(status, StatusCode::OK);
    let rotated = "rotated-token-0123456789";
    server
        .tokens
        .replace(auditd::Tokens::parse([format!("ops2:{rotated}").as_str()]).unwrap());
    let (status, _, _) = server.get("/api/v1/logs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token is gone");
    let (status, _, _) = server.request("/api/v1/logs", Some(rotated), &[]).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
    let names: Vec<String> = db
        .records_where("event_type = 'audit_access' AND severity = 'info'")
        .await
        .into_iter()
        .map(|r| r.username)
        .collect();
    assert_eq!(names, ["ops", "ops2"]);
}

#[tokio::test]
async fn an_export_running_at_shutdown_is_cut_short_visibly_and_still_recorded() {
    let db = TestDb::migrated("http_export_shutdown").await;
    // About 33 MB of NDJSON: more than loopback's socket buffers hold, so it stalls.
    seed_for_export(&db, 100_000).await;
    let server = TestServer::start(&db).await;
    // A client that reads nothing: the export stalls with its channel and socket full.
    let response = server
        .send("/api/v1/logs/export?event_type=export", Some(TOKEN), &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Shutdown ends the export at once; the connection, which cannot move while the
    // client reads nothing, is given the grace period (5 s here).
    server.stop().await;
    // What the client has is visibly incomplete: the body fails rather than ends.
    use http_body_util::BodyExt;
    let read = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends");
    assert!(read.is_err(), "a cut export must not look complete");
    // And the read was recorded, with the 503 of an export cut short.
    let records = db
        .records_where("event_type = 'audit_access' AND metadata->>'route' = '/api/v1/logs/export'")
        .await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].metadata["status"], 503);
    let rows = records[0].metadata["rows"].as_u64().unwrap();
    assert!(rows > 0 && rows < 100_000, "{rows} rows");
}
