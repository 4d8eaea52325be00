//! From tracing macros to rows: column mapping, span context, severity, redaction and the
//! fix-ups for bad input, each asserted on what PostgreSQL holds.

mod support;

use std::net::IpAddr;

use audit_layer::{Severity, FIXUPS_KEY, REDACTED};
use serde_json::json;
use support::{emit_and_flush, TestDb};
use tracing::{error, info, info_span, warn};

#[tokio::test]
async fn every_column_is_filled_from_its_field() {
    let db = TestDb::migrated("columns").await;
    let before = chrono::Utc::now();
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "alice",
            user_id = 42,
            event_type = "onboarding",
            ip_address = "192.0.2.7",
            resource_type = "device",
            resource_id = "dev-17",
            resource_name = "edge-fra1-01",
            site = "fra1",
            attempts = 3,
            ratio = 0.5,
            dry_run = false,
            "Device '{}' onboarded to Nautobot", "edge-fra1-01"
        );
    })
    .await;
    let after = chrono::Utc::now();

    let rows = db.records().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.username, "alice");
    assert_eq!(r.user_id, Some(42));
    assert_eq!(r.event_type, "onboarding");
    assert_eq!(r.message, "Device 'edge-fra1-01' onboarded to Nautobot");
    assert_eq!(r.ip_address, Some("192.0.2.7".parse::<IpAddr>().unwrap()));
    assert_eq!(r.resource_type.as_deref(), Some("device"));
    assert_eq!(r.resource_id.as_deref(), Some("dev-17"));
    assert_eq!(r.resource_name.as_deref(), Some("edge-fra1-01"));
    assert_eq!(r.severity, Severity::Info);
    assert_eq!(
        serde_json::Value::Object(r.metadata.clone()),
        json!({"site": "fra1", "attempts": 3, "ratio": 0.5, "dry_run": false})
    );
    // created_at is when the event happened (microsecond precision in PostgreSQL).
    let slack = chrono::Duration::milliseconds(1);
    assert!(r.created_at >= before - slack && r.created_at <= after + slack);
}

#[tokio::test]
async fn a_record_without_extra_fields_stores_null_metadata() {
    let db = TestDb::migrated("null_metadata").await;
    let _stats = emit_and_flush(&db, || {
        info!(target: "audit", username = "bob", event_type = "authentication", "User logout");
    })
    .await;
    let nulls = db
        .count("SELECT count(*) FROM audit_logs WHERE metadata IS NULL AND ip_address IS NULL")
        .await;
    assert_eq!(nulls, 1);
}

#[tokio::test]
async fn spans_supply_context_innermost_first_and_event_fields_win() {
    let db = TestDb::migrated("spans").await;
    let _stats = emit_and_flush(&db, || {
        let request = info_span!(
            "request",
            username = "alice",
            ip_address = "10.0.0.1",
            user_id = 7
        );
        let _r = request.enter();
        let job = info_span!("job", username = "svc-backup", resource_type = "device");
        let _j = job.enter();
        info!(target: "audit", event_type = "backup", resource_id = "d1", "inner span wins");
        info!(target: "audit", event_type = "backup", username = "carol", "event wins");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].username, "svc-backup");
    assert_eq!(rows[0].user_id, Some(7));
    assert_eq!(rows[0].ip_address, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(rows[0].resource_type.as_deref(), Some("device"));
    assert_eq!(rows[0].resource_id.as_deref(), Some("d1"));
    assert_eq!(rows[1].username, "carol");
    assert_eq!(rows[1].ip_address, Some("10.0.0.1".parse().unwrap()));
}

#[tokio::test]
async fn values_recorded_later_on_a_span_are_seen() {
    let db = TestDb::migrated("span_record").await;
    let _stats = emit_and_flush(&db, || {
        let request = info_span!(
            "request",
            username = tracing::field::Empty,
            ip_address = "10.9.8.7"
        );
        let _r = request.enter();
        info!(target: "audit", event_type = "authentication", "before login");
        request.record("username", "dave");
        info!(target: "audit", event_type = "authentication", "after login");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows[0].username, "unknown");
    assert_eq!(rows[1].username, "dave");
    assert_eq!(rows[1].ip_address, Some("10.9.8.7".parse().unwrap()));
}

#[tokio::test]
async fn audit_target_spans_pass_their_other_fields_into_metadata() {
    let db = TestDb::migrated("span_metadata").await;
    let _stats = emit_and_flush(&db, || {
        let request = info_span!(target: "audit", "request", request_id = "r-1", username = "erin");
        let _r = request.enter();
        let other = info_span!("not_audit", tenant = "acme");
        let _o = other.enter();
        info!(target: "audit", event_type = "sync", "synced");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows[0].username, "erin");
    assert_eq!(
        serde_json::Value::Object(rows[0].metadata.clone()),
        json!({"request_id": "r-1"})
    );
}

#[tokio::test]
async fn severity_follows_the_level_unless_the_event_sets_it() {
    let db = TestDb::migrated("severity").await;
    let _stats = emit_and_flush(&db, || {
        let u = "system";
        tracing::trace!(target: "audit", username = u, event_type = "t", "trace");
        tracing::debug!(target: "audit", username = u, event_type = "t", "debug");
        info!(target: "audit", username = u, event_type = "t", "info");
        warn!(target: "audit", username = u, event_type = "t", "warn");
        error!(target: "audit", username = u, event_type = "t", "error");
        error!(target: "audit", username = u, event_type = "t", severity = "critical", "critical");
        info!(target: "audit", username = u, event_type = "t", severity = "WARN", "info as warn");
    })
    .await;
    let severities: Vec<(String, Severity)> = db
        .records()
        .await
        .into_iter()
        .map(|r| (r.message, r.severity))
        .collect();
    use Severity::*;
    let expected = [
        ("trace", Info),
        ("debug", Info),
        ("info", Info),
        ("warn", Warning),
        ("error", Error),
        ("critical", Critical),
        ("info as warn", Warning),
    ];
    let expected: Vec<(String, Severity)> =
        expected.iter().map(|(m, s)| (m.to_string(), *s)).collect();
    assert_eq!(severities, expected);
}

#[tokio::test]
async fn secrets_never_reach_the_table() {
    let db = TestDb::migrated("redaction").await;
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "alice",
            event_type = "credential_management",
            password = "hunter2",
            db_passwd = "hunter3",
            client_secret = %"s3cr3t",
            access_token = ?"tok",
            api_key = "k",
            authorization = "Bearer abc",
            metadata = r#"{"nautobot_token": "xyz", "site": "fra1"}"#,
            "Credential updated"
        );
    })
    .await;
    let text = db
        .count("SELECT count(*) FROM audit_logs WHERE metadata::text ~ '(hunter|s3cr3t|tok\"|Bearer|xyz)'")
        .await;
    assert_eq!(text, 0, "a secret value reached the table");
    let r = &db.records().await[0];
    for key in [
        "password",
        "db_passwd",
        "client_secret",
        "access_token",
        "api_key",
        "authorization",
        "nautobot_token",
    ] {
        assert_eq!(r.metadata[key], REDACTED, "{key}");
    }
    assert_eq!(r.metadata["site"], "fra1");
}

#[tokio::test]
async fn the_secret_list_is_configurable() {
    let db = TestDb::migrated("redaction_config").await;
    let (dispatch, handle) =
        support::dispatch(support::builder(&db.url).secret_patterns(["cookie"]));
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "a", event_type = "e", session_cookie = "c1", token = "t1", "m");
    });
    handle.flush().await.unwrap();
    let r = &db.records().await[0];
    assert_eq!(r.metadata["session_cookie"], REDACTED);
    assert_eq!(r.metadata["token"], "t1");
}

fn fixups(r: &audit_layer::AuditLog) -> Vec<String> {
    r.metadata
        .get(FIXUPS_KEY)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn nul_bytes_are_replaced_and_marked() {
    let db = TestDb::migrated("nul").await;
    let stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "ali\0ce",
            event_type = "authentication",
            note = "a\0b",
            "User\0login"
        );
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.username, "ali\u{FFFD}ce");
    assert_eq!(r.message, "User\u{FFFD}login");
    assert_eq!(r.metadata["note"], "a\u{FFFD}b");
    assert_eq!(fixups(r).len(), 3, "{:?}", fixups(r));
    assert_eq!(stats.fixups, 3);
}

#[tokio::test]
async fn values_longer_than_their_column_are_cut_at_a_character_boundary() {
    let db = TestDb::migrated("long_values").await;
    let long_name = "é".repeat(300);
    let long_type = "x".repeat(150);
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = %long_name,
            event_type = %long_type,
            resource_type = %long_type,
            resource_id = %long_name,
            resource_name = %long_name,
            "long"
        );
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.username, "é".repeat(255));
    assert_eq!(r.event_type.len(), 100);
    assert_eq!(r.resource_type.as_ref().unwrap().len(), 100);
    assert_eq!(r.resource_id.as_ref().unwrap().chars().count(), 255);
    assert_eq!(r.resource_name.as_ref().unwrap().chars().count(), 255);
    let notes = fixups(r);
    assert_eq!(notes.len(), 5, "{notes:?}");
    assert!(notes.contains(&"username: truncated from 300 to 255 characters".to_owned()));
}

#[tokio::test]
async fn a_message_over_the_cap_is_truncated_and_marked() {
    let db = TestDb::migrated("message_cap").await;
    let (dispatch, handle) = support::dispatch(support::builder(&db.url).max_message_bytes(1000));
    let message = "€".repeat(500); // 1500 bytes, 3 per character
    let field = "y".repeat(2000);
    tracing::dispatcher::with_default(&dispatch, || {
        info!(target: "audit", username = "a", event_type = "e", big = %field, "{message}");
    });
    handle.flush().await.unwrap();
    let r = &db.records().await[0];
    assert_eq!(r.message, "€".repeat(333));
    assert_eq!(r.metadata["big"].as_str().unwrap().len(), 1000);
    let notes = fixups(r);
    assert!(
        notes.contains(&"message: truncated from 1500 to 999 bytes".to_owned()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"metadata.big: truncated from 2000 to 1000 bytes".to_owned()),
        "{notes:?}"
    );
}

#[tokio::test]
async fn the_default_message_cap_is_64_kib() {
    let db = TestDb::migrated("message_cap_default").await;
    let message = "m".repeat(100_000);
    let _stats = emit_and_flush(&db, || {
        info!(target: "audit", username = "a", event_type = "e", "{message}");
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.message.len(), 64 * 1024);
}

#[tokio::test]
async fn unknown_severity_falls_back_to_the_level_and_is_marked() {
    let db = TestDb::migrated("bad_severity").await;
    let _stats = emit_and_flush(&db, || {
        warn!(target: "audit", username = "a", event_type = "e", severity = "fatal", "x");
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.severity, Severity::Warning);
    assert_eq!(
        fixups(r),
        vec![r#"severity: unknown value "fatal", stored as warning"#.to_owned()]
    );
}

#[tokio::test]
async fn missing_username_and_event_type_become_unknown_and_are_marked() {
    let db = TestDb::migrated("missing_fields").await;
    let _stats = emit_and_flush(&db, || {
        info!(target: "audit", "who did this?");
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.username, "unknown");
    assert_eq!(r.event_type, "unknown");
    assert_eq!(
        fixups(r),
        vec![
            r#"username: missing, stored as "unknown""#.to_owned(),
            r#"event_type: missing, stored as "unknown""#.to_owned()
        ]
    );
}

#[tokio::test]
async fn unusable_user_id_and_ip_address_are_nulled_and_marked() {
    let db = TestDb::migrated("bad_ids").await;
    let _stats = emit_and_flush(&db, || {
        info!(target: "audit", username = "a", event_type = "e", user_id = "abc", ip_address = "not-an-ip", "x");
        info!(target: "audit", username = "a", event_type = "e", user_id = "12", ip_address = "[2001:db8::1]:443", "y");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows[0].user_id, None);
    assert_eq!(rows[0].ip_address, None);
    assert_eq!(fixups(&rows[0]).len(), 2);
    assert_eq!(rows[1].user_id, Some(12));
    assert_eq!(rows[1].ip_address, Some("2001:db8::1".parse().unwrap()));
    assert!(fixups(&rows[1]).is_empty());
}

#[tokio::test]
async fn non_audit_events_are_ignored() {
    let db = TestDb::migrated("non_audit").await;
    let stats = emit_and_flush(&db, || {
        info!(username = "a", event_type = "e", "an ordinary log line");
        info!(target: "auditd", username = "a", event_type = "e", "not the audit target");
        info!(target: "myapp::audit", username = "a", event_type = "e", "not it either");
        info!(target: "audit::auth", username = "a", event_type = "e", "a sub-target is audit");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message, "a sub-target is audit");
    assert_eq!(stats.enqueued, 1);
}

#[tokio::test]
async fn the_column_limits_match_the_schema() {
    let db = TestDb::migrated("limits").await;
    let rows = db
        .client
        .query(
            "SELECT column_name::text, character_maximum_length::int FROM information_schema.columns \
             WHERE table_name = 'audit_logs' AND character_maximum_length IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    use audit_layer::column_limits::*;
    for row in rows {
        let (name, len): (String, i32) = (row.get(0), row.get(1));
        let expected = match name.as_str() {
            "username" => USERNAME,
            "event_type" => EVENT_TYPE,
            "resource_type" => RESOURCE_TYPE,
            "resource_id" => RESOURCE_ID,
            "resource_name" => RESOURCE_NAME,
            "severity" => 20,
            other => panic!("unexpected limited column {other}"),
        };
        assert_eq!(len as usize, expected, "{name}");
    }
}

#[tokio::test]
async fn other_layers_still_see_every_event() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tracing_subscriber::prelude::*;

    struct Counting(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counting {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    let db = TestDb::migrated("other_layers").await;
    let seen = Arc::new(AtomicUsize::new(0));
    let (audit, handle) = support::builder(&db.url).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(audit)
        .with(Counting(seen.clone()));
    tracing::subscriber::with_default(subscriber, || {
        info!(target: "audit", username = "u", event_type = "e", "audit event");
        info!("ordinary event");
        tracing::debug!(target: "audit", username = "u", event_type = "e", "debug audit event");
    });
    handle
        .shutdown(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 3);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 2);
}

#[tokio::test]
async fn secrets_nested_in_a_json_metadata_field_are_redacted() {
    let db = TestDb::migrated("nested_secrets").await;
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "a",
            event_type = "e",
            metadata = r#"{"creds": {"password": "hunter2", "user": "x"}, "list": [{"api_key": "k"}]}"#,
            "m"
        );
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(
        serde_json::Value::Object(r.metadata.clone()),
        json!({"creds": {"password": REDACTED, "user": "x"}, "list": [{"api_key": REDACTED}]})
    );
}

#[tokio::test]
async fn an_events_own_fixups_field_cannot_pose_as_fixup_notes() {
    let db = TestDb::migrated("fixups_spoof").await;
    let _stats = emit_and_flush(&db, || {
        info!(target: "audit", username = "a", event_type = "e", _fixups = "all fine", "m");
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.metadata["_fixups_from_event"], "all fine");
    assert_eq!(fixups(r).len(), 1, "{:?}", fixups(r));
}

#[tokio::test]
async fn two_audit_layers_in_one_registry_keep_their_own_span_context() {
    use tracing_subscriber::prelude::*;
    let first = TestDb::migrated("two_layers_a").await;
    let second = TestDb::migrated("two_layers_b").await;
    let (a, handle_a) = support::builder(&first.url).build().unwrap();
    let (b, handle_b) = support::builder(&second.url)
        .target("audit2")
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(a).with(b);
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("request", username = "shared-user");
        let _g = span.enter();
        info!(target: "audit", event_type = "e", "to the first");
        info!(target: "audit2", event_type = "e", "to the second");
    });
    handle_a
        .shutdown(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    handle_b
        .shutdown(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let (a, b) = (first.records().await, second.records().await);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(
        (a[0].username.as_str(), a[0].message.as_str()),
        ("shared-user", "to the first")
    );
    assert_eq!(
        (b[0].username.as_str(), b[0].message.as_str()),
        ("shared-user", "to the second")
    );
}

/// A field whose `Debug` emits an audit event of its own, as a careless `Debug` might.
struct EmitsWhileFormatted;

impl std::fmt::Debug for EmitsWhileFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        info!(target: "audit", username = "inner", event_type = "nested", resource_id = "r-inner", "inner event");
        f.write_str("formatted")
    }
}

#[tokio::test]
async fn a_field_whose_debug_emits_an_event_leaves_the_record_intact() {
    let db = TestDb::migrated("reentrant").await;
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "outer",
            event_type = "outer",
            detail = ?EmitsWhileFormatted,
            "outer event"
        );
    })
    .await;
    // tracing-core never re-enters a subscriber from inside one of its own calls: the
    // nested event goes to the no-op subscriber, so only the outer record exists, and
    // nothing of the nested event's fields may have leaked into it.
    let rows = db.records().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let outer = &rows[0];
    assert_eq!(
        (
            outer.username.as_str(),
            outer.event_type.as_str(),
            outer.message.as_str()
        ),
        ("outer", "outer", "outer event")
    );
    assert_eq!(outer.resource_id, None);
    assert_eq!(
        serde_json::Value::Object(outer.metadata.clone()),
        json!({"detail": "formatted"})
    );
}

#[tokio::test]
async fn nothing_of_one_event_carries_over_to_the_next() {
    let db = TestDb::migrated("no_carry_over").await;
    let _stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = "alice",
            user_id = 5,
            event_type = "onboarding",
            ip_address = "192.0.2.1",
            resource_type = "device",
            resource_id = "d1",
            resource_name = "edge",
            severity = "critical",
            site = "fra1",
            "first"
        );
        info!(target: "audit", event_type = "logout");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows.len(), 2);
    let second = &rows[1];
    assert_eq!(second.username, "unknown");
    assert_eq!(second.message, "");
    assert_eq!(second.severity, Severity::Info);
    assert_eq!(
        (
            second.user_id,
            second.ip_address,
            &second.resource_type,
            &second.resource_id,
            &second.resource_name
        ),
        (None, None, &None, &None, &None)
    );
    assert_eq!(
        second.metadata.keys().collect::<Vec<_>>(),
        vec![FIXUPS_KEY],
        "only the note on the missing username"
    );
}

#[tokio::test]
async fn a_span_recorded_many_times_keeps_its_latest_values() {
    let db = TestDb::migrated("span_rerecord").await;
    let _stats = emit_and_flush(&db, || {
        let request = info_span!(
            "request",
            username = tracing::field::Empty,
            resource_id = "fixed",
            ip_address = tracing::field::Empty
        );
        let _r = request.enter();
        for i in 0..10_000 {
            request.record("username", format!("user-{i}"));
            if i % 2 == 0 {
                request.record("ip_address", format!("10.0.{}.{}", i / 256 % 256, i % 256));
            }
        }
        info!(target: "audit", event_type = "authentication", "after many records");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows[0].username, "user-9999");
    assert_eq!(rows[0].ip_address, Some("10.0.39.14".parse().unwrap()));
    assert_eq!(rows[0].resource_id.as_deref(), Some("fixed"));
}

#[tokio::test]
async fn repairs_in_span_metadata_are_noted_in_the_records_that_carry_it() {
    let db = TestDb::migrated("span_fixups").await;
    let _stats = emit_and_flush(&db, || {
        let job = info_span!(target: "audit", "job", batch = "nightly\0run");
        let _j = job.enter();
        info!(target: "audit", username = "svc", event_type = "backup", "done");
    })
    .await;
    let rows = db.records().await;
    assert_eq!(rows[0].metadata["batch"], "nightly\u{FFFD}run");
    assert_eq!(
        fixups(&rows[0]),
        vec!["metadata.batch: 1 NUL byte(s) replaced by U+FFFD"]
    );
}

/// A value whose `Display` writes a little, then fails (a bug in the type, or a formatter
/// that gives up).
struct FailsToFormat;

impl std::fmt::Display for FailsToFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("partial")?;
        Err(std::fmt::Error)
    }
}

impl std::fmt::Debug for FailsToFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[tokio::test]
async fn a_value_whose_formatting_fails_is_kept_as_far_as_it_went_and_marked() {
    let db = TestDb::migrated("format_fails").await;
    let stats = emit_and_flush(&db, || {
        info!(
            target: "audit",
            username = %FailsToFormat,
            event_type = "authentication",
            user_id = ?FailsToFormat,
            note = %FailsToFormat,
            metadata = %FailsToFormat,
            "login by {}", FailsToFormat
        );
    })
    .await;
    let r = &db.records().await[0];
    assert_eq!(r.username, "partial");
    assert_eq!(r.message, "login by partial");
    assert_eq!(r.metadata["note"], "partial");
    assert_eq!(r.metadata["metadata"], "partial");
    let notes = fixups(r);
    for field in [
        "username",
        "message",
        "user_id",
        "metadata.note",
        "metadata.metadata",
    ] {
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with(&format!("{field}: formatting the value failed"))),
            "{field}: {notes:?}"
        );
    }
    // user_id "partial" is also not an integer: that repair is noted too.
    assert!(notes
        .iter()
        .any(|n| n.starts_with("user_id: not a 64-bit integer")));
    assert_eq!(stats.fixups, notes.len() as u64);
}
