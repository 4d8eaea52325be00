//! `auditd keygen`, `auditd seal` and `auditd verify`, the binaries: a key pair written
//! with the signing key private, a seal that publishes its checkpoint, and verify exiting
//! 0 on a database that matches what the writer committed and the log signed, 1 (naming
//! the finding) after a superuser changes a record, 2 when it cannot check at all.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{auditd, emit, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_0_when_intact_1_naming_a_change_and_2_when_it_cannot_check() {
    let (url, client) = support::migrated_database("auditd_verify").await;

    emit(&url, || {
        for i in 0..20 {
            tracing::info!(target: "audit", username = "alice", event_type = "authentication", i, "User login");
        }
    })
    .await;

    let (code, out) = verify(&url, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 20 records proven"), "{out}");
    assert!(out.contains("signed log: no checkpoint yet"), "{out}");

    // A key pair: the signing key readable by its owner only, never overwritten.
    let dir = std::env::temp_dir().join(format!("auditd-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("log.key");
    let key = key.to_str().unwrap();
    let public = format!("{key}.pub");
    let (code, out) = auditd(&["keygen", "--out", key, "--name", "test.example/log"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("test.example/log+"),
        "prints the public key: {out}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(std::fs::read_to_string(key)
        .unwrap()
        .starts_with("PRIVATE+KEY+test.example/log+"));
    let (code, out) = auditd(&["keygen", "--out", key]);
    assert_ne!(code, 0, "refuses to overwrite: {out}");

    // Sealed, the checkpoint published to a file; verified with the public key.
    let published = dir.join("checkpoint");
    let published = published.to_str().unwrap();
    let (code, out) = auditd(&[
        "seal",
        "--database-url",
        &url,
        "--signing-key",
        key,
        "--publish",
        published,
    ]);
    assert_eq!(code, 0, "{out}");
    let note = std::fs::read_to_string(published).unwrap();
    assert!(note.starts_with("test.example/log\n"), "{note}");
    let (code, out) = verify(&url, &["--public-key", &public, "--checkpoint", published]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed log: "), "{out}");
    assert!(!out.contains("NOT checked"), "{out}");
    // Without the key a signed log is not checked, unless asked to compare only.
    let (code, out) = verify(&url, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("give the log's public key"), "{out}");
    let (code, out) = verify(&url, &["--no-signatures"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signatures NOT checked"), "{out}");
    // Incrementally from the checkpoint just published: nothing sealed since, nothing read.
    let (code, out) = verify(
        &url,
        &["--public-key", &public, "--since-checkpoint", published],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact: 0 records proven in 0 batches (in scope"),
        "{out}"
    );
    let (code, out) = verify(&url, &["--since", "1h", "--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 20 records proven"), "{out}");

    // A bundle of records, checked offline with the public key alone; then with one
    // record's message changed in it.
    let bundle_path = dir.join("bundle.json");
    let bundle = bundle_of_every_record(&client).await;
    std::fs::write(&bundle_path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let bundle_file = bundle_path.to_str().unwrap();
    let (code, out) = auditd(&["verify", "--bundle", bundle_file, "--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 20 record(s)"), "{out}");
    let mut edited = bundle.clone();
    edited["batches"][0]["records"][0]["record"]["message"] = "User logout".into();
    std::fs::write(&bundle_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let (code, out) = auditd(&["verify", "--bundle", bundle_file, "--public-key", &public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("shown differently"), "{out}");
    let (code, out) = auditd(&["verify", "--bundle", bundle_file]);
    assert_eq!(code, 2, "no key, no check: {out}");

    // auditd serve seals at start, then on its interval, and at once on SIGUSR1.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_auditd"))
        .args([
            "serve",
            "--database-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--signing-key",
            key,
            "--seal-interval",
            "1h",
            "--upkeep-interval",
            "0",
            "--publish-checkpoints",
            published,
        ])
        .env_remove("AUDITD_TOKENS")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .expect("auditd serve");
    // Once serve is up and has made its first seal (at start), a record it has not
    // sealed, which only SIGUSR1 gets sealed within the hour.
    let up = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.join("serve.log"))
        .unwrap_or_default()
        .contains("auditd is serving")
    {
        assert!(std::time::Instant::now() < up, "auditd serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    emit(&url, || {
        tracing::info!(target: "audit", username = "bob", event_type = "authentication", "User login");
    })
    .await;
    let started = checkpoint_count(&client).await;
    let status = Command::new("kill")
        .args(["-USR1", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while checkpoint_count(&client).await <= started {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGUSR1 did not seal: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(serve.wait().unwrap().success());
    let (code, out) = verify(&url, &["--public-key", &public, "--checkpoint", published]);
    assert_eq!(code, 0, "{out}");

    // A key others may read is refused.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (code, out) = auditd(&["seal", "--database-url", &url, "--signing-key", key]);
    assert_ne!(code, 0);
    assert!(out.contains("chmod 600"), "{out}");

    client
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE audit_logs SET username = 'mallory' WHERE seq = 3;
             RESET session_replication_role",
        )
        .await
        .unwrap();
    let (code, out) = verify(&url, &["--public-key", &public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 3) changed"), "{out}");
    assert!(out.contains("NOT INTACT"), "{out}");

    let (code, out) = verify("postgres://nobody@127.0.0.1:9/none?connect_timeout=1", &[]);
    assert_eq!(code, 2, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proof bundle of every record, made with the library as the bundle route makes it.
async fn bundle_of_every_record(client: &tokio_postgres::Client) -> serde_json::Value {
    use auditd::seal::{latest_checkpoint, record_proof_at, Bundle, LogLeaves, Provable};
    let leaves = LogLeaves::default();
    let checkpoint = latest_checkpoint(client).await.unwrap().expect("sealed");
    let rows = client
        .query(
            &format!(
                "SELECT id, {} FROM audit_logs ORDER BY id",
                audit_layer::RECORD_COLUMNS
            ),
            &[],
        )
        .await
        .unwrap();
    let mut proofs = Vec::new();
    for row in &rows {
        let id: i64 = row.get("id");
        let Provable::Proof(proof) = record_proof_at(client, &leaves, id, Some(&checkpoint))
            .await
            .unwrap()
        else {
            panic!("record {id} has no proof");
        };
        let mut record = format!("{{\"id\":{id},").into_bytes();
        audit_layer::AuditLog::from_row(row)
            .unwrap()
            .write_json_fields(&mut record);
        record.push(b'}');
        proofs.push((*proof, serde_json::from_slice(&record).unwrap()));
    }
    Bundle::from_proofs(checkpoint.1, proofs).to_json()
}

async fn checkpoint_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await
        .unwrap()
        .get(0)
}
