//! `POST /api/v1/events`: producers in any language write audit records through auditd,
//! with the layer's guarantees, and nothing more than their token allows.

mod support;

use std::time::Duration;

use auditd::{IngestLimits, Limits, Tokens};
use hyper::StatusCode;
use serde_json::{json, Value};
use support::http::{TestServer, TOKEN};
use support::{assert_intact_when_sealed, TestDb};

const WRITER: &str = "billing-write-0123456789abcdef";
const OTHER_WRITER: &str = "crm-write-0123456789abcdef";
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");
const JSON: (&str, &str) = ("content-type", "application/json");

fn tokens() -> Tokens {
    Tokens::parse([
        format!("ops:{TOKEN}").as_str(),
        format!("billing:{WRITER}:write").as_str(),
        format!("crm:{OTHER_WRITER}:read,write").as_str(),
    ])
    .unwrap()
}

async fn server(db: &TestDb, ingest: IngestLimits) -> TestServer {
    let limits = Limits {
        ingest,
        ..Limits::default()
    };
    TestServer::start_with(db, tokens(), limits).await
}

fn answer(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("JSON answer: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn records_sent_as_ndjson_or_json_reach_postgresql_with_their_sender_fixups_and_redaction() {
    let db = TestDb::migrated("ingest_records").await;
    let server = server(&db, IngestLimits::default()).await;
    let earlier = (chrono::Utc::now() - chrono::Duration::hours(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let ndjson = format!(
        "{}\n\n{}\n",
        json!({"username": "alice", "event_type": "authentication", "message": "User login",
               "ip_address": "10.1.2.3", "created_at": earlier,
               "metadata": {"method": "password", "password": "hunter2"}}),
        json!({"username": "mallory\u{0}", "event_type": "authentication", "severity": "fatal",
               "message": "User login_failed", "browser": "firefox",
               "_sent_by": {"name": "ops"}, "created_at": "2020-01-01T00:00:00Z"}),
    );
    let (status, _, body) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], ndjson)
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let sent = answer(&body);
    assert_eq!(sent["status"], "committed");
    assert_eq!(
        (sent["records"].as_u64(), sent["rejected"].as_u64()),
        (Some(2), Some(0))
    );
    // NUL in the username, an unknown severity, a time outside the skew, and a
    // `_sent_by` of the record's own, renamed.
    assert_eq!(sent["fixups"], 4);

    let array = json!([
        {"username": "alice", "event_type": "onboarding", "severity": "error",
         "resource_type": "device", "resource_name": "edge-fra1-01",
         "message": "Device onboarding failed", "metadata": {"site": "fra1", "attempts": 3}},
        {"username": "alice", "event_type": "backup", "message": "Backup done",
         "metadata": {"success_count": 48, "failed_count": 2}},
    ]);
    let (status, _, body) = server
        .post("/api/v1/events", Some(WRITER), &[JSON], array.to_string())
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(answer(&body)["records"], 2);

    let stored = db
        .records_where("event_type IN ('authentication', 'onboarding', 'backup')")
        .await;
    assert_eq!(stored.len(), 4);
    let login = &stored[0];
    assert_eq!(login.username, "alice");
    assert_eq!(login.ip_address, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(login.metadata["password"], audit_layer::REDACTED);
    assert_eq!(login.metadata["_sent_by"]["name"], "billing");
    assert_eq!(login.metadata["_sent_by"]["address"], "127.0.0.1");
    assert_eq!(
        login
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        earlier,
        "a time within the skew is the sender's"
    );
    let forged = &stored[1];
    assert_eq!(forged.username, "mallory\u{FFFD}");
    assert_eq!(forged.metadata["browser"], "firefox");
    // The sender cannot say someone else sent it, nor backdate it into 2020.
    assert_eq!(forged.metadata["_sent_by"]["name"], "billing");
    assert_eq!(forged.metadata["_sent_by_from_event"]["name"], "ops");
    assert!(forged.created_at > chrono::Utc::now() - chrono::Duration::minutes(5));
    let notes = forged.metadata[audit_layer::FIXUPS_KEY].to_string();
    assert!(
        notes.contains("severity") && notes.contains("created_at"),
        "{notes}"
    );
    assert_eq!(stored[2].metadata["attempts"], 3);
    assert_eq!(stored[3].metadata["success_count"], 48);
    server.stop().await;
    // Ingested records are sealed and proven like any other.
    assert_intact_when_sealed(&db.url).await;
}

#[tokio::test]
async fn a_retried_post_commits_once_and_is_told_so_and_a_reused_key_is_refused() {
    let db = TestDb::migrated("ingest_idempotent").await;
    let server = server(&db, IngestLimits::default()).await;
    let body = format!(
        "{}\n{}\n",
        json!({"username": "alice", "event_type": "payment", "message": "Invoice 7 paid"}),
        json!({"username": "alice", "event_type": "payment", "message": "Receipt 7 sent"}),
    );
    let key = ("idempotency-key", "order-7-attempt");
    let (status, _, first) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON, key], body.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer(&first)["idempotency_key"], "order-7-attempt");

    // The sender never saw the answer and sends the same request again.
    let (status, _, retry) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON, key], body.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let retry = answer(&retry);
    assert_eq!(
        (retry["status"].as_str(), retry["records"].as_u64()),
        (Some("duplicate"), Some(2))
    );
    assert!(retry["committed_at"].is_string());

    // The same key with other records is a mistake, not a retry.
    let other = json!({"username": "alice", "event_type": "payment", "message": "Invoice 8 paid"});
    let (status, _, refused) = server
        .post(
            "/api/v1/events",
            Some(WRITER),
            &[NDJSON, key],
            other.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer(&refused)["error"]["code"], "idempotency_key_reused");

    // Keys belong to their sender: another token may use the same one.
    let (status, _, _) = server
        .post(
            "/api/v1/events",
            Some(OTHER_WRITER),
            &[NDJSON, key],
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = server
        .post(
            "/api/v1/events",
            Some(WRITER),
            &[NDJSON, ("idempotency-key", "has space")],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'payment'")
            .await,
        4,
        "twice two records: billing's once, crm's once"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_writer_batches \
             WHERE idempotency_key IN ('billing:order-7-attempt', 'crm:order-7-attempt')"
        )
        .await,
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_writer_cannot_read_and_a_reader_cannot_write_and_each_refusal_is_recorded() {
    let db = TestDb::migrated("ingest_scopes").await;
    let server = server(&db, IngestLimits::default()).await;
    let record = json!({"username": "eve", "event_type": "tamper", "message": "x"}).to_string();

    let (status, _, body) = server.request("/api/v1/logs", Some(WRITER), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a writer reads");
    assert_eq!(answer(&body)["error"]["code"], "forbidden");
    let (status, _, _) = server
        .request("/api/v1/logs/export", Some(WRITER), &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = server
        .post("/api/v1/events", Some(TOKEN), &[JSON], record.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a reader writes");
    let (status, _, _) = server
        .post(
            "/api/v1/events",
            Some("not-a-token-0123456789"),
            &[JSON],
            record.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = server.post("/api/v1/events", None, &[JSON], record).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A writer's holder knows its secret, so it can sign a download link itself: the link
    // grants nothing, since links stand in for reading tokens only.
    let expires = chrono::Utc::now().timestamp() + 30;
    let unsigned = format!("/api/v1/logs/export?link_by=billing&link_expires={expires}");
    let signature = tokens().sign("billing", unsigned.as_bytes()).unwrap();
    let (status, _, _) = server
        .request(&format!("{unsigned}&link_signature={signature}"), None, &[])
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a forged link reads nothing"
    );
    // A token with both may do both.
    let (status, _, _) = server
        .request("/api/v1/logs", Some(OTHER_WRITER), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'tamper'")
            .await,
        0
    );
    let refusals = db
        .records_where("event_type = 'audit_access' AND severity = 'warning'")
        .await;
    let scoped: Vec<(String, String, String)> = refusals
        .iter()
        .filter(|r| r.metadata.get("missing_scope").is_some())
        .map(|r| {
            (
                r.username.clone(),
                r.metadata["route"].as_str().unwrap().to_owned(),
                r.metadata["missing_scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        scoped,
        vec![
            ("billing".into(), "/api/v1/logs".into(), "read".into()),
            (
                "billing".into(),
                "/api/v1/logs/export".into(),
                "read".into()
            ),
            ("ops".into(), "/api/v1/events".into(), "write".into()),
        ]
    );
    let unauthorized = refusals
        .iter()
        .filter(|r| {
            r.metadata["route"] == "/api/v1/events" && r.metadata.get("missing_scope").is_none()
        })
        .count();
    assert_eq!(unauthorized, 2, "both 401s are recorded");
}

#[tokio::test]
async fn requests_beyond_the_limits_are_refused_whole_and_a_sender_beyond_its_rate_waits() {
    let db = TestDb::migrated("ingest_limits").await;
    let server = server(
        &db,
        IngestLimits {
            max_body_bytes: 2048,
            max_records: 3,
            records_per_second: 3,
            ..IngestLimits::default()
        },
    )
    .await;
    let line = json!({"username": "u", "event_type": "limit", "message": "m"}).to_string();
    let lines = |n: usize| format!("{line}\n").repeat(n);

    let (status, _, body) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], "x".repeat(4096))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer(&body)["error"]["code"], "body_too_large");
    let (status, _, body) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], lines(4))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer(&body)["error"]["code"], "too_many_records");
    let (status, _, _) = server
        .post(
            "/api/v1/events",
            Some(WRITER),
            &[("content-type", "text/plain")],
            lines(1),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, body) = server
        .post(
            "/api/v1/events",
            Some(WRITER),
            &[NDJSON],
            format!("{line}\nnot json\n"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 2:"));
    let (status, headers, _) = server.request("/api/v1/events", Some(WRITER), &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");

    let (status, _, _) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], lines(3))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a second's worth");
    let (status, headers, body) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], lines(3))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer(&body)["error"]["code"], "rate_limited");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another sender has a rate of its own.
    let (status, _, _) = server
        .post("/api/v1/events", Some(OTHER_WRITER), &[NDJSON], lines(3))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, _) = server
        .post("/api/v1/events", Some(WRITER), &[NDJSON], lines(3))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "after Retry-After");
    server.stop().await;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'limit'")
            .await,
        9,
        "only the accepted requests' records"
    );
}
