//! The binary as producers meet it: `auditd serve --spool-dir`, records posted while the
//! database is down, auditd killed, and the sender's retry after the restart, which must
//! not write them twice.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{temp_dir, verify};

const WRITER: &str = "billing-write-0123456789abcdef";

/// A port free now, for the server about to start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs NDJSON to `/api/v1/events`; the status and the body of the answer, or `None`
/// while nothing listens yet.
fn post(port: u16, key: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/events HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {WRITER}\r\n\
         content-type: application/x-ndjson\r\nidempotency-key: {key}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(url: &str, port: u16, spool: &std::path::Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_auditd"))
        .args(["serve", "--database-url", url])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--tokens", &format!("billing:{WRITER}:write")])
        .arg("--spool-dir")
        .arg(spool)
        .args(["--upkeep-interval", "0", "--db-timeout", "1s"])
        .env_remove("AUDITD_SIGNING_KEY")
        .env_remove("AUDITD_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start auditd serve");
    Server(child)
}

/// Posts until the server answers (it may still be starting).
fn post_when_up(port: u16, key: &str, body: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(answer) = post(port, key, body) {
            return answer;
        }
        assert!(Instant::now() < deadline, "auditd did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_while_the_database_is_down_survive_a_kill_and_the_retry_is_not_written_twice(
) {
    let cluster = tokio::task::spawn_blocking(|| {
        pg_provision::Cluster::start_new(&pg_provision::ClusterOptions::durable())
    })
    .await
    .unwrap()
    .expect("a cluster of the test's own");
    let url = cluster.url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    audit_layer::schema::migrate(&client).await.unwrap();
    drop(client);
    cluster.stop("fast").unwrap();

    let spool = temp_dir("ingest-spool");
    let body: String = (0..3)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"username": "alice", "event_type": "refund",
                                   "message": format!("Refund {i} issued")})
            )
        })
        .collect();
    let port = free_port();
    let server = serve(&url, port, &spool);
    let (status, answer) = post_when_up(port, "refund-42", &body);
    assert_eq!(status, 202, "{answer}");
    assert!(answer.contains(r#""status":"spooled""#), "{answer}");
    // Killed, not stopped: what was answered "spooled" must be on disk already.
    drop(server);

    cluster.start().unwrap();
    let port = free_port();
    let _server = serve(&url, port, &spool);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let count = || async {
        client
            .query_one(
                "SELECT count(*) FROM audit_logs WHERE event_type = 'refund'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await < 3 {
        assert!(Instant::now() < deadline, "the spool was not replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The sender never saw the first answer, and sends the same request again.
    let (status, answer) =
        tokio::task::spawn_blocking(move || post_when_up(port, "refund-42", &body))
            .await
            .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""duplicate":true"#), "{answer}");
    assert_eq!(count().await, 3, "written once");
    let key: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_writer_batches WHERE idempotency_key = 'billing:refund-42' AND rows = 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, 1, "the key committed with the records");
    let (code, report) = verify(&url, &[]);
    assert_eq!(code, 0, "{report}");
}
