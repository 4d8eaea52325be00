//! Every batch the writer commits proves its records (migration 0004): the leaf of each
//! record, recomputed from the row PostgreSQL holds, is the leaf the writer committed in
//! the batch's ledger row, and the ledger's root is the Merkle head of those leaves. Held
//! for records of every shape, fix-ups included, and through a poison record's bisection;
//! and a change made afterwards, even by a superuser, no longer matches.

mod support;

use audit_layer::integrity::verify;
use support::{builder, dispatch, emit_and_flush, TestDb};
use tracing::{error, info, info_span, warn};

/// (ledger rows checked, records proven), or what the verifier found.
async fn prove_every_record(db: &TestDb) -> Result<(u64, u64), String> {
    let report = verify(&db.client).await.map_err(|e| e.to_string())?;
    if report.intact() && report.unproven == 0 {
        Ok((report.batches, report.proven))
    } else {
        Err(report
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
            + &format!(" ({} unproven)", report.unproven))
    }
}

#[tokio::test]
async fn each_committed_batch_proves_its_records_as_postgresql_holds_them() {
    let db = TestDb::migrated("integrity_batches").await;
    emit_and_flush(&db, || {
        for i in 0..300 {
            let span = info_span!("request", username = "alice", ip_address = "2001:db8::42");
            let _guard = span.enter();
            info!(target: "audit", event_type = "authentication", attempt = i, "User login");
            warn!(
                target: "audit",
                event_type = "onboarding",
                resource_type = "device",
                resource_name = "edge-fra1-01",
                // jsonb orders these keys, keeps the last duplicate and reprints numbers:
                // the leaf must be of what it prints, not of what was sent.
                metadata = %r#"{"z":1.50e1,"a":[1e-3,-0],"a":"later","ü":"✓ \"quoted\""}"#,
                ratio = 0.1,
                big = u64::MAX,
                "Device onboarding failed"
            );
            error!(target: "audit", username = "ev\0il", event_type = "x".repeat(150), "NUL\0 and too long");
        }
    })
    .await;
    let (batches, proven) = prove_every_record(&db).await.unwrap();
    assert_eq!(proven, 900);
    assert!(batches >= 1);
    // Seqs without a gap: the leaves are stored dense, 32 bytes a record.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_writer_batches
             WHERE rows > 0 AND octet_length(leaves) <> rows * 32"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_poison_records_bisection_leaves_every_part_proven() {
    let db = TestDb::migrated("integrity_poison").await;
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(1000));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..1000 {
            let message = if i == 677 { "poison" } else { "fine" };
            info!(target: "audit", username = "u", event_type = "e", "{message}");
        }
    });
    handle
        .shutdown(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs_rejected").await,
        1
    );
    let (batches, proven) = prove_every_record(&db).await.unwrap();
    assert_eq!(proven, 999);
    assert!(
        batches > 2,
        "the bisection committed its parts under keys of their own"
    );
}

#[tokio::test]
async fn a_change_made_after_commit_no_longer_matches_its_batch() {
    let db = TestDb::migrated("integrity_tamper").await;
    emit_and_flush(&db, || {
        for i in 0..50 {
            info!(target: "audit", username = "alice", event_type = "authentication", ip_address = "192.0.2.1", seq_in_test = i, "User login");
        }
    })
    .await;
    prove_every_record(&db).await.unwrap();
    // As a superuser with triggers bypassed, a tamperer would; each change is caught.
    for (change, finding) in [
        ("UPDATE audit_logs SET message = 'User logout' WHERE seq = 7", "seq 7) changed"),
        (
            "UPDATE audit_logs SET created_at = created_at + interval '1 microsecond' WHERE seq = 8",
            "changed",
        ),
        ("UPDATE audit_logs SET metadata = metadata || '{\"added\": 1}' WHERE seq = 9", "changed"),
        ("DELETE FROM audit_logs WHERE seq = 10", "seq 10 missing"),
        (
            "UPDATE audit_writer_batches SET root = sha256(root)",
            "ledger row of batch 1",
        ),
        // A netmask added to the address: shown alike, found by address searches no more.
        (
            "UPDATE audit_logs SET ip_address = set_masklen(ip_address, 24) WHERE seq = 15",
            "seq 15) changed",
        ),
        // A genuine record copied: the copy is a record no batch committed twice.
        (
            "INSERT INTO audit_logs (created_at, username, user_id, event_type, message,
               ip_address, resource_type, resource_id, resource_name, severity, metadata,
               stream_id, seq)
             SELECT created_at, username, user_id, event_type, message, ip_address,
               resource_type, resource_id, resource_name, severity, metadata, stream_id, seq
             FROM audit_logs WHERE seq = 13",
            "seq 13) added",
        ),
        // Two records' contents swapped: both are changed records.
        (
            "UPDATE audit_logs a SET metadata = b.metadata FROM audit_logs b
             WHERE (a.seq, b.seq) IN ((11, 12), (12, 11))",
            "seq 11) changed; record",
        ),
    ] {
        // Each change in a transaction of its own, rolled back after the check.
        db.client.batch_execute("BEGIN").await.unwrap();
        // The append-only trigger stops this; a superuser gets past it like so.
        db.client
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .unwrap();
        db.client.batch_execute(change).await.unwrap();
        let found = prove_every_record(&db).await;
        db.client.batch_execute("ROLLBACK").await.unwrap();
        let message = found.expect_err(change);
        assert!(message.contains(finding), "{change}: {message}");
    }
    // A forged record with a plausible stream and seq is in no ledger row.
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message, stream_id, seq)
             SELECT 'mallory', 'authentication', 'User login', stream_id, 51 FROM audit_logs LIMIT 1",
        )
        .await
        .unwrap();
    let message = prove_every_record(&db).await.expect_err("forged");
    assert!(
        message.contains("seq 51) added: in no committed batch"),
        "{message}"
    );
}

#[tokio::test]
async fn a_batch_lost_with_its_ledger_row_shows_as_unexplained_missing_seqs() {
    let db = TestDb::migrated("integrity_gaps").await;
    // Small batches, so that one in the middle can go whole.
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(10));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..30 {
            info!(target: "audit", username = "alice", event_type = "authentication", i, "User login");
            if i % 10 == 9 {
                // Each ten in a batch of its own.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    });
    let stream = handle.stream_id();
    handle
        .shutdown(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        audit_layer::integrity::stream_gaps(&db.client)
            .await
            .unwrap(),
        vec![],
        "no gap before the loss"
    );
    // What a failover to a standby that never received one commit leaves: the batch's
    // rows and its ledger row are both gone, so the records' proofs cannot miss them.
    let (first, last): (i64, i64) = {
        let row = db
            .client
            .query_one(
                "SELECT first_seq, last_seq FROM audit_writer_batches \
                 WHERE stream_id = $1 AND first_seq > 1 ORDER BY first_seq LIMIT 1",
                &[&stream],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    db.client
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             DELETE FROM audit_logs WHERE stream_id = {stream} AND seq BETWEEN {first} AND {last};
             DELETE FROM audit_writer_batches WHERE stream_id = {stream} AND first_seq = {first};
             RESET session_replication_role;"
        ))
        .await
        .unwrap();
    prove_every_record(&db)
        .await
        .expect("the remaining records still prove: tamper evidence cannot see this");
    let gaps = audit_layer::integrity::stream_gaps(&db.client)
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].stream_id, stream);
    assert_eq!(gaps[0].runs, vec![(first, last)]);
    assert_eq!(gaps[0].unexplained(), last - first + 1);
    assert!(gaps[0].to_string().contains("unexplained"), "{}", gaps[0]);
    // An ingest client cannot explain the loss away by posting a look-alike of the
    // writer's "unused seqs" notice into the stream: records that came through ingest
    // carry `_sent_by`, and only the writer's own notices count.
    db.client
        .batch_execute(&format!(
            "INSERT INTO audit_logs (username, event_type, message, stream_id, seq, metadata)
             VALUES ('mallory', 'audit_duplicate_suppressed', 'nothing to see', {stream}, 31,
                     '{{\"first_seq\": {first}, \"last_seq\": {last}, \"_sent_by\": {{\"token\": \"mallory\"}}}}')"
        ))
        .await
        .unwrap();
    let gaps = audit_layer::integrity::stream_gaps(&db.client)
        .await
        .unwrap();
    assert_eq!(gaps[0].unexplained(), last - first + 1, "{gaps:?}");
}
