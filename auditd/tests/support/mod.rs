//! What the binary's tests share: running auditd, and writing records through a layer.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use tracing_subscriber::prelude::*;

/// Runs the auditd binary with `args` (without the key variables a developer's shell may
/// set); its exit code, and its stdout then stderr.
pub fn auditd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_auditd"))
        .args(args)
        .env_remove("AUDITD_PUBLIC_KEY")
        .env_remove("AUDITD_SIGNING_KEY")
        .output()
        .expect("run auditd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `auditd verify` on the database at `url`, with `extra` flags.
pub fn verify(url: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", "--database-url", url, "--db-timeout", "10s"];
    args.extend_from_slice(extra);
    auditd(&args)
}

/// Emits `events` through an audit layer writing to `url`, and waits until they are
/// committed.
pub async fn emit(url: &str, events: impl FnOnce()) {
    emit_with(audit_layer::AuditLayer::builder(), url, events).await;
}

/// As [`emit`], through a layer `builder` configures.
pub async fn emit_with(builder: audit_layer::AuditLayerBuilder, url: &str, events: impl FnOnce()) {
    let (layer, handle) = builder
        .database_url(url)
        .batch_max_wait(Duration::from_millis(20))
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, events);
    handle.shutdown(Duration::from_secs(30)).await.unwrap();
}

/// A fresh directory for a test's files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("auditd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A new database on the shared PostgreSQL, migrated: its URL and a connection to it.
pub async fn migrated_database(name: &str) -> (String, tokio_postgres::Client) {
    let postgres = pg_provision::shared().expect("PostgreSQL");
    let url = postgres.create_database(name).await.expect("database");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    audit_layer::schema::migrate(&client).await.unwrap();
    (url, client)
}
