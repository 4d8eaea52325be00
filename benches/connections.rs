//! What hostile connections do to a running auditd, and whether `/healthz` and a
//! legitimate client keep being answered meanwhile.
//!
//! ```sh
//! cargo bench --bench connections            # every scenario, about two minutes
//! ```
//!
//! auditd serves in-process (plain HTTP and HTTPS, with a bearer token) on loopback; each
//! scenario opens its hostile connections from source addresses of its own (127.0.0.2 and
//! up), while a probe on 127.0.0.1 asks for `/healthz` and a page of records every 100 ms.
//! Every scenario ends by itself (a few seconds past auditd's 10 s header timeout) and
//! targets loopback only. The table says how many hostile connections auditd held, how it
//! answered them, and what the probe saw.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditd::{Limits, ServerOptions, TokenStore, Tokens};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{connect_migrated, peak_rss_mib, rss_mib};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// A loopback source address of its own for each attacker: 127.0.0.{n}.
fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Sends `request` on a new connection from 127.0.0.1 and reads the status line, or
/// `None` when the connection is refused, closed or slower than 2 s.
async fn probe(to: SocketAddr, request: &[u8]) -> Option<(u16, Duration)> {
    let started = Instant::now();
    let attempt = async {
        let mut stream = connect_from(source(1), to).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    let status = tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()?;
    Some((status, started.elapsed()))
}

/// What the probe saw during one scenario.
#[derive(Default)]
struct ProbeReport {
    health_ok: usize,
    health_tried: usize,
    page_ok: usize,
    page_tried: usize,
    latencies_ms: Vec<f64>,
}

impl ProbeReport {
    fn line(&mut self) -> String {
        if self.health_tried == 0 {
            return "-".to_owned();
        }
        self.latencies_ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            self.latencies_ms
                .get(
                    ((self.latencies_ms.len() as f64 * q) as usize)
                        .min(self.latencies_ms.len().saturating_sub(1)),
                )
                .copied()
                .unwrap_or(f64::NAN)
        };
        format!(
            "healthz {}/{}, page {}/{}, p50 {:.1} ms, p99 {:.1} ms",
            self.health_ok,
            self.health_tried,
            self.page_ok,
            self.page_tried,
            at(0.5),
            at(0.99)
        )
    }
}

/// Probes every 100 ms for `duration`.
async fn probe_for(to: SocketAddr, duration: Duration) -> ProbeReport {
    let health = b"GET /healthz HTTP/1.1\r\nhost: auditd\r\nconnection: close\r\n\r\n".to_vec();
    let page = format!(
        "GET /api/v1/logs?limit=1 HTTP/1.1\r\nhost: auditd\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    let mut report = ProbeReport::default();
    let until = Instant::now() + duration;
    while Instant::now() < until {
        report.health_tried += 1;
        if let Some((200, took)) = probe(to, &health).await {
            report.health_ok += 1;
            report.latencies_ms.push(took.as_secs_f64() * 1000.0);
        }
        report.page_tried += 1;
        if let Some((200, took)) = probe(to, &page).await {
            report.page_ok += 1;
            report.latencies_ms.push(took.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report
}

/// How many of `streams` the server has closed (a read returns end of file or an error
/// at once).
async fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for stream in streams.iter_mut() {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    closed
}

/// Opens `count` connections spread over `sources` source addresses (127.0.0.2 up),
/// sending `first` on each; returns those that connected.
async fn open_many(to: SocketAddr, count: usize, sources: u8, first: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let from = source(2 + (i % usize::from(sources)) as u8);
        if let Ok(mut stream) = connect_from(from, to).await {
            if !first.is_empty() {
                let _ = stream.write_all(first).await;
            }
            streams.push(stream);
        }
    }
    streams
}

struct Metrics {
    open: f64,
    refused: f64,
}

async fn metrics(to: SocketAddr) -> Metrics {
    let mut stream = connect_from(source(1), to).await.expect("metrics");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nhost: auditd\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    };
    Metrics {
        open: value("auditd_http_connections_open "),
        refused: value("auditd_http_connections_refused_total "),
    }
}

fn row(scenario: &str, load: &str, held: &str, answer: &str, probe: &mut ProbeReport) {
    println!(
        "| {scenario} | {load} | {held} | {answer} | {} |",
        probe.line()
    );
}

/// Sends raw bytes on one connection and reads the answer until the server closes it or
/// 3 s pass: the status lines of every response in it.
async fn exchange(to: SocketAddr, bytes: &[u8]) -> Vec<String> {
    let mut stream = connect_from(source(40), to).await.expect("connect");
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    // Responses follow each other without a separator: each begins with its status line.
    String::from_utf8_lossy(&answer)
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|r| r.split("\r\n").next().map(str::to_owned))
        .collect()
}

fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// A full TLS handshake from 127.0.0.1 trusting `cert`, within 2 s.
async fn tls_handshake(to: SocketAddr, cert: &Path) -> bool {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = connect_from(source(1), to).await.ok()?;
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let postgres = pg_provision::shared().expect("PostgreSQL");
    let url = postgres
        .create_database("bench_connections")
        .await
        .expect("db");
    let client = connect_migrated(&url).await;
    client
        .batch_execute(
            "INSERT INTO audit_logs (username, event_type, message)
             SELECT 'user' || i, 'authentication', 'User login' FROM generate_series(1, 1000) i",
        )
        .await
        .unwrap();
    let limits = Limits::default();
    let header_timeout = limits.header_read_timeout;
    let serve = |tls: Option<auditd::TlsAcceptor>| {
        let url = url.clone();
        let limits = limits.clone();
        async move {
            let pool = audit_layer::pool::connect_pool(&url, &Default::default()).expect("pool");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tokens = Tokens::parse([format!("bench:{TOKEN}").as_str()]).unwrap();
            tokio::spawn(auditd::serve(
                listener,
                pool,
                ServerOptions {
                    tokens: Arc::new(TokenStore::new(tokens)),
                    limits,
                    shutdown_grace: Duration::from_secs(1),
                    // Access records of the probe's page reads go to the global
                    // subscriber, which this bench leaves empty.
                    access_audit: None,
                    audit_handle: None,
                    commit_notices: None,
                    write_pool: None,
                    tls,
                },
                std::future::pending(),
            ));
            addr
        }
    };
    let addr = serve(None).await;
    let dir = std::env::temp_dir().join(format!("auditd-bench-connections-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_certificate(&dir);
    let certificate = auditd::Certificate::load(&cert, &key).unwrap();
    let tls_addr = serve(Some(certificate.acceptor().unwrap())).await;

    println!(
        "connections: max {} in all, {} per address; header and idle timeout {:?}; probe from 127.0.0.1 every 100 ms",
        limits.max_connections, limits.max_connections_per_ip, header_timeout
    );
    println!();
    println!("| scenario | load | held by auditd | how auditd answered | what the probe saw |");
    println!("|---|---|---|---|---|");

    let mut baseline = probe_for(addr, Duration::from_secs(3)).await;
    row("none (baseline)", "-", "-", "-", &mut baseline);

    // 1. 10,000 idle connections from one address.
    let before = metrics(addr).await;
    let mut idle = open_many(addr, 10_000, 1, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = metrics(addr).await;
    let mut seen = probe_for(addr, Duration::from_secs(3)).await;
    let refused_at_once = closed_by_server(&mut idle).await;
    tokio::time::sleep(header_timeout + Duration::from_secs(1)).await;
    let closed_later = closed_by_server(&mut idle).await;
    row(
        "idle connections, one address",
        &format!("{} connected", idle.len()),
        &format!("{:.0} open", during.open - before.open),
        &format!(
            "{:.0} closed at once (bound); all {closed_later} closed within {:?}",
            during.refused - before.refused,
            header_timeout + Duration::from_secs(1)
        ),
        &mut seen,
    );
    let _ = refused_at_once;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. 10,000 idle connections from 20 addresses: the table fills, for the timeout.
    let before = metrics(addr).await;
    let mut idle = open_many(addr, 10_000, 20, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = metrics(addr).await;
    let mut seen = probe_for(addr, header_timeout + Duration::from_secs(3)).await;
    let closed = closed_by_server(&mut idle).await;
    row(
        "idle connections, 20 addresses",
        &format!("{} connected", idle.len()),
        &format!("{:.0} open", during.open - before.open),
        &format!(
            "{:.0} closed at once (bound); {closed} closed by the end",
            during.refused - before.refused
        ),
        &mut seen,
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2b. Clients that ask for a response and never read it (a tiny receive window), from
    // 20 addresses, past the overall bound: a connection asked to give way goes within
    // its grace even though hyper cannot finish sending.
    let before = metrics(addr).await;
    let mut unread = Vec::new();
    let request = b"GET /api/v1/openapi.json HTTP/1.1\r\nhost: auditd\r\n\r\n";
    for i in 0..4_500usize {
        let Ok(socket) = TcpSocket::new_v4() else {
            continue;
        };
        let _ = socket.set_recv_buffer_size(1024);
        if socket
            .bind(SocketAddr::new(source(2 + (i % 20) as u8), 0))
            .is_err()
        {
            continue;
        }
        if let Ok(mut stream) = socket.connect(addr).await {
            let _ = stream.write_all(request).await;
            unread.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = probe_for(addr, Duration::from_secs(5)).await;
    let during = metrics(addr).await;
    row(
        "responses never read (tiny receive window), 20 addresses",
        &format!("{} connected", unread.len()),
        &format!("{:.0} open", during.open - before.open),
        &format!(
            "{:.0} refused, the oldest idle ones asked to give way (closed within 2 s)",
            during.refused - before.refused
        ),
        &mut seen,
    );
    drop(unread);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. Keep-alive connections that made one request and then idle.
    let request = b"GET /healthz HTTP/1.1\r\nhost: auditd\r\n\r\n";
    let mut kept = open_many(addr, 400, 1, request).await;
    let opened = Instant::now();
    let mut seen = probe_for(addr, header_timeout + Duration::from_secs(2)).await;
    let mut closed_after_answer = 0;
    for stream in kept.iter_mut() {
        let mut answer = Vec::new();
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read_to_end(&mut answer)).await
        {
            closed_after_answer += 1;
        }
    }
    row(
        "keep-alive connections idle after a request",
        &format!("{}", kept.len()),
        "each until its idle timeout",
        &format!(
            "{closed_after_answer} of {} closed within {:.0} s of their answer",
            kept.len(),
            opened.elapsed().as_secs_f64()
        ),
        &mut seen,
    );
    drop(kept);

    // 4. Slowloris: headers a byte a second, from one address.
    let mut slow = open_many(addr, 500, 1, b"GET /healthz HTTP/1.1\r\n").await;
    let started = Instant::now();
    let mut trickle = tokio::spawn(async move {
        let mut ticks = 0;
        while started.elapsed() < Duration::from_secs(14) {
            for stream in slow.iter_mut() {
                let _ = stream.write_all(b"x").await;
            }
            ticks += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let closed = closed_by_server(&mut slow).await;
        (slow.len(), closed, ticks)
    });
    let mut seen = probe_for(addr, Duration::from_secs(14)).await;
    let (count, closed, _) = (&mut trickle).await.unwrap();
    row(
        "slowloris (a header byte a second)",
        &format!("{count} connections"),
        "each until the header timeout",
        &format!("{closed} of {count} closed after {:?}", header_timeout),
        &mut seen,
    );

    // 5. Headers of 1 MiB.
    let rss_before = rss_mib();
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: auditd\r\nx-padding: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let mut statuses = Vec::new();
    let probe_task = tokio::spawn(probe_for(addr, Duration::from_secs(3)));
    for _ in 0..50 {
        statuses.extend(exchange(addr, huge.as_bytes()).await);
    }
    let mut seen = probe_task.await.unwrap();
    row(
        "1 MiB request headers",
        "50 requests",
        &format!(
            "RSS {:+.1} MiB (peak {:.0} MiB)",
            rss_mib() - rss_before,
            peak_rss_mib()
        ),
        &format!("{:?}", dedup(&statuses)),
        &mut seen,
    );

    // 6. Pipelined, malformed and smuggling requests.
    let pipelined = "GET /healthz HTTP/1.1\r\nhost: auditd\r\n\r\n".repeat(100)
        + "GET /healthz HTTP/1.1\r\nhost: auditd\r\nconnection: close\r\n\r\n";
    let answers = exchange(addr, pipelined.as_bytes()).await;
    let mut seen = ProbeReport::default();
    row(
        "pipelined requests",
        "101 in one write",
        "-",
        &format!("{} answers: {:?}", answers.len(), dedup(&answers)),
        &mut seen,
    );
    for (name, bytes) in [
        ("malformed header line", &b"GET /healthz HTTP/1.1\r\nhost: auditd\r\nno colon here\r\n\r\n"[..]),
        ("malformed request line", &b"GET /healthz HTTP/9\r\n\r\n"[..]),
        ("binary garbage", &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..]),
        (
            "Content-Length and Transfer-Encoding (smuggling a GET /metrics)",
            &b"GET /healthz HTTP/1.1\r\nhost: auditd\r\ncontent-length: 44\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\nhost: auditd\r\n\r\n"[..],
        ),
        (
            "two Content-Lengths",
            &b"GET /healthz HTTP/1.1\r\nhost: auditd\r\ncontent-length: 0\r\ncontent-length: 38\r\n\r\nGET /metrics HTTP/1.1\r\nhost: auditd\r\n\r\n"[..],
        ),
    ] {
        let answers = exchange(addr, bytes).await;
        row(name, "1 connection", "-", &format!("{answers:?}, then closed"), &mut ProbeReport::default());
    }

    assert!(
        tls_handshake(tls_addr, &cert).await,
        "no TLS handshake without load"
    );
    // 7. TLS clients that stall mid-handshake, from one address and from 32.
    for sources in [1u8, 32] {
        let mut stalled = open_many(tls_addr, 600, sources, &[0x16, 0x03, 0x01]).await;
        let started = Instant::now();
        let mut handshakes = (0, 0);
        while started.elapsed() < Duration::from_secs(3) {
            handshakes.1 += 1;
            if tls_handshake(tls_addr, &cert).await {
                handshakes.0 += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at_once = closed_by_server(&mut stalled).await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        let later = closed_by_server(&mut stalled).await;
        let mut seen = ProbeReport::default();
        row(
            &format!("TLS handshakes stalled, {sources} address(es)"),
            &format!("{} connections", stalled.len()),
            "each until the 10 s handshake timeout",
            &format!(
                "{at_once} closed at once (handshake bound); {later} closed within 14 s; \
                 legitimate handshakes {}/{}",
                handshakes.0, handshakes.1
            ),
            &mut seen,
        );
    }
    println!();
    println!(
        "connections: peak RSS of the whole bench (auditd and its clients) {:.0} MiB",
        peak_rss_mib()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn dedup(statuses: &[String]) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for s in statuses {
        match seen.iter_mut().find(|(v, _)| v == s) {
            Some((_, n)) => *n += 1,
            None => seen.push((s.clone(), 1)),
        }
    }
    seen.into_iter()
        .map(|(v, n)| format!("{n} × {v}"))
        .collect()
}
