//! The signed log (migration 0005, `auditd::seal`): committed batches sealed in commit
//! order into one Merkle tree whose checkpoints verify with the log's public key, and
//! every tampering a superuser can do to the ledger, the tree or the checkpoints caught
//! and named by the verifier, with no false alarm on an intact log.

mod support;

use std::time::Duration;

use audit_layer::integrity::verify;
use auditd::seal::{verify_log, Checkpoint, LogReport, SealError, Sealer, SigningKey};
use support::{builder, connect, dispatch, emit_and_flush, seal_all, TestDb};
use tracing::info;

async fn emit(db: &TestDb, n: usize, batch_size: usize) {
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(batch_size));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..n {
            info!(target: "audit", username = "alice", event_type = "authentication", attempt = i, "User login");
        }
    });
    handle.shutdown(Duration::from_secs(30)).await.unwrap();
}

async fn seal(db: &TestDb, sealer: &mut Sealer) -> Result<auditd::seal::Sealed, SealError> {
    let mut client = connect(&db.url).await;
    sealer.seal(&mut client).await
}

/// The findings of both checks, records and log, joined; empty when intact.
async fn findings(db: &TestDb, sealer: &Sealer, published: &[String]) -> (String, LogReport) {
    let keys = [sealer.key().verifier()];
    let records = verify(&db.client).await.unwrap();
    let log = verify_log(&db.client, &keys, published).await.unwrap();
    let all: Vec<String> = records
        .findings
        .iter()
        .map(ToString::to_string)
        .chain(log.findings.iter().map(ToString::to_string))
        .collect();
    (all.join("; "), log)
}

fn sealer() -> Sealer {
    Sealer::new(SigningKey::generate("test.example/log").unwrap())
}

#[tokio::test]
async fn committed_batches_are_sealed_once_under_checkpoints_that_verify() {
    let db = TestDb::migrated("sealed_log_basics").await;
    let mut sealer = sealer();
    emit(&db, 500, 100).await;
    let first = seal_all(&db, &mut sealer).await;
    let batches = db
        .count("SELECT count(*) FROM audit_writer_batches WHERE rows > 0")
        .await;
    assert_eq!(first.batches as i64, batches);
    assert_eq!(first.records, 500);
    assert_eq!(first.tree_size as i64, batches);
    // The signed note is the one stored, and it opens with the public key.
    let stored: String = db
        .client
        .query_one(
            "SELECT note FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(Some(&stored), first.note.as_ref());
    let (checkpoint, _) = Checkpoint::open(&stored, &[sealer.key().verifier()]).unwrap();
    assert_eq!(checkpoint.size, first.tree_size);
    assert_eq!(checkpoint.origin, "test.example/log");

    // Nothing new: nothing appended, nothing signed.
    let signed = db.count("SELECT count(*) FROM audit_checkpoints").await;
    let again = seal(&db, &mut sealer).await.unwrap();
    assert_eq!((again.batches, again.note), (0, None));
    assert_eq!(
        db.count("SELECT count(*) FROM audit_checkpoints").await,
        signed
    );

    // More records, a second checkpoint; a fresh sealer (a restart) reloads the tree.
    emit(&db, 250, 100).await;
    let mut restarted = Sealer::new(SigningKey::parse(&sealer.key().to_text()).unwrap());
    let second = seal_all(&db, &mut restarted).await;
    assert_eq!(second.records, 250);
    let (found, log) = findings(&db, &sealer, &[stored]).await;
    assert_eq!(found, "");
    assert_eq!(log.tree_size, second.tree_size);
    assert_eq!(log.sealed_records, 750);
    assert!(log.checkpoints >= 2);
    assert_eq!(log.unsealed_batches, 0);
    // Each batch is in the tree once.
    assert_eq!(
        db.count("SELECT count(*) - count(DISTINCT (stream_id, batch_id)) FROM audit_log_tree")
            .await,
        0
    );
}

#[tokio::test]
async fn an_open_transaction_holds_sealing_back_so_no_batch_is_overtaken() {
    let db = TestDb::migrated("sealed_log_horizon").await;
    let mut sealer = sealer();
    // A transaction that has begun writing and not committed yet, like a writer's
    // batch in flight: every batch committed after it waits until it ends.
    let open = connect(&db.url).await;
    open.batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    emit(&db, 50, 10).await;
    let held = seal(&db, &mut sealer).await.unwrap();
    assert_eq!(held.batches, 0, "no batch sealed past an open transaction");
    let (found, log) = findings(&db, &sealer, &[]).await;
    assert_eq!(found, "");
    assert_eq!(log.unsealed_records, 50);
    open.batch_execute("COMMIT").await.unwrap();
    let released = seal_all(&db, &mut sealer).await;
    assert_eq!(released.records, 50);
    // Sealed in commit order: leaf positions follow the committing transactions.
    let out_of_order = db
        .count(
            "SELECT count(*) FROM (SELECT b.tx_id, lag(b.tx_id) OVER (ORDER BY t.position) AS before
               FROM audit_log_tree t JOIN audit_writer_batches b USING (stream_id, batch_id)) s
             WHERE before > tx_id",
        )
        .await;
    assert_eq!(out_of_order, 0);
}

#[tokio::test]
async fn every_tampering_with_ledger_tree_or_checkpoints_is_caught_and_named() {
    let db = TestDb::migrated("sealed_log_tamper").await;
    let mut sealer = sealer();
    emit(&db, 300, 50).await;
    let published = seal_all(&db, &mut sealer).await.note.unwrap();
    emit(&db, 100, 50).await;
    seal_all(&db, &mut sealer).await;
    assert_eq!(findings(&db, &sealer, &[]).await.0, "");
    let newest = "(SELECT max(position) FROM audit_log_tree)";
    let last_published = Checkpoint::parse_unverified(&published).unwrap().size - 1;
    let cases = [
        // The ledger row of a sealed batch, edited.
        (
            "UPDATE audit_writer_batches SET committed_at = committed_at - interval '1 hour'
             WHERE batch_id = 2".to_owned(),
            "ledger row of batch 2 (stream",
        ),
        (
            "UPDATE audit_writer_batches SET rows = rows - 1 WHERE batch_id = 3".to_owned(),
            "ledger row of batch 3 (stream",
        ),
        // A whole batch removed: its records and its ledger row.
        (
            "DELETE FROM audit_logs WHERE seq BETWEEN 101 AND 150;
             DELETE FROM audit_writer_batches WHERE batch_id = 3".to_owned(),
            "batch 3 (stream",
        ),
        // The newest sealed batch removed with its leaf: the checkpoints still say it.
        (
            format!(
                "DELETE FROM audit_writer_batches b USING audit_log_tree t
                  WHERE (b.stream_id, b.batch_id) = (t.stream_id, t.batch_id) AND t.position = {newest};
                 DELETE FROM audit_log_tree WHERE position = {newest}"
            ),
            "log not consistent with checkpoint",
        ),
        // ... and with every checkpoint that says it: the published copy still does.
        (
            format!(
                "DELETE FROM audit_log_tree WHERE position >= {last_published};
                 DELETE FROM audit_checkpoints WHERE tree_size > {last_published}"
            ),
            "log not consistent with the published checkpoint",
        ),
        // A stored checkpoint edited: its note, or its row.
        (
            "UPDATE audit_checkpoints SET note = regexp_replace(note, E'\\n[0-9]+\\n', E'\\n1\\n')
             WHERE id = (SELECT max(id) FROM audit_checkpoints)".to_owned(),
            "not trusted: its signature does not verify",
        ),
        (
            "UPDATE audit_checkpoints SET tree_size = 0 WHERE id = (SELECT max(id) FROM audit_checkpoints)"
                .to_owned(),
            "changed: its row does not say what its signed note says",
        ),
        // The horizon moved, to hide batches left unsealed or one added: it is signed.
        (
            "UPDATE audit_checkpoints SET horizon = horizon + 1000".to_owned(),
            "changed: its row does not say what its signed note says",
        ),
        // A forged ledger row, plausible and older than the last seal.
        (
            "INSERT INTO audit_writer_batches
               (stream_id, batch_id, rows, first_seq, last_seq, encoding, leaves, root, tx_id)
             SELECT stream_id, 999, 1, 401, 401, 1, ''::bytea, sha256(''::bytea), 3
             FROM audit_writer_batches LIMIT 1".to_owned(),
            "ledger row of batch 999 (stream",
        ),
        // Records, ledger rows and leaves rewritten consistently: only the signature knows.
        (
            "UPDATE audit_log_tree SET leaf = sha256(leaf) WHERE position = 0".to_owned(),
            "log not consistent with checkpoint",
        ),
        // The table emptied and a subset put back.
        (
            "CREATE TEMP TABLE keep AS SELECT * FROM audit_logs WHERE seq % 2 = 0;
             TRUNCATE audit_logs;
             INSERT INTO audit_logs OVERRIDING SYSTEM VALUE SELECT * FROM keep".to_owned(),
            "seq 1 missing",
        ),
    ];
    for (change, finding) in cases {
        db.client.batch_execute("BEGIN").await.unwrap();
        db.client
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .unwrap();
        db.client.batch_execute(&change).await.unwrap();
        let (found, _) = findings(&db, &sealer, std::slice::from_ref(&published)).await;
        db.client.batch_execute("ROLLBACK").await.unwrap();
        assert!(found.contains(finding), "{change}\n  found: {found}");
    }
    // Rolled back, all of it: intact again.
    assert_eq!(findings(&db, &sealer, &[published]).await.0, "");
}

#[tokio::test]
async fn the_sealer_refuses_to_sign_over_a_tree_that_was_changed() {
    let db = TestDb::migrated("sealed_log_refuse").await;
    let mut sealer = sealer();
    emit(&db, 100, 20).await;
    seal_all(&db, &mut sealer).await;
    let signed = db.count("SELECT count(*) FROM audit_checkpoints").await;
    db.client
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE audit_log_tree SET leaf = sha256(leaf) WHERE position = 1;
             RESET session_replication_role",
        )
        .await
        .unwrap();
    emit(&db, 10, 20).await;
    // A fresh sealer (a restart, or cron) reads the tree and sees it.
    let mut fresh = Sealer::new(SigningKey::parse(&sealer.key().to_text()).unwrap());
    let refused = seal(&db, &mut fresh).await.unwrap_err();
    assert!(matches!(refused, SealError::Inconsistent(_)), "{refused}");
    assert_eq!(
        db.count("SELECT count(*) FROM audit_checkpoints").await,
        signed
    );
}

#[tokio::test]
async fn a_new_key_signs_from_a_checkpoint_on_and_old_checkpoints_verify_with_the_old_key() {
    let db = TestDb::migrated("sealed_log_rotation").await;
    let mut old = sealer();
    emit(&db, 60, 20).await;
    seal_all(&db, &mut old).await;
    // The new key's sealer refuses a log whose checkpoints it has no reason to trust ...
    let mut stranger = Sealer::new(SigningKey::generate("test.example/log").unwrap());
    let refused = seal(&db, &mut stranger).await.unwrap_err();
    assert!(format!("{refused}").contains("not trusted"), "{refused}");
    // ... and, told the earlier key, takes over from it.
    let mut new = Sealer::new(SigningKey::generate("test.example/log").unwrap())
        .trusting([old.key().verifier()]);
    let rotated = seal(&db, &mut new).await.unwrap();
    assert!(
        rotated.note.is_some(),
        "a new key signs at once, even with nothing new"
    );
    emit(&db, 60, 20).await;
    seal_all(&db, &mut new).await;
    let both = [old.key().verifier(), new.key().verifier()];
    let log = verify_log(&db.client, &both, &[]).await.unwrap();
    assert!(log.intact(), "{:?}", log.findings);
    assert!(log.checkpoints >= 3);
    // Given only the new key, the old key's checkpoint is not trusted, and says why.
    let only_new = verify_log(&db.client, &[new.key().verifier()], &[])
        .await
        .unwrap();
    let old_ids: Vec<i64> = db
        .client
        .query(
            "SELECT id FROM audit_checkpoints WHERE key_id = $1 ORDER BY id",
            &[&old.key().verifier().to_text().split('+').nth(1).unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!old_ids.is_empty());
    let found: Vec<String> = only_new.findings.iter().map(ToString::to_string).collect();
    let expected: Vec<String> = old_ids
        .iter()
        .map(|id| format!("checkpoint {id} not trusted: signed by none of the public keys given"))
        .collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn records_dropped_rejected_or_bisected_seal_without_false_alarms() {
    let db = TestDb::migrated("sealed_log_no_false_alarm").await;
    db.client
        .batch_execute(
            "ALTER TABLE audit_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let mut sealer = sealer();
    // A tiny queue drops records (and says so in an audit_dropped record); a poison
    // record is bisected out into audit_logs_rejected.
    let (dispatch, handle) = dispatch(builder(&db.url).batch_size(200).queue_capacity(64));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..5_000 {
            let message = if i == 77 { "poison" } else { "fine" };
            info!(target: "audit", username = "u", event_type = "e", "{message}");
        }
    });
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    emit_and_flush(
        &db,
        || info!(target: "audit", username = "v", event_type = "e", "later"),
    )
    .await;
    seal_all(&db, &mut sealer).await;
    let (found, log) = findings(&db, &sealer, &[]).await;
    assert_eq!(found, "");
    assert!(stats.dropped > 0, "the test dropped records: {stats:?}");
    assert_eq!(
        log.sealed_records as i64,
        db.count("SELECT count(*) FROM audit_logs").await,
    );
}

#[tokio::test]
async fn a_seal_cut_short_at_any_point_leaves_the_log_as_it_was() {
    let db = TestDb::migrated("sealed_log_cut_short").await;
    let key = SigningKey::generate("test.example/log").unwrap().to_text();
    for (round, cut_after_micros) in [0u64, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000]
        .into_iter()
        .enumerate()
    {
        emit(&db, 30, 10).await;
        // A seal stopped where it stands (auditd killed, its task aborted at shutdown):
        // its transaction never commits.
        let mut cut = Sealer::new(SigningKey::parse(&key).unwrap());
        let mut client = connect(&db.url).await;
        let _ = tokio::time::timeout(
            Duration::from_micros(cut_after_micros),
            cut.seal(&mut client),
        )
        .await;
        drop(client);
        // Every few rounds the whole connection goes too, as with a crash.
        if round % 3 == 2 {
            db.client
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND application_name = ''",
                )
                .await
                .ok();
        }
        let mut next = Sealer::new(SigningKey::parse(&key).unwrap());
        seal_all(&db, &mut next).await;
        let (found, log) = findings(&db, &next, &[]).await;
        assert_eq!(found, "", "after a seal cut at {cut_after_micros} µs");
        assert_eq!(log.unsealed_batches, 0);
    }
    assert_eq!(
        db.count("SELECT count(*) - count(DISTINCT (stream_id, batch_id)) FROM audit_log_tree")
            .await,
        0
    );
}

#[tokio::test]
async fn two_writers_and_auditds_own_access_records_seal_without_false_alarms() {
    let db = TestDb::migrated("sealed_log_busy").await;
    let key = SigningKey::generate("test.example/log").unwrap().to_text();
    // auditd serving reads, each leaving an access record in the same database.
    let server = support::http::TestServer::start(&db).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealing = {
        let (url, key, stop) = (db.url.clone(), key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sealer = Sealer::new(SigningKey::parse(&key).unwrap());
            let mut client = connect(&url).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sealer.seal(&mut client).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let (dispatch, handle) = dispatch(builder(&url).batch_size(25));
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..2_000 {
                        info!(target: "audit", username = "u", event_type = "busy", writer = w, i, "m");
                        if i % 100 == 0 {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                });
                handle
            })
        })
        .collect();
    for _ in 0..40 {
        server.get_json("/api/v1/logs?limit=5").await;
    }
    for writer in writers {
        let handle = writer.join().unwrap();
        handle.shutdown(Duration::from_secs(30)).await.unwrap();
    }
    server.stop().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sealing.await.unwrap();
    let mut sealer = Sealer::new(SigningKey::parse(&key).unwrap());
    seal_all(&db, &mut sealer).await;
    let (found, log) = findings(&db, &sealer, &[]).await;
    assert_eq!(found, "");
    assert_eq!(
        log.sealed_records as i64,
        db.count("SELECT count(*) FROM audit_logs").await
    );
    assert!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'audit_access'")
            .await
            >= 40
    );
}

#[tokio::test]
async fn an_incremental_check_reads_only_what_was_sealed_after_a_checkpoint() {
    let db = TestDb::migrated("sealed_log_incremental").await;
    let mut sealer = sealer();
    emit(&db, 100, 20).await;
    let first = seal_all(&db, &mut sealer).await;
    let first_size = first.tree_size as i64;
    emit(&db, 100, 20).await;
    seal_all(&db, &mut sealer).await;
    // One change in each half of the log.
    db.client
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE audit_logs SET message = 'edited'
             WHERE id IN ((SELECT min(id) + 4 FROM audit_logs), (SELECT max(id) - 4 FROM audit_logs));
             RESET session_replication_role",
        )
        .await
        .unwrap();
    let everything = verify(&db.client).await.unwrap();
    assert_eq!(everything.findings.len(), 2, "{:?}", everything.findings);
    // From the first checkpoint on: the batches after it, and only their records.
    let last_sealed: i64 = db
        .client
        .query_one(
            "SELECT max(b.tx_id) FROM audit_log_tree t
             JOIN audit_writer_batches b USING (stream_id, batch_id) WHERE t.position < $1",
            &[&first_size],
        )
        .await
        .unwrap()
        .get(0);
    let scope = audit_layer::integrity::Scope {
        from_tx: Some(last_sealed + 1),
        ..Default::default()
    };
    let mut progress = 0;
    let incremental = audit_layer::integrity::verify_scoped(&db.client, &scope, |n| progress = n)
        .await
        .unwrap();
    let found: Vec<String> = incremental
        .findings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let second: i64 = db
        .client
        .query_one("SELECT max(id) - 4 FROM audit_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        found[0].starts_with(&format!("record {second} ")),
        "the second round's: {found:?}"
    );
    assert_eq!(incremental.proven, 99);
    assert_eq!(progress, 0, "progress comes every 100,000 records");
    // A time window that holds nothing: nothing read, nothing found.
    let empty = audit_layer::integrity::Scope {
        committed_since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..Default::default()
    };
    let none = audit_layer::integrity::verify_scoped(&db.client, &empty, |_| {})
        .await
        .unwrap();
    assert_eq!((none.proven, none.findings.len()), (0, 0));
}

#[tokio::test]
async fn a_sealer_anchored_on_its_published_checkpoint_refuses_a_log_emptied_or_rewritten() {
    let db = TestDb::migrated("sealed_log_anchor").await;
    let key = SigningKey::generate("test.example/log").unwrap().to_text();
    let mut sealer = Sealer::new(SigningKey::parse(&key).unwrap());
    emit(&db, 60, 20).await;
    let published = seal_all(&db, &mut sealer).await.note.unwrap();
    // A superuser empties the log and its checkpoints (and could rewrite the records and
    // ledger to match): a sealer that only looked inside would start a new log, signed.
    db.client
        .batch_execute(
            "SET session_replication_role = replica;
             DELETE FROM audit_checkpoints; DELETE FROM audit_log_tree;
             RESET session_replication_role",
        )
        .await
        .unwrap();
    let mut anchored = Sealer::new(SigningKey::parse(&key).unwrap())
        .anchored(&published)
        .unwrap();
    let refused = seal(&db, &mut anchored).await.unwrap_err();
    assert!(
        format!("{refused}").contains("the log was removed"),
        "{refused}"
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_checkpoints").await, 0);
    // A stored checkpoint signed by someone else is not built on either.
    let forger = SigningKey::generate("test.example/log").unwrap();
    let mut forged = Sealer::new(SigningKey::parse(&forger.to_text()).unwrap());
    seal_all(&db, &mut forged).await;
    let mut honest = Sealer::new(SigningKey::parse(&key).unwrap());
    let refused = seal(&db, &mut honest).await.unwrap_err();
    assert!(format!("{refused}").contains("not trusted"), "{refused}");
}
