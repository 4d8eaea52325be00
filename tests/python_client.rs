//! The Python client of `examples/python`, run by a real Python against a real auditd:
//! the original design's flows arrive as records, and a batch whose answer is lost is
//! sent again under the same key and committed once.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use auditd::{Limits, Tokens};
use support::http::{TestServer, TOKEN};
use support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITER: &str = "backend-write-0123456789abcdef";

fn python_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python").to_owned()
}

async fn server(db: &TestDb) -> TestServer {
    let tokens = Tokens::parse([
        format!("ops:{TOKEN}").as_str(),
        format!("backend:{WRITER}:write").as_str(),
    ])
    .unwrap();
    TestServer::start_with(db, tokens, Limits::default()).await
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .env("PYTHONPATH", python_dir())
        .output()
        .expect("python3 runs (the tests need it, as .ci/run installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_writes_the_original_designs_flows_through_auditd() {
    let db = TestDb::migrated("python_flows").await;
    let server = server(&db).await;
    let url = format!("http://{}", server.addr);
    let script = format!("{}/seed_flows.py", python_dir());
    let out = tokio::task::spawn_blocking(move || {
        python(&[&script, "--url", &url, "--token", WRITER, "--rounds", "2"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sent 12 records"), "{stdout}");

    let flows: Vec<(String, String, String, String)> = db
        .records_where("event_type IN ('authentication', 'onboarding', 'backup')")
        .await
        .iter()
        .take(6)
        .map(|r| {
            assert_eq!(r.metadata["_sent_by"]["name"], "backend");
            (
                r.username.clone(),
                r.event_type.clone(),
                r.severity.to_string(),
                r.message.clone(),
            )
        })
        .collect();
    let expected = [
        ("alice", "authentication", "info", "User login"),
        ("alice", "authentication", "info", "User logout"),
        ("mallory", "authentication", "warning", "User login_failed"),
        (
            "alice",
            "onboarding",
            "info",
            "Device 'edge-fra1-01' onboarded to Nautobot",
        ),
        (
            "alice",
            "onboarding",
            "error",
            "Device 'edge-ams2-07' onboarded to Nautobot - Error: SSH timeout after 30s",
        ),
        (
            "system",
            "backup",
            "info",
            "Backup completed: 48 devices backed up",
        ),
    ]
    .map(|(u, e, s, m)| (u.to_owned(), e.to_owned(), s.to_owned(), m.to_owned()));
    assert_eq!(flows, expected);
    let records = db.records().await;
    let login = records.iter().find(|r| r.message == "User login").unwrap();
    assert_eq!(
        (login.user_id, login.ip_address),
        (Some(7), Some("10.1.2.3".parse().unwrap()))
    );
    let device = records
        .iter()
        .find(|r| r.resource_name.as_deref() == Some("edge-fra1-01"))
        .unwrap();
    assert_eq!(
        (
            device.resource_type.as_deref(),
            device.resource_id.as_deref()
        ),
        (Some("device"), Some("5f0c1a2e-0001"))
    );
    let backup = records.iter().find(|r| r.event_type == "backup").unwrap();
    assert_eq!(backup.metadata["success_count"], 48);
    assert_eq!(backup.metadata["failed_count"], 2);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE metadata ? '_sent_by'")
            .await,
        12
    );
    server.stop().await;
}

/// A proxy that forwards each request to `upstream` and, for the first one, throws the
/// answer away and closes the connection: the sender cannot know the batch committed.
/// Returns its address and the `Idempotency-Key` of every request it saw.
async fn proxy_losing_the_first_answer(
    upstream: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut chunk = [0u8; 8192];
            // The head, then as much body as it announces.
            let (head_end, length) = loop {
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                request.extend_from_slice(&chunk[..n]);
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                    };
                    seen.lock()
                        .unwrap()
                        .push(header("idempotency-key:").unwrap_or_default());
                    let length = header("content-length:")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while request.len() < head_end + length {
                let n = client.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            server.write_all(&request).await.unwrap();
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).await.unwrap();
            if first {
                first = false;
                drop(client);
                continue;
            }
            client.write_all(&answer).await.unwrap();
        }
    });
    (addr, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_sends_a_batch_again_under_its_key_when_the_answer_is_lost() {
    let db = TestDb::migrated("python_retry").await;
    let server = server(&db).await;
    let (proxy, keys) = proxy_losing_the_first_answer(server.addr).await;
    let program = format!(
        "import audit_client\n\
         c = audit_client.AuditClient('http://{proxy}', '{WRITER}', flush_interval=0.05)\n\
         for i in range(5):\n\
         \x20   c.create_log('alice', 'payment', 'Invoice %d paid' % i)\n\
         # Not JSON: refused on the caller's thread, never failing the batch.\n\
         assert c.create_log('alice', 'payment', 'bad', metadata={{'ratio': float('nan')}}) is False\n\
         assert c.close(30), 'not flushed'\n\
         print(c.stats)\n\
         assert c.stats['sent'] == 5 and c.stats['retries'] >= 1 and c.stats['duplicates'] == 1, c.stats\n\
         assert c.stats['invalid'] == 1, c.stats\n"
    );
    let out = tokio::task::spawn_blocking(move || python(&["-c", &program]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "one lost answer, one retry: {keys:?}");
    assert!(
        !keys[0].is_empty() && keys[0] == keys[1],
        "the same key: {keys:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE event_type = 'payment'")
            .await,
        5,
        "committed once"
    );
    server.stop().await;
}
