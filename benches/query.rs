//! Query and export through auditd's HTTP API on a large table.
//!
//! `cargo bench --bench query -- [--rows 10000000] [--requests 200] [--text-index]`
//!
//! Loads `--rows` records spread over 90 days (1,000 users, 9 event types, 10,000 devices)
//! into a fresh database, starts auditd in-process on loopback, then measures p50/p99 of a
//! filtered page of 100 for the common filters and for a page 100 pages deep (keyset), and
//! the rows/s and peak memory of an NDJSON export. With `--text-index`, the optional trigram
//! index (`auditd text-index`) is built after loading, and its build time printed. Uses
//! `DATABASE_URL` when set, otherwise a throwaway cluster with default durability on this
//! machine.

mod support;

use support::{arg, connect, connect_migrated, peak_rss_mib};

use std::time::{Duration, Instant};

use auditd::Limits;
use auditd::ServerOptions;
use auditd::Tokens;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use pg_provision::{ClusterOptions, Postgres};

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    async fn get(&mut self, path: &str) -> (Duration, Bytes) {
        let request = hyper::Request::get(path)
            .header("host", "bench")
            .body(Empty::new())
            .expect("request");
        // One request at a time on the connection: wait until it can take the next.
        self.sender.ready().await.expect("connection ready");
        let started = Instant::now();
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "{path}");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (started.elapsed(), body)
    }
}

impl Client {
    /// Reads a streamed body frame by frame, counting lines, keeping nothing.
    async fn stream_count(&mut self, path: &str) -> (Duration, u64, u64) {
        let request = hyper::Request::get(path)
            .header("host", "bench")
            .body(Empty::new())
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        // One request at a time on the connection: wait until it can take the next.
        self.sender.ready().await.expect("connection ready");
        let started = Instant::now();
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "{path}");
        let mut body = response.into_body();
        let (mut lines, mut bytes) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("frame").data_ref() {
                bytes += data.len() as u64;
                lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        (started.elapsed(), lines, bytes)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn load(url: &str, rows: u64) {
    let client = connect_migrated(url).await;
    client
        .execute(
            "SELECT audit_logs_ensure_partitions(now() - interval '3 months', 4)",
            &[],
        )
        .await
        .expect("partitions");
    let started = Instant::now();
    let chunk = 1_000_000u64;
    let mut done = 0;
    while done < rows {
        let n = chunk.min(rows - done);
        client
            .execute(
                "INSERT INTO audit_logs (username, user_id, event_type, message, ip_address,
                     resource_type, resource_id, resource_name, severity, metadata, created_at)
                 SELECT 'user' || (i % 1000), i % 1000,
                        (ARRAY['authentication','onboarding','device_management','credential_management',
                               'job_execution','configuration_change','backup','sync','system'])[1 + i % 9],
                        'Device edge-' || (i % 10000) || ' event number ' || i,
                        ('10.' || (i % 200) || '.' || (i % 250) || '.1')::inet,
                        'device', 'dev-' || (i % 10000), 'edge-' || (i % 10000),
                        (ARRAY['info','info','info','info','info','info','warning','warning','error','critical'])[1 + i % 10],
                        jsonb_build_object('site', 'site' || (i % 50), 'attempt', i % 5),
                        now() - ((i::float8 / $2::float8) * interval '90 days')
                 FROM generate_series($1::bigint, $1::bigint + $3::bigint - 1) AS i",
                &[&(done as i64), &(rows as f64), &(n as i64)],
            )
            .await
            .expect("load");
        done += n;
        eprintln!(
            "loaded {done} rows in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    client
        .batch_execute("VACUUM ANALYZE audit_logs")
        .await
        .expect("analyze");
    println!(
        "query: loaded {rows} rows in {:.0} s (server-side INSERT ... SELECT, then VACUUM ANALYZE)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 10_000_000);
    let requests = arg("--requests", 200) as usize;
    let server = tokio::task::spawn_blocking(|| {
        Postgres::from_env_or_throwaway(&ClusterOptions { durable: true })
    })
    .await
    .expect("provision")
    .expect("a PostgreSQL to measure against");
    let url = server
        .create_database("bench_query")
        .await
        .expect("database");
    load(&url, rows).await;
    let text_index = std::env::args().any(|a| a == "--text-index");
    if text_index {
        let client = connect(&url).await;
        let started = Instant::now();
        let report = audit_layer::schema::text_index::create(&client)
            .await
            .expect("trigram index");
        client
            .batch_execute("ANALYZE audit_logs")
            .await
            .expect("analyze");
        println!(
            "query: trigram index on message built over {} partitions in {:.0} s",
            report.built.len(),
            started.elapsed().as_secs_f64()
        );
    }

    let pool = audit_layer::pool::connect_pool(
        &url,
        &audit_layer::pool::PoolOptions {
            max_size: 8,
            statement_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    )
    .expect("pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Access records go to a database of their own, so they do not grow the measured table.
    let access_url = server
        .create_database("bench_query_access")
        .await
        .expect("database");
    connect_migrated(&access_url).await;
    let (layer, audit) = audit_layer::AuditLayer::builder()
        .database_url(&access_url)
        .build()
        .expect("layer");
    use tracing_subscriber::prelude::*;
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(auditd::serve(
        listener,
        pool,
        ServerOptions {
            tokens: std::sync::Arc::new(auditd::TokenStore::new(Tokens::none())),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(5),
            access_audit: Some(dispatch),
            audit_handle: None,
            commit_notices: None,
            tls: None,
        },
        async {
            let _ = stopped.await;
        },
    ));

    let mut client = Client::connect(addr).await;
    if text_index {
        // auditd samples messages to tune text search once it sees the index complete.
        let started = Instant::now();
        loop {
            let (_, metrics) = client.get("/metrics").await;
            if !String::from_utf8_lossy(&metrics).contains("auditd_text_search_sample_messages 0\n")
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no text search sample"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "query: text search sample taken within {:.0} ms of starting",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (chrono::Utc::now() - chrono::Duration::days(29))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cases: Vec<(&str, String)> = vec![
        ("newest page, no filter", "/api/v1/logs?limit=100".into()),
        ("username", "/api/v1/logs?username=user42&limit=100".into()),
        (
            "event_type",
            "/api/v1/logs?event_type=backup&limit=100".into(),
        ),
        (
            "severity",
            "/api/v1/logs?severity=critical&limit=100".into(),
        ),
        (
            "min_severity",
            "/api/v1/logs?min_severity=error&limit=100".into(),
        ),
        (
            "resource",
            "/api/v1/logs?resource_type=device&resource_id=dev-4242&limit=100".into(),
        ),
        (
            "time range (1 day, a month ago)",
            format!("/api/v1/logs?since={since}&until={until}&limit=100"),
        ),
        (
            "username + event_type",
            "/api/v1/logs?username=user42&event_type=backup&limit=100".into(),
        ),
        (
            "text search q (common word)",
            "/api/v1/logs?q=number&limit=100".into(),
        ),
        (
            "text search q (rare: one device)",
            "/api/v1/logs?q=edge-4242%20&limit=100".into(),
        ),
        (
            "metadata meta.site",
            "/api/v1/logs?meta.site=site7&limit=100".into(),
        ),
    ];
    println!("query: {requests} requests each, one keep-alive connection, page of 100:");
    for (name, path) in &cases {
        for _ in 0..5 {
            client.get(path).await; // warm the cache
        }
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            times.push(client.get(path).await.0);
        }
        times.sort();
        println!(
            "query:   {name:<34} p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }

    // Deep pages: follow next_cursor down, then time that page.
    for (name, base, depth) in [
        ("deep page 1000, no filter", "/api/v1/logs?limit=100", 1000),
        (
            "deep page 90, username",
            "/api/v1/logs?username=user42&limit=100",
            90,
        ),
    ] {
        let mut path = base.to_owned();
        for _ in 0..depth {
            let (_, body) = client.get(&path).await;
            let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let cursor = page["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned();
            path = format!("{base}&cursor={cursor}");
        }
        let mut times = Vec::new();
        for _ in 0..requests {
            times.push(client.get(&path).await.0);
        }
        times.sort();
        println!(
            "query:   {name:<34} p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }

    let export_rows = rows.min(1_000_000);
    let before = peak_rss_mib();
    let (elapsed, lines, bytes) = client
        .stream_count(&format!("/api/v1/logs/export?limit={export_rows}"))
        .await;
    assert_eq!(lines, export_rows);
    println!(
        "export: {lines} rows NDJSON ({:.0} MiB) in {:.2} s = {:.0} rows/s; peak RSS of the process (server and client) {before:.0} MiB before, {:.0} MiB after",
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    let _ = stop.send(());
    serving.await.expect("server").expect("server ran");
    drop(audit);
}
