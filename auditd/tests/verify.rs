//! `auditd verify`, the binary: exit 0 on a database whose records match what the writer
//! committed, 1 (naming the finding) after a superuser changes a record, 2 when it cannot
//! check at all.

use std::process::Command;
use std::time::Duration;

use tracing_subscriber::prelude::*;

fn verify(url: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_auditd"))
        .args(["verify", "--database-url", url, "--db-timeout", "10s"])
        .output()
        .expect("run auditd verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_0_when_intact_1_naming_a_change_and_2_when_it_cannot_check() {
    let postgres = pg_provision::shared().expect("PostgreSQL");
    let url = postgres
        .create_database("auditd_verify")
        .await
        .expect("database");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    audit_layer::schema::migrate(&client).await.unwrap();

    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(&url)
        .batch_max_wait(Duration::from_millis(20))
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..20 {
            tracing::info!(target: "audit", username = "alice", event_type = "authentication", i, "User login");
        }
    });
    handle.shutdown(Duration::from_secs(30)).await.unwrap();

    let (code, out) = verify(&url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 20 records proven"), "{out}");

    client
        .batch_execute("UPDATE audit_logs SET username = 'mallory' WHERE seq = 3")
        .await
        .unwrap();
    let (code, out) = verify(&url);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 3) changed"), "{out}");
    assert!(out.contains("NOT INTACT"), "{out}");

    let (code, out) = verify("postgres://nobody@127.0.0.1:9/none?connect_timeout=1");
    assert_eq!(code, 2, "{out}");
}
