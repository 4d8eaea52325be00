//! What a hostile client sends to auditd, over real HTTP against real PostgreSQL: every
//! value that PostgreSQL would refuse is refused first, with a 400 that names the
//! parameter, so no request can turn into a database error (and a WARN in the log).

mod support;

use hyper::StatusCode;
use serde_json::Value;
use support::csv::parse_csv;
use support::http::TestServer;
use support::TestDb;

async fn error_of(server: &TestServer, url: &str) -> (StatusCode, Value) {
    let (status, _, body) = server.get(url).await;
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{url}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, body)
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_nul_byte_in_any_parameter_is_a_400_naming_it_never_a_database_error() {
    let db = TestDb::migrated("hostile_nul").await;
    let server = TestServer::start_quiet(&db).await;
    for (route, query, parameter) in [
        ("/api/v1/logs", "username=a%00b", "username"),
        ("/api/v1/logs", "event_type=a%00b", "event_type"),
        ("/api/v1/logs", "resource_type=a%00b", "resource_type"),
        ("/api/v1/logs", "resource_id=%00", "resource_id"),
        ("/api/v1/logs", "resource_name=x%00", "resource_name"),
        ("/api/v1/logs", "q=edge%00", "q"),
        ("/api/v1/logs", "meta.site=fra%001", "meta.site"),
        ("/api/v1/logs", "meta.si%00te=fra1", "meta.si\u{0}te"),
        ("/api/v1/logs/export", "username=a%00b", "username"),
        ("/api/v1/logs/tail", "q=a%00&wait=0s", "q"),
        ("/api/v1/logs/stream", "username=%00", "username"),
        ("/api/v1/stats", "event_type=%00", "event_type"),
        ("/api/v1/logs/export/link", "q=%00", "q"),
    ] {
        let url = format!("{route}?{query}");
        let (status, body) = error_of(&server, &url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{url}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{url}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn values_beyond_what_postgresql_takes_are_refused_before_any_sql() {
    let db = TestDb::migrated("hostile_ranges").await;
    let server = TestServer::start_quiet(&db).await;
    for (url, parameter) in [
        ("/api/v1/logs?cursor=".to_owned(), "cursor"),
        (format!("/api/v1/logs?cursor={}", hex("p1:+5:1")), "cursor"),
        (
            format!("/api/v1/logs/tail?cursor={}", hex("p1:5:1")),
            "cursor",
        ),
        ("/api/v1/logs?username=%ff".to_owned(), "username"),
        ("/api/v1/logs?username=%ED%A0%80".to_owned(), "username"),
        (
            "/api/v1/logs?user_id=9223372036854775808".to_owned(),
            "user_id",
        ),
        (
            "/api/v1/logs?user_id=-9223372036854775809".to_owned(),
            "user_id",
        ),
        (
            "/api/v1/logs?ip_address=10.0.0.0/33".to_owned(),
            "ip_address",
        ),
        (
            "/api/v1/logs?ip_address=fe80::1%25eth0".to_owned(),
            "ip_address",
        ),
        ("/api/v1/logs?ip_address=::/129".to_owned(), "ip_address"),
        ("/api/v1/logs?ip_address=10.0.0.1/".to_owned(), "ip_address"),
        (
            "/api/v1/logs?since=10000-01-01T00:00:00Z".to_owned(),
            "since",
        ),
        // A metadata path deep enough to nest the matched JSON thousands of levels (it
        // overflowed the stack of the thread serving it), or a name of kilobytes.
        (
            format!("/api/v1/logs?meta{}=x", ".a".repeat(17)),
            "meta.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a",
        ),
        (
            format!("/api/v1/logs?meta{}=x", ".a".repeat(20_000)),
            "query",
        ),
        // Severities are exactly the document's four names.
        ("/api/v1/stats?severity=".to_owned(), "severity"),
        ("/api/v1/logs?severity=info,".to_owned(), "severity"),
        ("/api/v1/logs?severity=%20info".to_owned(), "severity"),
        ("/api/v1/logs?min_severity=WARN".to_owned(), "min_severity"),
    ] {
        let (status, body) = error_of(&server, &url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{url}: {body}");
    }
    // A cursor is opaque, but anyone can make one: a time far outside PostgreSQL's
    // timestamptz range (4713 BC to 294276 AD) is a position before or after every row,
    // never a database error.
    insert_hostile(&db, "alice", "one row", None).await;
    let far_past = hex("p1:-8000000000000000000:1");
    let far_future = hex("p1:9000000000000000000:1");
    for (url, rows) in [
        (format!("/api/v1/logs?order=asc&cursor={far_past}"), 1),
        (format!("/api/v1/logs?order=desc&cursor={far_past}"), 0),
        (format!("/api/v1/logs?order=desc&cursor={far_future}"), 1),
        (format!("/api/v1/logs?order=asc&cursor={far_future}"), 0),
    ] {
        let (status, body) = error_of(&server, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert_eq!(
            body["items"].as_array().unwrap().len(),
            rows,
            "{url}: {body}"
        );
    }
    // And what PostgreSQL does take is served, at the edges of the ranges.
    for url in [
        "/api/v1/logs?user_id=9223372036854775807",
        "/api/v1/logs?user_id=-9223372036854775808",
        "/api/v1/logs?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
        "/api/v1/logs?ip_address=0.0.0.0/0",
        "/api/v1/logs?ip_address=::/0",
        "/api/v1/logs?ip_address=10.1.2.3/8",
        "/api/v1/logs?q=%5C",
        "/api/v1/logs?q=%25_%5C",
    ] {
        let (status, body) = error_of(&server, url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
    }
    server.stop().await;
}

/// Inserts a record as an attacker would shape it (through any writer: the layer keeps
/// such text as it is, since it is valid).
async fn insert_hostile(db: &TestDb, username: &str, message: &str, user_id: Option<i64>) {
    db.client
        .execute(
            "INSERT INTO audit_logs (username, user_id, event_type, message, severity) \
             VALUES ($1, $2, 'authentication', $3, 'warning')",
            &[&username, &user_id, &message],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_numbers_stay_numbers() {
    let db = TestDb::migrated("hostile_csv").await;
    let hostile = [
        (
            r#"=HYPERLINK("http://evil.example/","click")"#,
            "+cmd|' /C calc'!A0",
            None,
        ),
        (
            "@SUM(1+1)*cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0",
            Some(-5),
        ),
        ("\tleading tab", "\rleading carriage return", Some(7)),
        ("alice", "User login_failed", None),
    ];
    for (username, message, user_id) in hostile {
        insert_hostile(&db, username, message, user_id).await;
    }
    let server = TestServer::start_quiet(&db).await;

    let (status, _, body) = server.get("/api/v1/logs/export?format=csv&order=asc").await;
    assert_eq!(status, StatusCode::OK);
    let rows = parse_csv(std::str::from_utf8(&body).unwrap());
    let (username, user_id, message) = (2, 3, 6);
    for (row, (name, text, id)) in rows[1..].iter().zip(hostile) {
        let guarded = |value: &str| match value.chars().next() {
            Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
            _ => value.to_owned(),
        };
        assert_eq!(row[username], guarded(name), "{row:?}");
        assert_eq!(row[message], guarded(text), "{row:?}");
        // A negative number is a number, not a formula: it stays as it is.
        assert_eq!(row[user_id], id.map(|i| i.to_string()).unwrap_or_default());
    }
    // No cell of the guarded export begins with a formula character.
    for cell in rows.iter().flatten() {
        let first = cell.chars().next();
        let is_number = cell.parse::<f64>().is_ok();
        assert!(
            is_number || !matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r')),
            "{cell:?}"
        );
    }

    // Machine consumers may ask for the bytes as stored; NDJSON is always exact.
    let (_, _, raw) = server
        .get("/api/v1/logs/export?format=csv_raw&order=asc")
        .await;
    let raw = parse_csv(std::str::from_utf8(&raw).unwrap());
    assert_eq!(raw[1][username], hostile[0].0);
    assert_eq!(raw[2][message], hostile[1].1);
    let (_, _, ndjson) = server.get("/api/v1/logs/export?order=asc").await;
    let first: Value = serde_json::from_str(
        std::str::from_utf8(&ndjson)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["username"], hostile[0].0);
    server.stop().await;
}

#[tokio::test]
async fn export_parameters_the_document_forbids_or_that_do_nothing_are_refused() {
    let db = TestDb::migrated("hostile_export_params").await;
    let server = TestServer::start_quiet(&db).await;
    for (url, parameter) in [
        // Beyond int64, which the document states.
        (
            "/api/v1/logs/export/link?limit=9223372036854775808",
            "limit",
        ),
        ("/api/v1/logs/export?limit=9223372036854775808", "limit"),
    ] {
        let (status, body) = error_of(&server, url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{url}: {body}");
    }
    // A link's parameters make a request a download link: let in by its signature or not
    // at all (they were accepted, and ignored, beside a bearer token).
    for url in [
        "/api/v1/logs/export?link_expires=9223372036854775808",
        "/api/v1/logs/export?link_by=ops",
        "/api/v1/logs/export?link_by=ops&link_expires=1&link_signature=00",
    ] {
        let (status, body) = error_of(&server, url).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{url}: {body}");
    }
    let (status, _, _) = server
        .get("/api/v1/logs/export?limit=9223372036854775807")
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn an_unreadable_row_ends_the_event_stream_after_whole_events_and_the_read_is_recorded() {
    let db = TestDb::migrated("hostile_stream").await;
    // Hostile data, as a superuser could leave it: a row auditd cannot read as a record.
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ALTER COLUMN username DROP NOT NULL;
             INSERT INTO audit_logs (username, event_type, message) VALUES ('alice', 'sse', 'first');
             INSERT INTO audit_logs (username, event_type, message) VALUES (NULL, 'sse', 'unreadable');
             INSERT INTO audit_logs (username, event_type, message) VALUES ('bob', 'sse', 'after');",
        )
        .await
        .unwrap();
    let server = TestServer::start(&db).await;
    let start = auditd::TailCursor { tx_id: 0, id: 0 }.encode();
    let response = server
        .send(
            &format!("/api/v1/logs/stream?event_type=sse&cursor={start}"),
            Some(support::http::TOKEN),
            &[],
        )
        .await;
    let mut body = response.into_body();
    // Read until the server ends the stream (a stream that went on would time out here).
    let text =
        support::http::read_until(&mut body, std::time::Duration::from_secs(10), |_| false).await;
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.contains("event: audit_log"))
        .collect();
    assert_eq!(events.len(), 1, "{text:?}");
    let data = events[0]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let record: Value = serde_json::from_str(data).unwrap();
    assert_eq!(record["message"], "first");
    assert!(!text.contains("after"), "{text:?}");
    server.stop().await;

    let access = db
        .records_where("event_type = 'audit_access' AND metadata->>'route' = '/api/v1/logs/stream'")
        .await;
    assert_eq!(access.len(), 1);
    assert_eq!(access[0].metadata["rows"], 1);
    assert_eq!(access[0].metadata["status"], 500);
}
