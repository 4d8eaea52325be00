//! The schema: applied once however many processes start together, refused when newer
//! than the binary, and partitions kept ahead of time.

mod support;

use audit_layer::schema::{self, Migration, MIGRATIONS};
use audit_layer::Error;
use support::{connect, TestDb};

#[tokio::test]
async fn concurrent_migrations_apply_each_version_exactly_once() {
    let db = TestDb::empty("concurrent_migrations").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            schema::migrate(&client).await
        }));
    }
    let mut applied_by = 0;
    for task in tasks {
        let report = task.await.unwrap().expect("every process succeeds");
        assert_eq!(report.version, schema::latest_version());
        if !report.applied.is_empty() {
            applied_by += 1;
        }
    }
    assert_eq!(applied_by, 1, "exactly one process applies the migrations");
    assert_eq!(
        db.count("SELECT count(*) FROM audit_schema_migrations")
            .await,
        MIGRATIONS.len() as i64
    );
}

#[tokio::test]
async fn migrating_again_changes_nothing() {
    let db = TestDb::migrated("idempotent").await;
    let report = schema::migrate(&db.client).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(report.partitions_created, 0);
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_is_refused() {
    let db = TestDb::empty("too_new").await;
    let mut newer: Vec<Migration> = MIGRATIONS.to_vec();
    newer.push(Migration {
        version: schema::latest_version() + 1,
        name: "9999_from_the_future.sql",
        sql: "CREATE TABLE from_the_future (x int)",
    });
    schema::migrate_to(&db.client, &newer).await.unwrap();

    let err = schema::migrate(&db.client).await.unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { database, known } if database == known + 1),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade this binary"), "{err}");
    assert!(matches!(
        schema::schema_version(&db.client).await,
        Err(Error::SchemaTooNew { .. })
    ));
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = TestDb::migrated("edited").await;
    db.client
        .batch_execute(
            "UPDATE audit_schema_migrations SET checksum = checksum + 1 WHERE version = 1",
        )
        .await
        .unwrap();
    let err = schema::migrate(&db.client).await.unwrap_err();
    assert!(
        matches!(err, Error::MigrationChanged { version: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn partitions_exist_for_the_current_and_next_months() {
    let db = TestDb::migrated("partitions").await;
    let missing = db
        .count(
            "SELECT count(*) FROM generate_series(0, 2) AS m \
             WHERE to_regclass('audit_logs_' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') \
                   + make_interval(months => m), 'YYYY\"m\"MM')) IS NULL",
        )
        .await;
    assert_eq!(missing, 0);
}

#[tokio::test]
async fn upkeep_moves_rows_out_of_the_default_partition() {
    let db = TestDb::migrated("upkeep").await;
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message, created_at) \
             VALUES ('u', 'e', 'early', '2031-03-05Z'), ('u', 'e', 'later', '2031-04-30 23:59:59Z')",
        )
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_default").await, 2);
    let created: i32 = db
        .client
        .query_one("SELECT audit_logs_ensure_partitions('2031-03-01Z', 1)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 2);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_default").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_2031m03").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_2031m04").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 2);
}

#[tokio::test]
async fn partition_bounds_are_utc_months_whatever_the_session_settings() {
    let db = TestDb::migrated("partition_session").await;
    db.client
        .batch_execute(
            "SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'Postgres';
             SELECT audit_logs_ensure_partitions('2032-06-15Z', 0);
             RESET TimeZone; RESET DateStyle;",
        )
        .await
        .unwrap();
    let bound: String = db
        .client
        .query_one(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'audit_logs_2032m06'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        bound,
        "FOR VALUES FROM ('2032-06-01 00:00:00+00') TO ('2032-07-01 00:00:00+00')"
    );
}
