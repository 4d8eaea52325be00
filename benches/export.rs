//! Exports and retention archives against `psql \copy` of the same rows, in the same run.
//!
//! `cargo bench --bench export -- [--rows 10000000] [--rounds 3]`
//!
//! Loads `--rows` records spread over 90 days into a fresh database, starts auditd
//! in-process on loopback, then, `--rounds` times in turn:
//!
//! * `psql -c "\copy (SELECT <the export's query>) TO STDOUT"`, its output counted and
//!   thrown away, against `GET /api/v1/logs/export` (NDJSON) read by a client that does
//!   the same;
//! * `\copy` of each monthly partition (the archive's query), against writing each
//!   partition's archive (zstd NDJSON, hashed, synced).
//!
//! Then one retention run retires the oldest partition (archive, check from disk,
//! detach, drop). Prints rows/s, the ratio to psql in each round, and this process's
//! peak RSS (server, client and archiver together). Uses `DATABASE_URL` when set,
//! otherwise a throwaway cluster on this machine.

mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use audit_layer::integrity::STORED_RECORD_COLUMNS;
use support::http::Client;
use support::{arg, connect, load_spread, peak_rss_mib, serve_in_process};

/// `psql \copy (sql) TO STDOUT`, its output read and counted: the time, and the lines.
fn psql_copy(url: &str, sql: &str) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c"])
        .arg(format!("\\copy ({sql}) TO STDOUT"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = out.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    assert!(child.wait().expect("psql").success(), "psql failed");
    (started.elapsed(), lines)
}

fn rate(rows: u64, took: Duration) -> f64 {
    rows as f64 / took.as_secs_f64()
}

fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}–{max:.2}")
}

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 10_000_000);
    let rounds = arg("--rounds", 3);
    let server = support::postgres().await;
    let url = server
        .create_database("bench_export")
        .await
        .expect("database");
    load_spread(&url, rows).await;
    let access_url = server
        .create_database("bench_export_access")
        .await
        .expect("database");
    let (addr, stop, serving) = serve_in_process(&url, &access_url).await;
    let client = connect(&url).await;
    let partitions: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_logs'::regclass AND c.relname ~ 'm[0-9]{2}$' \
               AND EXISTS (SELECT 1 FROM audit_logs LIMIT 1) ORDER BY 1",
            &[],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dir = std::env::temp_dir().join(format!("bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("archive dir");

    let export_sql = format!(
        "SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs WHERE true ORDER BY created_at DESC, id DESC"
    );
    let (mut export_ratios, mut archive_ratios) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (psql_took, psql_rows) = psql_copy(&url, &export_sql);
        assert_eq!(psql_rows, rows);
        // A connection of its own: one left idle through the psql run is closed by auditd.
        let mut http = Client::connect(addr).await;
        let (took, lines, bytes) = http.stream_count("/api/v1/logs/export").await;
        assert_eq!(lines, rows);
        let ratio = rate(lines, took) / rate(psql_rows, psql_took);
        export_ratios.push(ratio);
        println!(
            "round {round}: export {:.0} rows/s ({:.0} MiB NDJSON in {:.1} s); psql \\copy {:.0} rows/s ({:.1} s): {ratio:.2}× psql",
            rate(lines, took),
            bytes as f64 / (1 << 20) as f64,
            took.as_secs_f64(),
            rate(psql_rows, psql_took),
            psql_took.as_secs_f64(),
        );

        let (mut psql_took, mut archive_took) = (Duration::ZERO, Duration::ZERO);
        let (mut archived, mut archive_bytes) = (0u64, 0u64);
        for partition in &partitions {
            let partition = auditd::retention::Partition::from_name(partition, true)
                .expect("a monthly partition");
            let (took, _) = psql_copy(
                &url,
                &format!(
                    "SELECT id, tx_id, {STORED_RECORD_COLUMNS} FROM ONLY {}",
                    partition.table()
                ),
            );
            psql_took += took;
            let path = dir.join(format!("{}.ndjson.zst", partition.name));
            let started = Instant::now();
            let written = auditd::retention::write_archive(&client, &partition, &path)
                .await
                .expect("archive");
            archive_took += started.elapsed();
            archived += written.tally.rows;
            archive_bytes += written.bytes;
            std::fs::remove_file(&path).expect("remove archive");
        }
        assert_eq!(archived, rows);
        let ratio = rate(archived, archive_took) / rate(archived, psql_took);
        archive_ratios.push(ratio);
        println!(
            "round {round}: archive {:.0} rows/s ({} partitions, {:.0} MiB zstd, {:.1} s); psql \\copy {:.0} rows/s ({:.1} s): {ratio:.2}× psql",
            rate(archived, archive_took),
            partitions.len(),
            archive_bytes as f64 / (1 << 20) as f64,
            archive_took.as_secs_f64(),
            rate(archived, psql_took),
            psql_took.as_secs_f64(),
        );
    }
    println!(
        "export: {}× psql over {rounds} rounds; archive: {}× psql; peak RSS of the process (server, client, archiver) {:.0} MiB",
        range(&export_ratios),
        range(&archive_ratios),
        peak_rss_mib()
    );

    // One retention run: the oldest partition archived, checked from disk, dropped.
    let mut owner = connect(&url).await;
    let oldest: chrono::DateTime<chrono::Utc> = owner
        .query_one("SELECT min(created_at) FROM audit_logs", &[])
        .await
        .expect("oldest")
        .get(0);
    let options = auditd::retention::RetentionOptions {
        keep: auditd::retention::Keep::Days(1),
        archive_dir: dir.clone(),
        signing_key: auditd::seal::SigningKey::generate("bench.example/log").expect("key"),
        trusted: Vec::new(),
        lock_timeout: Duration::from_secs(2),
        lock_attempts: 10,
    };
    // "Now" a month after the oldest record: only its month is past the window.
    let now = oldest + chrono::Months::new(1) + chrono::Duration::days(2);
    let started = Instant::now();
    let report = auditd::retention::run(&mut owner, &options, now)
        .await
        .expect("retention");
    let took = started.elapsed();
    let retired: u64 = report.retired.iter().map(|r| r.rows).sum();
    println!(
        "retention: {} partition(s), {retired} rows archived, checked from disk and dropped in {:.1} s = {:.0} rows/s; failed: {:?}",
        report.retired.len(),
        took.as_secs_f64(),
        rate(retired, took),
        report.failed
    );
    let _ = std::fs::remove_dir_all(&dir);
    serving.stop(stop).await;
}
