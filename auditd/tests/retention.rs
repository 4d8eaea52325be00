//! `auditd retention`, `auditd hold`, `auditd restore` and `auditd verify --archive`, the
//! binaries, on a real PostgreSQL: a partition 14 months old is archived, checked and
//! dropped while a writer keeps writing (nothing lost), recent and held partitions stay,
//! `--dry-run` changes nothing, an unwritable or full archive directory drops nothing
//! and says why, verify calls the records retired (never missing), a tampered archive or
//! manifest fails `verify --archive`, a retirement forged in the database does not
//! excuse deleted records, and restore brings the records back, once, with verify clean.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use support::{auditd, emit_with, temp_dir, verify};
use tracing_subscriber::prelude::*;

fn fourteen_months_ago() -> DateTime<Utc> {
    Utc::now() - Months::new(14)
}

fn sixteen_months_ago() -> DateTime<Utc> {
    Utc::now() - Months::new(16)
}

fn two_months_ago() -> DateTime<Utc> {
    Utc::now() - Months::new(2)
}

/// The name of the partition of the month of `t`.
fn partition_of(t: DateTime<Utc>) -> String {
    format!("audit_logs_{:04}m{:02}", t.year(), t.month())
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .unwrap()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn exists(client: &tokio_postgres::Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

/// Messages that do not compress to nothing, so that a small disk fills.
fn noisy(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..24)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:08x}", x as u32)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_partition_is_archived_proven_dropped_and_restored() {
    let (url, client) = support::migrated_database("auditd_retention").await;

    let old = partition_of(fourteen_months_ago());
    let held = partition_of(sixteen_months_ago());
    let recent = partition_of(two_months_ago());
    emit_with(audit_layer::AuditLayer::builder().clock(fourteen_months_ago), &url, || {
        for i in 0..300u64 {
            tracing::info!(target: "audit", username = "alice", event_type = "device_onboarding",
                resource_type = "device", resource_id = %format!("dev-{i}"), i, "Onboarded {}", noisy(i));
        }
    })
    .await;
    emit_with(audit_layer::AuditLayer::builder().clock(sixteen_months_ago), &url, || {
        for i in 0..40u64 {
            let user = if i % 4 == 0 { "mallory" } else { "bob" };
            tracing::info!(target: "audit", username = user, event_type = "authentication", i, "User login");
        }
    })
    .await;
    emit_with(audit_layer::AuditLayer::builder().clock(two_months_ago), &url, || {
        for i in 0..25u64 {
            tracing::info!(target: "audit", username = "carol", event_type = "backup", i, "Backup done");
        }
    })
    .await;
    // Their months' partitions, the rows moved out of DEFAULT.
    client
        .execute("SELECT audit_logs_ensure_partitions()", &[])
        .await
        .unwrap();
    for table in [&old, &held, &recent] {
        assert!(exists(&client, table).await, "{table}");
    }
    let old_rows = format!("SELECT count(*) FROM {old}");
    assert_eq!(count(&client, &old_rows).await, 300);

    let dir = temp_dir("retention");
    let key = dir.join("log.key");
    let key = key.to_str().unwrap();
    let public = format!("{key}.pub");
    let (code, out) = auditd(&["keygen", "--out", key, "--name", "test.example/log"]);
    assert_eq!(code, 0, "{out}");
    let seal = || auditd(&["seal", "--database-url", &url, "--signing-key", key]);
    let (code, out) = seal();
    assert_eq!(code, 0, "{out}");

    // A hold on mallory's records 16 months ago keeps that partition; one on a user
    // with no records 14 months ago keeps nothing.
    let month = |t: DateTime<Utc>| {
        let start = month_start(t);
        (start.to_rfc3339(), (start + Months::new(1)).to_rfc3339())
    };
    let (from, until) = month(sixteen_months_ago());
    let hold = |name: &str, from: &str, until: &str, user: &str| {
        auditd(&[
            "hold",
            "--database-url",
            &url,
            "place",
            name,
            "--from",
            from,
            "--until",
            until,
            "--user",
            user,
            "--reason",
            "case 42",
            "--by",
            "counsel",
        ])
    };
    let (code, out) = hold("case-42", &from, &until, "mallory");
    assert_eq!(code, 0, "{out}");
    let (code, out) = hold("case-42", &from, &until, "mallory");
    assert_ne!(code, 0, "a hold's name is not reused: {out}");
    let (old_from, old_until) = month(fourteen_months_ago());
    let (code, out) = hold("nobody-there", &old_from, &old_until, "nobody");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_legal_hold' AND username = 'counsel'").await,
        2,
        "placing a hold is an audit record"
    );

    // --dry-run: says what would go and why the rest stays; changes nothing.
    let retention = |extra: &[&str]| {
        let mut args = vec![
            "retention",
            "--database-url",
            &url,
            "--keep",
            "13months",
            "--signing-key",
            key,
        ];
        args.extend_from_slice(extra);
        auditd(&args)
    };
    let (code, out) = retention(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{old}: would retire")), "{out}");
    assert!(
        out.contains(&format!("{held}: stays: held by case-42")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{recent}: stays: within 13months")),
        "{out}"
    );
    assert!(out.contains("dry run: 1 of"), "{out}");
    assert!(exists(&client, &old).await);
    assert_eq!(count(&client, &old_rows).await, 300);
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit_retirements").await,
        0
    );

    // A directory that cannot be written, and a full disk: nothing dropped, and why.
    let (code, out) = retention(&["--archive-dir", "/etc/hostname/archives"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("cannot write archives into /etc/hostname/archives"),
        "{out}"
    );
    let small = dir.join("small-disk");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    assert!(
        mounted.success(),
        "mounting a small tmpfs needs root, as CI runs"
    );
    let (code, out) = retention(&["--archive-dir", small.to_str().unwrap()]);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("NOT retired {old}")), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("nothing was dropped"), "{out}");
    assert!(exists(&client, &old).await);
    assert_eq!(count(&client, &old_rows).await, 300);
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit_retirements").await,
        0
    );

    // A row forged into a sealed stream (an unused seq), waiting to be laundered into an
    // archive as "unproven": refused, and the partition stays.
    let (old_stream, last_seq): (i64, i64) = {
        let row = client
            .query_one(
                &format!("SELECT stream_id, max(seq) FROM {old} GROUP BY stream_id"),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    client
        .execute(
            &format!(
                "INSERT INTO audit_logs (username, event_type, message, created_at, stream_id, seq) \
                 SELECT 'alice', 'device_onboarding', 'forged', min(created_at), $1, $2 FROM {old}"
            ),
            &[&old_stream, &(last_seq + 1000)],
        )
        .await
        .unwrap();
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let (code, out) = retention(&["--archive-dir", archives.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("are in no committed batch"), "{out}");
    assert!(exists(&client, &old).await);
    assert_eq!(count(&client, &old_rows).await, 301);
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica; DELETE FROM {old} WHERE message = 'forged'; \
             RESET session_replication_role;"
        ))
        .await
        .unwrap();

    // A partition left detached by a run that stopped half way, now held, with a record
    // of its month written meanwhile (into DEFAULT): the run puts both back.
    client
        .batch_execute(&format!(
            "ALTER TABLE audit_logs DETACH PARTITION {held}; \
             COMMENT ON TABLE {held} IS 'detached by auditd retention'"
        ))
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO audit_logs (username, event_type, message, created_at) \
                 SELECT 'mallory', 'authentication', 'while detached', min(created_at) FROM {held}"
            ),
            &[],
        )
        .await
        .unwrap();

    // The run, while a writer keeps writing current records.
    let (writer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .batch_max_wait(Duration::from_millis(5))
        .build()
        .unwrap();
    let stream_id = handle.stream_id();
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let emitting = {
        let (stop, written) = (stop.clone(), written.clone());
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(writer));
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                while !stop.load(Ordering::Relaxed) {
                    let i = written.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "audit", username = "svc", event_type = "sync", i, "Sync");
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out) = retention(&["--archive-dir", archives.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    emitting.join().unwrap();
    let stats = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("retired {old}: 300 records into")),
        "{out}"
    );
    assert!(out.contains("1 partition(s) retired"), "{out}");
    let emitted = written.load(Ordering::Relaxed) as i64;
    assert!(emitted > 100, "the writer wrote throughout: {emitted}");
    assert_eq!(stats.dropped, 0);
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(DISTINCT seq) FROM audit_logs WHERE stream_id = {stream_id}")
        )
        .await,
        emitted,
        "every record the writer emitted during the run is stored, once"
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM audit_logs WHERE stream_id = {stream_id}")
        )
        .await,
        emitted
    );

    // What reached PostgreSQL: the partition gone, its retirement recorded with its
    // audit record; the others untouched.
    assert!(!exists(&client, &old).await);
    assert!(exists(&client, &held).await && exists(&client, &recent).await);
    assert_eq!(
        count(&client, &format!("SELECT count(*) FROM {held}")).await,
        41
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM pg_inherits WHERE inhrelid = '{held}'::regclass")
        )
        .await,
        1,
        "the held partition is attached again"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit_logs_default").await,
        0
    );
    assert_eq!(
        count(&client, &format!("SELECT count(*) FROM {recent}")).await,
        25
    );
    let row = client
        .query_one("SELECT partition_name, rows, archive, archive_sha256, signature IS NOT NULL FROM audit_retirements", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), old);
    assert_eq!(row.get::<_, i64>(1), 300);
    let archive_name: String = row.get(2);
    let sha256: String = row.get(3);
    assert!(row.get::<_, bool>(4), "the manifest is signed");
    assert_eq!(
        count(&client, &format!("SELECT count(*) FROM audit_logs WHERE event_type = 'audit_retention' AND resource_id = '{old}' AND metadata->>'archive_sha256' = '{sha256}' AND (metadata->>'rows')::int = 300")).await,
        1,
        "the retention run's audit record names what it retired"
    );
    let archive = archives.join(&archive_name);
    let stem = archive_name.strip_suffix(".ndjson.zst").unwrap();
    assert!(archives.join(format!("{stem}.manifest.json")).exists());
    assert!(archives.join(format!("{stem}.manifest.sig")).exists());
    // Ordinary tools read it: zstd, then a JSON object a line.
    let text = String::from_utf8(zstd::decode_all(std::fs::File::open(&archive).unwrap()).unwrap())
        .unwrap();
    assert_eq!(text.lines().count(), 300);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["username"], "alice");
    assert!(first["metadata"]["i"].as_i64().is_some());
    assert!(first["stream_id"].is_i64() && first["seq"].is_i64());

    // Verify: retired, not missing.
    let (code, out) = seal();
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&url, &["--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "300 records retired by retention on {} into {archive_name} (sha256 {sha256})",
            Utc::now().format("%Y-%m-%d")
        )),
        "{out}"
    );
    assert!(!out.contains("missing"), "{out}");
    // Retired records are still in their batches' ledger rows: no false gap either.
    assert!(out.contains("streams complete"), "{out}");

    // The archive, offline.
    let archive_arg = archive.to_str().unwrap();
    let (code, out) = auditd(&["verify", "--archive", archive_arg, "--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("intact: archive of {old}")), "{out}");
    assert!(out.contains("300 records, 300 proven"), "{out}");
    let (code, out) = auditd(&["verify", "--archive", archive_arg]);
    assert_eq!(code, 2, "no key, no check: {out}");
    // Holds are lifted, never deleted, even by the owner; lifting is an audit record.
    let refused = client.execute("DELETE FROM audit_legal_holds", &[]).await;
    assert!(refused.is_err(), "a hold is never deleted");
    let (code, out) = auditd(&[
        "hold",
        "--database-url",
        &url,
        "lift",
        "nobody-there",
        "--reason",
        "not needed",
        "--by",
        "counsel",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = auditd(&["hold", "--database-url", &url, "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("case-42") && out.contains("IN FORCE"), "{out}");
    assert!(
        out.contains("nobody-there") && out.contains("lifted"),
        "{out}"
    );

    // Tampered: one record's message changed (the file recompressed), then the manifest.
    let tampered = dir.join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    for suffix in [".manifest.json", ".manifest.sig"] {
        std::fs::copy(
            archives.join(format!("{stem}{suffix}")),
            tampered.join(format!("{stem}{suffix}")),
        )
        .unwrap();
    }
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[5]["message"] = "Onboarded nothing".into();
    let changed: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(
        tampered.join(&archive_name),
        zstd::encode_all(changed.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let tampered_archive = tampered.join(&archive_name);
    let (code, out) = auditd(&[
        "verify",
        "--archive",
        tampered_archive.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(code, 1, "{out}");
    // The file is not the one described, and its batch no longer hashes to its root
    // (a batch wholly in the archive is proven by its root, so the batch is named).
    assert!(
        out.contains("the archive file is not the one the manifest describes"),
        "{out}"
    );
    assert!(
        out.contains("its records in the archive are not those committed"),
        "{out}"
    );
    assert!(out.contains("NOT INTACT"), "{out}");
    std::fs::copy(&archive, &tampered_archive).unwrap();
    let manifest_path = tampered.join(format!("{stem}.manifest.json"));
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        manifest.replace("\"rows\": 300", "\"rows\": 299"),
    )
    .unwrap();
    let (code, out) = auditd(&[
        "verify",
        "--archive",
        tampered_archive.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("its signature is for another manifest"),
        "{out}"
    );
    // A manifest of its own making, with no checkpoint and no signature: not the log's.
    let mut unsigned: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    unsigned["checkpoint"] = serde_json::Value::Null;
    unsigned["batches"] = serde_json::json!([]);
    unsigned["log_proof"] = serde_json::Value::Null;
    unsigned["proven"] = 0.into();
    unsigned["unproven"] = 300.into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&unsigned).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(tampered.join(format!("{stem}.manifest.sig"))).unwrap();
    let (code, out) = auditd(&[
        "verify",
        "--archive",
        tampered_archive.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("it is not signed"), "{out}");

    // Restore: the records back, once; verify clean.
    let restore = || {
        auditd(&[
            "restore",
            "--database-url",
            &url,
            "--archive",
            archive_arg,
            "--public-key",
            &public,
            "--by",
            "investigator",
        ])
    };
    let (code, out) = restore();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "restored 300 records into {old} (0 were there already)"
        )),
        "{out}"
    );
    let (code, out) = restore();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("restored 0 records") && out.contains("(300 were there already)"),
        "{out}"
    );
    assert_eq!(count(&client, &old_rows).await, 300);
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit_logs WHERE event_type = 'audit_restore' AND username = 'investigator'").await,
        2
    );
    let (code, out) = seal();
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&url, &["--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("retired by retention"), "{out}");

    // The attacker: records deleted with the trigger bypassed, and a retirement forged
    // to excuse them, its manifest's runs widened and the real signature copied.
    let victim_seqs: (i64, i64) = {
        let row = client
            .query_one(&format!("SELECT min(seq), max(seq) FROM {recent}"), &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let recent_stream: i64 = client
        .query_one(&format!("SELECT stream_id FROM {recent} LIMIT 1"), &[])
        .await
        .unwrap()
        .get(0);
    let (manifest, signature): (String, String) = {
        let row = client
            .query_one("SELECT manifest, signature FROM audit_retirements", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let mut forged: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    forged["runs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!([
            recent_stream,
            victim_seqs.0,
            victim_seqs.1
        ]));
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica; DELETE FROM {recent}; RESET session_replication_role;"
        ))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO audit_retirements (partition_name, range_start, range_end, rows, manifest, signature) \
             VALUES ($1, now(), now(), 25, $2, $3)",
            &[&recent, &serde_json::to_string_pretty(&forged).unwrap(), &signature],
        )
        .await
        .unwrap();
    let (code, out) = verify(&url, &["--public-key", &public]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("its signature is for another manifest: its records count as missing"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "record of stream {recent_stream}, seq {} missing",
            victim_seqs.0
        )),
        "{out}"
    );
}
