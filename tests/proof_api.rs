//! The proof routes, checked as a client that trusts nothing but the log's public key
//! would: a record's encoding hashes to its leaf, the leaf is in its batch's tree, the
//! batch's entry is in the log at a signed checkpoint, and two checkpoints are
//! consistent. A record changed afterwards, and a record not sealed yet, say so.

mod support;

use std::time::Duration;

use audit_layer::integrity::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};
use audit_layer::integrity::{BatchEntry, StoredRecord};
use auditd::seal::{check_bundle, Bundle, Checkpoint, Sealer, SigningKey, VerifierKey};
use base64::Engine;
use hyper::StatusCode;
use serde_json::Value;
use support::http::TestServer;
use support::{emit_and_flush, seal_all, TestDb};
use tracing::info;

fn hash(value: &Value) -> Hash {
    let bytes = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&value.as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    Hash::try_from(bytes.as_slice()).unwrap()
}

fn path(value: &Value) -> Vec<Hash> {
    value.as_array().unwrap().iter().map(hash).collect()
}

/// Checks a proof as an auditor would, with only `key`; returns the encoding it proves.
fn check_proof(proof: &Value, key: &VerifierKey) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD
        .decode(proof["encoded"].as_str().unwrap())
        .unwrap();
    let leaf = leaf_hash(&encoded);
    assert_eq!(leaf, hash(&proof["leaf"]));
    let batch = &proof["batch"];
    let root = hash(&batch["root"]);
    assert!(verify_inclusion(
        batch["index"].as_u64().unwrap(),
        batch["rows"].as_u64().unwrap(),
        &leaf,
        &path(&batch["path"]),
        &root
    ));
    let committed_at =
        chrono::DateTime::parse_from_rfc3339(batch["committed_at"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
    let entry = BatchEntry {
        stream_id: batch["stream_id"].as_i64().unwrap(),
        batch_id: batch["batch_id"].as_i64().unwrap(),
        rows: batch["rows"].as_i64().unwrap() as i32,
        first_seq: batch["first_seq"].as_i64().unwrap(),
        last_seq: batch["last_seq"].as_i64().unwrap(),
        encoding: batch["encoding"].as_i64().unwrap() as i16,
        root,
        committed_at_micros: committed_at,
        tx_id: batch["tx_id"].as_i64().unwrap(),
    };
    assert_eq!(entry.leaf(), hash(&batch["entry_leaf"]));
    let log = &proof["log"];
    let (checkpoint, _) = Checkpoint::open(
        log["checkpoint"].as_str().unwrap(),
        std::slice::from_ref(key),
    )
    .unwrap();
    assert_eq!(checkpoint.size, log["tree_size"].as_u64().unwrap());
    assert!(verify_inclusion(
        log["position"].as_u64().unwrap(),
        checkpoint.size,
        &entry.leaf(),
        &path(&log["path"]),
        &checkpoint.root
    ));
    encoded
}

#[tokio::test]
async fn a_records_proof_checks_out_with_only_the_public_key() {
    let db = TestDb::migrated("proof_api").await;
    emit_and_flush(&db, || {
        for i in 0..40 {
            info!(target: "audit", username = "alice", event_type = "authentication", attempt = i, "User login");
        }
    })
    .await;
    let mut sealer = Sealer::new(SigningKey::generate("test.example/log").unwrap());
    seal_all(&db, &mut sealer).await;
    let first_size = sealer_size(&db).await;
    let key = sealer.key().verifier();
    // The access records of this server go elsewhere, so the log above stays as sealed.
    let server = TestServer::start_quiet(&db).await;

    let id: i64 = db
        .client
        .query_one("SELECT id FROM audit_logs WHERE seq = 17", &[])
        .await
        .unwrap()
        .get(0);
    let proof = server.get_json(&format!("/api/v1/logs/{id}/proof")).await;
    assert_eq!(proof["status"], "sealed", "{proof}");
    let encoded = check_proof(&proof, &key);
    let proven = StoredRecord::decode(&encoded).unwrap();
    // The record shown beside the proof is the one the bytes say.
    assert_eq!(proven.message, "User login");
    assert_eq!(proof["record"]["message"], proven.message);
    assert_eq!(proof["record"]["username"], proven.username);
    assert_eq!(proven.seq, Some(17));

    // Newer records: committed, not sealed yet; then sealed, and the two checkpoints
    // are consistent.
    emit_and_flush(&db, || {
        info!(target: "audit", username = "bob", event_type = "authentication", "User login");
    })
    .await;
    let newest: i64 = db
        .client
        .query_one("SELECT max(id) FROM audit_logs", &[])
        .await
        .unwrap()
        .get(0);
    let waiting = server
        .get_json(&format!("/api/v1/logs/{newest}/proof"))
        .await;
    assert_eq!(waiting["status"], "committed");
    assert!(waiting["log"].is_null());
    seal_all(&db, &mut sealer).await;
    let sealed = server
        .get_json(&format!("/api/v1/logs/{newest}/proof"))
        .await;
    assert_eq!(sealed["status"], "sealed");
    check_proof(&sealed, &key);
    let second_size = sealer_size(&db).await;
    let checkpoints = server.get_json("/api/v1/checkpoints?limit=1000").await;
    let notes: Vec<Checkpoint> = checkpoints["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            Checkpoint::open(c["note"].as_str().unwrap(), std::slice::from_ref(&key))
                .unwrap()
                .0
        })
        .collect();
    let old = notes.iter().find(|c| c.size == first_size).unwrap();
    let new = notes.iter().find(|c| c.size == second_size).unwrap();
    let consistency = server
        .get_json(&format!(
            "/api/v1/checkpoints/consistency?from={first_size}&to={second_size}"
        ))
        .await;
    assert!(verify_consistency(
        first_size,
        second_size,
        &old.root,
        &new.root,
        &path(&consistency["path"])
    ));
    let (status, _, _) = server
        .get(&format!(
            "/api/v1/checkpoints/consistency?from=0&to={}",
            second_size + 1
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A record changed by a superuser says so; its old proof no longer matches it.
    db.client
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             UPDATE audit_logs SET message = 'User logout' WHERE id = {id};
             RESET session_replication_role"
        ))
        .await
        .unwrap();
    let changed = server.get_json(&format!("/api/v1/logs/{id}/proof")).await;
    assert_eq!(changed["status"], "changed");
    assert_ne!(changed["leaf"], proof["leaf"]);
    let (status, _, _) = server.get("/api/v1/logs/999999999/proof").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = server.get("/api/v1/logs/x/proof").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn a_proof_is_a_read_and_is_audited() {
    let db = TestDb::migrated("proof_api_audited").await;
    emit_and_flush(&db, || {
        info!(target: "audit", username = "alice", event_type = "authentication", "User login");
    })
    .await;
    let server = TestServer::start(&db).await;
    let proof = server.get_json("/api/v1/logs/1/proof").await;
    assert_eq!(proof["status"], "committed");
    server.stop().await;
    let access = db.records_where("event_type = 'audit_access'").await;
    assert_eq!(access.len(), 1);
    assert_eq!(access[0].metadata["route"], "/api/v1/logs/{id}/proof");
    assert_eq!(
        access[0].metadata["filters"],
        serde_json::json!({"id": 1, "proof": true})
    );
}

async fn sealer_size(db: &TestDb) -> u64 {
    db.count("SELECT tree_size FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
        .await as u64
}

#[tokio::test]
async fn a_bundle_proves_its_records_offline_and_a_complete_one_that_none_is_missing() {
    let db = TestDb::migrated("proof_bundle").await;
    let (dispatch, handle) = support::dispatch(support::builder(&db.url).batch_size(10));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..60 {
            let user = if i % 3 == 0 { "mallory" } else { "alice" };
            info!(target: "audit", username = user, event_type = "authentication", attempt = i, "User login");
        }
    });
    handle.shutdown(Duration::from_secs(30)).await.unwrap();
    let mut sealer = Sealer::new(SigningKey::generate("test.example/log").unwrap());
    seal_all(&db, &mut sealer).await;
    let keys = [sealer.key().verifier()];
    let server = TestServer::start_quiet(&db).await;

    // The records an auditor was handed: each genuine.
    let bundle = server
        .get_json("/api/v1/logs/bundle?username=mallory&limit=1000")
        .await;
    let parsed = Bundle::from_json(&bundle).unwrap();
    let report = check_bundle(&parsed, &keys);
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!(report.proven, 20);
    assert_eq!(report.complete_positions, None);
    assert_eq!(bundle["truncated"], false);
    let cut = server
        .get_json("/api/v1/logs/bundle?username=mallory&limit=5")
        .await;
    assert_eq!(
        cut["truncated"], true,
        "the limit cut it short, and it says so"
    );

    // Played by the one who hands them over: a record shown otherwise than proven, a
    // forged encoding, a checkpoint from another key.
    let mut shown = bundle.clone();
    shown["batches"][0]["records"][0]["record"]["username"] = "alice".into();
    let found = check_bundle(&Bundle::from_json(&shown).unwrap(), &keys).findings;
    assert!(found[0].contains("shown differently"), "{found:?}");
    let mut forged = bundle.clone();
    let mut record = StoredRecord::decode(&parsed.batches[0].records[0].encoded).unwrap();
    record.message = "User logout";
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    forged["batches"][0]["records"][0]["encoded"] = base64::engine::general_purpose::STANDARD
        .encode(&bytes)
        .into();
    forged["batches"][0]["records"][0]["record"]["message"] = "User logout".into();
    let found = check_bundle(&Bundle::from_json(&forged).unwrap(), &keys).findings;
    assert!(found[0].contains("not in its batch"), "{found:?}");
    let other = [SigningKey::generate("test.example/log").unwrap().verifier()];
    assert!(!check_bundle(&parsed, &other).intact());

    // Complete: every record of the batches from the first to the last holding a match.
    let complete = server.get_json("/api/v1/logs/bundle?complete=true").await;
    let parsed = Bundle::from_json(&complete).unwrap();
    let report = check_bundle(&parsed, &keys);
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!(report.proven, 60);
    let leaves = db.count("SELECT count(*) FROM audit_log_tree").await as u64;
    assert_eq!(report.complete_positions, Some((0, leaves - 1)));
    // One record taken out, or a whole batch: the bundle no longer proves it.
    let mut short = complete.clone();
    let rows = short["batches"][1]["entry"]["rows"].clone();
    short["batches"][1]["records"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let found = check_bundle(&Bundle::from_json(&short).unwrap(), &keys).findings;
    assert!(
        found[0].contains(&format!("are not the {rows} it committed")),
        "{found:?}"
    );
    // Cut at its limit, it says so; holding nothing, it proves nothing.
    let cut = server
        .get_json("/api/v1/logs/bundle?complete=true&limit=1")
        .await;
    assert_eq!(cut["truncated"], true);
    let report = check_bundle(&Bundle::from_json(&cut).unwrap(), &keys);
    assert!(
        report.intact() && report.proven < 60,
        "{:?}",
        report.findings
    );
    let nothing = server
        .get_json("/api/v1/logs/bundle?complete=true&username=nobody")
        .await;
    let report = check_bundle(&Bundle::from_json(&nothing).unwrap(), &keys);
    assert!(!report.intact());
    assert_eq!(
        report.findings,
        ["the bundle holds no record: it proves nothing"]
    );
    let mut gap = complete.clone();
    gap["batches"].as_array_mut().unwrap().remove(1);
    let found = check_bundle(&Bundle::from_json(&gap).unwrap(), &keys).findings;
    assert!(
        found[0].contains("the batches before it are missing"),
        "{found:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_page_marks_each_record_sealed_committed_or_unproven_as_the_log_says() {
    let db = TestDb::migrated("proof_page_status").await;
    emit_and_flush(&db, || {
        for i in 0..5 {
            info!(target: "audit", username = "alice", event_type = "authentication", attempt = i, "User login");
        }
    })
    .await;
    let mut sealer = Sealer::new(SigningKey::generate("test.example/log").unwrap());
    seal_all(&db, &mut sealer).await;
    emit_and_flush(&db, || {
        info!(target: "audit", username = "bob", event_type = "authentication", "User login");
    })
    .await;
    // Written by SQL, without a proof; and a forgery that claims a sealed record's stream
    // and seq, which its transaction does not back.
    db.client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message) VALUES ('carol', 'sql', 'by hand');
             INSERT INTO audit_logs (username, event_type, message, stream_id, seq)
               SELECT 'mallory', 'authentication', 'User login', stream_id, seq
               FROM audit_logs WHERE username = 'alice' LIMIT 1",
        )
        .await
        .unwrap();
    let server = TestServer::start_quiet(&db).await;
    let page = server
        .get_json("/api/v1/logs?seal_status=true&limit=100")
        .await;
    let status_of = |who: &str| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["username"] == who)
            .map(|r| r["seal_status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(status_of("alice"), vec!["sealed"; 5], "{page}");
    assert_eq!(status_of("bob"), ["committed"]);
    assert_eq!(status_of("carol"), ["unproven"]);
    assert_eq!(status_of("mallory"), ["unproven"]);
    // Sealing moves bob's record along; a page without the parameter carries no status.
    seal_all(&db, &mut sealer).await;
    let page = server
        .get_json("/api/v1/logs?seal_status=true&username=bob")
        .await;
    assert_eq!(page["items"][0]["seal_status"], "sealed");
    let plain = server.get_json("/api/v1/logs?username=bob").await;
    assert!(plain["items"][0].get("seal_status").is_none(), "{plain}");
    server.stop().await;
}
