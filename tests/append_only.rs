//! Append-only in the database (migration 0006): UPDATE, DELETE and TRUNCATE of the
//! records, the ledger, the signed log and its checkpoints are refused to every role,
//! the owner included, and the roles the README gives writers cannot even try; the
//! schema's own upkeep (rows moved out of the DEFAULT partition) still works. Each test
//! plays the attacker with the role it names.

mod support;

use support::{connect, emit_and_flush, TestDb};
use tokio_postgres::error::SqlState;
use tracing::info;

const TABLES: [&str; 4] = [
    "audit_logs",
    "audit_writer_batches",
    "audit_log_tree",
    "audit_checkpoints",
];

async fn filled(name: &str) -> TestDb {
    let db = TestDb::migrated(name).await;
    emit_and_flush(&db, || {
        for i in 0..10 {
            info!(target: "audit", username = "alice", event_type = "authentication", i, "User login");
        }
    })
    .await;
    let mut sealer =
        auditd::seal::Sealer::new(auditd::seal::SigningKey::generate("test.example/log").unwrap());
    let mut client = connect(&db.url).await;
    // Every table holds rows (a row trigger has nothing to refuse on an empty table);
    // another test's open transaction may hold sealing back a moment.
    for _ in 0..200 {
        sealer.seal(&mut client).await.unwrap();
        if db.count("SELECT count(*) FROM audit_log_tree").await > 0 {
            return db;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing sealed in 10 s");
}

/// Every change statement an attacker would try on `table`.
fn changes(table: &str) -> [String; 3] {
    let column = match table {
        "audit_logs" => "message = 'edited'",
        "audit_writer_batches" => "rows = rows + 1",
        "audit_log_tree" => "leaf = sha256(leaf)",
        _ => "note = 'edited'",
    };
    [
        format!("UPDATE {table} SET {column}"),
        format!("DELETE FROM {table}"),
        format!("TRUNCATE {table} CASCADE"),
    ]
}

#[tokio::test]
async fn the_owner_cannot_update_delete_or_truncate_what_was_written() {
    let db = filled("append_only_owner").await;
    for table in TABLES {
        for change in changes(table) {
            let refused = db.client.batch_execute(&change).await.expect_err(&change);
            assert_eq!(
                refused.code(),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{change}"
            );
            let message = refused.as_db_error().map(|e| e.message().to_owned());
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("append-only")),
                "{change}: {message:?}"
            );
        }
    }
    // Setting the upkeep flag by hand outside upkeep is the owner's to do, and only
    // the owner's (below); nothing was changed meanwhile.
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE message = 'edited'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 10);
}

#[tokio::test]
async fn a_writer_role_may_insert_only_and_a_role_granted_too_much_is_still_refused() {
    let db = filled("append_only_roles").await;
    let pid = std::process::id();
    let (writer, lax) = (format!("ao_writer_{pid}"), format!("ao_lax_{pid}"));
    db.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {writer}; DROP ROLE IF EXISTS {lax};
             CREATE ROLE {writer} LOGIN PASSWORD '{writer}';
             GRANT INSERT ON audit_logs, audit_logs_rejected, audit_writer_batches TO {writer};
             GRANT SELECT ON audit_writer_batches TO {writer};
             CREATE ROLE {lax} LOGIN PASSWORD '{lax}';
             GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {lax};",
            TABLES.join(", ")
        ))
        .await
        .unwrap();
    // The writer writes ...
    let writer_db = TestDb {
        url: support::url_as(&db.url, &writer),
        client: connect(&support::url_as(&db.url, &writer)).await,
    };
    emit_and_flush(&writer_db, || {
        info!(target: "audit", username = "bob", event_type = "authentication", "as the writer");
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE username = 'bob'")
            .await,
        1
    );
    // ... and may change nothing.
    for change in changes("audit_logs")
        .iter()
        .chain(&changes("audit_writer_batches"))
    {
        let refused = writer_db
            .client
            .batch_execute(change)
            .await
            .expect_err(change);
        assert_eq!(
            refused.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{change}"
        );
    }
    // A role granted every privilege, claiming to be upkeep, is refused by the trigger.
    let lax_client = connect(&support::url_as(&db.url, &lax)).await;
    for table in TABLES {
        for change in changes(table) {
            let attempt = format!("BEGIN; SET LOCAL audit.upkeep = 'on'; {change}; COMMIT");
            let refused = lax_client
                .batch_execute(&attempt)
                .await
                .expect_err(&attempt);
            assert_eq!(
                refused.code(),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{attempt}"
            );
            lax_client.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    // Nor by partition: TRUNCATE of one partition does not reach the parent's trigger,
    // so each partition has its own, the DEFAULT one and those made later included.
    let partition: String = db
        .client
        .query_one(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .query_one("SELECT audit_logs_ensure_partitions('2034-01-01Z', 0)", &[])
        .await
        .unwrap();
    db.client
        .batch_execute(&format!(
            "GRANT TRUNCATE ON audit_logs_default, audit_logs_2034m01, {partition} TO {lax}"
        ))
        .await
        .unwrap();
    for part in [
        "audit_logs_default",
        "audit_logs_2034m01",
        partition.as_str(),
    ] {
        let attempt = format!("TRUNCATE {part}");
        let refused = lax_client
            .batch_execute(&attempt)
            .await
            .expect_err(&attempt);
        assert_eq!(
            refused.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{attempt}"
        );
    }
    // Nor by its own functions in front of the trigger's (a role that may create a schema).
    let schema = format!("ao_evil_{pid}");
    db.client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema} AUTHORIZATION {lax}"
        ))
        .await
        .unwrap();
    let shadowed = lax_client
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.current_setting(text, boolean) RETURNS text
               LANGUAGE sql AS 'SELECT ''on''::text';
             CREATE FUNCTION {schema}.pg_has_role(name, oid, text) RETURNS boolean
               LANGUAGE sql AS 'SELECT true';
             SET search_path = {schema}, pg_catalog, public;
             UPDATE audit_logs SET message = 'edited'"
        ))
        .await
        .expect_err("the trigger's own functions are the catalog's");
    assert_eq!(shadowed.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    lax_client.batch_execute("RESET search_path").await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs").await, 11);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE message = 'edited'")
            .await,
        0
    );
    db.client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    drop((writer_db, lax_client));
    db.client
        .batch_execute(&format!(
            "DROP OWNED BY {writer}, {lax}; DROP ROLE {writer}; DROP ROLE {lax};"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn partition_upkeep_still_moves_rows_out_of_the_default_partition_and_they_verify() {
    let db = TestDb::migrated("append_only_upkeep").await;
    // A record for a month without a partition lands in DEFAULT ...
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (created_at, username, event_type, message)
             VALUES ('2033-04-02Z', 'alice', 'authentication', 'far ahead')",
        )
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_default").await, 1);
    // ... and upkeep moves it, which is a DELETE the trigger lets upkeep do.
    db.client
        .query_one("SELECT audit_logs_ensure_partitions('2033-04-01Z', 0)", &[])
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_default").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM audit_logs_2033m04").await, 1);
    // The flag did not outlive the move: the same session is refused again.
    let refused = db
        .client
        .batch_execute("DELETE FROM audit_logs_2033m04")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}
